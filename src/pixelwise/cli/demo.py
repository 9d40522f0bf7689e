"""``pixelwise demo``: synthetic data, training, evaluation and prediction in one command."""

from __future__ import annotations

import argparse

from .arguments import positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``subparsers``."""
    from ..demo import DEMO_TRAIN

    p = subparsers.add_parser(
        "demo",
        help="generate synthetic data, train, evaluate, predict: the whole flow",
        description="Make a synthetic shapes data set, train the default demo model, evaluate it on "
        "held-out images and write predictions, overlays, metrics and curves.",
    )
    p.add_argument("--out", default="", help="run directory (default runs/demo-<date-time>)")
    p.add_argument("--images", type=positive_int, default=None, help="number of synthetic images")
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="train exactly this many epochs "
        f"(default: {DEMO_TRAIN['epochs']} epochs or {DEMO_TRAIN['time_limit']:.0f} s of training, "
        "whichever comes first)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
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
