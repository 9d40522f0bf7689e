"""A trained model on disk: ``model.safetensors`` (weights) + ``model.json`` (everything else).

Loading never unpickles anything: tensors come from safetensors, metadata from JSON. The JSON
carries what is needed to use the model with no other file: architecture and encoder, class
names and colours, ignore index, input normalisation, the training configuration, validation
metrics and the library versions it was made with.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import PixelwiseError
from .io import atomic_path, write_json
from .models import ModelConfig, SegmentationModel, build_model

WEIGHTS = "model.safetensors"
META = "model.json"
FORMAT_VERSION = 1


def library_versions() -> dict:
    import numpy
    import PIL
    import safetensors
    import torchvision

    from . import __version__

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


def save_bundle(directory: str | Path, model: SegmentationModel, meta: dict) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (each atomically).

    ``meta`` must hold ``classes`` (ClassInfo.to_dict()) and ``normalization`` ({mean, std});
    ``model`` (the ModelConfig), ``format_version`` and ``versions`` are filled in here.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    full = dict(meta)
    full["format_version"] = FORMAT_VERSION
    full["model"] = model.config.to_dict()
    full.setdefault("versions", library_versions())
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(state_dict_for_saving(model), str(tmp), metadata={"format": "pt", "pixelwise": str(FORMAT_VERSION)})
    write_json(directory / META, full)
    return directory


def read_meta(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / META
    if not directory.exists():
        raise PixelwiseError(f"{directory}: no such run; give the run directory printed by `pixelwise train`")
    if not path.is_file() or not (directory / WEIGHTS).is_file():
        raise PixelwiseError(
            f"{directory}: no trained model here (needs {META} and {WEIGHTS}); "
            "give a run directory that finished at least one epoch"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PixelwiseError(f"{path}: not valid JSON; the bundle is damaged, retrain or restore it") from None
    for key in ("model", "classes", "normalization"):
        if key not in meta:
            raise PixelwiseError(f"{path}: missing '{key}'; not a pixelwise bundle")
    return meta


def load_bundle(directory: str | Path, device: str | torch.device = "cpu") -> tuple[SegmentationModel, dict]:
    """Rebuild the network from ``model.json`` and load ``model.safetensors``; returns (model in eval mode, meta)."""
    directory = Path(directory)
    meta = read_meta(directory)
    model = build_model(ModelConfig.from_dict(meta["model"]))
    try:
        state = load_file(str(directory / WEIGHTS), device="cpu")
    except Exception as e:
        raise PixelwiseError(f"{directory / WEIGHTS}: cannot read weights ({e.__class__.__name__}); the bundle is damaged") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise PixelwiseError(
            f"{directory / WEIGHTS}: weights do not match {META} ({str(e).splitlines()[0][:120]}); the bundle is damaged"
        ) from None
    return model.to(device).eval(), meta
