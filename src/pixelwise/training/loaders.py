"""The training and validation loaders of a run, and how many steps an epoch takes."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from ..data.dataset import SegmentationDataset, pad_collate
from ..data.transforms import WorkingResize, eval_transform, train_transform
from . import distributed
from .config import TrainConfig
from .sampling import SeededDataset, SeededSampler


def auto_workers(requested: int, processes_here: int = 1) -> int:
    """Loader processes per training process; ``processes_here`` training processes share this machine."""
    if requested >= 0:
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cpus = max(1, cpus // max(1, processes_here))
    # Leave most cores to the model; one loader process overlaps decoding with compute.
    return min(4, max(1, cpus // 2)) if cpus > 1 else 0


def fits_in_cache(report, limit_bytes: float = 2e9) -> bool:
    """Whether the decoded training images and masks (3 + 8 bytes a pixel) fit in ``limit_bytes``."""
    total = sum(h * w * (3 + 8) for h, w in report.sizes.values())
    return total < limit_bytes


@dataclass
class Loaders:
    """The loaders of one process, and the length of an epoch in global batches."""

    train: DataLoader
    val: DataLoader | None
    sampler: SeededSampler
    workers: int
    steps_per_epoch: int


def build_loaders(config: TrainConfig, data, ctx: distributed.DistContext) -> Loaders:
    """Seeded training loader (this process's share of each global batch) and sharded validation loader.

    Batches are (images (N, 3, H, W), targets (N, H, W)), or (N, 2, H, W) (labels, instance ids)
    when ``config.task`` is instance or panoptic. With a working resolution (``config.max_side``)
    training images and targets are resized to it first, and a validation batch is two lists
    instead: (3, h, w) uint8 images at their working size, targets at the image's own size (see
    :func:`pixelwise.training.trainer.run_validation`).
    """
    ignore = data.classes.ignore_index
    world, batch_per_process = ctx.world_size, config.batch_size // ctx.world_size
    cache = config.cache and fits_in_cache(data.report)
    tf = train_transform(
        config.crop_size,
        ignore,
        config.scale_range,
        config.hflip,
        config.vflip,
        config.color_jitter,
        class_crops=config.class_crops,
        max_side=config.max_side,
    )
    # Instance/panoptic runs read the instance ids too: targets (2, H, W), labels then ids.
    instances = config.task != "semantic"
    train_ds = SeededDataset(SegmentationDataset(data.splits["train"], tf, cache=cache, instances=instances))
    # Rank r takes positions r, r + world, ... of the epoch's permutation, so global batch k holds
    # exactly the samples of batch k in one process; each sample's augmentation seed does not
    # depend on the rank. (DistributedSampler semantics: disjoint shards, set_epoch reshuffles.)
    sampler = SeededSampler(len(train_ds), config.seed, num_replicas=world, rank=ctx.rank)
    workers = auto_workers(config.num_workers, ctx.local_world_size)
    drop_last = len(train_ds) > config.batch_size  # a batch of one breaks BatchNorm statistics
    loader_kw = dict(num_workers=workers, pin_memory=ctx.device.type == "cuda", collate_fn=pad_collate(ignore))
    if workers > 0:
        loader_kw.update(persistent_workers=True, prefetch_factor=4)
    train = DataLoader(train_ds, batch_size=batch_per_process, sampler=sampler, drop_last=drop_last, **loader_kw)
    val = None
    if data.splits["val"]:
        val_tf = WorkingResize(config.max_side, masks=False) if config.max_side else eval_transform()
        val_ds = SegmentationDataset(data.splits["val"], val_tf, cache=cache, instances=instances)
        shard = distributed.ShardSampler(len(val_ds), world, ctx.rank)
        if config.max_side:  # images and masks of different sizes: no padding, see run_validation
            loader_kw["collate_fn"] = list_collate
        val = DataLoader(val_ds, batch_size=batch_per_process, sampler=shard, **loader_kw)
    # The number of global batches of one process; a rank's padded shard may hold one more.
    n = len(train_ds)
    global_steps = n // config.batch_size if drop_last else math.ceil(n / config.batch_size)
    steps_per_epoch = min(len(train), global_steps)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    return Loaders(train, val, sampler, workers, steps_per_epoch)


def list_collate(batch: list[tuple]) -> tuple[list, list]:
    """A batch as (list of images, list of targets), each at its own size."""
    return [x for x, _ in batch], [y for _, y in batch]


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on ``device`` (asynchronous from pinned memory)."""
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
