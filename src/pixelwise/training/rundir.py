"""The run directory: making it, resuming it (also after a torchrun restart), config.yaml, metrics.csv, train.log.

A run directory holds::

    config.yaml                  the TrainConfig (absolute data and out paths), so the run can be
                                 repeated exactly; a comment says what the weights started from
    checkpoint.safetensors/.json the last finished epoch: weights, optimizer, history (resume)
    model.safetensors/.json      the bundle of the best epoch by validation mIoU (what users load)
    metrics.csv, curves.png      one row per epoch (ratios as fractions, per-class IoU columns
                                 val_iou_<i>); loss, IoU and learning-rate curves
    train.log                    one line per epoch (mIoU in %)
    plan.json                    with --budget: the planned recipe and its reasons

The folder is made only once the options, the data and the model are known to be good, so a
refused start leaves nothing behind. A folder that is not a pixelwise run is never written into
without ``--overwrite``, and no file pixelwise did not write is ever removed or replaced.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from ..errors import PixelwiseError
from ..fileio import prepare_output_dir, write_text
from . import distributed
from .config import TrainConfig, load_config_file

RUN_MARKERS = ("config.yaml", "checkpoint.json", "model.json")
# What --overwrite removes from a folder that holds a pixelwise run: the files a run writes, no others.
RUN_FILES = RUN_MARKERS + (
    "checkpoint.safetensors",
    "model.safetensors",
    "metrics.csv",
    "curves.png",
    "train.log",
    "plan.json",
)
CONFIG_HEADER = (
    "# pixelwise training configuration: `pixelwise train --resume --out RUN` continues it.\n"
    "# batch_size is the global batch (all processes together under torchrun, split evenly);\n"
    "# lr is the AdamW learning rate for that global batch, not scaled with the number of processes.\n"
)
# May differ between a run and its resumption: where the run and its data are now, how it runs.
RUNTIME_OPTIONS = ("data", "out", "device", "num_workers")
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
# How a start uses the run directory: a new run; a resumed one (from its checkpoint); or a run
# stopped before its first checkpoint, started again from epoch 0 with its saved config.yaml.
NEW, RESUME, RESTART = "new", "resume", "restart"


def default_run_dir() -> Path:
    """``runs/<date-time>`` under the current folder, as an absolute path."""
    return Path(os.path.abspath(Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")))


def check_run_dir(out: str, resume: bool, overwrite: bool) -> tuple[Path, str]:
    """Where the run goes and how (:data:`NEW`, :data:`RESUME` or :data:`RESTART`); nothing is written.

    Refused with one line: a path that is a file or cannot be written; a folder that holds a run,
    unless resuming or overwriting; a non-empty folder that is not a pixelwise run, unless
    ``overwrite``, and even then when it holds a file of the name a run writes (pixelwise never
    replaces a file it did not write). ``resume`` on a run stopped before its first checkpoint
    starts it again from its ``config.yaml``.
    """
    run = Path(os.path.abspath(out)) if out else default_run_dir()
    prepare_output_dir(run, "--out", create=False)
    if resume:
        return run, _resume_kind(run)
    if not run.is_dir() or not any(run.iterdir()):
        return run, NEW
    if is_run(run):
        if overwrite:
            return run, NEW
        if has_checkpoint(run):
            raise PixelwiseError(
                f"{run}: already holds a run; pass --resume to continue it, --overwrite to replace it, or choose another --out"
            )
        raise PixelwiseError(
            f"{run}: already holds a run that stopped before its first checkpoint; pass --resume to start it again "
            "from its config.yaml, --overwrite to replace it, or choose another --out"
        )
    _check_foreign_folder(run, overwrite)
    return run, NEW


def _resume_kind(run: Path) -> str:
    """RESUME (a checkpoint) or RESTART (a config.yaml, no checkpoint yet); anything else is refused."""
    if not run.is_dir():
        raise PixelwiseError(f"{run}: no such run directory; nothing to resume (start a new run without --resume)")
    config = run / "config.yaml"
    if has_checkpoint(run):
        if not config.is_file():
            raise PixelwiseError(
                f"{config}: missing, so the run cannot be resumed; put the run's config.yaml back, "
                "or start again with --overwrite"
            )
        return RESUME
    if config.is_file():
        return RESTART
    raise PixelwiseError(
        f"{run}: not a pixelwise run (no config.yaml, no checkpoint); nothing to resume: "
        "start a new run without --resume"
    )


def _check_foreign_folder(run: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder that is not a run; with ``overwrite`` only one holding a run's file names."""
    names = sorted(p.name for p in run.iterdir())
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    if not overwrite:
        raise PixelwiseError(
            f"{run}: not empty and not a pixelwise run ({shown}); choose a new or empty --out, or pass "
            "--overwrite to write the run beside these files (none of them is changed)"
        )
    clash = [n for n in names if n in RUN_FILES]
    if clash:
        raise PixelwiseError(
            f"{run}: holds {', '.join(clash)}, not written by pixelwise; a run would replace "
            f"{'it' if len(clash) == 1 else 'them'}, which even --overwrite never does; choose another --out"
        )


def is_run(run: Path) -> bool:
    """True when ``run`` holds a file only ``pixelwise train`` writes: its config.yaml (with the
    pixelwise header), its checkpoint or its bundle's model.json. Files of other tools with the
    same names do not count."""
    config = run / "config.yaml"
    if config.is_file() and _first_line(config) == CONFIG_HEADER.splitlines()[0]:
        return True
    checkpoint = _json_object(run / "checkpoint.json")
    if checkpoint is not None and {"epoch", "history", "token"} <= set(checkpoint):
        return True
    bundle = _json_object(run / "model.json")
    return bundle is not None and {"model", "classes"} <= set(bundle) and "versions" in bundle


def _first_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.readline(200).decode("utf-8", "replace").rstrip("\r\n")
    except OSError:
        return ""


def _json_object(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is missing, too big, unreadable or not an object."""
    try:
        if not path.is_file() or path.stat().st_size > 50_000_000:
            return None
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def has_checkpoint(run: Path) -> bool:
    return (run / "checkpoint.json").is_file() or (run / "checkpoint.safetensors").is_file()


def make_run_dir(run: Path, kind: str, overwrite: bool) -> bool:
    """Make the run directory of a :data:`NEW` run (first removing, with ``overwrite``, the files of the
    run it holds); True when this call created the folder. Resumed and restarted runs exist already."""
    if kind != NEW:
        return False
    if overwrite and run.is_dir() and is_run(run):
        for name in RUN_FILES:
            (run / name).unlink(missing_ok=True)
    created = not run.exists()
    prepare_output_dir(run, "--out")
    return created


def remove_if_empty(run: Path) -> None:
    """Remove ``run`` if it is an empty folder (a start refused after the folder was made)."""
    try:
        run.rmdir()
    except OSError:
        pass


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
        saved = TrainConfig(**load_config_file(run / "config.yaml")).to_dict()
    except (PixelwiseError, TypeError):
        return resume, overwrite
    mine = config.to_dict()
    if any(saved.get(k) != mine.get(k) for k in set(saved) | set(mine) if k not in RUNTIME_OPTIONS):
        return resume, overwrite
    if os.path.abspath(saved.get("data") or "") != os.path.abspath(mine.get("data") or ""):
        return resume, overwrite
    if has_checkpoint(run):
        return True, overwrite
    return False, True


def on_main(ctx: distributed.DistContext | None, work) -> str:
    """``work()`` (returning text) on rank 0 only; every process gets its text, or its PixelwiseError."""
    if ctx is None or ctx.world_size == 1:
        return work()
    reply = ""
    if ctx.is_main:
        try:
            reply = "ok:" + work()
        except PixelwiseError as e:
            reply = "error:" + str(e)
        except OSError as e:  # the others would wait forever for a reply
            reply = f"error:{e.filename or 'run directory'}: cannot write ({e.strerror or e})"
    kind, _, text = ctx.broadcast_text(reply).partition(":")
    if kind == "error":
        raise PixelwiseError(text)
    return text


def check_run_dir_on_main(
    ctx: distributed.DistContext | None, config: TrainConfig, resume: bool, overwrite: bool
) -> tuple[Path, str, bool]:
    """:func:`check_run_dir` on rank 0 (after a torchrun restart, continuing its own run); every process
    gets the path, the kind of start and whether the files of a run in the folder are replaced."""

    def work() -> str:
        again, wipe = restart_resumes(config, resume, overwrite)
        run, kind = check_run_dir(config.out, again, wipe)
        return f"{kind}:{int(wipe)}:{run}"

    kind, wipe, path = on_main(ctx, work).split(":", 2)
    return Path(path), kind, wipe == "1"


def read_config(run: Path, runtime: TrainConfig) -> TrainConfig:
    """The saved ``config.yaml`` of ``run``, checked, with the runtime options of ``runtime``: its device
    and loader processes, the folder ``run`` as it is now, and its data folder when one is given.

    A damaged file (not YAML, not a mapping, unknown keys, values of the wrong type or out of
    range) or a data folder that is no longer there is a one-line :class:`PixelwiseError` naming
    the file and saying what to do.
    """
    path = run / "config.yaml"
    fix = "fix it (option: value lines, as `pixelwise train --help` names them) or start again with --overwrite"
    try:
        saved = load_config_file(path)
    except PixelwiseError as e:
        raise PixelwiseError(f"{e}; {fix}") from None
    if not saved:
        raise PixelwiseError(f"{path}: holds no options; {fix}")
    runtime_values = {"device": runtime.device, "num_workers": runtime.num_workers, "out": str(run)}
    if runtime.data:
        runtime_values["data"] = os.path.abspath(runtime.data)
    elif saved.get("data"):
        saved["data"] = os.path.abspath(saved["data"])
    try:
        config = TrainConfig(**{**saved, **runtime_values})
        config.validate()
    except PixelwiseError as e:
        raise PixelwiseError(f"{path}: {e}; {fix}") from None
    if not config.data or not Path(config.data).is_dir():
        where = f"data folder {config.data} not found" if config.data else "no data folder"
        raise PixelwiseError(
            f"{path}: {where}; if the data moved, give its new place: pixelwise train DATA --resume --out {run}"
        )
    return config


def write_config(run: Path, config: TrainConfig, pretrained_source: str | None = None) -> None:
    """``config.yaml``: the configuration under a comment that says how to continue it.

    ``pretrained`` keeps the option as given (``auto`` repeats the same choice); what the weights
    actually started from (``pretrained_source``, as model.json records it) follows as a comment.
    """
    used = f"# the weights started from: {pretrained_source or 'scratch (random initialisation)'}\n"
    write_text(run / "config.yaml", CONFIG_HEADER + used + yaml.safe_dump(config.to_dict(), sort_keys=False))


def metrics_columns(num_classes: int) -> tuple[str, ...]:
    """The columns of ``metrics.csv``: :data:`METRICS_COLUMNS`, then ``val_iou_<i>`` for each class."""
    return METRICS_COLUMNS + tuple(f"val_iou_{i}" for i in range(num_classes))


def write_metrics_csv(path: Path, rows: list[dict], num_classes: int = 0) -> None:
    """``metrics.csv``: one row per epoch, empty cells where an epoch was not validated.

    Ratios (mIoU, Dice, accuracy, per-class IoU ``val_iou_<i>``) are fractions in [0, 1].
    """
    columns = metrics_columns(num_classes)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
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
