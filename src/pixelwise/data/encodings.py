"""Mask encodings: how the stored pixels of a mask file become class indices.

The same :class:`DecodeSpec` is used by validation, ``pixelwise inspect``, training and
evaluation, so a mask is read the same way everywhere (:class:`DecodeSpec` itself lives in
:mod:`pixelwise.data.types`, beside the samples that carry it). Encodings:

``index``      single-channel (L, P, 1) PNG: each stored value is a class index (or the ignore index)
``16bit``      16-bit single-channel PNG (I;16): the same, for values above 255
``binary``     single-channel 0/255 masks: 0 -> class 0, 255 -> class 1
``rgb``        colour-coded masks: each colour is looked up in the class colours (plus ignore colours)
``jpeg-snap``  lossy (JPEG) masks: each pixel snapped to the nearest valid value or class colour,
               or thresholded at 128 for binary masks; the number of pixels moved is reported
``rendered``   masks drawn from polygons / RLE (COCO, LabelMe): already class indices

A lookup table (``lut``) maps stored values to classes first, for data sets whose stored ids are
not training ids (Cityscapes labelIds, ADE20K's 0 = "other").
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import PixelwiseError
from .types import DEFAULT_MAX_PIXELS, DecodeSpec

# Names a user can pass to --encoding.
ENCODINGS = ("auto", "index", "binary", "rgb", "jpeg-snap", "16bit")
LOSSY_EXTENSIONS = (".jpg", ".jpeg")
INVALID = -1  # a stored value / colour that is no class and not the ignore index
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass
class RawMask:
    """A mask file as stored: ``array`` (H, W) integer values, or packed colours for colour masks."""

    array: np.ndarray
    kind: str  # "gray" | "rgb"
    mode: str  # PIL mode of the file
    bits: int  # 8 or 16 (single-channel); 24 for colour
    lossy: bool


class FileError(PixelwiseError):
    """A file that cannot be used: which file, what is wrong with it, what to do."""

    def __init__(self, path: str | Path, reason: str, todo: str, kind: str = "unreadable"):
        self.path, self.reason, self.todo, self.kind = str(path), reason, todo, kind
        super().__init__(f"{path}: {reason}; {todo}")

    @property
    def item(self) -> str:
        """Short form for a list of files: ``path (reason)``."""
        return f"{self.path} ({self.reason})"


def _short(e: BaseException) -> str:
    text = str(e).splitlines()[0][:120] if str(e) else ""
    return text or e.__class__.__name__


def too_large(
    path: str | Path, width: int | None, height: int | None, max_pixels: int, pixels: int | None = None
) -> FileError:
    if width and height:
        size = f"{width} x {height} = {width * height:,} pixels"
    else:
        size = f"{pixels:,} pixels" if pixels else "its size"
    return FileError(
        path,
        f"refused: {size} is above the limit of {max_pixels:,} pixels (decompression bomb?)",
        "pass --max-image-pixels N to allow it if the file is genuine",
        kind="too_large",
    )


def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "image") -> Image.Image:
    """Open and fully decode an image file, refusing one above ``max_pixels`` before decoding it.

    Raises :class:`PixelwiseError` naming the file for an empty, truncated, unknown or too large file.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and max_pixels > limit:
        # Our own check below is the limit; PIL's lower built-in one would refuse first.
        Image.MAX_IMAGE_PIXELS = max_pixels
    path = Path(path)
    todo = "replace or remove the file"
    try:
        if path.stat().st_size == 0:
            raise FileError(path, f"empty file (0 bytes), not an {what}", todo)
    except OSError as e:
        raise FileError(path, f"cannot read this {what}: {_short(e)}", todo) from None
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        found = re.search(r"\((\d+) pixels\)", str(e))  # Pillow: "Image size (N pixels) exceeds limit ..."
        raise too_large(path, None, None, max_pixels, int(found.group(1)) if found else None) from None
    except Exception as e:  # any failure to identify a damaged or foreign file is the file's fault
        raise FileError(
            path, f"cannot read this {what}: not an image format Pillow can decode ({_short(e)})", todo
        ) from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise too_large(path, w, h, max_pixels)
    try:
        im.load()
    except Exception as e:
        im.close()
        raise FileError(path, f"cannot read this {what}: damaged or truncated ({_short(e)})", todo) from None
    return im


def raw_from_image(im: Image.Image, path: str | Path, colour: bool = False) -> RawMask:
    """The stored values of an opened mask image (no colour conversion of index masks).

    ``colour``: the data set's masks are colour-coded, so a palette (P) mask is read as the colours
    its palette gives (a colour mask saved as "indexed colour" by an image editor), not as indices,
    and a colour file of grey pixels only (an all-black background mask) as colours too.
    """
    mode = im.mode
    lossy = Path(path).suffix.lower() in LOSSY_EXTENSIONS or im.format == "JPEG"
    if colour and mode in ("P", "PA"):
        raw = raw_from_image(im.convert("RGB"), path, colour)
        raw.mode = mode
        return raw
    if mode in ("L", "P"):
        return RawMask(np.asarray(im), "gray", mode, 8, lossy)
    if mode == "1":
        return RawMask(np.asarray(im, dtype=np.uint8), "gray", mode, 8, lossy)
    if mode in ("LA", "PA"):
        return RawMask(np.asarray(im.getchannel(0)), "gray", mode, 8, lossy)
    if mode in _WIDE_MODES:
        arr = np.asarray(im)
        if arr.dtype.byteorder == ">" or arr.dtype.kind not in "iu":
            arr = arr.astype(np.int64)
        if arr.size and arr.min() < 0:
            raise FileError(path, "mask holds negative values", "save class indices 0, 1, 2, ...")
        return RawMask(arr, "gray", mode, 16, lossy)
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
        rgb = np.asarray(im.convert("RGB") if mode != "RGB" else im)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        if not colour and np.array_equal(r, g) and np.array_equal(r, b):
            return RawMask(np.ascontiguousarray(r), "gray", mode, 8, lossy)  # grey stored as RGB
        packed = (r.astype(np.int32) << 16) | (g.astype(np.int32) << 8) | b.astype(np.int32)
        return RawMask(packed, "rgb", mode, 24, lossy)
    raise FileError(
        path,
        f"mask mode {mode} is not supported",
        "save each pixel's class index as an 8-bit or 16-bit grayscale or palette PNG, or class colours as an RGB PNG",
    )


def read_raw_mask(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, colour: bool = False) -> RawMask:
    """Decode a mask file into its stored values (see :class:`RawMask`; ``colour``: palette masks as colours)."""
    im = open_image(path, max_pixels, "mask")
    try:
        return raw_from_image(im, path, colour)
    finally:
        im.close()


def histogram(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an integer array and how many pixels hold each: (keys, counts), int64."""
    flat = arr.ravel()
    if flat.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if arr.dtype in (np.uint8, np.uint16, np.bool_):
        c = np.bincount(flat, minlength=1)
        k = np.flatnonzero(c)
        return k.astype(np.int64), c[k].astype(np.int64)
    k, c = np.unique(flat, return_counts=True)
    return k.astype(np.int64), c.astype(np.int64)


# Colour masks are handled as one integer per pixel: r << 16 | g << 8 | b.
def pack(color) -> int:
    r, g, b = (int(v) for v in color)
    return (r << 16) | (g << 8) | b


def unpack(key: int) -> tuple[int, int, int]:
    key = int(key)
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


def map_values(keys: np.ndarray, kind: str, spec: DecodeSpec) -> np.ndarray:
    """Class index (or ignore index, or INVALID) for each stored key of a ``kind`` ("gray"/"rgb") mask."""
    keys = np.asarray(keys, dtype=np.int64)
    out = np.full(keys.shape, INVALID, dtype=np.int64)
    if kind == "rgb":
        if spec.encoding != "rgb":
            return out
        table = [pack(c) for c in spec.colors] + [pack(c) for c in spec.ignore_colors]
        targets = list(range(len(spec.colors))) + [spec.ignore_index] * len(spec.ignore_colors)
        if not table:
            return out
        if spec.snap:
            cols = np.array([unpack(k) for k in keys.tolist()], dtype=np.int64).reshape(-1, 3)
            pal = np.array([unpack(k) for k in table], dtype=np.int64)
            d = ((cols[:, None, :] - pal[None, :, :]) ** 2).sum(-1)
            return np.asarray(targets, dtype=np.int64)[d.argmin(1)]
        lookup = dict(zip(table, targets))
        return np.fromiter((lookup.get(k, INVALID) for k in keys.tolist()), dtype=np.int64, count=keys.size)

    if spec.encoding == "rgb":  # a single-channel mask where colours were expected
        return out
    if spec.encoding == "binary":
        if spec.snap:
            return (keys >= 128).astype(np.int64)
        out[keys == 0] = 0
        out[keys == 255] = 1
        return out
    vals = keys
    if spec.lut:
        lut = np.asarray(spec.lut, dtype=np.int64)
        inside = (keys >= 0) & (keys < lut.size)
        vals = np.full(keys.shape, INVALID, dtype=np.int64)
        vals[inside] = lut[keys[inside]]
        return vals
    if spec.num_classes is None:
        return vals.copy()
    if spec.snap:
        cands = np.array(list(range(spec.num_classes)) + [spec.ignore_index], dtype=np.int64)
        return cands[np.abs(vals[:, None] - cands[None, :]).argmin(1)]
    ok = ((vals >= 0) & (vals < spec.num_classes)) | (vals == spec.ignore_index)
    out[ok] = vals[ok]
    return out


@functools.lru_cache(maxsize=32)
def _gray_table(spec: DecodeSpec, size: int) -> np.ndarray:
    return map_values(np.arange(size, dtype=np.int64), "gray", spec)


def decode(raw: RawMask, spec: DecodeSpec) -> np.ndarray:
    """Class indices ``(H, W)`` int64 of a raw mask; INVALID (-1) where a value is no class."""
    arr = raw.array
    if raw.kind == "gray" and arr.dtype in (np.uint8, np.uint16, np.bool_):
        size = 256 if arr.dtype != np.uint16 else 65536
        return _gray_table(spec, size)[arr]
    keys, inv = np.unique(arr, return_inverse=True)
    return map_values(keys, raw.kind, spec)[inv].reshape(arr.shape)


def first_position(
    path: str | Path, key: int, kind: str, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int] | None:
    """(x, y) of the first pixel holding ``key`` in a mask file, for error messages; None if absent."""
    try:
        raw = read_raw_mask(path, max_pixels, colour=kind == "rgb")
    except PixelwiseError:
        return None
    if raw.kind != kind:
        return None
    ys, xs = np.nonzero(raw.array == key)
    return (int(xs[0]), int(ys[0])) if ys.size else None


def describe_key(key: int, kind: str) -> str:
    if kind == "rgb":
        r, g, b = unpack(key)
        return f"colour ({r}, {g}, {b})"
    return f"value {int(key)}"
