"""The ``pixelwise`` command: parse arguments, call the Python API, print results.

A user mistake (:class:`PixelwiseError`) prints one line and exits with status 2; Ctrl-C exits
with 130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from .errors import PixelwiseError
from .version import __version__


def _scale_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected two numbers like 0.5,2.0") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError("expected 0 < low <= high")
    return lo, hi


def _model_arg(text: str) -> tuple[str, object]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError("expected KEY=VALUE, e.g. decoder_channels=[128,64,32,16,8]")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot parse the value of {key}") from None


def _budget(text: str) -> float:
    from .training.planner import parse_budget

    try:
        return parse_budget(text)
    except PixelwiseError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _explicit_options(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Destinations of the options written on the command line (so a plan keeps them)."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    return sorted({a.dest for a in sub._actions if any(o in given for o in a.option_strings)})


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


def _add_data_args(g, defaults=None) -> None:
    """--format, --encoding, --classes, --resize-masks, --skip-bad, --max-pixels (train/evaluate/inspect).

    ``defaults`` None (evaluate): every option defaults to what the model was trained with.
    """
    from .data.encodings import DEFAULT_MAX_PIXELS, ENCODINGS
    from .data.formats import FORMATS

    def d(name, fallback):
        return getattr(defaults, name) if defaults is not None else fallback

    g.add_argument(
        "--format",
        choices=["auto", *FORMATS],
        default=d("format", None),
        help="data set layout; auto = detected and printed (default auto)",
    )
    g.add_argument(
        "--encoding",
        choices=list(ENCODINGS),
        default=d("encoding", None),
        help="how mask pixels are stored; auto = detected and printed (default auto)",
    )
    g.add_argument(
        "--classes",
        dest="classes_file",
        default=d("classes_file", None),
        metavar="FILE",
        help="classes YAML (names, colors, ignore_index, ignore_color) to use instead of the data set's",
    )
    g.add_argument(
        "--resize-masks",
        choices=["nearest"],
        default=d("resize_masks", None),
        help="resize a mask whose size differs from its image (default: that is an error)",
    )
    g.add_argument(
        "--skip-bad",
        action="store_true",
        default=d("skip_bad", None),
        help="leave out samples with problems (listed) instead of stopping",
    )
    g.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=d("max_pixels", None),
        help=f"refuse images/masks with more pixels (default {DEFAULT_MAX_PIXELS:,})",
    )


def _add_train_args(p: argparse.ArgumentParser, defaults) -> None:
    from .losses import LOSSES
    from .models import MODELS

    m = p.add_argument_group("model")
    m.add_argument("--arch", choices=list(MODELS), default=defaults.arch, help="architecture (default %(default)s)")
    m.add_argument(
        "--encoder",
        default=defaults.encoder,
        help="encoder for segmentation-models-pytorch architectures: resnet18, resnet34, mobilenet_v2, "
        "efficientnet-b0, tu-<timm name>, ... (default %(default)s)",
    )
    m.add_argument(
        "--pretrained",
        nargs="?",
        const="imagenet",
        default=None,
        metavar="PATH",
        help="start from pretrained weights: alone = ImageNet encoder weights (downloads); "
        "with PATH = a local .safetensors file (a pixelwise run/bundle or an encoder state dict)",
    )
    m.add_argument("--dropout", type=float, default=defaults.dropout, help="dropout before the classifier (default 0)")
    m.add_argument(
        "--model-arg",
        type=_model_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra architecture argument, e.g. decoder_channels=[128,64,32,16,8] (repeatable)",
    )
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=_positive_int, default=defaults.epochs, help="default %(default)s")
    o.add_argument(
        "--batch-size",
        type=_positive_int,
        default=defaults.batch_size,
        help="images per optimizer step; under torchrun the global batch, split evenly over the processes "
        "(default %(default)s)",
    )
    o.add_argument(
        "--lr",
        type=float,
        default=defaults.lr,
        help="AdamW learning rate for the --batch-size batch, whatever the number of processes (default %(default)s)",
    )
    o.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="default %(default)s")
    o.add_argument(
        "--schedule",
        choices=["cosine", "poly", "constant"],
        default=defaults.schedule,
        help="learning-rate decay after warm-up (default %(default)s)",
    )
    o.add_argument("--warmup-epochs", type=float, default=defaults.warmup_epochs, help="default %(default)s")
    o.add_argument("--loss", choices=list(LOSSES), default=defaults.loss, help="default %(default)s")
    o.add_argument(
        "--class-weights",
        nargs="?",
        const="auto",
        default=None,
        choices=["auto", "median", "sqrt", "inverse"],
        help="weight the loss by class frequency of the training masks (auto = median frequency; "
        "sqrt = its square root)",
    )
    o.add_argument(
        "--class-crops",
        type=float,
        default=defaults.class_crops,
        metavar="SHARE",
        help="share of training crops centred on a pixel of a class drawn uniformly from those in the "
        "mask, so rare classes are seen often (default %(default)s = off)",
    )
    o.add_argument(
        "--grad-clip", type=float, default=defaults.grad_clip, help="max gradient norm, 0 = off (default %(default)s)"
    )
    o.add_argument(
        "--ema",
        type=float,
        default=defaults.ema,
        metavar="DECAY",
        help="validate and save an exponential moving average of the weights with this decay per step, "
        "e.g. 0.999 (default 0 = off)",
    )
    o.add_argument(
        "--no-amp",
        dest="amp",
        action="store_false",
        help="train in float32 (default: mixed precision on CUDA, and bf16 on CPUs with native bf16)",
    )
    o.add_argument(
        "--channels-last",
        dest="channels_last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC memory layout (default: on CUDA only; the demo and --budget runs turn it on)",
    )
    o.add_argument(
        "--patience",
        type=int,
        default=defaults.patience,
        help="stop after this many validations without a better mIoU; 0 = never (default)",
    )
    a = p.add_argument_group("data and augmentation")
    a.add_argument(
        "--crop-size", type=int, default=defaults.crop_size, help="square training crop (default %(default)s)"
    )
    a.add_argument(
        "--scale-range",
        type=_scale_range,
        default=defaults.scale_range,
        metavar="LOW,HIGH",
        help="random rescale before cropping (default 0.5,2.0; 1,1 = off)",
    )
    a.add_argument("--no-hflip", dest="hflip", action="store_false", help="no random horizontal flips")
    a.add_argument("--vflip", action="store_true", help="random vertical flips too")
    a.add_argument(
        "--color-jitter", type=float, default=defaults.color_jitter, help="strength, 0 = off (default %(default)s)"
    )
    a.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="held-out share when DATA/splits/ is absent (default %(default)s)",
    )
    a.add_argument("--test-fraction", type=float, default=defaults.test_fraction, help="default %(default)s")
    a.add_argument(
        "--workers",
        dest="num_workers",
        type=int,
        default=defaults.num_workers,
        help="data loader processes; -1 = from the CPU count (default)",
    )
    a.add_argument("--no-cache", dest="cache", action="store_false", help="decode images every epoch (saves memory)")
    _add_data_args(p.add_argument_group("data format"), defaults)
    r = p.add_argument_group("run")
    r.add_argument("--out", default="", help="run directory (default runs/<date-time>)")
    r.add_argument("--seed", type=int, default=defaults.seed, help="default %(default)s")
    r.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on GPU)")
    r.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, cuda:1 (default %(default)s)")
    r.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun on GPUs: BatchNorm statistics over the global batch, not per process",
    )
    r.add_argument("--val-every", type=_positive_int, default=defaults.val_every, help="validate every N epochs")
    r.add_argument(
        "--budget",
        type=_budget,
        default=0.0,
        metavar="TIME",
        help="plan the recipe (model, crop, batch, epochs, schedule) so the whole run ends within TIME: "
        "90s, 20m, 2h, 1d; options you give explicitly are kept; the plan goes to RUN/plan.json",
    )
    r.add_argument("--max-steps-per-epoch", type=int, default=0, help="cap on batches per epoch (quick trials)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished epoch")
    r.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    r.add_argument("--quiet", action="store_true", help="no progress bars")


def _scales(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected numbers like 0.75,1,1.25") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("scales must be positive")
    return values


def _add_predict_parser(sub) -> None:
    from .postprocess import CRF_BACKENDS
    from .predict.engine import BLENDS, TILE_MODES, InferenceConfig
    from .predict.predictor import BACKENDS

    d = InferenceConfig()
    p = sub.add_parser(
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
    p.add_argument("--workers", type=_positive_int, default=None, help="image-decoding threads (default: up to 4)")
    p.add_argument("--overwrite", action="store_true", help="redo images already predicted in OUT")
    p.add_argument("--quiet", action="store_true")
    t = p.add_argument_group("large images (sliding window)")
    t.add_argument(
        "--tile",
        choices=TILE_MODES,
        default=d.tile,
        help=f"auto: tile images above --max-pixels ({d.max_pixels}) (default %(default)s)",
    )
    t.add_argument(
        "--tile-size", type=_positive_int, default=d.tile_size, help="tile side in pixels (default %(default)s)"
    )
    t.add_argument("--tile-overlap", type=float, default=d.tile_overlap, help="overlap share (default %(default)s)")
    t.add_argument("--blend", choices=list(BLENDS), default=d.blend, help="tile blending window (default %(default)s)")
    t.add_argument(
        "--tile-batch", type=_positive_int, default=d.tile_batch, help="tiles per forward pass (default %(default)s)"
    )
    t.add_argument("--max-pixels", type=_positive_int, default=d.max_pixels, help="tiling threshold for --tile auto")
    a = p.add_argument_group("test-time augmentation and uncertainty")
    a.add_argument("--hflip", action="store_true", help="average with the mirrored image")
    a.add_argument("--vflip", action="store_true", help="average with the upside-down image")
    a.add_argument(
        "--scales",
        type=_scales,
        default=d.scales,
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
    q = p.add_argument_group("post-processing")
    q.add_argument("--min-size", type=int, default=0, metavar="N", help="remove regions smaller than N pixels")
    q.add_argument("--fill-holes", type=int, default=0, metavar="N", help="fill enclosed holes of up to N pixels")
    q.add_argument("--crf", action="store_true", help="refine boundaries with a dense CRF on the image colours")
    q.add_argument("--crf-iterations", type=_positive_int, default=5, help="default %(default)s")
    q.add_argument(
        "--crf-backend",
        choices=CRF_BACKENDS,
        default="auto",
        help="auto: pydensecrf when installed, else the PyTorch mean-field CRF",
    )


def _add_export_parser(sub) -> None:
    from .export import DEFAULT_TOLERANCE, FORMATS

    p = sub.add_parser(
        "export",
        help="export a run to ONNX or TorchScript, checked against PyTorch",
        description="Write RUN/model.onnx (or model.torchscript.pt) with dynamic batch, height and "
        "width; input: (N, 3, H, W) float RGB in [0, 1], output: (N, C, H, W) logits. "
        "The file is kept only if its outputs match PyTorch within --tolerance.",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--format", choices=list(FORMATS), default="onnx", help="default %(default)s")
    p.add_argument("--out", default=None, help="output file (default RUN/model.onnx or RUN/model.torchscript.pt)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default %(default)s)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="largest allowed |exported - PyTorch| logit difference (default %(default)s)",
    )


def _cmd_predict(args) -> int:
    from .postprocess import PostprocessConfig
    from .predict.engine import InferenceConfig
    from .predict.predictor import is_run_dir, load_ensemble, predict_files

    runs = [args.paths[0]]
    for pth in args.paths[1:]:
        if not is_run_dir(pth):
            break
        runs.append(pth)
    inputs = args.paths[len(runs) :]
    if not inputs:
        raise PixelwiseError("give at least one image or folder after the run directory (see pixelwise predict --help)")
    if args.onnx and len(runs) > 1:
        raise PixelwiseError("--onnx applies to one run; drop it for an ensemble")
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
    if args.onnx:
        from .predict.predictor import load

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


def _cmd_export(args) -> int:
    from .export import export_model

    res = export_model(args.run, args.format, args.out, opset=args.opset, tolerance=args.tolerance)
    sizes = ", ".join("x".join(str(v) for v in s) for s in res["sizes"])
    print(
        f"parity with PyTorch: max |difference| = {res['max_abs_diff']:.3g} on inputs {sizes} "
        f"(tolerance {args.tolerance:g})"
    )
    print(f"wrote {res['path']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .training.config import TrainConfig

    parser = argparse.ArgumentParser(
        prog="pixelwise",
        description="Semantic segmentation: train, evaluate and apply models that label every pixel.",
    )
    parser.add_argument("--version", action="version", version=f"pixelwise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "train",
        help="train a model on DATA (images/ + masks/)",
        description="Train a model on a data set in the pixelwise folder layout.",
    )
    p.add_argument("data", nargs="?", default="", help="data folder with images/ and masks/ (not needed with --resume)")
    _add_train_args(p, TrainConfig())

    p = sub.add_parser(
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
    _add_data_args(p.add_argument_group("data format (default: as the model was trained)"))

    p = sub.add_parser(
        "inspect",
        help="report what pixelwise understands of a data set, before training",
        description="Read every image and mask once and report: format and mask encoding detected, "
        "images per split, image sizes, per-class pixel share and image count, imbalance, "
        "suggested class weights, and every problem with its files and what to do. "
        "Writes a class frequency chart. Exit status 1 when there are errors.",
    )
    p.add_argument("data", help="data set folder (any supported format)")
    p.add_argument(
        "--out",
        default=None,
        help="folder for class_frequencies.png and report.json (default inspect-<data folder name>)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    p.add_argument("--val-fraction", type=float, default=0.2, help="as for train, when the data set has no splits")
    p.add_argument("--test-fraction", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="reader threads (default from the CPU count)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data_args(p.add_argument_group("data format"), TrainConfig())

    _add_predict_parser(sub)
    _add_export_parser(sub)

    p = sub.add_parser(
        "demo",
        help="generate synthetic data, train, evaluate, predict: the whole flow",
        description="Make a synthetic shapes data set, train the default demo model, evaluate it on "
        "held-out images and write predictions, overlays, metrics and curves.",
    )
    p.add_argument("--out", default="", help="run directory (default runs/demo-<date-time>)")
    p.add_argument("--images", type=_positive_int, default=None, help="number of synthetic images")
    from .demo import DEMO_TRAIN

    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="train exactly this many epochs "
        f"(default: {DEMO_TRAIN['epochs']} epochs or {DEMO_TRAIN['time_limit']:.0f} s of training, "
        "whichever comes first)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    _add_serve_parser(sub)
    return parser


def _add_serve_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a trained model over HTTP: JSON/PNG API and a web page",
        description="Serve RUN at http://HOST:PORT/: a web page at /, POST /predict (image upload -> "
        "mask PNG, overlay PNG or JSON areas), GET /model, GET /health, schema at "
        "/openapi.json. The model is loaded once.",
    )
    p.add_argument("run", help="run directory (holds model.safetensors + model.json)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default %(default)s: this machine only; 0.0.0.0 = every interface)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port, 0 = any free one (default %(default)s)")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="threads running the model at once, sharing one loaded copy (default %(default)s)",
    )
    p.add_argument(
        "--token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' on every endpoint but /health and the page "
        "(default: the PIXELWISE_TOKEN environment variable, if set)",
    )
    p.add_argument(
        "--max-upload-mb", type=float, default=20.0, help="largest image file accepted (default %(default)s MB)"
    )
    p.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=4096 * 4096,
        help="largest width x height accepted, checked before decoding (default %(default)s)",
    )
    p.add_argument(
        "--max-pending",
        type=_positive_int,
        default=64,
        help="predictions in flight before new requests get 503 (default %(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=_positive_int,
        default=256,
        help="open connections before new requests get 503 (default %(default)s)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--access-log", action="store_true", help="print one line per request")


def _cmd_serve(args) -> int:
    import os

    from .serve import ServeConfig, serve

    if args.max_upload_mb <= 0:
        raise PixelwiseError("--max-upload-mb must be more than 0")
    token = args.token if args.token is not None else os.environ.get("PIXELWISE_TOKEN") or None
    if token is not None and not token.strip():
        raise PixelwiseError("--token must not be empty")
    config = ServeConfig(
        host=args.host,
        port=args.port,
        workers=args.workers,
        token=token,
        max_upload_bytes=int(args.max_upload_mb * 1_000_000),
        max_pixels=args.max_pixels,
        max_pending=args.max_pending,
        max_connections=args.max_connections,
        device=args.device,
        access_log=args.access_log,
    )
    serve(args.run, config)
    return 0


def _cmd_train(args) -> int:
    from .training.trainer import TrainConfig, train

    fields = TrainConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["model_kwargs"] = dict(args.model_arg)
    if args.budget:
        keep = set(_explicit_options(build_parser(), sys.argv[1:] if args.argv is None else args.argv))
        values["keep"] = sorted(
            (keep - {"budget", "out", "device", "num_workers", "seed", "quiet", "resume", "overwrite"})
            | ({"model_kwargs"} if "model_arg" in keep else set())
        )
    if args.resume and not args.out:
        raise PixelwiseError("--resume needs --out RUN, the run directory to continue")
    if not args.resume and not args.data:
        raise PixelwiseError("give DATA, a folder with images/ and masks/ (see pixelwise train --help)")
    result = train(TrainConfig(**values), resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    from .metrics import format_metrics_table
    from .training.distributed import is_main

    if not is_main():  # under torchrun, rank 0 reports for all
        return 0

    if result.best_metrics:
        print(format_metrics_table(result.best_metrics))
        print(f"best epoch {result.best_epoch}: val mIoU {100 * result.best_metrics['miou']:.2f}")
    print(f"run: {result.run_dir}")
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluation import evaluate
    from .metrics import format_metrics_table

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


def _cmd_inspect(args) -> int:
    import json

    from .inspection import format_report, inspect_data

    report = inspect_data(
        args.data,
        format=args.format,
        encoding=args.encoding,
        classes_file=args.classes_file,
        resize_masks=args.resize_masks,
        max_pixels=args.max_pixels,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        out=args.out,
        workers=args.workers,
        progress=not args.quiet and not args.json,
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    blocking = [p for p in report["problems"] if p["severity"] == "error" and not (args.skip_bad and p["skippable"])]
    return 1 if blocking else 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(
        out=args.out,
        num_images=args.images,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    return 0


COMMANDS = {
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "inspect": _cmd_inspect,
    "predict": _cmd_predict,
    "demo": _cmd_demo,
    "serve": _cmd_serve,
    "export": _cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return COMMANDS[args.command](args)
    except PixelwiseError as e:
        print(f"pixelwise: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pixelwise: interrupted", file=sys.stderr)
        return 130
