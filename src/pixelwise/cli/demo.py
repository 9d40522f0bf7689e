"""``pixelwise demo``: synthetic data, training, evaluation and prediction in one command."""

from __future__ import annotations

import argparse

from .arguments import whole_number


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``subparsers``; every number is range-checked while parsing."""
    from ..demo import (
        DEMO_IMAGES,
        DEMO_INSTANCE_TRAIN,
        DEMO_TASKS,
        DEMO_TRAIN,
        INSTANCE_IMAGES,
        INSTANCE_SIZE,
        MAX_EPOCHS,
        MAX_IMAGES,
        MAX_SEED,
    )

    p = subparsers.add_parser(
        "demo",
        help="generate synthetic data, train, evaluate, predict: the whole flow",
        description="Make a synthetic shapes data set, train the default demo model, evaluate it on "
        "held-out images and write predictions, overlays, metrics and curves. With --task instance or "
        "panoptic: scenes of touching objects, a model that also separates the objects, mask AP and PQ.",
    )
    p.add_argument(
        "--task",
        choices=DEMO_TASKS,
        default="semantic",
        help="semantic: class masks of shapes (the default); instance: also each object (disc, square) "
        f"with its own id, on {INSTANCE_SIZE}x{INSTANCE_SIZE} scenes of touching objects; panoptic: as instance, "
        "plus one segment per stuff class (background, grass)",
    )
    p.add_argument("--out", default="", help="run directory, new or empty (default runs/demo-<date-time>)")
    p.add_argument(
        "--images",
        type=whole_number(2, MAX_IMAGES),
        default=None,
        metavar="N",
        help=f"number of synthetic images, 2 to {MAX_IMAGES}; a fifth are held out (default: {DEMO_IMAGES}"
        + ("" if INSTANCE_IMAGES == DEMO_IMAGES else f"; {INSTANCE_IMAGES} with --task instance or panoptic")
        + ")",
    )
    p.add_argument(
        "--epochs",
        type=whole_number(1, MAX_EPOCHS),
        default=None,
        metavar="N",
        help=f"train exactly this many epochs, 1 to {MAX_EPOCHS} "
        f"(default: {DEMO_TRAIN['epochs']} epochs ({DEMO_INSTANCE_TRAIN['epochs']} with --task instance or "
        f"panoptic) or {DEMO_TRAIN['time_limit']:.0f} s of training, whichever comes first)",
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
        task=args.task,
    )
    return 0
