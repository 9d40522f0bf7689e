"""The training loop: seeded, resumable, checkpointed after every epoch, best model kept.

A run directory holds::

    config.yaml                  the TrainConfig, so the run can be repeated exactly
    checkpoint.safetensors/.json the last finished epoch: weights, optimizer, history (resume)
    model.safetensors/.json      the bundle of the best epoch by validation mIoU (what users load)
    metrics.csv, curves.png      one row per epoch; loss and mIoU curves
    train.log                    one line per epoch

Every file is written atomically, so Ctrl-C or a crash at any moment leaves a run that
``--resume`` continues from the last finished epoch. Randomness is drawn from seeds derived
from (seed, epoch, sample), so a resumed run repeats the uninterrupted one, whatever the number
of loader workers.

Under ``torchrun`` the same loop runs in every process with DistributedDataParallel (see
:mod:`pixelwise.distributed`): ``batch_size`` is the global batch, split evenly over the
processes, and each global batch holds the same samples with the same augmentation as in one
process, so the result matches a one-process run with the same options. Rank 0 alone writes
the run directory.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from ..bundle import Bundle, Normalization, TrainingSummary, save_bundle, state_dict_for_saving
from ..classes import ClassInfo
from ..data.dataset import SegmentationDataset, pad_collate
from ..data.formats import open_dataset
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from ..errors import PixelwiseError
from ..fileio import atomic_path, write_json, write_text
from ..losses import build_loss, class_weights_from_counts
from ..metrics import ConfusionMatrix
from ..models import ModelConfig, build_model, describe
from . import distributed
from .config import TrainConfig

RUN_MARKERS = ("config.yaml", "checkpoint.json", "model.json")
CHECKPOINT_META_KEY = "pixelwise_checkpoint"  # safetensors header entry holding checkpoint.json's content
CONFIG_HEADER = (
    "# pixelwise training configuration: `pixelwise train --resume --out RUN` continues it.\n"
    "# batch_size is the global batch (all processes together under torchrun, split evenly);\n"
    "# lr is the AdamW learning rate for that global batch, not scaled with the number of processes.\n"
)


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_metrics: dict | None
    history: list[dict]
    stopped_early: bool = False


# ----------------------------------------------------------------------------- helpers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise PixelwiseError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PixelwiseError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return dev


def cpu_supports_bf16() -> bool:
    """True when this CPU runs bfloat16 convolutions natively (AVX512-BF16 or AMX), where bf16
    autocast trains faster than float32; elsewhere it would be emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype_for(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for training on ``device``, or None for plain float32."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and platforms."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class SeededSampler(Sampler):
    """Yields ``(index, seed)``: a per-epoch permutation, and a seed per sample for its augmentation.

    Seeding each sample from (run seed, epoch, index) makes augmentation independent of the
    loader's workers and of process history, which is what makes ``--resume`` exact.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 1))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        order = self._order()
        per = math.ceil(len(order) / self.num_replicas)
        order = (order + order[: per * self.num_replicas - len(order)])[self.rank :: self.num_replicas]
        for i in order:
            yield (i, derive_seed(self.seed, self.epoch, i, 2))

    def __len__(self) -> int:
        return math.ceil(self.n / self.num_replicas)


class SeededDataset(torch.utils.data.Dataset):
    """Runs the wrapped dataset's item under a private RNG seeded by the sampler."""

    def __init__(self, base: SegmentationDataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        i, seed = key
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            try:
                return self.base[i]
            finally:
                random.setstate(state)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based) of ``total``.

    Linear warm-up from 1/warmup to 1 over ``warmup`` steps, then cosine or poly(0.9) decay that
    reaches 0 exactly at the last step, or constant.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "poly":
        return (1.0 - t) ** 0.9
    raise PixelwiseError(f"unknown schedule '{schedule}'; use cosine, poly or constant")


def _auto_workers(requested: int, processes_here: int = 1) -> int:
    """Loader processes per training process; ``processes_here`` training processes share this machine."""
    if requested >= 0:
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cpus = max(1, cpus // max(1, processes_here))
    # Leave most cores to the model; one loader process overlaps decoding with compute.
    return min(4, max(1, cpus // 2)) if cpus > 1 else 0


def _fits_in_cache(report, limit_bytes: float = 2e9) -> bool:
    total = sum(h * w * (3 + 8) for h, w in report.sizes.values())
    return total < limit_bytes


def _write_csv(path: Path, rows: list[dict]) -> None:
    cols = [
        "epoch",
        "train_loss",
        "val_loss",
        "val_miou",
        "val_mean_dice",
        "val_pixel_accuracy",
        "lr",
        "seconds",
        "images_per_s",
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    write_text(path, buf.getvalue())


def prepare_run_dir(out: str, resume: bool, overwrite: bool) -> Path:
    """Create the run directory; refuse one that holds a run unless resuming or overwriting."""
    run = Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    holds_run = run.is_dir() and any((run / m).exists() for m in RUN_MARKERS)
    if resume:
        if not ((run / "checkpoint.json").is_file() or (run / "checkpoint.safetensors").is_file()):
            raise PixelwiseError(f"{run}: nothing to resume (no checkpoint.json); start it without --resume")
        return run
    if holds_run:
        if not overwrite:
            raise PixelwiseError(
                f"{run}: already holds a run; pass --resume to continue it, --overwrite to replace it, or choose another --out"
            )
        for name in list(RUN_MARKERS) + [
            "checkpoint.safetensors",
            "model.safetensors",
            "metrics.csv",
            "curves.png",
            "train.log",
        ]:
            (run / name).unlink(missing_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    return run


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(run: Path, model, optimizer, scaler, state: dict, ema=None) -> None:
    """Weights and optimizer tensors to safetensors, everything else to JSON.

    The JSON metadata is stored twice: inside the safetensors header (what :func:`load_checkpoint`
    reads) and as ``checkpoint.json`` (for people and tools). The safetensors file is replaced in
    one atomic rename, so a crash or a kill at any moment (for example torchrun stopping the
    other processes when one fails) leaves either the previous or the new complete checkpoint.
    """
    tensors = {f"model/{k}": v for k, v in state_dict_for_saving(model).items()}
    if ema is not None:  # the averaged weights and their update count (AveragedModel.state_dict)
        tensors.update({f"ema/{k}": v for k, v in state_dict_for_saving(ema).items()})
    opt = optimizer.state_dict()
    opt_scalars: dict = {}
    for pid, pstate in opt["state"].items():
        for k, v in pstate.items():
            if torch.is_tensor(v):
                tensors[f"optim/{pid}/{k}"] = v.detach().to("cpu").contiguous().clone()
            else:
                opt_scalars[f"{pid}/{k}"] = v
    token = f"{state['epoch']}-{time.time_ns()}"
    meta = dict(state)
    meta["token"] = token
    meta["optimizer"] = {"param_groups": opt["param_groups"], "scalars": opt_scalars}
    meta["scaler"] = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
    with atomic_path(run / "checkpoint.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"token": token, CHECKPOINT_META_KEY: json.dumps(meta)})
    write_json(run / "checkpoint.json", meta)


def load_checkpoint(run: Path, model, optimizer, scaler, ema=None) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(run / "checkpoint.safetensors"), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(run / "checkpoint.safetensors"))
        token = header.get("token")
        # The header's own copy is consistent with the tensors by construction; checkpoint.json
        # may lag one epoch behind it after a kill between the two writes.
        embedded = header.get(CHECKPOINT_META_KEY)
        meta = json.loads(embedded) if embedded else json.loads((run / "checkpoint.json").read_text())
    except Exception as e:  # any damage: missing file, bad JSON, bad safetensors header
        raise PixelwiseError(
            f"{run}: checkpoint cannot be read ({e.__class__.__name__}); it cannot be resumed"
        ) from None
    if token != meta.get("token"):
        raise PixelwiseError(
            f"{run}: checkpoint.json and checkpoint.safetensors are from different epochs (interrupted write); "
            "start again with --overwrite"
        )
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")}, strict=True)
    if ema is not None:  # a resumed run keeps its own config, so an EMA run's checkpoint holds the average
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema/")}, strict=True)
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, pid, name = k.split("/", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["optimizer"]["scalars"].items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return meta


# ----------------------------------------------------------------------------- training


def _log(run: Path, line: str, echo=True) -> None:
    if echo:
        tqdm.write(line)
    with open(run / "train.log", "a") as f:
        f.write(line + "\n")


@torch.no_grad()
def run_validation(
    model,
    loader,
    criterion,
    num_classes,
    ignore_index,
    device,
    amp_dtype,
    channels_last,
    ctx: distributed.DistContext | None = None,
) -> tuple[float, ConfusionMatrix]:
    """Mean loss per image (each batch's loss weighted by its images) and the dataset-level confusion matrix.

    In a process group each process scores its own shard of the split (``ShardSampler``: no
    sample twice) and the matrix and the loss sums are added over all processes, so every
    process returns the figures of the whole split. ``model`` must be the bare module, not the
    DDP wrapper, whose forward would start collectives that shards of unequal length cannot match.
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index)
    total, images = 0.0, 0
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        total += float(criterion(logits.float(), y)) * x.shape[0]
        images += x.shape[0]
        cm.update(logits.argmax(1), y)
    if ctx is not None and ctx.world_size > 1:
        cm.all_reduce()
        total, images = ctx.all_reduce_sum([total, images])
    return total / max(1, images), cm


def train(
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **overrides,
) -> TrainResult:
    """Train a model on a data set in the pixelwise folder layout; returns where it went and how it did.

    ``pixelwise.train(data="DATA", out="runs/x", epochs=20)`` is the same as
    ``pixelwise train DATA --out runs/x --epochs 20``. With ``resume=True`` the configuration is
    read back from the run directory and training continues after the last finished epoch.

    Started by ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK in the environment), every process
    calls this and trains its shard with DistributedDataParallel; see :mod:`pixelwise.distributed`.
    """
    if config is None and overrides.get("budget") and "keep" not in overrides:
        # train(data=..., budget="20m", crop_size=256): what is passed besides the budget is kept.
        overrides["keep"] = sorted(set(overrides) - {"data", "out", "budget", "device", "num_workers", "seed"})
    if isinstance(overrides.get("budget"), str):
        from .planner import parse_budget

        overrides["budget"] = parse_budget(overrides["budget"])
    config = (
        TrainConfig(**overrides)
        if config is None
        else (TrainConfig.from_dict({**config.to_dict(), **overrides}) if overrides else config)
    )
    ctx = distributed.setup(config.device)
    try:
        return _train(config, ctx, resume, overwrite, progress)
    finally:
        if ctx is not None:
            ctx.close()


RUNTIME_OPTIONS = ("out", "device", "num_workers")  # may differ between a run and its resumption


def _restart_resumes(config: TrainConfig, resume: bool, overwrite: bool) -> tuple[bool, bool]:
    """(resume, overwrite) for this start; after a torchrun restart, continue this same run.

    When torchrun restarts the worker group (``--max-restarts``), every process runs the same
    command again. If ``--out`` holds a run with the same options (``config.yaml``, runtime
    options aside), it is this command's own run: it resumes from its checkpoint, or, when the
    failure came before the first checkpoint, starts again. Otherwise nothing changes.
    """
    if resume or not config.out or distributed.restart_count() == 0:
        return resume, overwrite
    run = Path(config.out)
    try:
        saved = TrainConfig.from_dict(yaml.safe_load((run / "config.yaml").read_text())).to_dict()
    except (OSError, yaml.YAMLError, PixelwiseError, TypeError, AttributeError):
        return resume, overwrite
    mine = config.to_dict()
    if any(saved.get(k) != mine.get(k) for k in set(saved) | set(mine) if k not in RUNTIME_OPTIONS):
        return resume, overwrite
    if (run / "checkpoint.json").is_file() or (run / "checkpoint.safetensors").is_file():
        return True, overwrite
    return False, True


def _prepare_run_dir_on_main(
    ctx: distributed.DistContext | None, config: TrainConfig, resume: bool, overwrite: bool
) -> tuple[Path, bool]:
    """:func:`prepare_run_dir` on rank 0 only; every process gets the path and whether it resumes (or the error)."""
    resume, overwrite = (
        _restart_resumes(config, resume, overwrite) if ctx is None or ctx.is_main else (resume, overwrite)
    )
    if ctx is None or ctx.world_size == 1:
        return prepare_run_dir(config.out, resume, overwrite), resume
    reply = ""
    if ctx.is_main:
        try:
            reply = ("resume:" if resume else "new:") + str(prepare_run_dir(config.out, resume, overwrite))
        except PixelwiseError as e:
            reply = "error:" + str(e)
    reply = ctx.broadcast_text(reply)
    kind, _, text = reply.partition(":")
    if kind == "error":
        raise PixelwiseError(text)
    return Path(text), kind == "resume"


def _train(
    config: TrainConfig, ctx: distributed.DistContext | None, resume: bool, overwrite: bool, progress: bool
) -> TrainResult:
    run_clock = time.perf_counter()  # a --budget covers everything from here
    main = ctx is None or ctx.is_main
    progress = progress and main
    asked_resume = resume
    if not 0.0 <= config.class_crops <= 1.0:
        raise PixelwiseError(
            f"--class-crops {config.class_crops}: the share must be between 0 and 1 (e.g. 0.5); 0 = off"
        )
    if not 0.0 <= config.ema < 1.0:
        raise PixelwiseError(f"--ema {config.ema}: the decay must be at least 0 and below 1 (e.g. 0.999); 0 = off")
    if not resume and config.data and not Path(config.data).is_dir():
        # Before the run directory is made, so a typo leaves no empty run behind.
        raise PixelwiseError(f"{config.data}: data folder not found; give the folder that holds the data set")
    run, resume = _prepare_run_dir_on_main(ctx, config, resume, overwrite)
    if resume:
        saved = yaml.safe_load((run / "config.yaml").read_text())
        keep_runtime = {"device": config.device, "num_workers": config.num_workers}
        config = TrainConfig.from_dict({**saved, **keep_runtime})
    config.out = str(run)
    if not config.data:
        raise PixelwiseError("no data folder given; pass DATA (a folder with images/ and masks/)")
    if config.epochs < 1 or config.batch_size < 1 or config.crop_size < 8:
        raise PixelwiseError("--epochs and --batch-size must be at least 1 and --crop-size at least 8")

    ctx = ctx or distributed.DistContext(resolve_device(config.device))
    device, world, rank = ctx.device, ctx.world_size, ctx.rank
    if config.batch_size % world:
        raise PixelwiseError(
            f"--batch-size {config.batch_size} is the global batch and must split evenly over the {world} processes; "
            f"use a multiple of {world}, e.g. {world * max(1, config.batch_size // world)}"
        )
    sync_bn = config.sync_bn and world > 1
    if sync_bn and device.type != "cuda":
        raise PixelwiseError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm does not run on CPU); drop --sync-bn")
    batch_per_process = config.batch_size // world
    torch.manual_seed(config.seed)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    data = open_dataset(
        config.data,
        config.format,
        config.encoding,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        classes_file=config.classes_file,
        resize_masks=config.resize_masks,
        skip_bad=config.skip_bad,
        max_pixels=config.max_pixels,
    )
    classes: ClassInfo = data.classes
    train_samples, val_samples = data.splits["train"], data.splits["val"]
    ignore = classes.ignore_index
    plan = None
    if config.budget > 0 and not resume:
        if ctx.enabled:
            raise PixelwiseError("--budget plans for one process; under torchrun give the options explicitly")
        plan, config = _plan_for_budget(config, data, device, run_clock)

    model_cfg = ModelConfig(
        arch=config.arch,
        encoder=config.encoder,
        num_classes=classes.num_classes,
        dropout=config.dropout,
        kwargs=dict(config.model_kwargs),
    )
    model = build_model(model_cfg, None if resume else config.pretrained).to(device)
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # ddp_model runs the training steps (gradients averaged over processes); model is the bare
    # network for validation and saving (same parameters, keys without the "module." prefix).
    ddp_model = model
    if ctx.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    weights = None
    if config.class_weights:
        method = "median" if config.class_weights == "auto" else config.class_weights
        weights = torch.as_tensor(
            class_weights_from_counts(data.report.class_pixels, method), dtype=torch.float32, device=device
        )
    criterion = build_loss(config.loss, ignore_index=ignore, class_weights=weights)

    cache = config.cache and _fits_in_cache(data.report)
    tf = train_transform(
        config.crop_size,
        ignore,
        config.scale_range,
        config.hflip,
        config.vflip,
        config.color_jitter,
        class_crops=config.class_crops,
    )
    train_ds = SeededDataset(SegmentationDataset(train_samples, tf, cache=cache))
    # Rank r takes positions r, r + world, ... of the epoch's permutation, so global batch k holds
    # exactly the samples of batch k in one process; each sample's augmentation seed does not
    # depend on the rank. (DistributedSampler semantics: disjoint shards, set_epoch reshuffles.)
    sampler = SeededSampler(len(train_ds), config.seed, num_replicas=world, rank=rank)
    workers = _auto_workers(config.num_workers, ctx.local_world_size)
    drop_last = len(train_ds) > config.batch_size  # a batch of one breaks BatchNorm statistics
    loader_kw = dict(num_workers=workers, pin_memory=device.type == "cuda", collate_fn=pad_collate(ignore))
    if workers > 0:
        loader_kw.update(persistent_workers=True, prefetch_factor=4)
    train_loader = DataLoader(train_ds, batch_size=batch_per_process, sampler=sampler, drop_last=drop_last, **loader_kw)
    val_loader = None
    if val_samples:
        val_ds = SegmentationDataset(val_samples, eval_transform(), cache=cache)
        val_loader = DataLoader(
            val_ds,
            batch_size=batch_per_process,
            sampler=distributed.ShardSampler(len(val_ds), world, rank),
            **loader_kw,
        )

    # The number of global batches of one process; a rank's padded shard may hold one more.
    global_steps = len(train_ds) // config.batch_size if drop_last else math.ceil(len(train_ds) / config.batch_size)
    steps_per_epoch = min(len(train_loader), global_steps)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    total_steps = steps_per_epoch * config.epochs
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total_steps // 2)

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # The averaged weights (torch.optim.swa_utils, buffers averaged too) are what is validated and
    # saved as the model; the optimizer keeps training the raw weights.
    ema = (
        torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema), use_buffers=True
        )
        if config.ema > 0
        else None
    )
    eval_model = ema.module if ema is not None else model
    amp_dtype = amp_dtype_for(device, config.amp)
    use_amp = amp_dtype is not None
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype == torch.float16)

    start_epoch, history, best, best_epoch, since_best = 0, [], -1.0, 0, 0
    best_metrics = None
    if resume:
        ck = load_checkpoint(run, model, optimizer, scaler, ema)
        start_epoch, history = ck["epoch"], ck["history"]
        best, best_epoch, since_best, best_metrics = (
            ck["best_miou"],
            ck["best_epoch"],
            ck["since_best"],
            ck.get("best_metrics"),
        )
        if start_epoch >= config.epochs or ck.get("stopped_early"):
            if main:
                tqdm.write(f"{run}: already finished ({start_epoch} epochs); nothing to resume")
            return TrainResult(run, best_epoch, best_metrics, history, bool(ck.get("stopped_early")))
    elif main:
        write_text(run / "config.yaml", CONFIG_HEADER + yaml.safe_dump(config.to_dict(), sort_keys=False))
        if plan is not None:
            write_json(run / "plan.json", plan.to_dict())

    meta_base = Bundle(
        model=model_cfg,
        classes=classes,
        normalization=Normalization(IMAGENET_MEAN, IMAGENET_STD),
        training=TrainingSummary(
            config=config.to_dict(),
            device=str(device),
            amp=str(amp_dtype) if amp_dtype else None,
            processes=world,
            batch_per_process=batch_per_process,
            global_batch=config.batch_size,
        ),
        data={
            "root": str(Path(config.data).resolve()),
            "train_images": len(train_samples),
            "val_images": len(val_samples),
            "class_pixels": data.report.class_pixels.tolist(),
            "format": data.format,
            "encoding": data.spec.describe(),
            "skipped": list(data.skipped),
        },
    )
    header = (
        f"run {run} | {describe(model)} | {device}{' ' + str(amp_dtype).replace('torch.', '') if amp_dtype else ''} | "
        f"train {len(train_samples)} / val {len(val_samples)} images | {classes.num_classes} classes | "
        f"batch {config.batch_size} | lr {config.lr:g} | {config.epochs} epochs x {steps_per_epoch} steps | workers {workers}"
    )
    if ctx.enabled:
        header += (
            f"\ndistributed: {world} processes ({ctx.backend}), global batch {config.batch_size} = {world} x "
            f"{batch_per_process} per process, lr {config.lr:g} for the global batch, "
            f"BatchNorm {'synchronised' if sync_bn else 'per process'}"
        )
    if resume and not asked_resume:
        header += f"\ntorchrun restart {distributed.restart_count()}: resuming after epoch {start_epoch}"
    if config.time_limit > 0:
        header += (
            f"\ntraining stops {config.time_limit:.0f} s after it starts (validations included) or after "
            f"{config.epochs} epochs, whichever comes first; the learning rate follows the one further along"
        )
    if main:
        for line in data.notes:
            _log(run, f"data: {line}", echo=progress)
        for w in data.warnings:
            _log(run, f"data warning: {w.message()}", echo=progress)
        if data.skipped:
            _log(run, f"data: --skip-bad left out {len(data.skipped)} files:", echo=progress)
            for item in data.skipped:
                _log(run, f"  skipped: {item}", echo=progress)
        if plan is not None:
            _log(run, plan.summary(), echo=progress)
        _log(run, header, echo=progress)

    stopped_early = out_of_time = False
    run_start = time.perf_counter()
    steps_done = 0
    # On the clock: the loop's wall time so far (a resumed run counts its earlier epochs).
    clock_before = sum(r.get("seconds", 0.0) for r in history)
    loop_start = last_save = time.perf_counter()
    validations_done = sum(1 for r in history if "val_loss" in r)

    def clock_share() -> float:
        return (clock_before + time.perf_counter() - loop_start) / config.time_limit

    try:
        for epoch in range(start_epoch, config.epochs):
            sampler.set_epoch(epoch)
            # Dropout and other in-model randomness: seeded per epoch (and per rank), so resume is exact.
            torch.manual_seed(derive_seed(config.seed, epoch, 3, *([rank] if rank else [])))
            model.train()
            t0 = time.perf_counter()
            loss_sum, seen = 0.0, 0
            bar = tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                unit="batch",
                disable=not progress,
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
            )
            for step, (x, y) in enumerate(train_loader):
                if step >= steps_per_epoch:
                    break
                distributed.fail_point(rank, epoch + 1, step + 1)
                global_step = epoch * steps_per_epoch + step
                if config.time_limit > 0:
                    # On the clock: warm-up and decay follow the share of the training time used.
                    share = clock_share()
                    if share >= 1.0:
                        out_of_time = True
                        break
                    # On a machine faster than planned the epochs run out first: follow the steps then,
                    # so the decay still reaches its end.
                    share = max(share, global_step / max(1, total_steps))
                    lr = config.lr * lr_factor(
                        int(share * 10000), 10000, int(TIME_WARMUP_SHARE * 10000), config.schedule
                    )
                else:
                    lr = config.lr * lr_factor(global_step, total_steps, warmup, config.schedule)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                x = x.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    logits = ddp_model(x)
                loss = criterion(logits.float(), y)
                # Summed over processes, so all see the same value and stop together on a NaN.
                step_loss, step_images = ctx.all_reduce_sum([float(loss.detach()) * x.shape[0], x.shape[0]])
                if not math.isfinite(step_loss):
                    raise PixelwiseError(
                        f"loss became {step_loss / step_images} at epoch {epoch + 1}, step {step + 1}; lower --lr or check the data"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    ema.update_parameters(model)
                loss_sum += step_loss
                seen += int(step_images)
                steps_done += 1
                if progress:
                    el = time.perf_counter() - t0
                    rate = seen / el if el > 0 else 0.0
                    left_steps = total_steps - (global_step + 1)
                    per_step = (time.perf_counter() - run_start) / steps_done
                    bar.set_postfix_str(
                        f"loss {loss_sum / seen:.4f} | {rate:.1f} img/s | run ETA {_hms(left_steps * per_step)}"
                    )
                    bar.update(1)
            bar.close()
            train_seconds = time.perf_counter() - t0
            if config.time_limit > 0 and clock_share() >= 1.0:
                out_of_time = True
            row = {
                "epoch": epoch + 1,
                "train_loss": round(loss_sum / max(1, seen), 6),
                "lr": lr,
                "images_per_s": round(seen / train_seconds, 2) if train_seconds > 0 else None,
                "train_seconds": round(train_seconds, 3),
            }
            improved = False
            if config.time_limit > 0 and config.validations > 0:  # at evenly spaced shares of the time, and at the end
                due = out_of_time or clock_share() >= (validations_done + 1) / config.validations
            else:
                due = out_of_time or (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs
            if val_loader is not None and due:
                validations_done += 1
                val_loss, cm = run_validation(
                    eval_model,
                    val_loader,
                    criterion,
                    classes.num_classes,
                    ignore,
                    device,
                    amp_dtype,
                    channels_last,
                    ctx=ctx,
                )
                m = cm.compute(classes.names)
                row.update(
                    val_loss=round(val_loss, 6),
                    val_miou=m["miou"],
                    val_mean_dice=m["mean_dice"],
                    val_pixel_accuracy=m["pixel_accuracy"],
                )
                score = m["miou"] if m["miou"] is not None else 0.0
                if score > best:
                    best, best_epoch, best_metrics, improved, since_best = score, epoch + 1, m, True, 0
                else:
                    since_best += 1
            elif val_loader is None:
                best_epoch, improved = epoch + 1, True  # no validation split: keep the latest
            row["seconds"] = round(time.perf_counter() - t0, 2)
            history.append(row)

            if config.patience and since_best >= config.patience:
                stopped_early = True
            if out_of_time:
                stopped_early = True  # finished: the time is used up (a resume has nothing left to do)
            if main:
                msg = (
                    f"epoch {epoch + 1}/{config.epochs}  loss {row['train_loss']:.4f}  "
                    + (
                        f"val loss {row['val_loss']:.4f}  val mIoU {100 * (row['val_miou'] or 0):.2f}  "
                        if "val_loss" in row
                        else ""
                    )
                    + f"{row['images_per_s']} img/s  {row['seconds']:.1f}s"
                    + ("  *best*" if improved and val_loader else "")
                )
                # On the clock, tiny epochs would spend the time writing files: save when validated,
                # at the end, or a minute after the last save (the most a crash can lose).
                save_now = (
                    config.time_limit <= 0
                    or improved
                    or out_of_time
                    or stopped_early
                    or "val_loss" in row
                    or time.perf_counter() - last_save >= 60
                )
                with distributed.finish_writes_first():
                    if save_now:
                        last_save = time.perf_counter()
                        _save_epoch(
                            run,
                            model,
                            optimizer,
                            scaler,
                            meta_base,
                            history,
                            epoch,
                            best,
                            best_epoch,
                            since_best,
                            best_metrics,
                            stopped_early,
                            improved,
                            ema,
                        )
                    _log(run, msg, echo=progress)
                    if out_of_time:
                        _log(
                            run,
                            f"time limit reached after {clock_before + time.perf_counter() - loop_start:.0f} s of training; "
                            f"{time.perf_counter() - run_clock:.0f} s since the start",
                            echo=progress,
                        )
                    elif stopped_early:
                        _log(
                            run,
                            f"early stop: no better val mIoU for {config.patience} validations; best epoch {best_epoch}",
                            echo=progress,
                        )
            if stopped_early:
                break
        # No process returns before rank 0 has written the last epoch's files.
        ctx.barrier()
    except KeyboardInterrupt:
        done = history[-1]["epoch"] if history else start_epoch
        if main:
            tqdm.write(
                f"\ninterrupted; {run} holds {done} finished epochs. Continue with: pixelwise train --resume --out {run}"
            )
        raise
    return TrainResult(run, best_epoch, best_metrics, history, stopped_early)


TIME_WARMUP_SHARE = 0.03  # on the clock: linear warm-up over this share of the training time


def _plan_for_budget(config: TrainConfig, data, device, run_clock: float):
    """Measure this machine, choose the recipe for ``config.budget`` and return (plan, new config)."""
    from . import planner

    fp = planner.Fingerprint.from_data(data)
    candidates = planner.CANDIDATES
    crops = planner.usable_crops(fp)
    if "crop_size" in config.keep:
        crops = [config.crop_size]
    if config.budget < 300:  # short budgets: no time to measure big models
        candidates = candidates[:1]
        crops = crops[-2:] if "crop_size" not in config.keep else crops
    if any(k in config.keep for k in ("arch", "encoder", "model_kwargs")):
        candidates = [
            planner.Candidate("given", config.arch, config.encoder, dict(config.model_kwargs), config.batch_size)
        ]
    per_config = min(2.0, max(0.3, 0.03 * config.budget / max(1, len(candidates) * len(crops))))
    overrides = {k: getattr(config, k) for k in config.keep if hasattr(config, k)}

    def wanted(cand, crop, measured, evals) -> bool:
        return planner.worth_measuring(
            fp, config.budget, time.perf_counter() - run_clock, measured, evals, overrides, candidates, cand, crop
        )

    # The models built for measuring draw from the random generators; forking them keeps the trained
    # model's initialisation the one --seed gives, however many configurations were measured.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        measurements, evals = planner.measure(
            data,
            device,
            amp_dtype_for(device, config.amp),
            crops,
            per_config,
            candidates,
            max_seconds=0.06 * config.budget,
            wanted=wanted,
        )
    plan = planner.make_plan(
        fp, config.budget, time.perf_counter() - run_clock, measurements, evals, overrides, candidates
    )
    changes = {k: v for k, v in plan.choices.items() if k in TrainConfig.__dataclass_fields__}
    if "scale_range" in changes:
        changes["scale_range"] = tuple(changes["scale_range"])
    # The clock, not the epoch count, ends a planned run: leave room for a faster machine than measured.
    changes["epochs"] = max(1, int(changes["epochs"] * 3))
    return plan, TrainConfig.from_dict({**config.to_dict(), **changes})


def _save_epoch(
    run: Path,
    model,
    optimizer,
    scaler,
    meta_base: Bundle,
    history: list[dict],
    epoch: int,
    best: float,
    best_epoch: int,
    since_best: int,
    best_metrics: dict | None,
    stopped_early: bool,
    improved: bool,
    ema=None,
) -> None:
    """Write what one finished epoch leaves in the run directory (rank 0 only).

    With ``ema`` the bundle holds the averaged weights (the ones validated); the checkpoint holds both.
    """
    if improved:
        meta = replace(
            meta_base,
            training=replace(meta_base.training, epoch=epoch + 1, best_epoch=best_epoch),
            metrics={"val": best_metrics} if best_metrics else {},
        )
        save_bundle(run, ema.module if ema is not None else model, meta)
    save_checkpoint(
        run,
        model,
        optimizer,
        scaler,
        {
            "epoch": epoch + 1,
            "history": history,
            "best_miou": best,
            "best_epoch": best_epoch,
            "since_best": since_best,
            "best_metrics": best_metrics,
            "stopped_early": stopped_early,
        },
        ema,
    )
    _write_csv(run / "metrics.csv", history)
    from ..viz import plot_training_curves

    plot_training_curves(run / "metrics.csv", run / "curves.png")


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
