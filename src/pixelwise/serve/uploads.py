"""Uploaded bytes -> RGB array, and masks -> PNG bytes, with every limit checked first.

An upload is untrusted: only a few raster formats are opened (never EPS, which would run
Ghostscript), the pixel count is read from the header and refused before any pixel is decoded,
and a truncated or damaged file is an error rather than a half-grey picture.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.folder import image_to_rgb

# Formats an upload may be in: the common photo and mask formats, nothing that runs other programs.
UPLOAD_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")


class UploadError(Exception):
    """A bad upload: ``status`` is the HTTP status (4xx), ``message`` says what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an uploaded image file into ``(H, W, 3)`` uint8 RGB, EXIF orientation applied.

    Raises :class:`UploadError` 400 for an empty, unreadable or truncated file and 413 when
    width x height exceeds ``max_pixels`` (checked on the header, before decoding).
    """
    if not data:
        raise UploadError(400, "the uploaded file is empty; send an image file (PNG, JPEG, ...)")
    try:
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise UploadError(
                    413,
                    f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}; "
                    "send a smaller image (or start the server with a larger --max-pixels)",
                )
            if width == 0 or height == 0:
                raise UploadError(400, "the image has no pixels")
            return image_to_rgb(im)
    except UnidentifiedImageError:
        raise UploadError(400, f"not an image this server reads (accepted: {', '.join(UPLOAD_FORMATS)})") from None
    except Image.DecompressionBombError as e:
        raise UploadError(413, f"image refused: {_short(e)}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise UploadError(400, f"cannot decode the image, it is truncated or damaged ({_short(e)})") from None


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a ``(H, W)`` uint8/uint16 index mask or an ``(H, W, 3)`` uint8 RGB image."""
    buf = io.BytesIO()
    # Level 1: masks compress well anyway, and the server spends its time on the model, not zlib.
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def mask_to_png(mask: np.ndarray) -> bytes:
    """Class indices as an 8-bit grayscale PNG (16-bit when there are more than 256 classes)."""
    if mask.max(initial=0) < 256:
        return encode_png(mask.astype(np.uint8))
    return encode_png(mask.astype(np.uint16))


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:160] if str(e) else e.__class__.__name__
