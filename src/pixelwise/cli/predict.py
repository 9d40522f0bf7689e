"""``pixelwise predict``: masks and overlays for new images, from one model or an ensemble."""

from __future__ import annotations

import argparse
import sys

from ..errors import PixelwiseError
from .arguments import positive_int, scales

# Choices and defaults of pixelwise.predict.engine (TILE_MODES, BLENDS, InferenceConfig),
# pixelwise.predict.predictor.BACKENDS and pixelwise.postprocess.CRF_BACKENDS, repeated so that
# building the parser imports no torch; a test checks they match.
TILE_MODES = ("auto", "always", "never")
BLENDS = ("gaussian", "linear", "constant")
BACKENDS = ("auto", "torch", "onnxruntime")
CRF_BACKENDS = ("auto", "pydensecrf", "torch")
INFERENCE_DEFAULTS = dict(
    tile="auto",
    tile_size=1024,
    tile_overlap=0.25,
    blend="gaussian",
    tile_batch=2,
    max_pixels=2048 * 2048,
    scales=(1.0,),
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``predict`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "predict",
        help="write masks and overlays for new images (one model or an ensemble)",
        description="Label every pixel of images: OUT/masks/<name>.png (class indices) and OUT/overlays/<name>.png. "
        "Several runs before the inputs are an ensemble: their probabilities are averaged. "
        "Re-running into the same OUT with the same settings skips finished images.",
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
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default: ONNX Runtime on CPU when available), torch, onnxruntime (RUN/model.onnx "
        "from `pixelwise export`, else exported in memory)",
    )
    p.add_argument("--onnx", default=None, metavar="FILE", help="ONNX file to use with --backend onnxruntime")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: PyTorch bfloat16 autocast, faster on GPUs and CPUs with AMX/AVX512-BF16, "
        "probabilities within about 1e-2 of fp32 (default %(default)s)",
    )
    p.add_argument("--workers", type=positive_int, default=None, help="image-decoding threads (default: up to 4)")
    p.add_argument("--overwrite", action="store_true", help="redo images already predicted in OUT")
    p.add_argument("--quiet", action="store_true")
    _add_tiling_args(p.add_argument_group("large images (sliding window)"))
    _add_tta_args(p.add_argument_group("test-time augmentation and uncertainty"))
    _add_postprocess_args(p.add_argument_group("post-processing"))
    return p


def _add_tiling_args(t) -> None:
    d = INFERENCE_DEFAULTS
    t.add_argument(
        "--tile",
        choices=TILE_MODES,
        default=d["tile"],
        help=f"auto: tile images above --max-pixels ({d['max_pixels']}) (default %(default)s)",
    )
    t.add_argument(
        "--tile-size", type=positive_int, default=d["tile_size"], help="tile side in pixels (default %(default)s)"
    )
    t.add_argument("--tile-overlap", type=float, default=d["tile_overlap"], help="overlap share (default %(default)s)")
    t.add_argument(
        "--blend", choices=list(BLENDS), default=d["blend"], help="tile blending window (default %(default)s)"
    )
    t.add_argument(
        "--tile-batch", type=positive_int, default=d["tile_batch"], help="tiles per forward pass (default %(default)s)"
    )
    t.add_argument("--max-pixels", type=positive_int, default=d["max_pixels"], help="tiling threshold for --tile auto")


def _add_tta_args(a) -> None:
    a.add_argument("--hflip", action="store_true", help="average with the mirrored image")
    a.add_argument("--vflip", action="store_true", help="average with the upside-down image")
    a.add_argument(
        "--scales",
        type=scales,
        default=INFERENCE_DEFAULTS["scales"],
        metavar="S1,S2,...",
        help="average over these resize factors, e.g. 0.75,1,1.25 (default 1)",
    )
    a.add_argument(
        "--mc-dropout",
        type=int,
        default=0,
        metavar="N",
        help="N stochastic passes with dropout on; adds a variance map (model needs dropout)",
    )
    a.add_argument(
        "--uncertainty",
        action="store_true",
        help="write OUT/uncertainty/<name>_{confidence,entropy[,variance]}.png heat maps",
    )
    a.add_argument("--uncertainty-npy", action="store_true", help="also write those maps as float32 .npy arrays")
    a.add_argument("--probs", action="store_true", help="write OUT/probs/<name>.npy, (C, H, W) float32 probabilities")


def _add_postprocess_args(q) -> None:
    q.add_argument("--min-size", type=int, default=0, metavar="N", help="remove regions smaller than N pixels")
    q.add_argument("--fill-holes", type=int, default=0, metavar="N", help="fill enclosed holes of up to N pixels")
    q.add_argument("--crf", action="store_true", help="refine boundaries with a dense CRF on the image colours")
    q.add_argument("--crf-iterations", type=positive_int, default=5, help="default %(default)s")
    q.add_argument(
        "--crf-backend",
        choices=CRF_BACKENDS,
        default="auto",
        help="auto: pydensecrf when installed, else the PyTorch mean-field CRF",
    )


def _split_runs(paths: list[str]) -> tuple[list[str], list[str]]:
    """Leading run directories (at least the first path) and the inputs after them."""
    from ..predict.predictor import is_run_dir

    runs = [paths[0]]
    for pth in paths[1:]:
        if not is_run_dir(pth):
            break
        runs.append(pth)
    return runs, paths[len(runs) :]


def _configs(args):
    from ..postprocess import PostprocessConfig
    from ..predict.engine import InferenceConfig

    config = InferenceConfig(
        tile=args.tile,
        tile_size=args.tile_size,
        tile_overlap=args.tile_overlap,
        blend=args.blend,
        tile_batch=args.tile_batch,
        max_pixels=args.max_pixels,
        hflip=args.hflip,
        vflip=args.vflip,
        scales=args.scales,
        mc_dropout=args.mc_dropout,
    )
    pp = PostprocessConfig(
        min_size=args.min_size,
        fill_holes=args.fill_holes,
        crf=args.crf,
        crf_iterations=args.crf_iterations,
        crf_backend=args.crf_backend,
    )
    return config, pp


def run(args) -> int:
    """Predict as ``args`` says; print a summary. Returns 1 when some inputs could not be read."""
    from ..predict.predictor import load, load_ensemble, predict_files

    runs, inputs = _split_runs(args.paths)
    if not inputs:
        raise PixelwiseError("give at least one image or folder after the run directory (see pixelwise predict --help)")
    if args.onnx and len(runs) > 1:
        raise PixelwiseError("--onnx applies to one run; drop it for an ensemble")
    config, pp = _configs(args)
    if args.onnx:
        seg = load(runs[0], args.device, backend="onnxruntime", onnx_path=args.onnx, precision=args.precision)
    else:
        seg = load_ensemble(runs, args.device, args.backend, precision=args.precision)
    res = predict_files(
        seg,
        inputs,
        args.out,
        alpha=args.alpha,
        progress=not args.quiet,
        config=config,
        postprocess_config=pp,
        probs=args.probs,
        uncertainty=args.uncertainty or args.uncertainty_npy,
        uncertainty_npy=args.uncertainty_npy,
        overwrite=args.overwrite,
        workers=args.workers,
    )
    what = "1 model" if len(runs) == 1 else f"an ensemble of {len(runs)} models"
    done = f", {res['skipped']} already done" if res["skipped"] else ""
    print(f"{res['written']} images predicted with {what} into {res['out']}{done}")
    if res["failed"]:
        print(f"{len(res['failed'])} unreadable inputs skipped:", file=sys.stderr)
        for _path, reason in res["failed"]:
            print(f"skipped: {reason}", file=sys.stderr)
    return 1 if res["failed"] else 0
