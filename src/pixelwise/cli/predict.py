"""``pixelwise predict``: masks and overlays for new images, from one model or an ensemble."""

from __future__ import annotations

import argparse
import sys

from ..errors import PixelwiseError
from .arguments import positive_int, real_number
from .config_flags import add_old_spelling
from .inference_flags import add_inference_flags, build_predictor


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``predict`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "predict",
        help="write masks and overlays for new images (one model or an ensemble)",
        description="Label every pixel of images: OUT/masks/<name>.png (class indices, coloured as the "
        "classes) and OUT/overlays/<name>.png; with objects on (instance models, --instances), also "
        "OUT/instances/<name>.png (16-bit object ids) and .json, and OUT/panoptic/ for panoptic output. "
        "Several runs before the inputs are an ensemble: their probabilities are averaged. "
        "Re-running into the same OUT with the same settings skips finished images. "
        "`pixelwise evaluate` and `pixelwise serve` take the same inference options.",
        usage="pixelwise predict RUN [RUN ...] INPUT [INPUT ...] [--out OUT] [options]",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="RUN_OR_INPUT",
        help="one or more run directories, then image files or folders of images",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: predictions/ in the current folder, or predictions-2/, -3/, ... "
        "when that one holds predictions of other settings or files pixelwise did not write)",
    )
    p.add_argument(
        "--alpha", type=real_number(0.0, 1.0), default=0.5, help="overlay opacity, 0 to 1 (default %(default)s)"
    )
    p.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=100_000_000,
        metavar="PIXELS",
        help="refuse images of more pixels than this (width x height), before decoding them "
        "(default %(default)s); raise it for a genuine larger image",
    )
    threads = p.add_argument(
        "--decode-threads", type=positive_int, default=None, help="image-decoding threads (default: up to 4)"
    )
    add_old_spelling(p, "--workers", threads)
    p.add_argument("--overwrite", action="store_true", help="redo images already predicted in OUT")
    p.add_argument("--quiet", action="store_true")
    o = p.add_argument_group("outputs besides masks and overlays")
    o.add_argument(
        "--uncertainty",
        action="store_true",
        help="write OUT/uncertainty/<name>_{confidence,entropy[,variance]}.png heat maps",
    )
    o.add_argument("--uncertainty-npy", action="store_true", help="also write those maps as float32 .npy arrays")
    o.add_argument("--probs", action="store_true", help="write OUT/probs/<name>.npy, (C, H, W) float32 probabilities")
    o.add_argument(
        "--panoptic",
        action="store_true",
        help="with objects on: also write OUT/panoptic/<name>.png (COCO panoptic ids) and .json (its segments); "
        "on by itself for panoptic models and with --stuff-run",
    )
    actions = add_inference_flags(p)
    add_old_spelling(p, "--max-pixels", actions["tile_above"])
    return p


def split_runs(paths: list[str]) -> tuple[list[str], list[str]]:
    """Leading run directories (at least the first path) and the paths after them."""
    from ..predict.predictor import is_run_dir

    runs = [paths[0]]
    for pth in paths[1:]:
        if not is_run_dir(pth):
            break
        runs.append(pth)
    return runs, paths[len(runs) :]


def run(args) -> int:
    """Predict as ``args`` says; print a summary. Returns 1 when some inputs could not be read."""
    from ..fileio import prepare_output_dir
    from ..predict.batch import DEFAULT_OUT, collect_inputs, predict_files

    runs, inputs = split_runs(args.paths)
    if not inputs:
        raise PixelwiseError("give at least one image or folder after the run directory (see pixelwise predict --help)")
    collect_inputs(inputs)  # a missing input is found before the model loads
    prepare_output_dir(args.out or DEFAULT_OUT, "--out", create=False)
    res = predict_files(
        build_predictor(args, runs),
        inputs,
        args.out,
        alpha=args.alpha,
        progress=not args.quiet,
        probs=args.probs,
        uncertainty=args.uncertainty or args.uncertainty_npy,
        uncertainty_npy=args.uncertainty_npy,
        overwrite=args.overwrite,
        decode_threads=args.decode_threads,
        max_image_pixels=args.max_image_pixels,
        panoptic=args.panoptic,
    )
    what = "1 model" if len(runs) == 1 else f"an ensemble of {len(runs)} models"
    done = f", {res['skipped']} already done" if res["skipped"] else ""
    print(f"{res['written']} images predicted with {what} into {res['out']}{done}")
    if res["failed"]:
        n = len(res["failed"])
        print(f"{n} {'input' if n == 1 else 'inputs'} skipped (unreadable or refused):", file=sys.stderr)
        for _path, reason in res["failed"]:
            print(f"skipped: {reason}", file=sys.stderr)
    return 1 if res["failed"] else 0
