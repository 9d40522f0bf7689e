"""The run directory: making it, resuming it (also after a torchrun restart), config.yaml, metrics.csv, train.log.

A run directory holds::

    config.yaml                  the TrainConfig, so the run can be repeated exactly
    checkpoint.safetensors/.json the last finished epoch: weights, optimizer, history (resume)
    model.safetensors/.json      the bundle of the best epoch by validation mIoU (what users load)
    metrics.csv, curves.png      one row per epoch; loss and mIoU curves
    train.log                    one line per epoch
    plan.json                    with --budget: the planned recipe and its reasons
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from ..errors import PixelwiseError
from ..fileio import write_text
from . import distributed
from .config import TrainConfig

RUN_MARKERS = ("config.yaml", "checkpoint.json", "model.json")
# What --overwrite removes: the markers and every other file a run writes.
RUN_FILES = RUN_MARKERS + ("checkpoint.safetensors", "model.safetensors", "metrics.csv", "curves.png", "train.log")
CONFIG_HEADER = (
    "# pixelwise training configuration: `pixelwise train --resume --out RUN` continues it.\n"
    "# batch_size is the global batch (all processes together under torchrun, split evenly);\n"
    "# lr is the AdamW learning rate for that global batch, not scaled with the number of processes.\n"
)
RUNTIME_OPTIONS = ("out", "device", "num_workers")  # may differ between a run and its resumption
METRICS_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_miou",
    "val_mean_dice",
    "val_pixel_accuracy",
    "lr",
    "seconds",
    "images_per_s",
)


def prepare_run_dir(out: str, resume: bool, overwrite: bool) -> Path:
    """Create the run directory; refuse one that holds a run unless resuming or overwriting."""
    run = Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    holds_run = run.is_dir() and any((run / m).exists() for m in RUN_MARKERS)
    if resume:
        if not has_checkpoint(run):
            raise PixelwiseError(f"{run}: nothing to resume (no checkpoint.json); start it without --resume")
        return run
    if holds_run:
        if not overwrite:
            raise PixelwiseError(
                f"{run}: already holds a run; pass --resume to continue it, --overwrite to replace it, or choose another --out"
            )
        for name in RUN_FILES:
            (run / name).unlink(missing_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    return run


def has_checkpoint(run: Path) -> bool:
    return (run / "checkpoint.json").is_file() or (run / "checkpoint.safetensors").is_file()


def restart_resumes(config: TrainConfig, resume: bool, overwrite: bool) -> tuple[bool, bool]:
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
    if has_checkpoint(run):
        return True, overwrite
    return False, True


def prepare_run_dir_on_main(
    ctx: distributed.DistContext | None, config: TrainConfig, resume: bool, overwrite: bool
) -> tuple[Path, bool]:
    """:func:`prepare_run_dir` on rank 0 only; every process gets the path and whether it resumes (or the error)."""
    if ctx is None or ctx.is_main:
        resume, overwrite = restart_resumes(config, resume, overwrite)
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


def read_config(run: Path, runtime: TrainConfig) -> TrainConfig:
    """The saved ``config.yaml`` of ``run``, with the runtime options (device, loader processes) of ``runtime``."""
    saved = yaml.safe_load((run / "config.yaml").read_text())
    return TrainConfig.from_dict({**saved, "device": runtime.device, "num_workers": runtime.num_workers})


def write_config(run: Path, config: TrainConfig) -> None:
    """``config.yaml``: the configuration under a comment that says how to continue it."""
    write_text(run / "config.yaml", CONFIG_HEADER + yaml.safe_dump(config.to_dict(), sort_keys=False))


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    """``metrics.csv``: one row per epoch, empty cells where an epoch was not validated."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in METRICS_COLUMNS})
    write_text(path, buf.getvalue())


class RunLog:
    """``train.log``: every line is appended to the file and, with ``echo``, shown above the progress bar."""

    def __init__(self, run: Path, echo: bool = True):
        self.path, self.echo = run / "train.log", echo

    def __call__(self, line: str) -> None:
        if self.echo:
            tqdm.write(line)
        with open(self.path, "a") as f:
            f.write(line + "\n")
