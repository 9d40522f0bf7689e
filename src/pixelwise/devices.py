"""Devices: the one place that turns a device name into a ``torch.device`` and picks autocast dtypes.

Training, prediction and serving all accept ``--device auto|cpu|cuda|cuda:N``; they resolve it
here so that the names accepted and the errors given are the same everywhere.
"""

from __future__ import annotations

import torch

from .errors import PixelwiseError


def resolve_device(name: str) -> torch.device:
    """The device for ``name``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises :class:`PixelwiseError` for an unknown name or when CUDA is asked for but absent.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise PixelwiseError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PixelwiseError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return dev


def cpu_supports_bf16() -> bool:
    """True when this CPU runs bfloat16 convolutions natively (AVX512-BF16 or AMX), where bf16
    autocast trains faster than float32; elsewhere it would be emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype_for(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for training on ``device``, or None for plain float32.

    CUDA: bfloat16 where the GPU supports it, else float16 (which needs a GradScaler); CPU:
    bfloat16 only where it is native (:func:`cpu_supports_bf16`), else None.
    """
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None
