"""Decode one sample: its image into RGB pixels and its mask into class indices.

Training, evaluation and prediction read files through these functions, and the mask is decoded
with the :class:`~pixelwise.data.types.DecodeSpec` validation resolved, so every stage reads a
mask the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .encodings import INVALID, FileError, decode, describe_key, open_image, read_raw_mask
from .render import render, render_layers
from .types import DEFAULT_MAX_PIXELS, DecodeSpec, Sample


def image_to_rgb(im: Image.Image) -> np.ndarray:
    """An opened PIL image -> (H, W, 3) uint8 RGB, EXIF orientation applied (decodes the pixels).

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted.
    """
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.array(im.convert("RGB"))


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode any common image file into (H, W, 3) uint8 RGB, EXIF orientation applied.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted. A file of
    more than ``max_pixels`` pixels is refused before it is decoded.
    """
    im = open_image(path, max_pixels, "image")
    try:
        return image_to_rgb(im)
    except Exception as e:  # a conversion failure is the file's fault, not a bug to show as a traceback
        raise FileError(
            path, f"cannot convert this image to RGB ({e.__class__.__name__})", "re-save it as PNG or JPEG"
        ) from None
    finally:
        im.close()


def read_mask(path: str | Path, spec: DecodeSpec | None = None) -> np.ndarray:
    """Decode a mask file into (H, W) int64 class indices.

    Without ``spec`` the file must be a single-channel or palette image and its values are taken
    as stored. With a spec (see :mod:`pixelwise.data.encodings`) the stored values or colours
    are mapped to classes; a value that is no class and not the ignore index is an error naming
    the file and the value.
    """
    colour = spec is not None and spec.encoding == "rgb"  # a palette mask of a colour-coded data set
    raw = read_raw_mask(path, spec.max_pixels if spec else DEFAULT_MAX_PIXELS, colour)
    if spec is None or spec.encoding in ("auto",):
        if raw.kind == "rgb":
            raise FileError(
                path,
                f"mask is {raw.mode}, not a single-channel or palette PNG of class indices",
                "save each pixel's class index (0, 1, 2, ...) as an 8-bit grayscale or palette PNG, "
                "or give the class colours in classes.yaml (see --encoding rgb)",
            )
        return raw.array.astype(np.int64)
    out = decode(raw, spec)
    bad = out == INVALID
    if bad.any():
        ys, xs = np.nonzero(bad)
        key = int(raw.array[ys[0], xs[0]])
        raise FileError(
            path,
            f"{describe_key(key, raw.kind)} at pixel x={xs[0]}, y={ys[0]} is no class",
            "fix the mask or the class list",
        )
    return out


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) integer mask to ``size`` = (H, W) by nearest neighbour (no new values)."""
    h, w = size
    im = Image.fromarray(mask.astype(np.int32), "I")
    return np.asarray(im.resize((w, h), Image.Resampling.NEAREST), dtype=np.int64)


def read_sample_mask(sample: Sample, size: tuple[int, int] | None = None) -> np.ndarray:
    """The decoded (H, W) int64 mask of a sample: read from its file or drawn from its shapes.

    With ``size`` (the image's (H, W)) a mask of another size is an error, or is resized by
    nearest neighbour when the sample's spec says ``resize_masks="nearest"``.
    """
    spec = sample.spec
    if sample.vector is not None:
        mask = render(sample.vector, spec.max_pixels if spec else DEFAULT_MAX_PIXELS)
    else:
        mask = read_mask(sample.mask, spec)
    if size is not None and mask.shape != tuple(size):
        if spec is not None and spec.resize_masks == "nearest":
            return resize_nearest(mask, size)
        raise FileError(
            sample.mask,
            f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {size[1]}x{size[0]}",
            "masks must have exactly the image's height and width (or pass --resize-masks nearest)",
        )
    return mask


def read_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, 3) uint8`` image and ``(H, W) int64`` class mask of a sample, decoded as its spec says."""
    image = read_image(sample.image, sample.spec.max_pixels if sample.spec else DEFAULT_MAX_PIXELS)
    return image, read_sample_mask(sample, image.shape[:2])


# Cityscapes instance ids: class label id * 1000 + k for objects, the plain label id elsewhere.
CITYSCAPES_INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
_ID_MODES = ("1", "L", "P", "I;16", "I;16L", "I;16B", "I;16N", "I")


def read_id_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The stored values of an instance id file (8-bit, 16-bit or 32-bit single-channel) as (H, W) int64."""
    im = open_image(path, max_pixels, "instance id map")
    try:
        if im.mode not in _ID_MODES:
            raise FileError(
                path,
                f"instance id map is {im.mode}, not a single-channel PNG",
                "save each pixel's object id (0 = no object) as an 8-bit or 16-bit grayscale PNG",
            )
        return np.asarray(im).astype(np.int64)
    finally:
        im.close()


def cityscapes_ids(raw: np.ndarray, spec: DecodeSpec | None = None) -> np.ndarray:
    """Cityscapes ``instanceIds`` values -> (H, W) int32 object ids 1..K (0 = no object).

    Values >= 1000 are ``label id * 1000 + k``, one object each; smaller values are no object.
    With a spec whose lookup table and things are known, objects of classes that are no thing
    class (ignored ones such as caravan) get no id either.
    """
    keep = raw >= 1000
    if spec is not None and spec.lut and spec.things is not None:
        lut = np.asarray(spec.lut, np.int64)
        label = np.clip(raw // 1000, 0, len(lut) - 1)
        keep &= np.isin(lut[label], spec.things)
    keys, inverse = np.unique(np.where(keep, raw, 0), return_inverse=True)
    ids = inverse.reshape(raw.shape).astype(np.int32)
    return ids if keys[0] == 0 else ids + 1


def image_size(sample: Sample) -> tuple[int, int]:
    """A sample's image (H, W) after EXIF orientation, read from the file header without decoding the pixels."""
    im = open_image_header(sample.image)
    with im:
        w, h = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            w, h = h, w
    return h, w


def open_image_header(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except Exception as e:  # any failure to identify the file is the file's fault
        raise FileError(
            path, f"cannot read this image ({e.__class__.__name__})", "replace or remove the file"
        ) from None


def read_instances(sample: Sample, size: tuple[int, int] | None = None) -> np.ndarray:
    """The (H, W) int32 object ids of a sample (0 = no object), the same size as its decoded mask.

    Folder data sets: instances/<stem>.png as stored; Cityscapes: see :func:`cityscapes_ids`;
    COCO and LabelMe: drawn from the shapes (ids on pixels of no thing class cleared). With
    ``size`` (the image's (H, W); found from the image's header when the spec resizes masks and
    no size is given) a map of another size is an error, or is resized by nearest neighbour when
    the spec says ``resize_masks="nearest"``. Raises FileError naming the file when it cannot be used.
    """
    spec = sample.spec
    if sample.instances is None:
        raise FileError(sample.mask, "this sample has no object ids", "add an instance id map for it")
    max_pixels = spec.max_pixels if spec else DEFAULT_MAX_PIXELS
    if sample.vector is not None:
        ids = render_layers(sample.vector, max_pixels, spec.things if spec else None)[1]
    else:
        raw = read_id_file(sample.instances, max_pixels)
        if sample.instances.name.endswith(CITYSCAPES_INSTANCE_SUFFIX):
            ids = cityscapes_ids(raw, spec)
        else:
            ids = raw.astype(np.int32)
    resize = spec is not None and spec.resize_masks == "nearest"
    if size is None and resize:
        size = image_size(sample)
    if size is not None and ids.shape != tuple(size):
        if resize:
            return resize_nearest(ids, size).astype(np.int32)
        raise FileError(
            sample.instances,
            f"instance id map is {ids.shape[1]}x{ids.shape[0]}, image is {size[1]}x{size[0]}",
            "id maps must have exactly the image's height and width (or pass --resize-masks nearest)",
        )
    return ids
