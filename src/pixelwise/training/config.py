"""TrainConfig: every choice of a training run, with its default, its check and its help text.

The ``pixelwise train`` flags are generated from these fields (``pixelwise.cli.config_flags``), so
names, defaults and help match the Python keywords of :func:`pixelwise.train`: the flag of a field
is its name with dashes (``num_workers`` -> ``--num-workers``). ``config.yaml`` in a run directory
is this dataclass serialised; ``pixelwise train --config FILE`` starts a run from one.

Field metadata read by the flag generator and by :meth:`TrainConfig.validate`:

- ``help``: what the option does (the default is appended by the generator);
- ``group``: ``model``, ``optimisation``, ``augmentation``, ``data``, ``format`` (how a data set on
  disk is read; shared with evaluate and inspect) or ``run``;
- ``choices``: the allowed values (a tuple, or a function returning one);
- ``registry``: True when ``choices`` are the names of a registry (``pixelwise.models.MODELS``,
  ``pixelwise.losses.LOSSES``, ``pixelwise.data.formats.FORMATS``) that Python users may extend;
  ``validate`` leaves those to the code that looks the name up;
- ``metavar``; ``const``: the value of a flag given without one (``--pretrained`` alone);
- ``parse``: a function from the command-line word to the value, raising ValueError with a message;
  on a ``dict`` field it parses one ``KEY=VALUE`` item of a repeatable flag;
- ``min``, ``max`` (inclusive), ``above``, ``below`` (exclusive) bounds, and ``hint``, appended to
  the message when a bound is broken;
- ``default_text``: how ``--help`` shows a default whose value alone says little;
- ``off``: the value of a ``--no-<name>`` flag added beside the option (``--no-pretrained`` = ``none``);
- ``positional``: a positional argument rather than a flag (DATA);
- ``cli``: False for a field that is not an option (``keep``, set from the flags given).
"""

from __future__ import annotations

import math
import numbers
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from ..data.encodings import DEFAULT_MAX_PIXELS, ENCODINGS
from ..errors import PixelwiseError

# Names of the registries pixelwise.models.MODELS, pixelwise.losses.LOSSES and
# pixelwise.data.formats.FORMATS, repeated here so that building the command-line parser imports
# neither torch nor the data readers; a test checks that they match the registries.
ARCH_NAMES = ("unet", "unetplusplus", "fpn", "deeplabv3plus", "segformer", "deeplabv3", "fcn", "lraspp", "bisenetv2")
LOSS_NAMES = ("ce", "dice", "focal", "ce+dice", "focal+dice", "ohem", "ohem+dice", "lovasz", "ce+lovasz")
FORMAT_NAMES = ("auto", "folder", "voc", "cityscapes", "camvid", "camvid-color", "ade20k", "coco", "labelme")
SCHEDULES = ("cosine", "poly", "constant")
# pixelwise.instances.TASKS, repeated for the same reason (a test checks that they match).
TASK_NAMES = ("semantic", "instance", "panoptic")
CLASS_WEIGHTINGS = ("auto", "median", "sqrt", "inverse")

# Keys of config.yaml files (and of the training config inside model.json) written by earlier
# versions, and their names now.
RENAMED_KEYS = {"max_pixels": "max_image_pixels"}


def parse_scale_range(text: str) -> tuple[float, float]:
    """``"LOW,HIGH"`` -> (low, high); ValueError unless two numbers with 0 < low <= high."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError("expected two numbers like 0.5,2.0") from None
    if not 0 < lo <= hi:
        raise ValueError("expected 0 < low <= high")
    return lo, hi


def parse_key_value(text: str) -> tuple[str, object]:
    """``"KEY=VALUE"`` -> (key, value), the value read as YAML (``[128,64]`` is a list)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError("expected KEY=VALUE, e.g. decoder_channels=[128,64,32,16,8]")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise ValueError(f"cannot parse the value of {key.strip()}") from None


def parse_budget(text: str) -> float:
    """A time budget (``90s``, ``20m``, ``2h``, ``1d``) in seconds."""
    from .planner import parse_budget as parse

    try:
        return parse(text)
    except PixelwiseError as e:
        raise ValueError(str(e)) from None


def parse_milliseconds(text: str) -> float:
    """A duration in milliseconds from ``40``, ``40ms``, ``0.04s``; ValueError otherwise."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*", str(text).lower())
    if not m:
        raise ValueError("expected a time like 40ms, 40 (milliseconds) or 0.04s")
    value = float(m.group(1))
    return value * 1000.0 if m.group(2) == "s" else value


def option(default=MISSING, *, factory=MISSING, **metadata):
    """A dataclass field whose metadata describes its command-line option (keys in the module docstring)."""
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every choice of a training run. Defaults work; each is a ``pixelwise train`` flag."""

    data: str = option(
        "", group="data", positional=True, help="data folder with images/ and masks/ (not needed with --resume)"
    )
    out: str = option("", group="run", help="run directory", default_text="runs/<date-time>")
    arch: str = option("unet", group="model", choices=ARCH_NAMES, registry=True, help="architecture")
    encoder: str = option(
        "resnet18",
        group="model",
        help="encoder for segmentation-models-pytorch architectures: resnet18, resnet34, mobilenet_v2, "
        "efficientnet-b0, tu-<timm name>, ...",
    )
    model_kwargs: dict = option(
        factory=dict,
        group="model",
        metavar="KEY=VALUE",
        parse=parse_key_value,
        default_text="none",
        help="extra architecture argument, e.g. decoder_channels=[128,64,32,16,8] (repeatable)",
    )
    dropout: float = option(0.0, group="model", min=0.0, below=1.0, help="dropout before the classifier")
    task: str = option(
        "semantic",
        group="model",
        choices=TASK_NAMES,
        help="semantic = a class per pixel; instance = also the objects of the thing classes (a centre heatmap "
        "and offsets to the centres, 3 more output channels); panoptic = the same network, its objects and "
        "stuff merged into one map when predicting; instance and panoptic need instance ids in the data",
    )
    centre_sigma: float = option(
        8.0,
        group="optimisation",
        above=0.0,
        max=256.0,
        metavar="PIXELS",
        help="with --task instance/panoptic: standard deviation of the Gaussian centre heatmap, in pixels",
    )
    centre_weight: float = option(
        200.0,
        group="optimisation",
        min=0.0,
        metavar="WEIGHT",
        help="with --task instance/panoptic: weight of the centre heatmap's mean squared error in the loss",
    )
    offset_weight: float = option(
        0.01,
        group="optimisation",
        min=0.0,
        metavar="WEIGHT",
        help="with --task instance/panoptic: weight of the L1 error of the offsets (on object pixels) in the loss",
    )
    pretrained: str | None = option(
        "auto",
        group="model",
        const="imagenet",
        off="none",
        metavar="auto|none|imagenet|PATH",
        default_text="auto",
        help="encoder weights to start from: auto = ImageNet weights from the local cache, else downloaded, "
        "else from scratch with a note saying why; imagenet (the flag alone) = those weights or an error; "
        "none (or --no-pretrained) = from scratch; PATH = a local .safetensors file (a pixelwise run or an "
        "encoder state dict)",
    )
    epochs: int = option(30, group="optimisation", min=1, help="passes over the training split")
    batch_size: int = option(
        8,
        group="optimisation",
        min=1,
        help="images per optimizer step; under torchrun the global batch, split evenly over the processes",
    )
    lr: float = option(
        1e-3,
        group="optimisation",
        above=0.0,
        help="AdamW learning rate for the --batch-size batch, whatever the number of processes",
    )
    weight_decay: float = option(1e-4, group="optimisation", min=0.0, help="AdamW weight decay")
    schedule: str = option(
        "cosine", group="optimisation", choices=SCHEDULES, help="learning-rate decay after a linear warm-up"
    )
    warmup_epochs: float = option(1.0, group="optimisation", min=0.0, help="epochs of linear learning-rate warm-up")
    max_side: int = option(
        0,
        group="model",
        min=0,
        max=16384,
        metavar="PIXELS",
        default_text="0 = native size",
        help="working resolution: the network sees every image resized so its longer side is at most this many "
        "pixels, in training, validation, evaluation, prediction, serving and export (stored in the model); "
        "masks and scores stay at each image's own size",
    )
    crop_size: int = option(
        256, group="augmentation", min=8, help="side of the square training crop, in pixels (at the working resolution)"
    )
    scale_range: tuple[float, float] = option(
        (0.5, 2.0),
        group="augmentation",
        parse=parse_scale_range,
        metavar="LOW,HIGH",
        default_text="0.5,2.0",
        help="random rescale before cropping; 1,1 = off",
    )
    hflip: bool = option(True, group="augmentation", help="random horizontal flips")
    vflip: bool = option(False, group="augmentation", help="random vertical flips")
    color_jitter: float = option(0.2, group="augmentation", min=0.0, help="colour jitter strength, 0 = off")
    loss: str = option("ce+dice", group="optimisation", choices=LOSS_NAMES, registry=True, help="training loss")
    class_weights: str | None = option(
        None,
        group="optimisation",
        choices=CLASS_WEIGHTINGS,
        const="auto",
        default_text="none",
        help="weight the loss by class frequency of the training masks (alone or auto = median frequency; "
        "sqrt = its square root)",
    )
    class_crops: float = option(
        0.0,
        group="augmentation",
        min=0.0,
        max=1.0,
        metavar="SHARE",
        hint="e.g. 0.5; 0 = off",
        default_text="0 = off",
        help="share of training crops centred on a pixel of a class drawn uniformly from those in the "
        "mask, so rare classes are seen often",
    )
    boundary_weight: float = option(
        0.0,
        group="optimisation",
        min=0.0,
        max=100.0,
        metavar="WEIGHT",
        default_text="0 = off",
        help="extra cross-entropy weight on pixels near a class boundary (within 3 px): their weight is 1 + WEIGHT",
    )
    grad_clip: float = option(1.0, group="optimisation", min=0.0, help="max gradient norm, 0 = off")
    ema: float = option(
        0.0,
        group="optimisation",
        min=0.0,
        below=1.0,
        metavar="DECAY",
        hint="e.g. 0.999; 0 = off",
        default_text="0 = off",
        help="validate and save an exponential moving average of the weights with this decay per step, e.g. 0.999",
    )
    amp: bool = option(
        True,
        group="optimisation",
        help="mixed precision: fp16/bf16 on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16/AMX); --no-amp = float32",
    )
    channels_last: bool | None = option(
        None,
        group="optimisation",
        default_text="on CUDA only; the demo and --budget runs turn it on",
        help="NHWC memory layout (1.1x on an AVX2 CPU, 1.0x on an AVX-512 one)",
    )
    seed: int = option(
        0, group="run", min=0, max=2**32 - 1, help="random seed of the split, the weights and the augmentation"
    )
    deterministic: bool = option(False, group="run", help="deterministic kernels (slower on GPU)")
    num_workers: int = option(
        -1, group="data", min=-1, help="data loader processes; -1 = chosen from the CPU count, 0 = in the main process"
    )
    cache: bool = option(
        True,
        group="data",
        help="keep decoded training images in memory when they fit in 2 GB; --no-cache decodes them every epoch",
    )
    val_fraction: float = option(
        0.2, group="data", min=0.0, below=1.0, help="held-out validation share when DATA/splits/ is absent"
    )
    test_fraction: float = option(
        0.0, group="data", min=0.0, below=1.0, help="held-out test share when DATA/splits/ is absent"
    )
    val_every: int = option(1, group="run", min=1, help="validate every N epochs")
    patience: int = option(
        0,
        group="optimisation",
        min=0,
        default_text="0 = never",
        help="stop after this many validations without a better mIoU",
    )
    max_steps_per_epoch: int = option(
        0, group="run", min=0, default_text="0 = the whole split", help="cap on batches per epoch (quick trials)"
    )
    device: str = option("auto", group="run", help="auto, cpu, cuda, cuda:1")
    sync_bn: bool = option(
        False, group="run", help="under torchrun on GPUs: BatchNorm statistics over the global batch, not per process"
    )
    budget: float = option(
        0.0,
        group="run",
        min=0.0,
        parse=parse_budget,
        metavar="TIME",
        default_text="0 = off",
        help="plan the recipe (model, crop, batch, epochs, schedule) so the whole run ends within TIME: "
        "90s, 20m, 2h, 1d, or seconds; options you give explicitly are kept; the plan goes to RUN/plan.json",
    )
    max_latency: float = option(
        0.0,
        group="run",
        min=0.0,
        max=600000.0,
        parse=parse_milliseconds,
        metavar="MS",
        default_text="0 = any",
        help="with --budget: only models that predict one image of the data's median size in at most MS "
        "milliseconds on this machine (measured while planning, with the engine predict uses)",
    )
    keep: list = option(factory=list, cli=False, help="with budget: options the planner leaves as given")
    time_limit: float = option(
        0.0,
        group="run",
        min=0.0,
        metavar="SECONDS",
        default_text="0 = none",
        help="wall seconds of the training loop: training stops on the clock or after --epochs, whichever "
        "comes first, and the learning-rate schedule follows the one further along",
    )
    validations: int = option(
        0,
        group="run",
        min=0,
        default_text="0 = every --val-every epochs and when the time is up",
        help="with --time-limit: validations spread evenly over that time (the last at the end)",
    )
    format: str = option(
        "auto", group="format", choices=FORMAT_NAMES, registry=True, help="data set layout; auto = detected and printed"
    )
    encoding: str = option(
        "auto", group="format", choices=ENCODINGS, help="how mask pixels are stored; auto = detected and printed"
    )
    classes_file: str | None = option(
        None,
        group="format",
        metavar="FILE",
        default_text="the data set's own",
        help="classes YAML (names, colors, ignore_index, ignore_color) to use instead of the data set's",
    )
    resize_masks: str | None = option(
        None,
        group="format",
        choices=("nearest",),
        default_text="none: a size mismatch is an error",
        help="resize a mask whose size differs from its image",
    )
    skip_bad: bool = option(False, group="format", help="leave out samples with problems (listed) instead of stopping")
    max_image_pixels: int = option(
        DEFAULT_MAX_PIXELS, group="format", min=1, help="refuse images and masks with more pixels (decompression bombs)"
    )

    def __post_init__(self):
        # Paths may be given as pathlib.Path; config.yaml and model.json hold text.
        for name in ("data", "out", "classes_file", "pretrained"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))

    def to_dict(self) -> dict:
        """Plain values (lists, not tuples) as written to config.yaml."""
        d = asdict(self)
        d["scale_range"] = list(self.scale_range)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The config a :meth:`to_dict` dict (or an older config.yaml) describes; unknown keys are an error."""
        d = _renamed(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise PixelwiseError(f"unknown training options: {', '.join(sorted(unknown))}")
        if "scale_range" in d and d["scale_range"] is not None:
            d["scale_range"] = tuple(d["scale_range"])
        return cls(**d)

    def validate(self) -> None:
        """Raise a one-line :class:`PixelwiseError` naming the flag of the first option out of range."""
        hints = field_types()
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            problem = _type_problem(value, hints[f.name])
            if problem:  # a Python caller's value of the wrong type (the flags and files are typed already)
                error = PixelwiseError(f"{flag_name(f.name)}: {problem}")
                error.option = f.name
                raise error
            if value is None:
                continue
            problem = _range_problem(value, meta, is_float=float in _non_none(hints[f.name]))
            if problem is None and "choices" in meta and not meta.get("registry") and value not in meta["choices"]:
                problem = f"must be one of {', '.join(meta['choices'])}"
            if problem:
                hint = f" ({meta['hint']})" if "hint" in meta else ""
                error = PixelwiseError(f"{flag_name(f.name)} {value}: {problem}{hint}")
                error.option = f.name  # lets a caller say which file the value came from
                raise error
        if self.val_fraction + self.test_fraction >= 1.0:
            raise PixelwiseError(
                f"--val-fraction {self.val_fraction} and --test-fraction {self.test_fraction} leave nothing to "
                "train on; their sum must be below 1"
            )
        lo, hi = self.scale_range
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise PixelwiseError(f"--scale-range {lo},{hi}: expected 0 < low <= high, e.g. 0.5,2.0")
        if 0 < self.max_side < 16:
            raise PixelwiseError(f"--max-side {self.max_side}: expected 0 (native size) or at least 16 pixels")
        if self.boundary_weight and self.loss in ("dice", "lovasz"):
            raise PixelwiseError(
                f"--boundary-weight weights cross-entropy terms; --loss {self.loss} has none "
                "(use ce, focal, ohem or a combination such as ce+lovasz)"
            )
        if self.max_latency and not self.budget:
            raise PixelwiseError("--max-latency restricts the plan of a --budget run; give --budget too")


def check_task_data(config: TrainConfig, data) -> None:
    """Raise a one-line :class:`PixelwiseError` when ``config.task`` needs what the opened data set
    ``data`` lacks: instance/panoptic need instance ids for every sample and at least one thing class."""
    if config.task == "semantic":
        return
    where = config.data or "DATA"
    if not getattr(data, "has_instances", False):
        raise PixelwiseError(
            f"{where} has no object ids: add instances/<stem>.png, or use COCO/LabelMe/Cityscapes instance "
            f"annotations; or train --task semantic"
        )
    if not tuple(getattr(data.classes, "things", ()) or ()):
        raise PixelwiseError(
            f"{where} has no thing class (countable objects) for --task {config.task}: list them under things: "
            "in classes.yaml (e.g. things: [car, person]); or train --task semantic"
        )


def flag_name(name: str) -> str:
    """The command-line flag of field ``name``: ``num_workers`` -> ``--num-workers``."""
    return "--" + name.replace("_", "-")


def field_types() -> dict[str, object]:
    """Field name -> its annotation as a type (``int``, ``str | None``, ``tuple[float, float]``, ...)."""
    return typing.get_type_hints(TrainConfig)


def _non_none(hint) -> tuple:
    """The types a ``X | None`` annotation allows besides None (``(X,)`` for a plain ``X``)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(a for a in typing.get_args(hint) if a is not type(None))
    return (hint,)


def _bounds_text(meta) -> str:
    """The allowed range of a number as words: ``at least 0 and below 1``."""
    words = {"min": "at least", "above": "more than", "max": "at most", "below": "below"}
    return " and ".join(
        f"{w} {meta[k]:{'d' if isinstance(meta[k], int) else 'g'}}" for k, w in words.items() if k in meta
    )


def _range_problem(value, meta, is_float: bool) -> str | None:
    """What is wrong with a number against the ``min``/``max``/``above``/``below`` bounds of its field."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if is_float and not math.isfinite(value):
        return "must be a finite number"
    outside = (
        ("min" in meta and value < meta["min"])
        or ("above" in meta and value <= meta["above"])
        or ("max" in meta and value > meta["max"])
        or ("below" in meta and value >= meta["below"])
    )
    return f"must be {_bounds_text(meta)}" if outside else None


_TYPE_WORDS = {
    int: "a whole number",
    float: "a number",
    str: "text",
    bool: "true or false",
    dict: "a mapping",
    list: "a list",
}


def _type_problem(value, hint) -> str | None:
    """Why ``value`` (read from YAML) does not fit annotation ``hint``; None when it does."""
    allowed = _non_none(hint)
    if value is None:
        return None if type(None) in typing.get_args(hint) else "must have a value, not null"
    for t in allowed:
        origin = typing.get_origin(t) or t
        if origin is tuple and isinstance(value, (list, tuple)):
            n = len(typing.get_args(t))
            ok = len(value) == n and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            return None if ok else f"must be a list of {n} numbers, not {value!r}"
        if isinstance(value, bool) != (origin is bool):
            continue  # YAML's true/false is neither a number nor a word here
        if origin is float and isinstance(value, numbers.Real) or origin is int and isinstance(value, numbers.Integral):
            return None
        if isinstance(value, origin):
            return None
    names = " or ".join(_TYPE_WORDS.get(typing.get_origin(t) or t, str(t)) for t in allowed)
    return f"must be {names}, not {value!r}"


def _renamed(d: dict) -> dict:
    """``d`` with the keys of earlier versions under their names now (a new key present wins)."""
    return {RENAMED_KEYS.get(k, k): v for k, v in d.items() if not (k in RENAMED_KEYS and RENAMED_KEYS[k] in d)}


def load_config_file(path: str | Path) -> dict:
    """Read a ``config.yaml`` (as a run directory holds) into checked TrainConfig keyword arguments.

    Old key names are mapped (``max_pixels`` -> ``max_image_pixels``). A missing or unreadable file,
    a file that is not a mapping, unknown keys and values of the wrong type raise a one-line
    :class:`PixelwiseError` that names the file.
    """
    import yaml

    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PixelwiseError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise PixelwiseError(f"{path}: cannot read the config file ({' '.join(str(e).split())})") from None
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise PixelwiseError(f"{path}: expected option: value lines (a mapping) as in a run's config.yaml")
    d = _renamed(d)
    hints = field_types()
    unknown = sorted(str(k) for k in d if k not in hints)
    if unknown:
        raise PixelwiseError(f"{path}: unknown training options: {', '.join(unknown)}")
    for key, value in d.items():
        problem = _type_problem(value, hints[key])
        if problem:
            raise PixelwiseError(f"{path}: {key} {problem}")
    if d.get("scale_range") is not None:
        d["scale_range"] = tuple(float(v) for v in d["scale_range"])
    return d
