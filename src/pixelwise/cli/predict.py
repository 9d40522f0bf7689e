"""``pixelwise predict``: masks and overlays for new images, from one model or an ensemble."""

from __future__ import annotations

import argparse
import sys

from ..errors import PixelwiseError
from .arguments import positive_int
from .config_flags import add_old_spelling
from .inference_flags import add_inference_flags, build_predictor


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``predict`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "predict",
        help="write masks and overlays for new images (one model or an ensemble)",
        description="Label every pixel of images: OUT/masks/<name>.png (class indices) and OUT/overlays/<name>.png. "
        "Several runs before the inputs are an ensemble: their probabilities are averaged. "
        "Re-running into the same OUT with the same settings skips finished images. "
        "`pixelwise evaluate` and `pixelwise serve` take the same inference options.",
        usage="pixelwise predict RUN [RUN ...] INPUT [INPUT ...] --out OUT [options]",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="RUN_OR_INPUT",
        help="one or more run directories, then image files or folders of images",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default %(default)s)")
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
    from ..predict.batch import predict_files

    runs, inputs = split_runs(args.paths)
    if not inputs:
        raise PixelwiseError("give at least one image or folder after the run directory (see pixelwise predict --help)")
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
    )
    what = "1 model" if len(runs) == 1 else f"an ensemble of {len(runs)} models"
    done = f", {res['skipped']} already done" if res["skipped"] else ""
    print(f"{res['written']} images predicted with {what} into {res['out']}{done}")
    if res["failed"]:
        print(f"{len(res['failed'])} unreadable inputs skipped:", file=sys.stderr)
        for _path, reason in res["failed"]:
            print(f"skipped: {reason}", file=sys.stderr)
    return 1 if res["failed"] else 0
