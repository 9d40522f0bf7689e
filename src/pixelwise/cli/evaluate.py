"""``pixelwise evaluate``: score trained runs (one, or an ensemble) on a split of a data set."""

from __future__ import annotations

import argparse

from ..errors import PixelwiseError
from .arguments import real_number
from .data_flags import add_data_flags
from .inference_flags import add_inference_flags, predictor_options


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "evaluate",
        help="score a trained run (or an ensemble) on a split of DATA",
        description="Predict every image of a split and print per-class IoU, Boundary IoU and Dice and the "
        "summary (in %), and the time the prediction took per image. "
        "Several runs are an ensemble. The images are labelled exactly as `pixelwise predict` "
        "labels them with the same inference options; metrics.json records them and the data "
        "(ratios as fractions). Pictures: per_class_iou.png, confusion.png, and worst.png / "
        "best.png (the images with the lowest and highest per-image mIoU).",
        usage="pixelwise evaluate RUN [RUN ...] DATA [options]",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="RUN_OR_DATA",
        help="one or more run directories (model.safetensors + model.json), then the data folder",
    )
    p.add_argument("--split", default="val", choices=["train", "val", "test", "all"], help="default %(default)s")
    p.add_argument(
        "--out",
        default=None,
        help="where metrics.json and the pictures go (default RUN/eval-SPLIT; RUN/eval-SPLIT-ensemble for several)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier evaluation in the output folder made with other data or options "
        "(without it, that is refused; one with the same data and options is always replaced)",
    )
    p.add_argument(
        "--examples",
        type=int,
        default=4,
        metavar="K",
        help="worst.png and best.png show the K images with the lowest and highest per-image mIoU "
        "(image | ground truth | prediction | errors); 0: no such pictures (default %(default)s)",
    )
    p.add_argument(
        "--class-map",
        default="strict",
        choices=["strict", "auto"],
        help="strict: the data's classes must be the model's (same names in the same order; without "
        "names, as many classes in the masks); auto: match classes by name, in any order "
        "(default %(default)s)",
    )
    p.add_argument(
        "--boundary-ratio",
        type=real_number(above=0.0, maximum=0.5),
        default=0.02,
        metavar="R",
        help="Boundary IoU (Cheng et al. 2021) scores the pixels within d of each class's edges, d = R times "
        "the image diagonal, at least 1 px; 0 < R <= 0.5 (default %(default)s, the paper's)",
    )
    p.add_argument("--quiet", action="store_true")
    add_data_flags(p.add_argument_group("data format (default: as the model was trained)"))
    add_inference_flags(p)
    return p


def run(args) -> int:
    """Evaluate as ``args`` says; print the metrics table and where the files went."""
    from ..evaluation import evaluate, latency_line, object_lines
    from ..metrics import format_metrics_table

    if len(args.paths) < 2:
        raise PixelwiseError("give a run directory and then the data folder (see pixelwise evaluate --help)")
    runs, data = args.paths[:-1], args.paths[-1]
    m = evaluate(
        runs,
        data,
        split=args.split,
        out=args.out,
        progress=not args.quiet,
        format=args.format,
        encoding=args.encoding,
        classes_file=args.classes_file,
        resize_masks=args.resize_masks,
        skip_bad=args.skip_bad,
        max_image_pixels=args.max_image_pixels,
        examples=args.examples,
        class_map=args.class_map,
        overwrite=args.overwrite,
        boundary_ratio=args.boundary_ratio,
        **predictor_options(args),
    )
    print(format_metrics_table(m))
    for line in [*object_lines(m), latency_line(m)]:
        if line:
            print(line)
    what = "" if len(runs) == 1 else f", an ensemble of {len(runs)} models"
    print(f"{m['images']} images ({args.split}{what}); scores in %, stored in metrics.json as fractions")
    worst = m["examples"]["worst"]
    if worst:
        print(f"lowest per-image mIoU: {worst[0]['image']} {100 * worst[0]['miou']:.2f} %")
    pictures = "confusion.png, per_class_iou.png" + (", worst.png, best.png" if args.examples else "")
    print(f"written to {m['out']}: metrics.json, {pictures}")
    return 0
