"""File writers: atomic writes (a temp file in the same folder, then ``os.replace``), and the
one writer each of JSON, image PNGs, mask PNGs and ``.npy`` arrays.

A crash or Ctrl-C mid-write leaves the previous file intact, never a truncated one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a binary file beside ``path``, then rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def _check_png_array(array: np.ndarray) -> None:
    """A ``(H, W)`` uint8/uint16 or ``(H, W, 3)`` uint8 array passes; anything else is a ValueError."""
    if array.ndim == 2 and array.dtype in (np.uint8, np.uint16):
        return
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        return
    raise ValueError(f"a PNG needs (H, W) uint8/uint16 or (H, W, 3) uint8, got {array.dtype} {array.shape}")


def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG file contents of a ``(H, W)`` uint8/uint16 grey or ``(H, W, 3)`` uint8 RGB array."""
    from PIL import Image

    array = np.ascontiguousarray(array)
    _check_png_array(array)
    buf = io.BytesIO()
    # Pillow picks the mode from the dtype and shape: L, I;16 or RGB.
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def write_png(path: str | Path, array: np.ndarray, compress_level: int = 6) -> None:
    """Write a ``(H, W)`` uint8/uint16 grey or ``(H, W, 3)`` uint8 RGB array as a PNG, atomically.

    The parent folder is created if needed; a bad array raises ValueError before anything is written.
    """
    data = png_bytes(np.asarray(array), compress_level)
    atomic_write(path, lambda f: f.write(data))


def mask_array(mask: np.ndarray) -> np.ndarray:
    """Class indices as the array a mask PNG holds: uint8, or uint16 when an index is 256 or more."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"a mask is (H, W) integer class indices, got {mask.dtype} {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 65535):
        raise ValueError(f"mask values must be in [0, 65535], got {mask.min()}..{mask.max()}")
    return mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16)


def mask_png_bytes(mask: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG file contents of ``(H, W)`` class indices: 8-bit grey, 16-bit past 256 classes."""
    return png_bytes(mask_array(mask), compress_level)


def write_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """Write ``(H, W)`` class indices as an 8-bit grey PNG (16-bit past 256 classes), atomically."""
    write_png(path, mask_array(mask))


def write_npy(path: str | Path, array: np.ndarray) -> None:
    """Write a ``.npy`` array atomically (never pickled: object arrays are refused)."""
    array = np.asarray(array)
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
