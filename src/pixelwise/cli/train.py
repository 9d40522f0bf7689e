"""``pixelwise train``: train a model on a data set.

The options are generated from :class:`~pixelwise.training.config.TrainConfig` (see
:mod:`pixelwise.cli.config_flags`): ``pixelwise train --num-workers 2`` is ``pixelwise.train(num_workers=2)``.
"""

from __future__ import annotations

import argparse

from ..errors import PixelwiseError
from .config_flags import add_config_flags, add_old_spelling

# Earlier spellings, still accepted (hidden from --help, with a note on stderr).
OLD_SPELLINGS = {
    "num_workers": "--workers",
    "model_kwargs": "--model-arg",
    "classes_file": "--classes",
    "max_image_pixels": "--max-pixels",
}

# Options a --budget plan may change even when given: where and how the run happens, not its recipe.
NOT_KEPT_BY_PLAN = {"data", "out", "budget", "device", "num_workers", "seed"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "train",
        help="train a model on DATA (images/ + masks/)",
        description="Train a model on a data set (the pixelwise folder layout or any format `pixelwise inspect` "
        "detects). Every option is a keyword of pixelwise.train(); options given on the command line win "
        "over those of --config FILE.",
    )
    groups = add_config_flags(p)
    for action in list(p._actions):
        if action.dest in OLD_SPELLINGS:
            add_old_spelling(p, OLD_SPELLINGS[action.dest], action)
    r = groups["run"]
    r.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="start from the options in FILE, a config.yaml as every run directory holds",
    )
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last finished epoch (one stopped before its first checkpoint "
        "starts again); DATA, if given, is where its data is now",
    )
    r.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (only the files a run writes); in a folder that is not a run, write the "
        "run beside its files (never replacing one)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace):
    """The TrainConfig that ``args`` describe: defaults, then ``--config FILE``, then the options given.

    With a budget, the options given on the command line (and the file's own ``keep``) are kept
    as they are by the planner.
    """
    from ..training.config import TrainConfig, load_config_file

    names = set(TrainConfig.__dataclass_fields__)
    given = {k: v for k, v in vars(args).items() if k in names}  # the options default to SUPPRESS
    values = load_config_file(args.config) if args.config else {}
    values.update(given)
    if values.get("budget"):
        values["keep"] = sorted(set(values.get("keep") or ()) | (set(given) - NOT_KEPT_BY_PLAN))
    config = TrainConfig(**values)
    try:
        config.validate()
    except PixelwiseError as e:
        if args.config and getattr(e, "option", None) not in given:
            raise PixelwiseError(f"{args.config}: {e}") from None
        raise
    return config


def run(args) -> int:
    """Train as ``args`` says; print the best validation metrics and the run directory."""
    config = config_from_args(args)
    if args.resume and not config.out:
        raise PixelwiseError("--resume needs --out RUN, the run directory to continue")
    if not args.resume and not config.data:
        raise PixelwiseError("give DATA, a folder with images/ and masks/ (see pixelwise train --help)")
    from ..metrics import format_metrics_table
    from ..training.distributed import is_main
    from ..training.trainer import train

    result = train(config, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    if not is_main():  # under torchrun, rank 0 reports for all
        return 0
    if result.best_metrics:
        print(format_metrics_table(result.best_metrics))
        miou = result.best_metrics.get("miou")
        shown = f"{100 * miou:.2f} %" if miou is not None else "n/a (no class present)"
        print(f"best epoch {result.best_epoch}: val mIoU {shown}")
    print(f"run: {result.run_dir}")
    return 0
