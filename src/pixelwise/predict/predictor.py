"""Segmenters (one trained model, or an ensemble) and the Predictor that holds what inference means.

>>> seg = pixelwise.load("runs/demo")
>>> mask = seg.predict("street.jpg")      # (H, W) int64 class indices, the image's own size
>>> probs = seg.predict_proba(image)       # (C, H, W) float32 softmax probabilities
>>> cfg = InferenceConfig(hflip=True, scales=(0.75, 1.0, 1.25), tile_size=1024)
>>> pred = seg.predict_full(image, cfg)    # probs, labels, confidence, entropy (+ MC variance)

A :class:`Predictor` is the whole pipeline that ``predict``, ``evaluate``, ``serve`` and the export
parity check share: one model or an ensemble, the inference options (tiling, flips, scales, MC
dropout), the post-processing, the backend and the precision:

>>> predictor = load_predictor(["runs/a", "runs/b"], inference=InferenceConfig(hflip=True),
...                            postprocess=PostprocessConfig(min_size=20))
>>> labels = predictor.predict("street.jpg")   # post-processed (H, W) int64 class indices
>>> labels, pred = predictor.run(image)        # the same labels, and the probabilities behind them

Backends (see :class:`~pixelwise.predict.backends.ModelBackends`): ``torch``, ``onnxruntime`` and
``auto`` (the default: ONNX Runtime on the CPU when it is installed and the model exports,
PyTorch otherwise and on GPUs). Monte-Carlo dropout always runs the PyTorch model.

Objects (:class:`InstanceOptions`): instance and panoptic models group their centre heatmap and
offsets into objects; a semantic model's thing classes can be split into connected components:

>>> predictor = load_predictor("runs/cells", instances=InstanceOptions(method="components", things=("cell",)))
>>> result = predictor.run_objects("slide.png")   # labels, prediction, instances, panoptic
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..bundle import Bundle, load_bundle
from ..classes import ClassInfo
from ..data import read_image
from ..devices import resolve_device
from ..errors import PixelwiseError
from ..instances import (
    GroupingConfig,
    InstanceMap,
    PanopticMap,
    group_by_centres,
    merge_panoptic,
    split_components,
)
from ..postprocess import PostprocessConfig, postprocess, refine_labels
from ..viz import colorize, overlay
from .backends import BACKENDS, PRECISIONS, ModelBackends, TorchMember
from .engine import InferenceConfig, Prediction, predict_image, predict_labels

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "BaseSegmenter",
    "Ensemble",
    "InstanceOptions",
    "OBJECT_METHODS",
    "ObjectResult",
    "Predictor",
    "Segmenter",
    "as_predictor",
    "as_rgb",
    "is_run_dir",
    "load",
    "load_ensemble",
    "load_predictor",
]


def as_rgb(image) -> np.ndarray:
    """Path, PIL image or array (gray, RGB, RGBA; uint8 or uint16) -> ``(H, W, 3)`` uint8."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise PixelwiseError(f"expected an (H, W, 3) RGB image, got an array of shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise PixelwiseError(f"the image is empty ({arr.shape[0]}x{arr.shape[1]} pixels)")
    if arr.dtype == np.uint16:  # 16-bit: scale 0..65535 onto 0..255
        arr = ((arr[..., :3].astype(np.float32) + 128.5) / 257.0).astype(np.uint8)
    if arr.dtype != np.uint8:
        raise PixelwiseError(f"expected a uint8 or uint16 image, got {arr.dtype}; convert it to 8-bit RGB first")
    out = np.ascontiguousarray(arr[..., :3])
    return out if out.flags.writeable else out.copy()  # torch.from_numpy warns on read-only memory


def _is_image_list(value) -> bool:
    """A list or tuple of images (paths, PIL images, arrays), as opposed to one image given as nested lists."""
    return isinstance(value, (list, tuple)) and all(isinstance(v, (str, Path, Image.Image, np.ndarray)) for v in value)


def _class_summary(classes: ClassInfo, shown: int = 6) -> str:
    names = list(classes.names)
    listed = ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")
    return f"{len(names)} classes: {listed}"


def _changed(options) -> str:
    """The fields of an options dataclass that differ from its defaults, as ``name=value, ...``."""
    default = type(options)().to_dict()
    return ", ".join(f"{k}={v!r}" for k, v in options.to_dict().items() if default.get(k) != v)


def _labels_grouped(arrays: list[np.ndarray], members, config, device) -> list[np.ndarray]:
    """Labels for images of any sizes, each size as one batch."""
    out: list[np.ndarray | None] = [None] * len(arrays)
    by_size: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        by_size.setdefault(a.shape[:2], []).append(i)
    for idx in by_size.values():
        for i, labels in zip(idx, predict_labels([arrays[i] for i in idx], members, config, device)):
            out[i] = labels
    return out  # type: ignore[return-value]


class BaseSegmenter:
    """What a single model and an ensemble share: classes, inference members, prediction.

    Subclasses set ``classes``, ``device`` and ``bundle`` and implement :meth:`members`,
    :attr:`fingerprint` and :meth:`describe_members`. Thread-safe for prediction.
    """

    classes: ClassInfo
    device: torch.device
    bundle: Bundle
    backend: str
    precision: str

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @property
    def fingerprint(self) -> str:
        """Hash of the weights (several joined by ``+`` for an ensemble)."""
        raise NotImplementedError

    def members(self, config: InferenceConfig | None = None) -> list:
        """The inference members for ``config`` (the PyTorch models when MC dropout is on)."""
        raise NotImplementedError

    def describe_members(self) -> list[dict]:
        """One entry per model: run, architecture, encoder, weights fingerprint, backend in use."""
        raise NotImplementedError

    def predict_full(self, image, config: InferenceConfig | None = None) -> Prediction:
        """Probabilities and uncertainty of one image (path, PIL image or array) under ``config``."""
        return predict_image(as_rgb(image), self.members(config), config, self.device)

    def predict_proba(self, image, config: InferenceConfig | None = None) -> np.ndarray:
        """Softmax probabilities ``(C, H, W)`` float32 for one image (path, PIL image or uint8 array)."""
        return self.predict_full(image, config).probs

    def predict_batch(self, images: list, config: InferenceConfig | None = None) -> list[np.ndarray]:
        """Class-index masks for several images; same-size images run as one batch (unless tiled)."""
        arrays = [as_rgb(im) for im in images]
        return _labels_grouped(arrays, self.members(config), config, self.device)

    def predict(self, image, config: InferenceConfig | None = None) -> np.ndarray | list[np.ndarray]:
        """Class indices ``(H, W)`` int64 for one image; H and W are the image's own.

        Given a list (or tuple) of images, a list of masks, one per image, as :meth:`predict_batch`.
        """
        if _is_image_list(image):
            return self.predict_batch(list(image), config)
        return predict_labels([as_rgb(image)], self.members(config), config, self.device)[0]

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        return colorize(mask, self.classes.colors)

    def overlay(self, image, mask: np.ndarray, alpha: float = 0.5, legend: bool = False) -> np.ndarray:
        """The image with the class colours of ``mask`` blended in (see :meth:`Predictor.overlay`)."""
        names = list(self.classes.names) if legend else None
        return overlay(as_rgb(image), mask, self.classes.colors, alpha, legend=names)


class Segmenter(BaseSegmenter):
    """A loaded model plus its preprocessing. Thread-safe for prediction.

    ``backend``: ``auto``, ``torch`` or ``onnxruntime`` (see the module docstring); ``onnx_path``:
    an ONNX file from ``pixelwise export`` to use instead of ``RUN/model.onnx``; ``precision``:
    ``fp32`` (default) or ``bf16`` (PyTorch autocast; ``auto`` then means ``torch``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        bundle: Bundle,
        device: str | torch.device = "cpu",
        backend: str = "auto",
        onnx_path: str | Path | None = None,
        run_dir: str | Path | None = None,
        precision: str = "fp32",
    ):
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.bundle = bundle
        self.classes = bundle.classes
        self.backends = ModelBackends(self.model, bundle, self.device, backend, precision, onnx_path, run_dir)
        self.backend, self.precision = backend, precision
        self.onnx_path, self.run_dir = self.backends.onnx_path, self.backends.run_dir

    @property
    def torch_member(self) -> TorchMember:
        return self.backends.torch

    @property
    def fingerprint(self) -> str:
        """Hash of the weights (also stored in exported ONNX files)."""
        return self.backends.fingerprint

    @property
    def active_backend(self) -> str:
        """The backend plain inference uses: ``torch`` or ``onnxruntime`` (exports on first call)."""
        self.backends.plain()
        assert self.backends.active is not None
        return self.backends.active

    def members(self, config: InferenceConfig | None = None) -> list:
        if config is not None and config.mc_dropout:
            return [self.backends.stochastic()]
        return [self.backends.plain()]

    def __repr__(self) -> str:
        cfg = self.bundle.model
        run = f", run={str(self.run_dir)!r}" if self.run_dir else ""
        onnx = f", onnx={str(self.onnx_path)!r}" if self.onnx_path else ""
        active = f" (in use: {self.backends.active})" if self.backends.active else ""
        side = f", max_side={self.bundle.input.max_side}" if self.bundle.input.max_side else ""
        return (
            f"Segmenter({cfg.arch}/{cfg.encoder}, {_class_summary(self.classes)}, device={self.device}, "
            f"backend={self.backend}{active}, precision={self.precision}{side}{run}{onnx})"
        )

    def describe_members(self) -> list[dict]:
        cfg = self.bundle.model
        return [
            {
                "run": str(self.run_dir) if self.run_dir else None,
                "arch": cfg.arch,
                "encoder": cfg.encoder,
                "weights": self.fingerprint,
                "backend": self.active_backend,
                "onnx": str(self.onnx_path) if self.onnx_path else None,
                "max_side": self.bundle.input.max_side,
            }
        ]


class Ensemble(BaseSegmenter):
    """Several segmenters trained on the same classes; their probabilities are averaged.

    Every model, scale and flip counts once in the average; each model keeps its own input
    normalisation.
    """

    def __init__(self, segmenters: Sequence[Segmenter], names: Sequence[str] | None = None):
        if not segmenters:
            raise PixelwiseError("an ensemble needs at least one model")
        names = list(names) if names else [f"model {i + 1}" for i in range(len(segmenters))]
        first = segmenters[0].classes
        for seg, name in zip(segmenters[1:], names[1:]):
            if seg.classes.names != first.names:
                raise PixelwiseError(
                    f"{name} predicts classes {seg.classes.names}, {names[0]} predicts {first.names}; "
                    "an ensemble needs models trained on the same class list"
                )
        for seg, name in zip(segmenters[1:], names[1:]):
            if seg.bundle.input.max_side != segmenters[0].bundle.input.max_side:
                raise PixelwiseError(
                    f"{name} works at max side {seg.bundle.input.max_side} px, {names[0]} at "
                    f"{segmenters[0].bundle.input.max_side} px (0 = native size): an ensemble needs models "
                    "trained with the same --max-side"
                )
        self.segmenters = list(segmenters)
        self.names = names
        self.classes = first
        self.device = segmenters[0].device
        self.bundle = segmenters[0].bundle
        self.backend = segmenters[0].backend
        self.precision = segmenters[0].precision

    @property
    def fingerprint(self) -> str:
        return "+".join(s.fingerprint for s in self.segmenters)

    def __repr__(self) -> str:
        models = ", ".join(f"{s.bundle.model.arch}/{s.bundle.model.encoder}" for s in self.segmenters)
        return (
            f"Ensemble({len(self.segmenters)} models: {models}; {_class_summary(self.classes)}, "
            f"device={self.device}, backend={self.backend}, precision={self.precision})"
        )

    def members(self, config: InferenceConfig | None = None) -> list:
        return [m for s in self.segmenters for m in s.members(config)]

    def describe_members(self) -> list[dict]:
        return [d for s in self.segmenters for d in s.describe_members()]


OBJECT_METHODS = ("auto", "centres", "components", "off")


@dataclass
class InstanceOptions:
    """How a :class:`Predictor` finds objects (instances) after the network.

    Attributes:
        method: ``auto`` (``centres`` for instance and panoptic models, ``off`` for semantic ones),
            ``centres`` (group pixels by the predicted centre heatmap and offsets; instance and
            panoptic models only), ``components`` (connected components of each thing class, touching
            objects split by a watershed; any model) or ``off``.
        things: class names counted as objects, replacing the model's own thing classes (empty: the
            model's). A class index written as text (``"3"``) is accepted too.
        grouping: thresholds of the grouping and of the panoptic merge (:class:`GroupingConfig`).
    """

    method: str = "auto"
    things: tuple[str, ...] = ()
    grouping: GroupingConfig = field(default_factory=GroupingConfig)

    def __post_init__(self) -> None:
        if self.method not in OBJECT_METHODS:
            raise PixelwiseError(f"unknown object method {self.method!r}; choose one of {', '.join(OBJECT_METHODS)}")
        if isinstance(self.things, str):
            self.things = tuple(n.strip() for n in self.things.split(",") if n.strip())
        self.things = tuple(str(n) for n in self.things)
        if len(set(self.things)) != len(self.things):
            raise PixelwiseError(f"thing classes named twice: {', '.join(self.things)}")
        if not isinstance(self.grouping, GroupingConfig):
            raise PixelwiseError(f"grouping must be a GroupingConfig, got {type(self.grouping).__name__}")

    def to_dict(self) -> dict:
        return {"method": self.method, "things": list(self.things), "grouping": asdict(self.grouping)}


@dataclass
class ObjectResult:
    """What :meth:`Predictor.run_objects` finds in one image.

    ``labels``: ``(H, W)`` int64 post-processed class indices; ``prediction``: the probabilities (and
    dense maps) behind them; ``instances``: the objects of the thing classes (ids ``(H, W)`` int32,
    0 = none); ``panoptic``: every pixel as a thing object, a stuff region or void (0).
    """

    labels: np.ndarray
    prediction: Prediction
    instances: InstanceMap
    panoptic: PanopticMap


def _thing_indices(classes: ClassInfo, names: Sequence[str]) -> tuple[int, ...]:
    """Class indices of the thing classes named in ``names`` (a name, or an index as text)."""
    index = {n: i for i, n in enumerate(classes.names)}
    out = []
    for name in names:
        if name in index:
            out.append(index[name])
        elif name.isdigit() and int(name) < classes.num_classes:
            out.append(int(name))
        else:
            raise PixelwiseError(f"unknown thing class {name!r}; the model's classes are: {', '.join(classes.names)}")
    return tuple(sorted(set(out)))


def _object_method(task: str, options: InstanceOptions, things: tuple[int, ...]) -> str:
    """The grouping method a predictor uses (``centres``, ``components`` or ``off``); errors for impossible ones."""
    method = options.method
    if method == "auto":
        method = "off" if task == "semantic" else "centres"
    if method == "centres" and task == "semantic":
        raise PixelwiseError(
            "the centres method needs an instance or panoptic model (this one is semantic: it predicts no "
            "centres or offsets); use --instances components, or train with --task instance"
        )
    if method != "off" and not things:
        raise PixelwiseError(
            "no thing classes to find objects of: the model records none; name them with --things NAME[,NAME] "
            "(InstanceOptions(things=...)) or use --instances off"
        )
    return method


class Predictor:
    """What inference means end to end: model(s), inference options, post-processing, backend.

    ``model``: a :class:`Segmenter` or an :class:`Ensemble` (their backend and precision were
    chosen when they were loaded); ``inference``: tiling, flips, scales, MC dropout;
    ``postprocess``: the steps applied to the labels. ``predict``, ``evaluate``, ``serve`` and the
    export parity check all label images through :meth:`predict` / :meth:`run`, so a score is
    the score of exactly what is deployed. ``instances``: whether and how objects are found
    (:meth:`run_objects`); see :class:`InstanceOptions`. Thread-safe.
    """

    def __init__(
        self,
        model: BaseSegmenter,
        inference: InferenceConfig | None = None,
        postprocess: PostprocessConfig | None = None,
        instances: InstanceOptions | None = None,
    ):
        if isinstance(model, Predictor):
            raise PixelwiseError("Predictor takes a Segmenter or an Ensemble; use predictor.with_options(...)")
        self.model = model
        self.inference = inference or InferenceConfig()
        self.postprocess = postprocess or PostprocessConfig()
        self.instances = instances or InstanceOptions()
        self.things: tuple[int, ...] = (
            _thing_indices(self.classes, self.instances.things)
            if self.instances.things
            else tuple(sorted(int(t) for t in getattr(self.classes, "things", ())))
        )
        self.method = _object_method(self.task, self.instances, self.things)
        self._stuff: Predictor | None = None
        self._stuff_lut: np.ndarray | None = None

    @property
    def task(self) -> str:
        """``semantic``, ``instance`` or ``panoptic``: what the (first) model was trained for."""
        return str(getattr(self.bundle.model, "task", "semantic"))

    @property
    def objects_enabled(self) -> bool:
        """Whether :meth:`run_objects` finds objects (the method is not ``off``)."""
        return self.method != "off"

    @property
    def classes(self) -> ClassInfo:
        return self.model.classes

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def __repr__(self) -> str:
        options = [f"inference({changed})" for changed in [_changed(self.inference)] if changed]
        options += [f"postprocess({changed})" for changed in [_changed(self.postprocess)] if changed]
        options += [f"instances({changed})" for changed in [_changed(self.instances)] if changed]
        return f"Predictor({self.model!r}, {', '.join(options) or 'default options'})"

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def bundle(self) -> Bundle:
        """The bundle of the (first) model: classes, normalisation, training metadata."""
        return self.model.bundle

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    @property
    def precision(self) -> str:
        return self.model.precision

    @property
    def backend(self) -> str:
        """The backend asked for: ``auto``, ``torch`` or ``onnxruntime``."""
        return self.model.backend

    @property
    def runs(self) -> list[str]:
        return [m["run"] for m in self.model.describe_members() if m["run"]]

    def with_options(
        self,
        inference: InferenceConfig | None = None,
        postprocess: PostprocessConfig | None = None,
        instances: InstanceOptions | None = None,
    ) -> Predictor:
        """The same loaded model(s) with other inference, post-processing or object options (None = keep);
        the stuff predictor (:meth:`stuff_from`) is kept."""
        out = Predictor(
            self.model, inference or self.inference, postprocess or self.postprocess, instances or self.instances
        )
        out._stuff, out._stuff_lut = self._stuff, self._stuff_lut
        return out

    def members(self) -> list:
        """The inference members; raises :class:`PixelwiseError` now when the options cannot run
        (MC dropout on a model without dropout, an ONNX file of another model, ...)."""
        return self.model.members(self.inference)

    def predict_full(self, image) -> Prediction:
        """Probabilities (and uncertainty) of one image under the inference options; no post-processing."""
        return predict_image(as_rgb(image), self.members(), self.inference, self.device)

    def finish(self, prediction: Prediction, image: np.ndarray) -> np.ndarray:
        """``(H, W)`` int64 labels of ``prediction`` after post-processing (the CRF needs ``image``)."""
        if self.postprocess.crf:
            return postprocess(prediction.probs, as_rgb(image), self.postprocess)
        return refine_labels(prediction.labels, self.postprocess)

    def run(self, image) -> tuple[np.ndarray, Prediction]:
        """Post-processed ``(H, W)`` int64 labels of one image and the :class:`Prediction` behind them."""
        array = as_rgb(image)
        pred = predict_image(array, self.members(), self.inference, self.device)
        return self.finish(pred, array), pred

    def predict(self, image) -> np.ndarray | list[np.ndarray]:
        """Post-processed ``(H, W)`` int64 class indices of one image (path, PIL image or array).

        Equal to ``run(image)[0]``; without the CRF it skips the softmax where it can. Given a list
        (or tuple) of images, a list of masks, one per image, as :meth:`predict_batch`.
        """
        if _is_image_list(image):
            return self.predict_batch(list(image))
        array = as_rgb(image)
        if self.postprocess.crf:
            return self.run(array)[0]
        labels = predict_labels([array], self.members(), self.inference, self.device)[0]
        return refine_labels(labels, self.postprocess)

    def predict_batch(self, images: list) -> list[np.ndarray]:
        """:meth:`predict` of several images; same-size images run as one batch (unless tiled)."""
        arrays = [as_rgb(im) for im in images]
        if self.postprocess.crf:
            return [self.run(a)[0] for a in arrays]
        labels = _labels_grouped(arrays, self.members(), self.inference, self.device)
        return [refine_labels(lab, self.postprocess) for lab in labels]

    def stuff_from(self, other: Predictor | None) -> Predictor:
        """Take the stuff classes of the panoptic result from ``other`` (a semantic predictor; None: from
        this model). Its classes are matched to this model's by name; a class this model lacks is an
        error. Pixels this model labels as a thing class keep that label. Returns ``self``."""
        if other is None:
            self._stuff, self._stuff_lut = None, None
            return self
        if not isinstance(other, Predictor):
            raise PixelwiseError(f"stuff_from takes a Predictor, got {type(other).__name__}")
        index = {n: i for i, n in enumerate(self.classes.names)}
        missing = [n for n in other.classes.names if n not in index]
        if missing:
            raise PixelwiseError(
                f"the stuff model's classes {', '.join(missing)} are not classes of this model "
                f"({', '.join(self.classes.names)}); classes are matched by name"
            )
        self._stuff = other
        self._stuff_lut = np.array([index[n] for n in other.classes.names], dtype=np.int64)
        return self

    def _panoptic_labels(self, array: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The labels the panoptic merge takes stuff from: this model's, or the stuff predictor's (mapped to
        this model's classes) wherever this model sees no thing class."""
        if self._stuff is None or self._stuff_lut is None:
            return labels
        other = np.asarray(self._stuff.predict(array))
        lut = self._stuff_lut
        mapped = np.where(other < len(lut), lut[np.clip(other, 0, len(lut) - 1)], self.classes.ignore_index)
        return np.where(np.isin(labels, self.things), labels, mapped)

    def run_objects(self, image) -> ObjectResult:
        """Labels, prediction, objects and panoptic segments of one image (path, PIL image or array).

        Objects come from the centre heatmap and offsets (``centres``) or the connected components of
        each thing class (``components``), grouped in Python after the network; raises
        :class:`PixelwiseError` when objects are off (:attr:`objects_enabled`).
        """
        if not self.objects_enabled:
            raise PixelwiseError(
                f"objects are off for this {self.task} model; use --instances components (or centres for an "
                "instance model), InstanceOptions(method=...) in Python"
            )
        array = as_rgb(image)
        labels, pred = self.run(array)
        grouping = self.instances.grouping
        if self.method == "centres":
            if pred.dense is None:
                raise PixelwiseError("the model gave no centre or offset maps; use --instances components")
            found = group_by_centres(labels, pred.probs, pred.dense, self.things, grouping)
        else:
            found = split_components(labels, pred.probs, self.things, grouping)
        merged = merge_panoptic(
            self._panoptic_labels(array, labels), found, self.things, grouping, self.classes.ignore_index
        )
        return ObjectResult(labels, pred, found, merged)

    def overlay(self, image, mask: np.ndarray, alpha: float = 0.5, legend: bool = False) -> np.ndarray:
        """``(H, W, 3)`` uint8: the image with the class colours of ``mask`` blended in at ``alpha``
        (background class 0 and the ignore index left clear, regions outlined). With ``legend``, a
        strip below names the classes present, so the picture is taller (and may be wider)."""
        return self.model.overlay(image, mask, alpha, legend)

    def describe(self) -> dict:
        """What is served or scored: the models, backend, precision, device and every option."""
        return {
            "members": self.model.describe_members(),
            "backend": self.backend,
            "precision": self.precision,
            "device": str(self.device),
            "inference": self.inference.to_dict(),
            "postprocess": self.postprocess.to_dict(),
            "instances": {
                **self.instances.to_dict(),
                "task": self.task,
                "method_used": self.method,
                "thing_classes": [self.classes.names[t] for t in self.things],
                "stuff_from": self._stuff.runs if self._stuff is not None else None,
            },
        }


def load(
    run: str | Path,
    device: str = "auto",
    backend: str = "auto",
    onnx_path: str | Path | None = None,
    precision: str = "fp32",
) -> Segmenter:
    """Load a trained model from a run directory (or any folder with model.safetensors + model.json).

    ``device``: auto, cpu, cuda, cuda:N; ``backend``: auto, torch or onnxruntime; ``precision``:
    fp32 or bf16 (see :class:`Segmenter`).
    """
    dev = resolve_device(device)
    model, bundle = load_bundle(run, dev)
    return Segmenter(model, bundle, dev, backend=backend, onnx_path=onnx_path, run_dir=run, precision=precision)


def load_ensemble(
    runs: Sequence[str | Path], device: str = "auto", backend: str = "auto", precision: str = "fp32"
) -> Segmenter | Ensemble:
    """Load one run (a :class:`Segmenter`) or several (an :class:`Ensemble`; same class list required)."""
    segs = [load(r, device, backend, precision=precision) for r in runs]
    return segs[0] if len(segs) == 1 else Ensemble(segs, [str(r) for r in runs])


def load_predictor(
    runs: str | Path | Sequence[str | Path],
    device: str = "auto",
    backend: str = "auto",
    precision: str = "fp32",
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    onnx_path: str | Path | None = None,
    instances: InstanceOptions | None = None,
) -> Predictor:
    """A :class:`Predictor` over one run or several (an ensemble), checked before it is returned.

    ``onnx_path`` (one run only) is an ONNX file from ``pixelwise export`` to run with
    ``backend="onnxruntime"`` (or ``auto``). Raises :class:`PixelwiseError` when a run cannot be
    loaded or the options cannot run on it (MC dropout without dropout, a stale ONNX file, the centres
    method on a semantic model, ...). ``instances``: how objects are found (:class:`InstanceOptions`).
    """
    runs = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if not runs:
        raise PixelwiseError("give at least one run directory")
    if onnx_path and len(runs) > 1:
        raise PixelwiseError("--onnx applies to one run; drop it for an ensemble")
    if onnx_path:
        if backend == "torch":
            raise PixelwiseError("an ONNX file runs on ONNX Runtime; drop --onnx or use --backend onnxruntime")
        model: BaseSegmenter = load(runs[0], device, "onnxruntime", onnx_path=onnx_path, precision=precision)
    else:
        model = load_ensemble(runs, device, backend, precision)
    predictor = Predictor(model, inference, postprocess, instances)
    predictor.members()  # fail now, not on the first image
    return predictor


def as_predictor(
    model: Predictor | BaseSegmenter,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    instances: InstanceOptions | None = None,
) -> Predictor:
    """``model`` as a Predictor; ``inference`` / ``postprocess`` / ``instances`` (when given) replace its own."""
    if isinstance(model, Predictor):
        return model.with_options(inference, postprocess, instances)
    return Predictor(model, inference, postprocess, instances)


def is_run_dir(path: str | Path) -> bool:
    """A folder holding a trained bundle (model.json + model.safetensors)."""
    p = Path(path)
    return p.is_dir() and (p / "model.json").is_file() and (p / "model.safetensors").is_file()
