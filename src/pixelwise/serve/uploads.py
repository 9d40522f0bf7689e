"""Uploaded bytes -> RGB array, with every limit checked first.

An upload is untrusted: only a few raster formats are opened (never EPS, which would run
Ghostscript), the pixel count is read from the header and refused before any pixel is decoded,
and a truncated or damaged file is an error rather than a half-grey picture.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data import image_to_rgb
from ..errors import short_message

# Formats an upload may be in: the common photo and mask formats, nothing that runs other programs.
UPLOAD_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")


class UploadError(Exception):
    """A bad upload: ``status`` is the HTTP status (4xx), ``message`` says what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def decode_upload(data: bytes, max_upload_pixels: int) -> np.ndarray:
    """Decode an uploaded image file into ``(H, W, 3)`` uint8 RGB, EXIF orientation applied.

    Raises :class:`UploadError` 400 for an empty, unreadable or truncated file and 413 when
    width x height exceeds ``max_upload_pixels`` (checked on the header, before decoding).
    """
    if not data:
        raise UploadError(400, "the uploaded file is empty; send an image file (PNG, JPEG, ...)")
    try:
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as im:
            width, height = im.size
            if width * height > max_upload_pixels:
                raise UploadError(
                    413,
                    f"image is {width}x{height} = {width * height} pixels, over the limit of {max_upload_pixels}; "
                    "send a smaller image (or start the server with a larger --max-upload-pixels)",
                )
            if width == 0 or height == 0:
                raise UploadError(400, "the image has no pixels")
            return image_to_rgb(im)
    except UnidentifiedImageError:
        raise UploadError(400, f"not an image this server reads (accepted: {', '.join(UPLOAD_FORMATS)})") from None
    except Image.DecompressionBombError as e:
        raise UploadError(413, f"image refused: {short_message(e, 160)}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise UploadError(
            400, f"cannot decode the image, it is truncated or damaged ({short_message(e, 160)})"
        ) from None
