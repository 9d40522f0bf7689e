"""Semantic masks drawn from vector annotations: COCO polygons/RLE and LabelMe shapes.

A :class:`~pixelwise.data.types.VectorMask` is an ordered list of shapes, each with a class
index; they are painted in order on a background of class 0, so a later shape covers an earlier
one where they overlap.
The readers decide that order (COCO: crowd regions first, then objects from the largest to the
smallest; LabelMe: the order of the file) and say so in the documentation.

COCO polygons and RLE are rasterised by pycocotools (the reference implementation); LabelMe
shapes by Pillow's ImageDraw, as LabelMe's own conversion tools do.
"""

from __future__ import annotations

import base64
import io
import math
import warnings

import numpy as np
from PIL import Image, ImageDraw

from .encodings import FileError, too_large
from .types import DEFAULT_MAX_PIXELS, Shape, VectorMask


def _coco_region(shape: Shape, h: int, w: int, source: str) -> np.ndarray:
    with warnings.catch_warnings():
        # pycocotools 2.0.x calls np.array(copy=False) internally; NumPy 2 warns about it.
        warnings.simplefilter("ignore", DeprecationWarning)
        return _coco_region_inner(shape, h, w, source)


def _coco_region_inner(shape: Shape, h: int, w: int, source: str) -> np.ndarray:
    from pycocotools import mask as mask_utils  # only COCO data needs it: loaded on the first COCO mask

    if shape.kind == "coco-polygon":
        polys = [list(p) for p in shape.data if len(p) >= 6]  # fewer than 3 points cover nothing
        if not polys:
            return np.zeros((h, w), bool)
        rles = mask_utils.frPyObjects(polys, h, w)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    rle = dict(shape.data)
    size = [int(v) for v in rle.get("size", [h, w])]
    if size != [h, w]:
        raise FileError(source, f"an RLE annotation is {size[1]}x{size[0]}, its image is {w}x{h}", "fix the annotation")
    counts = rle.get("counts")
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects({"size": size, "counts": counts}, h, w)
    else:
        rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def _draw_region(shape: Shape, h: int, w: int) -> np.ndarray:
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if shape.kind == "polygon":
        for poly in shape.data:
            pts = [(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)]
            if len(pts) >= 3:
                draw.polygon(pts, fill=1, outline=1)
    elif shape.kind == "rectangle":
        (x0, y0), (x1, y1) = shape.data
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=1, outline=1)
    elif shape.kind == "circle":
        (cx, cy), (px, py) = shape.data
        r = math.hypot(px - cx, py - cy)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1, outline=1)
    elif shape.kind == "bitmap":
        bits = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape.data))).convert("L")) > 0
        x0, y0 = shape.origin
        region = np.zeros((h, w), bool)
        bh, bw = bits.shape
        ys, xs = slice(max(0, y0), min(h, y0 + bh)), slice(max(0, x0), min(w, x0 + bw))
        region[ys, xs] = bits[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        return region
    return np.asarray(canvas, dtype=bool)


def _region(shape: Shape, vm: VectorMask) -> np.ndarray:
    if shape.kind in ("coco-polygon", "rle"):
        return _coco_region(shape, vm.height, vm.width, vm.source)
    return _draw_region(shape, vm.height, vm.width)


def _check_size(vm: VectorMask, max_pixels: int) -> None:
    if vm.height < 1 or vm.width < 1:
        raise FileError(vm.source, f"the annotation gives the image size {vm.width}x{vm.height}", "fix the annotation")
    if vm.height * vm.width > max_pixels:
        raise too_large(vm.source, vm.width, vm.height, max_pixels)


def render(vm: VectorMask, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Paint the shapes in order; returns ``(H, W)`` int64 class indices (background 0).

    A size that is not positive, or of more than ``max_pixels`` pixels, is refused before any
    memory is taken: it comes from the annotation file, not from an image.
    """
    _check_size(vm, max_pixels)
    out = np.zeros((vm.height, vm.width), dtype=np.int64)
    for shape in vm.shapes:
        out[_region(shape, vm)] = shape.label
    return out


def render_layers(
    vm: VectorMask, max_pixels: int = DEFAULT_MAX_PIXELS, things: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray, set[tuple[int, int]]]:
    """Paint the shapes in order into class indices and object ids at once.

    Returns ``(classes (H, W) int64, ids (H, W) int32, overlaps)``: ``ids`` holds each shape's
    :attr:`Shape.instance` (0 = none) where it shows, so a shape painted later covers the ids
    under it as it covers their class; ``overlaps`` holds the pairs (earlier id, later id) of
    different objects whose shapes overlap. With ``things`` the ids on pixels of other classes
    are cleared (a shape of a stuff class is no object).
    """
    _check_size(vm, max_pixels)
    classes = np.zeros((vm.height, vm.width), dtype=np.int64)
    ids = np.zeros((vm.height, vm.width), dtype=np.int32)
    overlaps: set[tuple[int, int]] = set()
    label_of: dict[int, int] = {}
    for shape in vm.shapes:
        region = _region(shape, vm)
        if shape.instance:
            label_of[shape.instance] = shape.label
            under = np.unique(ids[region])
            overlaps |= {(int(u), shape.instance) for u in under if u and u != shape.instance}
        classes[region] = shape.label
        ids[region] = shape.instance
    if things is not None:
        ids[~np.isin(classes, things)] = 0
        overlaps = {(a, b) for a, b in overlaps if label_of[a] in things and label_of[b] in things}
    return classes, ids, overlaps


def outside(shape: Shape, height: int, width: int) -> bool:
    """Whether a polygon, rectangle or circle reaches outside the (height, width) image (it is clipped)."""
    if shape.kind in ("coco-polygon", "polygon"):
        coords = [float(v) for poly in shape.data for v in poly]
        xs, ys = coords[0::2], coords[1::2]
    elif shape.kind == "rectangle":
        xs, ys = [float(p[0]) for p in shape.data], [float(p[1]) for p in shape.data]
    elif shape.kind == "circle":
        (cx, cy), (px, py) = shape.data
        r = math.hypot(px - cx, py - cy)
        xs, ys = [cx - r, cx + r], [cy - r, cy + r]
    else:
        return False
    if not xs or not ys:
        return False
    return min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height
