"""``pixelwise demo``: synthetic data, training, evaluation and prediction in one command."""

from __future__ import annotations

import argparse

from .arguments import whole_number


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``subparsers``; every number is range-checked while parsing."""
    from ..demo import DEMO_IMAGES, DEMO_TRAIN, MAX_EPOCHS, MAX_IMAGES, MAX_SEED

    p = subparsers.add_parser(
        "demo",
        help="generate synthetic data, train, evaluate, predict: the whole flow",
        description="Make a synthetic shapes data set, train the default demo model, evaluate it on "
        "held-out images and write predictions, overlays, metrics and curves.",
    )
    p.add_argument("--out", default="", help="run directory, new or empty (default runs/demo-<date-time>)")
    p.add_argument(
        "--images",
        type=whole_number(2, MAX_IMAGES),
        default=None,
        metavar="N",
        help=f"number of synthetic images, 2 to {MAX_IMAGES}; a fifth are held out (default: {DEMO_IMAGES})",
    )
    p.add_argument(
        "--epochs",
        type=whole_number(1, MAX_EPOCHS),
        default=None,
        metavar="N",
        help=f"train exactly this many epochs, 1 to {MAX_EPOCHS} "
        f"(default: {DEMO_TRAIN['epochs']} epochs or {DEMO_TRAIN['time_limit']:.0f} s of training, "
        "whichever comes first)",
    )
    p.add_argument(
        "--seed",
        type=whole_number(0, MAX_SEED),
        default=0,
        metavar="N",
        help=f"random seed of the data, the split and the training, 0 to {MAX_SEED} (default: 0)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    """Run the demo as ``args`` says."""
    from ..demo import run_demo

    run_demo(
        out=args.out,
        num_images=args.images,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    return 0
