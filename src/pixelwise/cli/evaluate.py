"""``pixelwise evaluate``: score a trained run on a split of a data set."""

from __future__ import annotations

import argparse

from .data_flags import add_data_flags


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "evaluate",
        help="score a trained run on a split of DATA",
        description="Predict every image of a split and print per-class IoU/Dice and the summary.",
    )
    p.add_argument("run", help="run directory (holds model.safetensors + model.json)")
    p.add_argument("data", help="data folder with images/ and masks/")
    p.add_argument("--split", default="val", choices=["train", "val", "test", "all"], help="default %(default)s")
    p.add_argument("--out", default=None, help="where metrics.json and confusion.png go (default RUN/eval-SPLIT)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    add_data_flags(p.add_argument_group("data format (default: as the model was trained)"))
    return p


def run(args) -> int:
    """Evaluate as ``args`` says; print the metrics table and where the files went."""
    from ..evaluation import evaluate
    from ..metrics import format_metrics_table

    m = evaluate(
        args.run,
        args.data,
        split=args.split,
        out=args.out,
        device=args.device,
        progress=not args.quiet,
        format=args.format,
        encoding=args.encoding,
        classes_file=args.classes_file,
        resize_masks=args.resize_masks,
        skip_bad=args.skip_bad,
        max_pixels=args.max_pixels,
    )
    print(format_metrics_table(m))
    print(f"{m['images']} images ({args.split}); metrics.json and confusion.png in {m['out']}")
    return 0
