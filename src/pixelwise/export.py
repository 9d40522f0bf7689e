"""Export a trained model to ONNX or TorchScript, with a parity check against PyTorch.

The exported graph takes ``image``: ``(N, 3, H, W)`` float32 RGB in [0, 1] (N, H and W free;
the input normalisation is inside the graph) and returns ``logits``: ``(N, C, H, W)`` float32 for
a semantic model, ``(N, C + 3, H, W)`` for an instance or panoptic one (class logits, centre logit,
offsets dy and dx in pixels). The grouping of those dense maps into objects is not in the file: it
runs after the network, in Python (``pixelwise predict --backend onnxruntime`` does it).
Any H and W work: the graph pads to the network's stride and crops back, as
:class:`pixelwise.models.SegmentationModel` does.

The graph is the network alone. A model with a working resolution (``input.max_side`` in
``model.json``) expects each image resized so that its longer side is at most that many pixels
(:func:`pixelwise.data.transforms.working_size`, bilinear with antialiasing) and its outputs resized
back to the image's size; pixelwise predict and serve do both around the file, other callers must
too. The export says so, and records it in the file's metadata.

An ONNX file carries the bundle's metadata (``pixelwise.meta``: classes, normalisation,
architecture, input) and a fingerprint of the weights it was made from (``pixelwise.weights``), so
``pixelwise predict --backend onnxruntime`` can refuse a file exported from another model.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .bundle import Bundle, load_bundle
from .data.transforms import working_size
from .errors import PixelwiseError
from .fileio import atomic_path, prepare_output_dir
from .predict.backends import (
    FINGERPRINT_KEY,
    GRAPH_KEY,
    META_KEY,
    OnnxMember,
    check_onnx_matches,
    exportable,
    extra_channels_of,
    graph_fingerprint,
    onnx_bytes,
    onnx_session,
    weights_fingerprint,
)
from .predict.engine import Member, resize_outputs, to_working_size
from .predict.predictor import Segmenter

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
DEFAULT_TOLERANCE = 1e-3
# A parity check that lets logits differ by more than this checks nothing.
MAX_TOLERANCE = 1.0
# ONNX opsets the export supports: the graph pads by a computed amount (opset 11 and later), up
# to the newest opset the PyTorch exporter writes.
OPSET_MIN = 11
OPSET_MAX = int(getattr(torch.onnx._constants, "ONNX_MAX_OPSET", 20))
# Said once per export of an instance or panoptic model.
GROUPING_NOTE = (
    "the file holds the whole network (class logits, centre heatmap, offsets); the grouping into objects "
    "runs after it, in Python (pixelwise predict and serve do it), and is not in the exported file"
)
# Sizes the parity check runs: odd sizes (padding), a batch of 2, and a single pixel.
PARITY_SIZES = ((1, 67, 93), (2, 96, 128), (1, 1, 1))

__all__ = [
    "DEFAULT_TOLERANCE",
    "FORMATS",
    "OPSET_MAX",
    "OPSET_MIN",
    "PARITY_SIZES",
    "GROUPING_NOTE",
    "export_model",
    "parity",
    "weights_fingerprint",
]


def _metadata(model: nn.Module, bundle: Bundle) -> dict[str, str]:
    full = bundle.to_dict()
    keep = {k: full[k] for k in ("classes", "normalization", "model", "input")}
    return {META_KEY: json.dumps(keep), FINGERPRINT_KEY: weights_fingerprint(model)}


def _parity_inputs(sizes) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(n, 3, h, w, generator=g) for n, h, w in sizes]


class ScriptMember:
    """A reloaded TorchScript file as an inference member: [0, 1] images in, every output channel out."""

    def __init__(self, module, num_classes: int, extra_channels: int = 0, max_side: int = 0):
        self.module = module
        self.num_classes = num_classes
        self.extra_channels = extra_channels
        self.max_side = max_side

    def logits(self, x01: torch.Tensor, stochastic: bool = False) -> torch.Tensor:
        return self.module(x01)


def parity(reference: Member, exported: Member, sizes=PARITY_SIZES) -> float:
    """Largest ``|exported - reference|`` over every output channel (the class logits, and the centre
    logit and offsets of instance models) of random images of ``sizes`` ((N, H, W) each).

    Both are inference members (see :mod:`pixelwise.predict.backends`): the reference is the
    PyTorch backend that ``pixelwise predict --backend torch`` runs.
    """
    worst = 0.0
    with torch.inference_mode():
        for x in _parity_inputs(sizes):
            ref = reference.logits(x).float().cpu().numpy()
            got = exported.logits(x).float().cpu().numpy()
            if got.shape != ref.shape:
                raise PixelwiseError(
                    f"exported model returned shape {got.shape} for input {tuple(x.shape)}, "
                    f"PyTorch {ref.shape}; the export is broken"
                )
            worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def resized_parity(reference: Member, exported: Member, max_side: int) -> tuple[float, tuple[int, int, int]]:
    """Largest ``|exported - reference|`` of the outputs of a seeded random uint8 image whose longer side
    is over ``max_side``, each run the way the engine runs a model with that working resolution:
    the image resized down (:func:`pixelwise.predict.engine.to_working_size`), the network, the
    outputs resized back (:func:`pixelwise.predict.engine.resize_outputs`). Returns (difference,
    (1, H, W) of the image)."""
    h, w = 37, max_side + 9
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    small = to_working_size(image, working_size(h, w, max_side))
    x01 = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)[None].float().div_(255.0)
    with torch.inference_mode():
        ref = resize_outputs(reference.logits(x01).float().cpu(), (h, w), reference.num_classes)
        got = resize_outputs(exported.logits(x01).float().cpu(), (h, w), exported.num_classes)
    if got.shape != ref.shape:
        raise PixelwiseError(
            f"exported model returned shape {tuple(got.shape)}, PyTorch {tuple(ref.shape)}; the export is broken"
        )
    return float((got - ref).abs().max()), (1, h, w)


def input_note(max_side: int) -> str | None:
    """The line export prints for a model with a working resolution (None without one)."""
    if not max_side:
        return None
    return (
        f"inputs are resized to max side {max_side} px first: resize each image so that its longer side is at "
        f"most {max_side} px (bilinear, antialiased) before the file, and its outputs back to the image's size "
        "after (pixelwise predict and serve do both; model.json and the file's metadata record input.max_side)"
    )


def _write_onnx(path: Path, model: nn.Module, bundle: Bundle, opset: int) -> OnnxMember:
    """Write the ONNX file with its metadata; return it loaded as predict's ONNX Runtime backend loads it."""
    import onnx

    proto = onnx.load_from_string(onnx_bytes(model, bundle, opset))
    for k, v in {**_metadata(model, bundle), GRAPH_KEY: graph_fingerprint(proto)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))
    session = onnx_session(path, "cpu")
    num_classes, extra = bundle.classes.num_classes, extra_channels_of(bundle)
    check_onnx_matches(session, path, weights_fingerprint(model), num_classes, extra)
    return OnnxMember(session, num_classes, source=path, extra_channels=extra, max_side=bundle.input.max_side)


def _write_torchscript(path: Path, model: nn.Module, bundle: Bundle) -> ScriptMember:
    """Write the traced TorchScript file with its metadata; return it reloaded."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(exportable(model, bundle), torch.rand(1, 3, 67, 93), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"pixelwise.json": json.dumps(_metadata(model, bundle))})
        reloaded = torch.jit.load(str(path), map_location="cpu")
    return ScriptMember(reloaded, bundle.classes.num_classes, extra_channels_of(bundle), bundle.input.max_side)


def _check_options(fmt: str, opset: int, tolerance: float) -> None:
    """Refuse a bad format, opset or tolerance before any work."""
    if fmt not in FORMATS:
        raise PixelwiseError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not OPSET_MIN <= opset <= OPSET_MAX:
        raise PixelwiseError(f"ONNX opset must be {OPSET_MIN} to {OPSET_MAX}, got {opset!r}; the default 17 suits most")
    if not (isinstance(tolerance, (int, float)) and np.isfinite(tolerance) and 0 < tolerance <= MAX_TOLERANCE):
        raise PixelwiseError(
            f"tolerance must be above 0 and at most {MAX_TOLERANCE:g} (a logit difference), got {tolerance!r}"
        )


def export_model(
    run: str | Path,
    fmt: str = "onnx",
    out: str | Path | None = None,
    opset: int = 17,
    tolerance: float = DEFAULT_TOLERANCE,
    sizes=PARITY_SIZES,
) -> dict:
    """Export the model of ``run`` and check it against PyTorch on random inputs of several sizes.

    The reference is the run's PyTorch inference backend; the exported file is loaded back as
    prediction would load it (for ONNX: an ONNX Runtime session whose weights fingerprint is
    checked). Writes ``RUN/model.onnx`` or ``RUN/model.torchscript.pt`` (or ``out``) only if the
    largest absolute difference over every output channel is within ``tolerance``; otherwise raises
    :class:`PixelwiseError` and leaves no file. Returns ``{"path", "format", "max_abs_diff",
    "sizes", "fingerprint", "task", "channels", "max_side", "note"}``: ``channels`` is C (+ 3 for
    instance models), ``max_side`` the working resolution (0 = native size; then ``sizes`` ends with
    the size of the image checked through the resize path, see :func:`resized_parity`), ``note`` the
    lines to show the user: that inputs are resized first (:func:`input_note`) and about the grouping
    into objects (None when neither applies).
    """
    _check_options(fmt, opset, tolerance)
    path = Path(out) if out else Path(run) / FORMATS[fmt]
    if out is not None:
        if path.is_dir():
            raise PixelwiseError(f"--out {path} is a folder; give a file name such as {path / FORMATS[fmt]}")
        prepare_output_dir(path.parent, "--out")
    model, bundle = load_bundle(run, "cpu")
    fingerprint = weights_fingerprint(model)
    with atomic_path(path) as tmp:
        if fmt == "onnx":
            exported: Member = _write_onnx(tmp, model, bundle, opset)
        else:
            exported = _write_torchscript(tmp, model, bundle)
        # Made after the export: the Segmenter switches the model to channels-last.
        reference = Segmenter(model, bundle, "cpu", backend="torch").members()[0]
        diff = parity(reference, exported, sizes)
        max_side = bundle.input.max_side
        if max_side:
            resized_diff, resized_size = resized_parity(reference, exported, max_side)
            diff, sizes = max(diff, resized_diff), [*sizes, resized_size]
        if not np.isfinite(diff) or diff > tolerance:
            raise PixelwiseError(
                f"{fmt} export of {run} differs from PyTorch by {diff:.3g} (tolerance {tolerance:g}); "
                "the file was not written"
            )
    extra = extra_channels_of(bundle)
    notes = [n for n in (input_note(bundle.input.max_side), GROUPING_NOTE if extra else None) if n]
    return {
        "path": str(path),
        "format": fmt,
        "max_abs_diff": diff,
        "sizes": [list(s) for s in sizes],
        "fingerprint": fingerprint,
        "task": getattr(bundle.model, "task", "semantic"),
        "channels": bundle.classes.num_classes + extra,
        "max_side": bundle.input.max_side,
        "note": "\n".join(notes) or None,
    }
