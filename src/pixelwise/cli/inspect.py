"""``pixelwise inspect``: report what pixelwise understands of a data set, before training."""

from __future__ import annotations

import argparse

from .arguments import positive_int
from .config_flags import add_field_flag, add_old_spelling
from .data_flags import add_data_flags


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``inspect`` subcommand to ``subparsers``."""
    from ..training.config import TrainConfig

    p = subparsers.add_parser(
        "inspect",
        help="report what pixelwise understands of a data set, before training",
        description="Read every image and mask once and report: format and mask encoding detected, "
        "images per split, image sizes, per-class pixel share and image count, imbalance, "
        "suggested class weights, objects per thing class with their sizes and touching or overlapping "
        "objects (data with object ids), and every problem with its files and what to do. "
        "Writes a class frequency chart. Exit status 1 when there are errors.",
    )
    p.add_argument("data", help="data set folder (any supported format)")
    p.add_argument(
        "--out",
        default=None,
        help="folder for class_frequencies.png and report.json (default inspect-<data folder name>)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    threads = p.add_argument(
        "--read-threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="reader threads (default: from the CPU count)",
    )
    add_old_spelling(p, "--workers", threads)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    defaults = TrainConfig()
    split = p.add_argument_group("split, as for train when the data set has none")
    for name in ("val_fraction", "test_fraction", "seed"):
        add_field_flag(split, TrainConfig.__dataclass_fields__[name], default=getattr(defaults, name))
    add_data_flags(p.add_argument_group("data format"), defaults)
    return p


def run(args) -> int:
    """Inspect as ``args`` says; print the report. Returns 1 when the data has blocking errors."""
    import json

    from ..inspection import format_report, inspect_data
    from ..training.config import TrainConfig

    # The split options are TrainConfig's: the same ranges, checked before any file is read.
    TrainConfig(val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed).validate()
    report = inspect_data(
        args.data,
        format=args.format,
        encoding=args.encoding,
        classes_file=args.classes_file,
        resize_masks=args.resize_masks,
        max_image_pixels=args.max_image_pixels,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        out=args.out,
        read_threads=args.read_threads,
        progress=not args.quiet and not args.json,
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    blocking = [p for p in report["problems"] if p["severity"] == "error" and not (args.skip_bad and p["skippable"])]
    return 1 if blocking else 0
