"""A trained model on disk: ``model.safetensors`` (weights) + ``model.json`` (a :class:`Bundle`).

This module is the only code that reads or writes ``model.json``. Loading never unpickles
anything: tensors come from safetensors, metadata from JSON. The JSON carries what is needed to
use the model with no other file: architecture and encoder, class names and colours, ignore
index, input normalisation, the training configuration, validation metrics and the library
versions it was made with.

Schema versions: 1 is the untyped ``model.json`` of pixelwise 0.1 (key ``format_version``);
2 adds ``schema_version`` and is what is written now. Both load. ``training.pretrained`` (what
the weights started from) is optional: readers that do not know it skip it. So are ``model.task``
(``semantic``, ``instance`` or ``panoptic``; absent = semantic) and ``classes.things`` (the class
indices of countable objects; absent = none), which instance and panoptic models record, and
``input.max_side`` (the working resolution: the network sees each image with its longer side at
most that many pixels; absent or 0 = the image's own size).

``model.json`` is checked before anything is built: types and ranges of every section, and for
``model`` the architecture's allowed keyword arguments and a known encoder name
(:func:`pixelwise.models.model_config_problem`), so that no ``model.json`` can make a library
load, unpickle or download a file.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode

from .classes import ClassInfo
from .errors import PixelwiseError, short_message
from .fileio import atomic_path, write_json
from .models import ModelConfig, SegmentationModel, build_model, model_config_problem

WEIGHTS = "model.safetensors"
META = "model.json"
SCHEMA_VERSION = 2
# A model with a working resolution is written as schema 3: a pixelwise that predates input.max_side
# refuses it ("upgrade pixelwise") instead of running the network at a scale it never saw.
WORKING_RESOLUTION_SCHEMA = 3
READABLE_SCHEMAS = (1, 2, 3)


@dataclass(frozen=True)
class Normalization:
    """Per-channel input normalisation: ``(x - mean) / std`` on RGB values in [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}


# A working resolution below this is refused (as --max-side is): no network learns from 15 px.
MIN_MAX_SIDE = 16
MAX_MAX_SIDE = 16384


@dataclass(frozen=True)
class InputSpec:
    """How images are fed to the network. ``max_side``: the working resolution, the longer side in
    pixels at which the network sees an image (larger images are downscaled to it, see
    :func:`pixelwise.data.transforms.working_size`, and its outputs resized back); 0 = native size."""

    max_side: int = 0

    def to_dict(self) -> dict:
        return {"max_side": self.max_side}


@dataclass
class TrainingSummary:
    """How the model was trained: the saved ``TrainConfig`` (as a dict) and where it ran."""

    config: dict = field(default_factory=dict)
    device: str = ""
    amp: str | None = None
    processes: int = 1
    batch_per_process: int | None = None
    global_batch: int | None = None
    epoch: int | None = None  # the epoch whose weights these are
    best_epoch: int | None = None
    # What the weights started from: "imagenet (cache)", "imagenet (downloaded)", "none",
    # "none: offline", a weights file's path, ... (None: not recorded, as in bundles before it was).
    pretrained: str | None = None


@dataclass
class Bundle:
    """Everything in ``model.json``, typed. ``metrics`` holds ``{"val": metrics dict}`` when validated."""

    model: ModelConfig
    classes: ClassInfo
    normalization: Normalization
    training: TrainingSummary = field(default_factory=TrainingSummary)
    data: dict = field(default_factory=dict)  # what the training data was: root, counts, format, encoding
    metrics: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    input: InputSpec = field(default_factory=InputSpec)

    def to_dict(self) -> dict:
        return {
            "schema_version": WORKING_RESOLUTION_SCHEMA if self.input.max_side else self.schema_version,
            "model": self.model.to_dict(),
            "classes": self.classes.to_dict(),
            "normalization": self.normalization.to_dict(),
            "input": self.input.to_dict(),
            "training": asdict(self.training),
            "data": dict(self.data),
            "metrics": dict(self.metrics),
            "versions": dict(self.versions),
        }

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = META) -> Bundle:
        """Check and read a ``model.json`` dict of any readable schema; errors name ``source``."""
        if not isinstance(d, dict):
            raise PixelwiseError(f"{source}: expected a JSON object; not a pixelwise bundle")
        version = d.get("schema_version", d.get("format_version", 1))
        if version not in READABLE_SCHEMAS:
            raise PixelwiseError(
                f"{source}: schema version {version!r} is not one this pixelwise reads ({READABLE_SCHEMAS}); "
                "upgrade pixelwise or retrain"
            )
        for key in ("model", "classes", "normalization"):
            if not isinstance(d.get(key), dict):
                raise PixelwiseError(f"{source}: missing or malformed '{key}'; not a pixelwise bundle")
        model, classes = _model_config(d["model"], source), _classes(d["classes"], source)
        if classes.num_classes != model.num_classes:
            raise PixelwiseError(
                f"{source}: {classes.num_classes} class names for a model with {model.num_classes} outputs; "
                "the bundle is damaged"
            )
        return cls(
            model=model,
            classes=classes,
            normalization=_normalization(d["normalization"], source),
            training=_training({} if d.get("training") is None else d["training"], source),
            data=_mapping(d.get("data"), "data", source),
            metrics=_mapping(d.get("metrics"), "metrics", source),
            versions=_mapping(d.get("versions"), "versions", source),
            schema_version=SCHEMA_VERSION,
            input=_input(d.get("input"), source),
        )

    @property
    def train_config(self) -> dict:
        """The training configuration as saved (empty for a bundle made outside ``pixelwise train``)."""
        return self.training.config


def _mapping(value, key: str, source) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PixelwiseError(f"{source}: '{key}' must be a JSON object")
    return dict(value)


def _input(d, source) -> InputSpec:
    """``input`` of model.json; absent (bundles written before the working resolution) = native size."""
    if d is None:
        return InputSpec()
    if not isinstance(d, dict) or set(d) - {"max_side"}:
        raise PixelwiseError(
            f"{source}: 'input' must be an object with max_side only, not {_short(d)}; "
            "this model.json was edited or not written by pixelwise"
        )
    max_side = d.get("max_side", 0)
    if not (_is_int(max_side, 0, MAX_MAX_SIDE) and (max_side == 0 or max_side >= MIN_MAX_SIDE)):
        raise PixelwiseError(
            f"{source}: 'input.max_side' must be 0 (native size) or a whole number of pixels "
            f"{MIN_MAX_SIDE}..{MAX_MAX_SIDE}, not {_short(max_side)}; this model.json was edited or not written by pixelwise"
        )
    return InputSpec(max_side=max_side)


def _model_config(d: dict, source) -> ModelConfig:
    unknown = set(d) - set(ModelConfig.__dataclass_fields__)
    if unknown:
        raise PixelwiseError(f"{source}: unknown model keys {sorted(unknown)}; not a pixelwise bundle")
    ok = (
        isinstance(d.get("arch"), str)
        and isinstance(d.get("encoder", ""), str)
        and _is_int(d.get("num_classes"), 1)
        and _is_int(d.get("in_channels", 3), 1)
        and isinstance(d.get("dropout", 0.0), (int, float))
        and not isinstance(d.get("dropout", 0.0), bool)
        and 0.0 <= float(d.get("dropout", 0.0)) < 1.0
        and isinstance(d.get("kwargs", {}), dict)
    )
    if not ok:
        raise PixelwiseError(
            f"{source}: 'model' needs arch (text), num_classes (>= 1), dropout in [0, 1) and kwargs (an object)"
        )
    config = ModelConfig.from_dict(d)
    problem = model_config_problem(config)
    if problem:
        where, words = problem
        raise PixelwiseError(f"{source}: model.{where} {words}; this model.json was edited or not written by pixelwise")
    return config


def _classes(d: dict, source) -> ClassInfo:
    names, colors, ignore = d.get("names"), d.get("colors"), d.get("ignore_index", 255)
    ok = (
        isinstance(names, list)
        and names
        and all(isinstance(n, str) for n in names)
        and isinstance(colors, list)
        and len(colors) == len(names)
        and all(isinstance(c, list) and len(c) == 3 and all(_is_int(v, 0, 255) for v in c) for c in colors)
        and _is_int(ignore, 0, 65535)
    )
    if not ok:
        raise PixelwiseError(
            f"{source}: 'classes' needs names (text), one [r, g, b] colour (0..255) per name and an integer ignore_index"
        )
    things = d.get("things", [])  # absent in bundles written before instance models: no things
    if not (
        isinstance(things, list)
        and all(_is_int(t, 0, len(names) - 1) for t in things)
        and len(set(things)) == len(things)
    ):
        raise PixelwiseError(
            f"{source}: 'classes.things' must be a list of distinct class indices 0..{len(names) - 1}, "
            f"not {_short(things)}; this model.json was edited or not written by pixelwise"
        )
    return ClassInfo.from_dict(d)


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _normalization(d: dict, source) -> Normalization:
    def triple(v, positive: bool) -> bool:
        return (
            isinstance(v, list)
            and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
            and (not positive or all(x > 0 for x in v))
        )

    mean, std = d.get("mean"), d.get("std")
    if not (triple(mean, False) and triple(std, True)):
        raise PixelwiseError(f"{source}: 'normalization' needs mean and std, three finite numbers each (std > 0)")
    return Normalization(tuple(float(x) for x in mean), tuple(float(x) for x in std))


def _training(d, source) -> TrainingSummary:
    if not isinstance(d, dict):
        raise PixelwiseError(f"{source}: 'training' must be a JSON object")
    known = {k: d[k] for k in TrainingSummary.__dataclass_fields__ if k in d}
    if not isinstance(known.get("config", {}), dict):
        raise PixelwiseError(f"{source}: 'training.config' must be a JSON object")
    for key in ("device", "amp", "pretrained"):
        if not isinstance(known.get(key), (str, type(None))):
            raise PixelwiseError(f"{source}: 'training.{key}' must be text")
    for key in ("processes", "batch_per_process", "global_batch", "epoch", "best_epoch"):
        value = known.get(key)
        if value is not None and not _is_int(value, 0):
            raise PixelwiseError(f"{source}: 'training.{key}' must be a whole number >= 0")
    return TrainingSummary(**known)


def _is_int(v, lo: int, hi: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)


def library_versions() -> dict:
    import numpy
    import PIL
    import safetensors
    import torchvision

    from .version import __version__

    out = {
        "pixelwise": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "safetensors": getattr(safetensors, "__version__", "unknown"),
    }
    try:
        import segmentation_models_pytorch as smp

        out["segmentation_models_pytorch"] = smp.__version__
    except ImportError:
        pass
    return out


def state_dict_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU, contiguous, unshared copy of the weights (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_bundle(directory: str | Path, model: SegmentationModel, bundle: Bundle) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (each atomically).

    ``bundle.model`` is replaced by the network's own config, ``versions`` is filled in when empty
    and ``training.pretrained`` from the model's ``pretrained_source`` when not set.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bundle.model = model.config
    if bundle.training.pretrained is None:
        bundle.training.pretrained = getattr(model, "pretrained_source", None)
    if not bundle.versions:
        bundle.versions = library_versions()
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(state_dict_for_saving(model), str(tmp), metadata={"format": "pt", "pixelwise": str(SCHEMA_VERSION)})
    write_json(directory / META, bundle.to_dict())
    return directory


def read_bundle(directory: str | Path) -> Bundle:
    """The checked :class:`Bundle` of ``directory/model.json`` (weights must be present too)."""
    directory = Path(directory)
    path = directory / META
    if not directory.exists():
        raise PixelwiseError(f"{directory}: no such run; give the run directory printed by `pixelwise train`")
    if not path.is_file() or not (directory / WEIGHTS).is_file():
        raise PixelwiseError(
            f"{directory}: no trained model here (needs {META} and {WEIGHTS}); "
            "give a run directory that finished at least one epoch"
        )
    if path.stat().st_size > MAX_META_BYTES:
        raise PixelwiseError(
            f"{path}: {path.stat().st_size / 2**20:.0f} MiB, far more than a model.json holds "
            f"(at most {MAX_META_BYTES // 2**20} MiB); the bundle is damaged"
        )
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise PixelwiseError(f"{path}: not valid JSON; the bundle is damaged, retrain or restore it") from None
    if _nesting(raw) > MAX_META_DEPTH:
        raise PixelwiseError(f"{path}: nested more than {MAX_META_DEPTH} levels deep; the bundle is damaged")
    return Bundle.from_dict(raw, path)


# Limits on model.json: the ones pixelwise writes are a few kB and about 5 levels deep.
MAX_META_BYTES = 16 * 2**20
MAX_META_DEPTH = 32


def _nesting(value) -> int:
    """How many levels of lists and objects ``value`` has (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_META_DEPTH:
                stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def load_bundle(directory: str | Path, device: str | torch.device = "cpu") -> tuple[SegmentationModel, Bundle]:
    """Rebuild the network from ``model.json`` and load ``model.safetensors``; returns (model in eval mode, bundle)."""
    directory = Path(directory)
    bundle = read_bundle(directory)
    try:
        _refuse_oversized(directory / WEIGHTS, bundle.model)
        model = build_model(bundle.model)
    except PixelwiseError as e:
        raise PixelwiseError(f"{directory / META}: {e}") from None
    try:
        state = load_file(str(directory / WEIGHTS), device="cpu")
    except Exception as e:
        raise PixelwiseError(
            f"{directory / WEIGHTS}: cannot read weights ({e.__class__.__name__}); the bundle is damaged"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise PixelwiseError(
            f"{directory / WEIGHTS}: weights do not match {META} ({short_message(e)}); the bundle is damaged"
        ) from None
    return model.to(device).eval(), bundle


# A network may need this much more memory than its weights file holds (buffers such as batch
# norm statistics are saved too, so a bundle pixelwise wrote needs about 1.0x).
SIZE_SLACK = 1.5
SIZE_SLACK_BYTES = 16 * 2**20


# The longest linspace/logspace a shapes-only build computes for real (drop-path schedules: one
# value per block).
SCHEDULE_STEPS = 4096


class _RealSchedules(TorchFunctionMode):
    """Inside a ``meta`` build, ``linspace`` / ``logspace`` of at most ``SCHEDULE_STEPS`` values run
    on the CPU: encoders read such schedules while they are built (Mix Transformer's and timm's
    drop-path rates call ``.item()`` / ``.tolist()`` on them), which a shapes-only tensor cannot give."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.linspace, torch.logspace) and kwargs.get("device") is None:
            steps = args[2] if len(args) > 2 else kwargs.get("steps")
            if isinstance(steps, int) and 0 <= steps <= SCHEDULE_STEPS:
                kwargs = {**kwargs, "device": "cpu"}
        return func(*args, **kwargs)


def _refuse_oversized(weights: Path, config: ModelConfig) -> None:
    """Refuse a ``model.json`` describing a network far larger than its weights file, before any
    memory is allocated: the network is first built on PyTorch's ``meta`` device (shapes only)."""
    try:
        with torch.device("meta"), _RealSchedules():
            net = build_model(ModelConfig.from_dict(config.to_dict()))
    except PixelwiseError:
        raise
    except Exception:  # a network that cannot be built without memory: the real build decides
        return
    need = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    have = weights.stat().st_size
    if need > SIZE_SLACK * have + SIZE_SLACK_BYTES:
        raise PixelwiseError(
            f"describes a network of {need / 2**20:.0f} MiB but {weights.name} holds {have / 2**20:.0f} MiB; "
            "the bundle is damaged or was edited"
        )
