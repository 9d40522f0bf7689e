"""The training loop: seeded, resumable, checkpointed after every epoch, best model kept.

:func:`train` builds a :class:`Trainer` and runs it. The run directory it fills is described in
:mod:`pixelwise.training.rundir`; every file is written atomically, so Ctrl-C or a crash at any
moment leaves a run that ``--resume`` continues from the last finished epoch. Randomness is drawn
from seeds derived from (seed, epoch, sample) (:mod:`pixelwise.training.sampling`), so a resumed
run repeats the uninterrupted one, whatever the number of loader workers.

Under ``torchrun`` the same loop runs in every process with DistributedDataParallel (see
:mod:`pixelwise.training.distributed`): ``batch_size`` is the global batch, split evenly over the
processes, and each global batch holds the same samples with the same augmentation as in one
process, so the result matches a one-process run with the same options. Rank 0 alone writes
the run directory.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from ..bundle import Bundle, InputSpec, Normalization, TrainingSummary, save_bundle
from ..data import open_dataset
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..devices import resolve_device
from ..errors import PixelwiseError
from ..fileio import write_json
from ..metrics import ConfusionMatrix
from ..models import ModelConfig, build_model, describe
from ..predict.backends import TorchMember
from ..predict.engine import resize_outputs
from . import distributed, rundir
from .config import TrainConfig, check_task_data
from .loaders import build_loaders, to_device
from .sampling import derive_seed
from .schedule import Clock, clock_lr, lr_factor
from .state import TrainingRecord, load_checkpoint, save_checkpoint
from .step import build_criterion, build_train_step, uses_channels_last


@dataclass
class TrainResult:
    """Where a run went and how it did: ``best_metrics`` are the validation metrics of ``best_epoch``."""

    run_dir: Path
    best_epoch: int
    best_metrics: dict | None
    history: list[dict]
    stopped_early: bool = False


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
    max_side: int = 0,
    normalization: Normalization | None = None,
) -> tuple[float, ConfusionMatrix]:
    """Mean loss per image (each batch's loss weighted by its images) and the dataset-level confusion matrix.

    Batches hold targets (N, H, W) or, for instance/panoptic models, (N, 2, H, W): the loss takes the
    whole target and all output channels, the matrix scores the first ``num_classes`` channels
    against the labels (channel 0).

    With a working resolution (``max_side``; the loader's batches are then lists, see
    :func:`~pixelwise.training.loaders.build_loaders`) the network runs as ``pixelwise evaluate`` runs
    it: the uint8 image at its working size, normalised (``normalization``) by the PyTorch inference
    member in float32 (no autocast), the class logits resized back (bilinear) to the mask's own size,
    where they are scored, so the matrix is the one evaluate gives for the same weights (as long as the
    working image is below evaluate's tiling threshold, 2048 x 2048 pixels by default: evaluate tiles larger
    ones, validation does not). The loss is taken at the working
    size against the targets resized there (nearest), as in training.

    In a process group each process scores its own shard of the split (``ShardSampler``: no
    sample twice) and the matrix and the loss sums are added over all processes, so every
    process returns the figures of the whole split. ``model`` must be the bare module, not the
    DDP wrapper, whose forward would start collectives that shards of unequal length cannot match.
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index)
    total, images = 0.0, 0
    if max_side:
        norm = normalization or Normalization(IMAGENET_MEAN, IMAGENET_STD)
        member = TorchMember(model, norm.mean, norm.std, device, num_classes, max_side=max_side)
    for x, y in _validation_batches(loader):
        x, y = to_device(x, y, device)
        # The working-resolution path runs in float32, as `pixelwise evaluate` does by default.
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None and not max_side):
            if max_side:
                logits = member.logits(x.float().div_(255.0))
            else:
                logits = model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
        target = y if not max_side else TF.resize(tv_tensors.Mask(y), list(logits.shape[-2:])).as_subclass(torch.Tensor)
        total += float(criterion(logits.float(), target)) * x.shape[0]
        images += x.shape[0]
        scored = resize_outputs(logits[:, :num_classes].float(), tuple(y.shape[-2:]), num_classes)
        cm.update(scored.argmax(1), y[:, 0] if y.dim() == 4 else y)
    if ctx is not None and ctx.world_size > 1:
        cm.all_reduce()
        total, images = ctx.all_reduce_sum([total, images])
    return total / max(1, images), cm


def _validation_batches(loader):
    """The loader's batches as (images, targets) tensors: padded batches as they are; list batches
    (working resolution: every image and mask at its own size) split into groups of one image size
    and one mask size, each stacked."""
    for x, y in loader:
        if isinstance(x, torch.Tensor):
            yield x, y
            continue
        groups: dict[tuple, list[int]] = {}
        for i, (img, target) in enumerate(zip(x, y)):
            groups.setdefault((tuple(img.shape), tuple(target.shape)), []).append(i)
        for idx in groups.values():
            yield torch.stack([x[i] for i in idx]), torch.stack([y[i] for i in idx])


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
    calls this and trains its shard with DistributedDataParallel; see :mod:`pixelwise.training.distributed`.
    """
    config = _with_overrides(config, overrides)
    ctx = distributed.setup(config.device)
    try:
        return Trainer(config, ctx, resume=resume, overwrite=overwrite, progress=progress).run()
    finally:
        if ctx is not None:
            ctx.close()


def _with_overrides(config: TrainConfig | None, overrides: dict) -> TrainConfig:
    """``config`` (or the defaults) with the keyword options of :func:`train` applied."""
    if config is None and overrides.get("budget") and "keep" not in overrides:
        # train(data=..., budget="20m", crop_size=256): what is passed besides the budget is kept.
        overrides["keep"] = sorted(set(overrides) - {"data", "out", "budget", "device", "num_workers", "seed"})
    if isinstance(overrides.get("budget"), str):
        from .planner import parse_budget

        overrides["budget"] = parse_budget(overrides["budget"])
    if config is None:
        return TrainConfig(**overrides)
    return TrainConfig.from_dict({**config.to_dict(), **overrides}) if overrides else config


def _check_data_folder(data: str) -> None:
    if not data:
        raise PixelwiseError("no data folder given; pass DATA (a folder with images/ and masks/)")
    if not Path(data).is_dir():
        raise PixelwiseError(f"{data}: data folder not found; give the folder that holds the data set")


def _check_processes(config: TrainConfig, ctx: distributed.DistContext) -> None:
    """The checks that depend on the number of processes and their device."""
    world = ctx.world_size
    if config.batch_size % world:
        raise PixelwiseError(
            f"--batch-size {config.batch_size} is the global batch and must split evenly over the {world} processes; "
            f"use a multiple of {world}, e.g. {world * max(1, config.batch_size // world)}"
        )
    if config.sync_bn and world > 1 and ctx.device.type != "cuda":
        raise PixelwiseError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm does not run on CPU); drop --sync-bn")


class Trainer:
    """One training run: :meth:`run` opens the run directory and the data, builds the model and
    its :class:`~pixelwise.training.step.TrainStep`, then trains epoch by epoch.

    ``ctx`` is the process group from :func:`pixelwise.training.distributed.setup`, None for one
    plain process. Only rank 0 (``main``) writes files and shows progress.
    """

    def __init__(
        self,
        config: TrainConfig,
        ctx: distributed.DistContext | None = None,
        *,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
    ):
        self.config, self.ctx = config, ctx
        self.asked_resume = self.resume = resume
        self.overwrite = overwrite
        self.main = ctx is None or ctx.is_main
        self.progress = progress and self.main
        self.plan = None
        self.record = TrainingRecord()
        self.clock = Clock()
        self.start_epoch = 0
        self.lr: float | None = None
        self.out_of_time = False

    # ------------------------------------------------------------------------- setting up

    def run(self) -> TrainResult:
        """Train to the last epoch, the time limit or early stopping; returns the best epoch and the history."""
        self.clock = Clock()  # a --budget covers everything from here
        self._open_run()
        self._open_data()
        self._build()
        if self.resume and self._restore():
            return self._result()
        self._make_run()
        self.bundle_base = self._bundle_base()
        if self.main:
            self._log_start()
        return self._fit()

    def _open_run(self) -> None:
        """Check the options and where the run goes (nothing is written yet), choose the device, seed.

        The run directory is made by :meth:`_make_run` once the data is read and the model built,
        so a refused start leaves no empty run behind.
        """
        c = self.config
        if not self.resume:
            c.validate()
            _check_data_folder(c.data)
            c.data = os.path.abspath(c.data)  # config.yaml keeps absolute paths: a moved run finds its data
        self.run_dir, self.kind, self.overwrite = rundir.check_run_dir_on_main(self.ctx, c, self.resume, self.overwrite)
        self.resume = self.kind == rundir.RESUME
        if self.kind != rundir.NEW:  # the saved options, checked as a new run's are
            self.config = rundir.read_config(self.run_dir, c)
        config = self.config
        config.out = str(self.run_dir)
        self.log = rundir.RunLog(self.run_dir, echo=self.progress)
        self.ctx = ctx = self.ctx or distributed.DistContext(resolve_device(config.device))
        _check_processes(config, ctx)
        torch.manual_seed(config.seed)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _make_run(self) -> None:
        """Make the run directory and write config.yaml (and plan.json) on rank 0; a failure leaves no empty folder.

        A resumed run's config.yaml is written again: the folder and its data may have moved since.
        """

        def work() -> str:
            created = False
            try:
                created = rundir.make_run_dir(self.run_dir, self.kind, self.overwrite)
                rundir.write_config(self.run_dir, self.config, self.pretrained_source)
                if self.plan is not None:
                    self.plan.pretrained = self.pretrained_source
                    write_json(self.run_dir / "plan.json", self.plan.to_dict())
            except BaseException:
                if created:
                    rundir.remove_if_empty(self.run_dir)
                raise
            return ""

        rundir.on_main(self.ctx, work)

    def _open_data(self) -> None:
        """Read and check the data set; with a budget (and not resuming), plan the recipe for it."""
        c = self.config
        self.data = open_dataset(
            c.data,
            c.format,
            c.encoding,
            val_fraction=c.val_fraction,
            test_fraction=c.test_fraction,
            seed=c.seed,
            classes_file=c.classes_file,
            resize_masks=c.resize_masks,
            skip_bad=c.skip_bad,
            max_pixels=c.max_image_pixels,
            objects=c.task != "semantic",
        )
        check_task_data(c, self.data)
        if c.budget > 0 and self.kind == rundir.NEW:
            if self.ctx.enabled:
                raise PixelwiseError("--budget plans for one process; under torchrun give the options explicitly")
            from .planner import plan_for_budget

            self.plan, self.config = plan_for_budget(c, self.data, self.ctx.device, self.clock.run_start)

    def _build(self) -> None:
        """The model (wrapped in DDP under torchrun), the loss, the loaders and the training step."""
        c, ctx, device = self.config, self.ctx, self.ctx.device
        self.model_cfg = ModelConfig(
            arch=c.arch,
            encoder=c.encoder,
            num_classes=self.data.classes.num_classes,
            dropout=c.dropout,
            kwargs=dict(c.model_kwargs),
            task=c.task,
        )
        model = build_model(self.model_cfg, None if self.resume else c.pretrained).to(device)
        # What the weights started from (a resumed run reads it from its checkpoint).
        self.pretrained_source = getattr(model, "pretrained_source", None)
        self.pretrained_note = getattr(model, "pretrained_note", None)
        channels_last = uses_channels_last(c, device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if c.sync_bn and ctx.world_size > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # The DDP wrapper runs the training steps (gradients averaged over processes); the bare
        # model is validated and saved (same parameters, keys without the "module." prefix).
        forward = None
        if ctx.enabled:
            forward = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        classes = self.data.classes
        criterion = build_criterion(c, self.data.report.class_pixels, classes.ignore_index, device, classes.num_classes)
        self.loaders = build_loaders(c, self.data, ctx)
        self.step = build_train_step(model, criterion, c, device, channels_last=channels_last, forward=forward)
        self.total_steps = self.loaders.steps_per_epoch * c.epochs
        self.warmup = min(int(round(c.warmup_epochs * self.loaders.steps_per_epoch)), self.total_steps // 2)

    def _restore(self) -> bool:
        """Load the checkpoint; True when the run had already finished (nothing left to train)."""
        step = self.step
        ck = load_checkpoint(self.run_dir, step.model, step.optimizer, step.scaler, step.ema)
        self.start_epoch = ck["epoch"]
        self.pretrained_source = ck.get("pretrained", self.pretrained_source)
        self.record = TrainingRecord.from_checkpoint(ck)
        if self.start_epoch >= self.config.epochs or ck.get("stopped_early"):
            if self.main:
                tqdm.write(f"{self.run_dir}: already finished ({self.start_epoch} epochs); nothing to resume")
            return True
        return False

    def _bundle_base(self) -> Bundle:
        """The bundle metadata every saved model shares; epoch and metrics are filled in when saved."""
        c, ctx, data = self.config, self.ctx, self.data
        amp_dtype = self.step.amp_dtype
        return Bundle(
            model=self.model_cfg,
            classes=data.classes,
            normalization=Normalization(IMAGENET_MEAN, IMAGENET_STD),
            input=InputSpec(max_side=c.max_side),
            training=TrainingSummary(
                config=c.to_dict(),
                device=str(ctx.device),
                amp=str(amp_dtype) if amp_dtype else None,
                processes=ctx.world_size,
                batch_per_process=c.batch_size // ctx.world_size,
                global_batch=c.batch_size,
                pretrained=self.pretrained_source,
            ),
            data={
                "root": str(Path(c.data).resolve()),
                "train_images": len(data.splits["train"]),
                "val_images": len(data.splits["val"]),
                "class_pixels": data.report.class_pixels.tolist(),
                "format": data.format,
                "encoding": data.spec.describe(),
                "skipped": list(data.skipped),
            },
        )

    def _log_start(self) -> None:
        """train.log before the first epoch: what the data check found, the plan, the run's header."""
        data, log = self.data, self.log
        for line in data.notes:
            log(f"data: {line}")
        if self.pretrained_note and not self.resume:
            log(self.pretrained_note)
            if not self.progress:
                print(f"pixelwise: {self.pretrained_note}", file=sys.stderr)
        for w in data.warnings:
            log(f"data warning: {w.message()}")
        if data.skipped:
            log(f"data: --skip-bad left out {len(data.skipped)} files:")
            for item in data.skipped:
                log(f"  skipped: {item}")
        if self.plan is not None:
            log(self.plan.summary())
        log(self._header())

    def _header(self) -> str:
        c, ctx, data = self.config, self.ctx, self.data
        amp = self.step.amp_dtype
        header = (
            f"run {self.run_dir} | {describe(self.step.model)} | weights {self.pretrained_source or 'random'} | "
            f"{ctx.device}{' ' + str(amp).replace('torch.', '') if amp else ''} | "
            f"train {len(data.splits['train'])} / val {len(data.splits['val'])} images | "
            f"{data.classes.num_classes} classes{_task_words(c.task, data.classes)} | batch {c.batch_size} | lr {c.lr:g} | "
            f"{c.epochs} epochs x {self.loaders.steps_per_epoch} steps | workers {self.loaders.workers}"
        )
        if ctx.enabled:
            world, sync_bn = ctx.world_size, c.sync_bn and ctx.world_size > 1
            header += (
                f"\ndistributed: {world} processes ({ctx.backend}), global batch {c.batch_size} = {world} x "
                f"{c.batch_size // world} per process, lr {c.lr:g} for the global batch, "
                f"BatchNorm {'synchronised' if sync_bn else 'per process'}"
            )
        if self.resume and not self.asked_resume:
            header += f"\ntorchrun restart {distributed.restart_count()}: resuming after epoch {self.start_epoch}"
        if self.kind == rundir.RESTART:
            header += "\nno checkpoint yet (stopped before the first epoch ended): starting again from epoch 1"
        if c.time_limit > 0:
            header += (
                f"\ntraining stops {c.time_limit:.0f} s after it starts (validations included) or after "
                f"{c.epochs} epochs, whichever comes first; the learning rate follows the one further along"
            )
        return header

    # ------------------------------------------------------------------------- the loop

    def _fit(self) -> TrainResult:
        """The epochs, from the first one not finished; Ctrl-C says how to continue."""
        c, record = self.config, self.record
        # On the clock: the loop's wall time so far (a resumed run counts its earlier epochs).
        self.clock.start_loop(
            sum(r.get("seconds", 0.0) for r in record.history), sum(1 for r in record.history if "val_loss" in r)
        )
        try:
            for epoch in range(self.start_epoch, c.epochs):
                row = self._train_epoch(epoch)
                improved = self._validate_if_due(epoch, row)
                row["seconds"] = round(time.perf_counter() - self.epoch_start, 2)
                record.history.append(row)
                if c.patience and record.since_best >= c.patience:
                    record.stopped_early = True
                if self.out_of_time:
                    record.stopped_early = True  # finished: the time is used up (a resume has nothing left to do)
                if self.main:
                    self._finish_epoch(epoch, row, improved)
                if record.stopped_early:
                    break
            # No process returns before rank 0 has written the last epoch's files.
            self.ctx.barrier()
        except KeyboardInterrupt:
            done = record.history[-1]["epoch"] if record.history else self.start_epoch
            if self.main:
                tqdm.write(
                    f"\ninterrupted; {self.run_dir} holds {done} finished epochs. "
                    f"Continue with: pixelwise train --resume --out {self.run_dir}"
                )
            raise
        return self._result()

    def _result(self) -> TrainResult:
        r = self.record
        return TrainResult(self.run_dir, r.best_epoch, r.best_metrics, r.history, r.stopped_early)

    def _train_epoch(self, epoch: int) -> dict:
        """One epoch's optimizer steps (fewer when the time runs out); returns its history row, validation aside."""
        c, loaders, rank = self.config, self.loaders, self.ctx.rank
        loaders.sampler.set_epoch(epoch)
        # Dropout and other in-model randomness: seeded per epoch (and per rank), so resume is exact.
        torch.manual_seed(derive_seed(c.seed, epoch, 3, *([rank] if rank else [])))
        self.step.model.train()
        self.epoch_start = t0 = time.perf_counter()
        loss_sum, seen = 0.0, 0
        bar = self._progress_bar(epoch)
        for i, (x, y) in enumerate(loaders.train):
            if i >= loaders.steps_per_epoch:
                break
            distributed.fail_point(rank, epoch + 1, i + 1)
            global_step = epoch * loaders.steps_per_epoch + i
            lr = self._lr(global_step)
            if lr is None:
                self.out_of_time = True
                break
            self.lr = lr
            step_loss, step_images = self._step(x, y, lr, epoch, i)
            loss_sum += step_loss
            seen += int(step_images)
            self.clock.steps_done += 1
            if self.progress:
                self._show(bar, loss_sum, seen, time.perf_counter() - t0, global_step)
        bar.close()
        train_seconds = time.perf_counter() - t0
        if c.time_limit > 0 and self.clock.share(c.time_limit) >= 1.0:
            self.out_of_time = True
        return {
            "epoch": epoch + 1,
            # An epoch the clock ended before its first step trained nothing: no loss, no speed.
            "train_loss": round(loss_sum / seen, 6) if seen else None,
            "lr": self.lr,
            "images_per_s": round(seen / train_seconds, 2) if seen and train_seconds > 0 else None,
            "train_seconds": round(train_seconds, 3),
        }

    def _lr(self, global_step: int) -> float | None:
        """The learning rate of 0-based ``global_step``; None when the time limit is reached."""
        c = self.config
        if c.time_limit > 0:
            share = self.clock.share(c.time_limit)
            return None if share >= 1.0 else clock_lr(c.lr, c.schedule, share, global_step, self.total_steps)
        return c.lr * lr_factor(global_step, self.total_steps, self.warmup, c.schedule)

    def _step(self, x, y, lr: float, epoch: int, i: int) -> tuple[float, float]:
        """One training step at ``lr``; (loss x images, images) summed over the processes."""
        x, y = to_device(x, y, self.ctx.device)
        self.step.set_lr(lr)
        loss = self.step(x, y)
        # Summed over processes, so all see the same value and stop together on a NaN.
        step_loss, step_images = self.ctx.all_reduce_sum([float(loss) * x.shape[0], x.shape[0]])
        if not math.isfinite(step_loss):
            raise PixelwiseError(
                f"loss became {step_loss / step_images} at epoch {epoch + 1}, step {i + 1}; lower --lr or check the data"
            )
        return step_loss, step_images

    def _progress_bar(self, epoch: int):
        return tqdm(
            total=self.loaders.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            unit="batch",
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def _show(self, bar, loss_sum: float, seen: int, elapsed: float, global_step: int) -> None:
        rate = seen / elapsed if elapsed > 0 else 0.0
        eta = (self.total_steps - (global_step + 1)) * self.clock.seconds_per_step()
        bar.set_postfix_str(f"loss {loss_sum / seen:.4f} | {rate:.1f} img/s | run ETA {_hms(eta)}")
        bar.update(1)

    def _validate_if_due(self, epoch: int, row: dict) -> bool:
        """Validate when due (adding the scores to ``row``); True when this epoch is the best so far."""
        c, clock = self.config, self.clock
        last = epoch + 1 == c.epochs
        if c.time_limit > 0 and c.validations > 0:  # at evenly spaced shares of the time, and at the end
            due = last or self.out_of_time or clock.share(c.time_limit) >= (clock.validations_done + 1) / c.validations
        else:
            due = self.out_of_time or (epoch + 1) % c.val_every == 0 or last
        if self.loaders.val is None:
            self.record.best_epoch = epoch + 1  # no validation split: keep the latest
            return True
        if not due:
            return False
        clock.validations_done += 1
        classes, step = self.data.classes, self.step
        val_loss, cm = run_validation(
            step.eval_model,
            self.loaders.val,
            step.criterion,
            classes.num_classes,
            classes.ignore_index,
            self.ctx.device,
            step.amp_dtype,
            step.channels_last,
            ctx=self.ctx,
            max_side=c.max_side,
            normalization=self.bundle_base.normalization,
        )
        m = cm.compute(classes.names)
        row.update(
            val_loss=round(val_loss, 6),
            val_miou=m["miou"],
            val_mean_dice=m["mean_dice"],
            val_pixel_accuracy=m["pixel_accuracy"],
            **{f"val_iou_{r['index']}": r["iou"] for r in m["per_class"]},
        )
        return self.record.score(epoch + 1, m)

    def _finish_epoch(self, epoch: int, row: dict, improved: bool) -> None:
        """Rank 0: save the epoch's files when due and write its train.log lines, a SIGTERM held back meanwhile."""
        c, clock, record = self.config, self.clock, self.record
        # On the clock, tiny epochs would spend the time writing files: save when validated,
        # at the end, or a minute after the last save (the most a crash can lose).
        save_now = (
            c.time_limit <= 0
            or improved
            or self.out_of_time
            or record.stopped_early
            or "val_loss" in row
            or time.perf_counter() - clock.last_save >= 60
        )
        with distributed.finish_writes_first():
            if save_now:
                clock.last_save = time.perf_counter()
                self._save_epoch(epoch, improved)
            self.log(self._epoch_line(epoch, row, improved))
            if self.out_of_time:
                self.log(
                    f"time limit reached after {clock.loop_seconds():.0f} s of training; "
                    f"{clock.since_start():.0f} s since the start"
                )
            elif record.stopped_early:
                self.log(f"early stop: no better val mIoU for {c.patience} validations; best epoch {record.best_epoch}")

    def _epoch_line(self, epoch: int, row: dict, improved: bool) -> str:
        validated = (
            f"val loss {row['val_loss']:.4f}  val mIoU {100 * (row['val_miou'] or 0):.2f} %  "
            if "val_loss" in row
            else ""
        )
        trained = (
            f"loss {row['train_loss']:.4f}  " if row["train_loss"] is not None else "no training step (out of time)  "
        )
        speed = f"{row['images_per_s']} img/s  " if row["images_per_s"] is not None else ""
        return (
            f"epoch {epoch + 1}/{self.config.epochs}  "
            + trained
            + validated
            + speed
            + f"{row['seconds']:.1f}s"
            + ("  *best*" if improved and self.loaders.val else "")
        )

    def _save_epoch(self, epoch: int, improved: bool) -> None:
        """Write what one finished epoch leaves in the run directory (rank 0 only).

        With EMA the bundle holds the averaged weights (the ones validated); the checkpoint holds both.
        """
        base, record, step = self.bundle_base, self.record, self.step
        if improved:
            meta = replace(
                base,
                training=replace(base.training, epoch=epoch + 1, best_epoch=record.best_epoch),
                metrics={"val": record.best_metrics} if record.best_metrics else {},
            )
            save_bundle(self.run_dir, step.eval_model, meta)
        state = {**record.checkpoint_state(epoch + 1), "pretrained": self.pretrained_source}
        save_checkpoint(self.run_dir, step.model, step.optimizer, step.scaler, state, step.ema)
        rundir.write_metrics_csv(self.run_dir / "metrics.csv", record.history, self.data.classes.num_classes)
        from ..viz import plot_training_curves

        plot_training_curves(
            self.run_dir / "metrics.csv", self.run_dir / "curves.png", class_names=self.data.classes.names
        )


def _task_words(task: str, classes) -> str:
    """`` (task instance, things: car, person)`` for the run's header; empty for semantic runs."""
    if task == "semantic":
        return ""
    things = ", ".join(classes.names[i] for i in getattr(classes, "things", ()))
    return f" (task {task}, things: {things})"


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
