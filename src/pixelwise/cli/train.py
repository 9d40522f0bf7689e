"""``pixelwise train``: train a model on a data set."""

from __future__ import annotations

import argparse
import sys

from ..errors import PixelwiseError
from .arguments import budget, model_arg, positive_int, scale_range
from .data_flags import add_data_flags

# Names of the registries in pixelwise.models.MODELS and pixelwise.losses.LOSSES, kept here so that
# building the parser imports no torch; a test checks they match the registries.
ARCH_NAMES = ("unet", "unetplusplus", "fpn", "deeplabv3plus", "deeplabv3", "fcn", "lraspp")
LOSS_NAMES = ("ce", "dice", "focal", "ce+dice", "focal+dice")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``subparsers``."""
    from ..training.config import TrainConfig

    p = subparsers.add_parser(
        "train",
        help="train a model on DATA (images/ + masks/)",
        description="Train a model on a data set in the pixelwise folder layout.",
    )
    p.add_argument("data", nargs="?", default="", help="data folder with images/ and masks/ (not needed with --resume)")
    defaults = TrainConfig()
    _add_model_args(p.add_argument_group("model"), defaults)
    _add_optimisation_args(p.add_argument_group("optimisation"), defaults)
    _add_augmentation_args(p.add_argument_group("data and augmentation"), defaults)
    add_data_flags(p.add_argument_group("data format"), defaults)
    _add_run_args(p.add_argument_group("run"), defaults)
    return p


def _add_model_args(m, defaults) -> None:
    m.add_argument("--arch", choices=list(ARCH_NAMES), default=defaults.arch, help="architecture (default %(default)s)")
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
        type=model_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra architecture argument, e.g. decoder_channels=[128,64,32,16,8] (repeatable)",
    )


# long: one add_argument call per optimisation flag, in the order --help lists them
def _add_optimisation_args(o, defaults) -> None:
    o.add_argument("--epochs", type=positive_int, default=defaults.epochs, help="default %(default)s")
    o.add_argument(
        "--batch-size",
        type=positive_int,
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
    o.add_argument("--loss", choices=list(LOSS_NAMES), default=defaults.loss, help="default %(default)s")
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


def _add_augmentation_args(a, defaults) -> None:
    a.add_argument(
        "--crop-size", type=int, default=defaults.crop_size, help="square training crop (default %(default)s)"
    )
    a.add_argument(
        "--scale-range",
        type=scale_range,
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


def _add_run_args(r, defaults) -> None:
    r.add_argument("--out", default="", help="run directory (default runs/<date-time>)")
    r.add_argument("--seed", type=int, default=defaults.seed, help="default %(default)s")
    r.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on GPU)")
    r.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, cuda:1 (default %(default)s)")
    r.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun on GPUs: BatchNorm statistics over the global batch, not per process",
    )
    r.add_argument("--val-every", type=positive_int, default=defaults.val_every, help="validate every N epochs")
    r.add_argument(
        "--budget",
        type=budget,
        default=0.0,
        metavar="TIME",
        help="plan the recipe (model, crop, batch, epochs, schedule) so the whole run ends within TIME: "
        "90s, 20m, 2h, 1d; options you give explicitly are kept; the plan goes to RUN/plan.json",
    )
    r.add_argument("--max-steps-per-epoch", type=int, default=0, help="cap on batches per epoch (quick trials)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished epoch")
    r.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    r.add_argument("--quiet", action="store_true", help="no progress bars")


def _explicit_options(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Destinations of the options written on the command line (so a plan keeps them)."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    return sorted({a.dest for a in sub._actions if any(o in given for o in a.option_strings)})


def run(args) -> int:
    """Train as ``args`` says; print the best validation metrics and the run directory."""
    from ..training.trainer import TrainConfig, train
    from . import build_parser

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
    from ..metrics import format_metrics_table
    from ..training.distributed import is_main

    if not is_main():  # under torchrun, rank 0 reports for all
        return 0

    if result.best_metrics:
        print(format_metrics_table(result.best_metrics))
        print(f"best epoch {result.best_epoch}: val mIoU {100 * result.best_metrics['miou']:.2f}")
    print(f"run: {result.run_dir}")
    return 0
