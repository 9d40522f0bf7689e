"""A procedural data set of countable objects, so instance and panoptic training can be tried offline.

Every image shows a varied background, often a patch of "grass" (a second stuff class with a
streaked texture), and several discs and squares (the thing classes). Objects touch and overlap on
purpose: a later object lies over an earlier one, which keeps only its visible pixels, and with
``touching=True`` objects of one class are placed against each other in little clusters, so the
connected components of the class mask cannot tell them apart. A person still can: each object has
its own colour from its class's hue family and is shaded darker towards its edge, as a lit
ball or tile would be. Objects left with almost nothing visible are removed before painting, so
every id in ``instances/`` is an object a person could point at.

The masks and ids are the exact painted geometry; blur and noise are applied to the image only.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from ..errors import PixelwiseError
from .synthetic import _background, _blend, _hsv_to_rgb, _move_into_place, _smooth_noise, _stripes, write_seeded_splits

INSTANCE_CLASSES: list[str] = ["background", "grass", "disc", "square"]
INSTANCE_COLORS: list[tuple[int, int, int]] = [(0, 0, 0), (60, 180, 75), (230, 25, 75), (0, 130, 200)]
INSTANCE_THINGS: list[str] = ["disc", "square"]
IGNORE_INDEX = 255
_GRASS, _DISC, _SQUARE = 1, 2, 3

# Geometry is specified for 128 px images and scaled with the image size.
_REF_SIZE = 128
_RADIUS_RANGE = (9.0, 18.0)
_OBJECTS_RANGE = (4, 8)  # inclusive, before hidden ones are removed
# Share of the later objects placed against an earlier object of their own class (touching=True).
_CLUSTER_SHARE = 0.6
# Centre distance of a clustered pair, as a fraction of the sum of their radii: below 1 they
# overlap a little, near 1 they just touch; either way they share a border.
_CLUSTER_DISTANCE = (0.7, 0.98)
# Objects of different classes, or any objects with touching=False, keep their centres at least
# this fraction of (r1 + r2) apart, so no object is mostly hidden by a stranger.
_MIN_SEPARATION = 0.6
# touching=False: objects keep this many pixels of background between their bounding circles.
_GAP = 2.0
# A centre may sit this fraction of the radius inside the border (objects clipped by at most half).
_BORDER_FRACTION = 0.5
# An object keeping fewer visible pixels than this share of its own area (or than _MIN_PIXELS)
# is removed: nobody could say where it is.
_MIN_VISIBLE = 0.3
_MIN_PIXELS = 12
# Hue families (degrees): discs red, squares blue, grass yellow-green; backgrounds any colour.
_HUES = {_GRASS: 85.0, _DISC: 0.0, _SQUARE: 225.0}
_HUE_SPREAD = 20.0
# Grass covers about this share of an image that has grass; this share of images has none.
_GRASS_COVER = (0.15, 0.45)
_NO_GRASS = 0.2
# Period of the square's stripes at 128 px.
_STRIPE_PERIOD = (3.5, 5.5)


@dataclass
class _Object:
    cls: int
    cx: float
    cy: float
    r: float
    angle: float  # squares: rotation in radians


def generate_instance_sample(
    rng: np.random.Generator, size: int = 128, touching: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one random scene.

    Args:
        rng: source of all randomness; the same generator state gives the same scene.
        size: side length in pixels (>= 32); object sizes scale with it.
        touching: place same-class objects against each other (True) or keep every object apart.

    Returns:
        image: (size, size, 3) uint8 RGB.
        mask: (size, size) uint8 class indices into INSTANCE_CLASSES (0 = background, 1 = grass).
        ids: (size, size) uint16 instance ids, 0 = no object, objects numbered 1..K in painting order.
    """
    if size < 32:
        raise PixelwiseError(f"instance scene size must be at least 32 px, got {size}")
    xx = np.arange(size, dtype=np.float32)[None, :]
    yy = np.arange(size, dtype=np.float32)[:, None]
    canvas = _background(rng, size, xx, yy)
    mask = np.zeros((size, size), dtype=np.uint8)
    grass = _grass_region(rng, size, xx, yy)
    if grass.any():
        canvas[grass] = _grass_texture(rng, size)[grass]
        mask[grass] = _GRASS

    objects, shapes = _visible_objects(rng, size, touching)
    ids = np.zeros((size, size), dtype=np.uint16)
    for k, (obj, shape) in enumerate(zip(objects, shapes), start=1):
        canvas[shape] = _object_texture(rng, obj, canvas, shape, xx, yy)[shape]
        mask[shape] = obj.cls
        ids[shape] = k

    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.7)) * size / _REF_SIZE))
    noisy = np.array(image, dtype=np.float32)
    noisy += float(rng.uniform(2.0, 6.0)) * rng.standard_normal(noisy.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mask, ids


def _visible_objects(rng: np.random.Generator, size: int, touching: bool) -> tuple[list[_Object], list[np.ndarray]]:
    """The objects that stay visible enough, in painting order, with their full (size, size) bool shapes."""
    objects = _layout(rng, size, touching)
    shapes = [_shape(obj, size) for obj in objects]
    # Removing an object only uncovers the ones beneath it, so one pass from the top keeps
    # every survivor visible enough.
    keep = [True] * len(objects)
    for i in range(len(objects)):
        above = np.zeros((size, size), dtype=bool)
        for j in range(i + 1, len(objects)):
            if keep[j]:
                above |= shapes[j]
        full = int(shapes[i].sum())
        visible = int((shapes[i] & ~above).sum())
        keep[i] = visible >= max(_MIN_PIXELS, _MIN_VISIBLE * full)
    return [o for o, k in zip(objects, keep) if k], [s for s, k in zip(shapes, keep) if k]


def _layout(rng: np.random.Generator, size: int, touching: bool) -> list[_Object]:
    """Classes, centres, radii and angles of a scene's objects, in painting order.

    With ``touching`` the second object is always placed against the first, with its class, so
    every scene has at least one pair that connected components would merge.
    """
    scale = size / _REF_SIZE
    placed: list[_Object] = []
    for n in range(int(rng.integers(_OBJECTS_RANGE[0], _OBJECTS_RANGE[1] + 1))):
        cls = int(rng.choice([_DISC, _SQUARE]))
        r = float(rng.uniform(*_RADIUS_RANGE)) * scale
        angle = float(rng.uniform(0.0, math.pi / 2))
        partners = [o for o in placed if o.cls == cls]
        if touching and n == 1:
            cls, partners = placed[0].cls, [placed[0]]
        cluster = touching and partners and (n == 1 or rng.random() < _CLUSTER_SHARE)
        centre = _place_against(rng, size, r, partners, placed) if cluster else None
        if centre is None:
            centre = _place_apart(rng, size, r, placed, touching)
        if centre is not None:
            placed.append(_Object(cls, centre[0], centre[1], r, angle))
    return placed


def _inside(size: int, r: float, cx: float, cy: float) -> bool:
    lo, hi = _BORDER_FRACTION * r, size - _BORDER_FRACTION * r
    return lo <= cx <= hi and lo <= cy <= hi


def _place_against(
    rng: np.random.Generator, size: int, r: float, partners: list[_Object], placed: list[_Object]
) -> tuple[float, float] | None:
    """A centre touching or slightly overlapping one of ``partners``, not burying any other object."""
    for _ in range(30):
        p = partners[int(rng.integers(len(partners)))]
        d = float(rng.uniform(*_CLUSTER_DISTANCE)) * (r + p.r)
        a = float(rng.uniform(0.0, 2.0 * math.pi))
        cx, cy = p.cx + d * math.cos(a), p.cy + d * math.sin(a)
        others = [o for o in placed if o is not p]
        if _inside(size, r, cx, cy) and all(
            math.hypot(cx - o.cx, cy - o.cy) >= _MIN_SEPARATION * (r + o.r) for o in others
        ):
            return cx, cy
    return None


def _place_apart(
    rng: np.random.Generator, size: int, r: float, placed: list[_Object], touching: bool
) -> tuple[float, float] | None:
    """A free centre: overlapping strangers a little at most (touching) or clear of everything."""
    lo, hi = _BORDER_FRACTION * r, size - _BORDER_FRACTION * r
    for _ in range(30):
        cx, cy = (float(v) for v in rng.uniform(lo, hi, 2))
        if touching:
            ok = all(math.hypot(cx - o.cx, cy - o.cy) >= _MIN_SEPARATION * (r + o.r) for o in placed)
        else:
            ok = all(math.hypot(cx - o.cx, cy - o.cy) >= r + o.r + _GAP for o in placed)
        if ok:
            return cx, cy
    return None


def _shape(obj: _Object, size: int) -> np.ndarray:
    """(size, size) bool pixels covered by ``obj`` (a square's corners lie on its circle of radius r)."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    if obj.cls == _DISC:
        draw.ellipse([obj.cx - obj.r, obj.cy - obj.r, obj.cx + obj.r, obj.cy + obj.r], fill=1)
    else:
        pts = [
            (
                obj.cx + obj.r * math.cos(obj.angle + k * math.pi / 2),
                obj.cy + obj.r * math.sin(obj.angle + k * math.pi / 2),
            )
            for k in range(4)
        ]
        draw.polygon(pts, fill=1)
    return np.asarray(img, dtype=bool)


def _class_colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    hue = _HUES[cls] + rng.uniform(-_HUE_SPREAD, _HUE_SPREAD)
    return _hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.0))


def _grass_region(rng: np.random.Generator, size: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """(size, size) bool: a band or patch of grass, about _GRASS_COVER of the image, or nothing."""
    if rng.random() < _NO_GRASS:
        return np.zeros((size, size), dtype=bool)
    # A tilted ramp (a horizon) plus low-frequency noise (a ragged edge), cut at a quantile.
    angle = rng.uniform(0.0, 2.0 * math.pi)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / size
    field = ramp + 0.25 * _smooth_noise(rng, size, int(rng.integers(3, 6)))
    cover = float(rng.uniform(*_GRASS_COVER))
    return field > np.quantile(field, 1.0 - cover)


def _grass_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32: blades, i.e. fine noise stretched along one random direction."""
    c1 = _class_colour(rng, _GRASS)
    c2 = c1 * rng.uniform(0.35, 0.6)
    fine = rng.standard_normal((size // 8 + 2, size + 2)).astype(np.float32)
    blades = np.asarray(Image.fromarray(fine, "F").resize((size + 2, size + 2), Image.BILINEAR))
    blades = np.asarray(Image.fromarray(blades, "F").rotate(float(rng.uniform(-30, 30)), Image.BILINEAR))
    w = np.clip(0.5 + 0.6 * blades[1:-1, 1:-1], 0.0, 1.0)
    return _blend(c1, c2, w).astype(np.float32)


def _object_texture(
    rng: np.random.Generator, obj: _Object, canvas: np.ndarray, shape: np.ndarray, xx: np.ndarray, yy: np.ndarray
) -> np.ndarray:
    """(H, W, 3) float32 fill of ``obj`` (only pixels under ``shape`` are used).

    A colour of the class's hue family that stands out from what lies beneath, shaded darker
    towards the edge (discs radially like a ball, squares towards their sides like a bevelled
    tile), so two touching objects of one colour family still show the seam between them.
    Squares are also striped.
    """
    under = canvas[shape].mean(axis=0)
    for _ in range(20):
        base = _class_colour(rng, obj.cls)
        if np.linalg.norm(base - under) >= 90.0:
            break
    dx, dy = xx - obj.cx, yy - obj.cy
    if obj.cls == _DISC:
        edge = np.sqrt(dx * dx + dy * dy) / obj.r
    else:
        u = dx * math.cos(obj.angle + math.pi / 4) + dy * math.sin(obj.angle + math.pi / 4)
        v = -dx * math.sin(obj.angle + math.pi / 4) + dy * math.cos(obj.angle + math.pi / 4)
        edge = np.maximum(np.abs(u), np.abs(v)) / (obj.r / math.sqrt(2.0))
    shade = 1.0 - 0.55 * np.clip(edge, 0.0, 1.0) ** 2
    fill = base * shade[..., None]
    if obj.cls == _SQUARE:
        period = rng.uniform(*_STRIPE_PERIOD) * canvas.shape[0] / _REF_SIZE
        fill = _blend(fill, fill * 0.6, 0.6 * _stripes(rng, xx, yy, period))
    return fill.astype(np.float32)


def make_instance_dataset(
    root: str | Path,
    num_images: int = 200,
    size: int = 128,
    seed: int = 0,
    val_fraction: float = 0.2,
    touching: bool = True,
    progress: bool = False,
) -> Path:
    """Write an instance data set in the pixelwise folder layout and return its root.

    Layout: ``images/<stem>.png`` (RGB), ``masks/<stem>.png`` (mode 'L', class indices),
    ``instances/<stem>.png`` (16-bit, 0 = no object, ids 1..K per image), ``classes.yaml``
    (``names``, ``colors``, ``ignore_index``, ``things: [disc, square]``) and
    ``splits/train.txt`` / ``splits/val.txt`` (stems ``scene_0000``...). The same arguments give
    byte-identical files. Everything is written into a hidden sibling folder that is renamed to
    ``root`` only when complete.

    Raises:
        PixelwiseError: bad arguments, or ``root`` exists and is not an empty folder.
    """
    root = Path(root)
    _check_arguments(root, num_images, size, seed, val_fraction, touching)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_files(tmp, num_images, size, seed, val_fraction, touching, progress)
        _move_into_place(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_arguments(root: Path, num_images, size, seed, val_fraction, touching) -> None:
    if not _whole(num_images) or num_images < 1:
        raise PixelwiseError(f"num_images must be a whole number of at least 1, got {num_images!r}")
    if not _whole(size) or size < 32:
        raise PixelwiseError(f"size must be a whole number of at least 32 (pixels), got {size!r}")
    if not _whole(seed) or not 0 <= seed <= 2**32 - 1:
        raise PixelwiseError(f"seed must be a whole number from 0 to {2**32 - 1}, got {seed!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise PixelwiseError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if val_fraction > 0 and num_images < 2:
        raise PixelwiseError("a validation split needs num_images >= 2 (or val_fraction=0)")
    if not isinstance(touching, bool):
        raise PixelwiseError(f"touching must be True or False, got {touching!r}")
    if root.exists() and not (root.is_dir() and not any(root.iterdir())):
        raise PixelwiseError(f"{root} already exists and is not an empty folder; delete it or choose another path")


def _write_files(
    tmp: Path, num_images: int, size: int, seed: int, val_fraction: float, touching: bool, progress: bool
) -> None:
    """Images, masks, instance ids, split lists and classes.yaml, into the folder ``tmp``."""
    for sub in ("images", "masks", "instances", "splits"):
        (tmp / sub).mkdir(parents=True)
    stems = [f"scene_{i:04d}" for i in range(num_images)]
    steps = tqdm(range(num_images), desc="instance data", unit="img") if progress else range(num_images)
    for i in steps:
        # One generator per image: scene i does not depend on how many come before it.
        image, mask, ids = generate_instance_sample(np.random.default_rng([seed, i]), size, touching)
        Image.fromarray(image, "RGB").save(tmp / "images" / f"{stems[i]}.png", compress_level=1)
        Image.fromarray(mask, "L").save(tmp / "masks" / f"{stems[i]}.png", compress_level=1)
        Image.fromarray(ids).save(tmp / "instances" / f"{stems[i]}.png", compress_level=1)

    write_seeded_splits(tmp, stems, seed, val_fraction)

    # Written last: a folder with classes.yaml is a finished one.
    meta = {
        "names": list(INSTANCE_CLASSES),
        "colors": [list(c) for c in INSTANCE_COLORS],
        "ignore_index": IGNORE_INDEX,
        "things": list(INSTANCE_THINGS),
    }
    (tmp / "classes.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
