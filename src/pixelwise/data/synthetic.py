"""A procedural data set of textured shapes, so the whole pipeline can be tried without downloads.

Every image shows a few shapes (discs, squares, triangles, rings) painted over a varied
background. Each shape class paints with its own hue family and fill pattern (discs dotted,
squares striped, triangles speckled, rings flat), but backgrounds take any colour, those hues
included: a single pixel's colour cannot say whether it belongs to a shape or to the
background, so a model has to look at a neighbourhood (the outline and the fill pattern). The
mask is the exact painted geometry (later shapes occlude earlier ones); noise and blur are
applied to the image only.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from ..errors import PixelwiseError

DEMO_CLASSES: list[str] = ["background", "disc", "square", "triangle", "ring"]
DEMO_COLORS: list[tuple[int, int, int]] = [
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
]
IGNORE_INDEX = 255

_DISC, _SQUARE, _TRIANGLE, _RING = 1, 2, 3, 4

# Geometry is specified for 256 px images and scaled with the image size.
_REF_SIZE = 256
_RADIUS_RANGE = (16.0, 64.0)
_OBJECTS_RANGE = (2, 5)  # inclusive
# Centres at least this fraction of (r1 + r2) apart: shapes may overlap, but no shape is
# mostly hidden, which would make its class unknowable even to a person.
_MIN_SEPARATION = 0.75
# A centre may sit this fraction of the radius inside the border, so shapes can be clipped
# but never by more than about half.
_BORDER_FRACTION = 0.6
# Smallest RGB distance between an object's base colour and what it is painted over; keeps
# outlines visible without making colour depend on the class.
_MIN_CONTRAST = 100.0
# Period of the fill patterns (dots, stripes, checks) at 256 px: fine enough that a few
# convolution layers see several repeats, coarse enough to survive the blur.
_PATTERN_PERIOD = (6.0, 10.0)
# Background stripes are soft and much wider than any fill pattern.
_BACKGROUND_PERIOD = (30.0, 60.0)
# Each shape class paints with its own hue family (degrees, +- _HUE_SPREAD); backgrounds take
# any colour, these hues included, so colour tells shapes apart from each other but not from
# the background: finding the shape takes its outline and pattern.
_CLASS_HUES = {1: 0.0, 2: 120.0, 3: 230.0, 4: 55.0}
_HUE_SPREAD = 20.0
# Side of the speckle cells at 256 px.
_SPECKLE_CELL = (2.0, 3.5)


def generate_sample(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Draw one random image and its mask.

    Args:
        rng: source of all randomness; the same generator state gives the same sample.
        size: side length in pixels (>= 32); shape sizes scale with it.

    Returns:
        image: (size, size, 3) uint8 RGB.
        mask: (size, size) uint8 class indices into DEMO_CLASSES (0 = background).
    """
    if size < 32:
        raise PixelwiseError(f"demo image size must be at least 32 px, got {size}")
    scale = size / _REF_SIZE
    # Pixel coordinates as a row and a column: they broadcast to (size, size) where needed.
    xx = np.arange(size, dtype=np.float32)[None, :]
    yy = np.arange(size, dtype=np.float32)[:, None]

    canvas = _background(rng, size, xx, yy)
    mask = np.zeros((size, size), dtype=np.uint8)

    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(_OBJECTS_RANGE[0], _OBJECTS_RANGE[1] + 1))):
        cls = int(rng.integers(1, len(DEMO_CLASSES)))
        r = float(rng.uniform(*_RADIUS_RANGE)) * scale
        centre = _place(rng, size, r, placed)
        if centre is None:
            continue
        cx, cy = centre
        placed.append((cx, cy, r))
        # Work inside the shape's bounding box only: most of the image is untouched.
        box = (
            slice(max(0, math.floor(cy - r) - 1), min(size, math.ceil(cy + r) + 2)),
            slice(max(0, math.floor(cx - r) - 1), min(size, math.ceil(cx + r) + 2)),
        )
        region = _shape_mask(rng, cls, box, cx, cy, r)
        if not region.any():
            continue
        patch = canvas[box]
        patch[region] = _texture(rng, cls, patch, region, xx[:, box[1]], yy[box[0], :], scale)[region]
        mask[box][region] = cls

    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.4, 1.0)) * scale))
    noisy = np.array(image, dtype=np.float32)
    noisy += float(rng.uniform(2.0, 7.0)) * rng.standard_normal(noisy.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mask


def make_demo_dataset(
    root: str | Path,
    num_images: int = 300,
    size: int = 256,
    seed: int = 0,
    val_fraction: float = 0.2,
    progress: bool = False,
) -> Path:
    """Write a demo data set in the pixelwise folder layout and return its root.

    Layout: ``images/<stem>.png`` (RGB), ``masks/<stem>.png`` (mode 'L', values = class index),
    ``classes.yaml`` (``names``, ``colors``, ``ignore_index``) and ``splits/train.txt`` /
    ``splits/val.txt`` (one stem per line, stems ``demo_0000``...). The same arguments give
    byte-identical files. Everything is written into a hidden sibling folder that is renamed to
    ``root`` only when complete, so an interrupted run never leaves a half-written data set at
    ``root``.

    Raises:
        PixelwiseError: bad arguments, or ``root`` exists and is not an empty folder.
    """
    root = Path(root)
    _check_demo_arguments(root, num_images, size, seed, val_fraction)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_demo_files(tmp, num_images, size, seed, val_fraction, progress)
        _move_into_place(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _check_demo_arguments(root: Path, num_images: int, size: int, seed: int, val_fraction: float) -> None:
    if num_images < 1:
        raise PixelwiseError(f"num_images must be at least 1, got {num_images}")
    if not 0.0 <= val_fraction < 1.0:
        raise PixelwiseError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction > 0 and num_images < 2:
        raise PixelwiseError("a validation split needs num_images >= 2 (or val_fraction=0)")
    if size < 32:
        raise PixelwiseError(f"demo image size must be at least 32 px, got {size}")
    if seed < 0:
        raise PixelwiseError(f"seed must be >= 0, got {seed}")
    if root.exists() and not (root.is_dir() and not any(root.iterdir())):
        raise PixelwiseError(f"{root} already exists and is not an empty folder; delete it or choose another path")


def _write_demo_files(tmp: Path, num_images: int, size: int, seed: int, val_fraction: float, progress: bool) -> None:
    """Images, masks, split lists and classes.yaml of the demo data set, into the folder ``tmp``."""
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    (tmp / "splits").mkdir()

    stems = [f"demo_{i:04d}" for i in range(num_images)]
    for i in _progress(range(num_images), progress):
        # One generator per image: sample i does not depend on how many come before it.
        image, mask = generate_sample(np.random.default_rng([seed, i]), size)
        Image.fromarray(image, "RGB").save(tmp / "images" / f"{stems[i]}.png", compress_level=1)
        Image.fromarray(mask, "L").save(tmp / "masks" / f"{stems[i]}.png", compress_level=1)

    write_seeded_splits(tmp, stems, seed, val_fraction)

    # Written last: a folder with classes.yaml is a finished one.
    meta = {
        "names": list(DEMO_CLASSES),
        "colors": [list(c) for c in DEMO_COLORS],
        "ignore_index": IGNORE_INDEX,
    }
    (tmp / "classes.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def write_seeded_splits(tmp: Path, stems: list[str], seed: int, val_fraction: float) -> None:
    """``tmp/splits/{train,val}.txt``: a seeded share ``val_fraction`` of ``stems`` (at least one each) for val."""
    n = len(stems)
    n_val = min(max(1, round(n * val_fraction)), n - 1) if val_fraction > 0 else 0
    order = np.random.default_rng([seed, 2**31]).permutation(n)
    val = sorted(stems[j] for j in order[:n_val])
    train = sorted(stems[j] for j in order[n_val:])
    (tmp / "splits" / "train.txt").write_text("".join(s + "\n" for s in train))
    (tmp / "splits" / "val.txt").write_text("".join(s + "\n" for s in val))


def _move_into_place(tmp: Path, root: Path) -> None:
    """Rename the finished folder ``tmp`` to ``root`` (empty or absent, checked before writing)."""
    if root.is_dir():
        root.rmdir()  # empty (checked before writing); rename cannot replace a folder on every OS
    try:
        os.rename(tmp, root)
    except OSError:
        # Another process may have finished the same data set first; use theirs.
        if (root / "classes.yaml").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return
        raise


def _progress(it, enabled: bool):
    if not enabled:
        return it
    return tqdm(it, desc="demo data", unit="img")


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, 3).astype(np.float32)


def _near_colour(rng: np.random.Generator, base: np.ndarray, spread: float) -> np.ndarray:
    return np.clip(base + rng.uniform(-spread, spread, 3), 0.0, 255.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) float32 low-frequency noise, roughly unit variance."""
    coarse = Image.fromarray(rng.standard_normal((cells, cells)).astype(np.float32), "F")
    return np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float32)


def _stripes(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, period: float) -> np.ndarray:
    """(H, W) float32 weights in [0, 1]: soft-edged stripes at a random angle."""
    angle = rng.uniform(0.0, math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    wave = np.sin(2.0 * math.pi * u / period + rng.uniform(0.0, 2.0 * math.pi))
    return np.clip(0.5 + 1.5 * wave, 0.0, 1.0)


def _blend(c1: np.ndarray, c2: np.ndarray, w: np.ndarray) -> np.ndarray:
    return c1 * (1.0 - w[..., None]) + c2 * w[..., None]


def _background(rng: np.random.Generator, size: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """(size, size, 3) float32 RGB in [0, 255].

    A random colour drifting towards a nearby one across the image, plus either nothing, soft
    stripes or low-frequency blotches. Variations stay moderate so that background edges are
    weaker than object outlines.
    """
    c1 = _random_colour(rng)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    bg = _blend(c1, _near_colour(rng, c1, 80.0), t)
    kind = int(rng.integers(3))
    if kind == 1:  # soft stripes
        period = rng.uniform(*_BACKGROUND_PERIOD) * size / _REF_SIZE
        bg += (_near_colour(rng, c1, 40.0) - c1) * _stripes(rng, xx, yy, period)[..., None]
    elif kind == 2:  # low-frequency colour blotches
        cells = int(rng.integers(3, 7))
        for ch in range(3):
            bg[..., ch] += 15.0 * _smooth_noise(rng, size, cells)
    return np.clip(bg, 0.0, 255.0).astype(np.float32)


def _place(
    rng: np.random.Generator, size: int, r: float, placed: list[tuple[float, float, float]]
) -> tuple[float, float] | None:
    lo, hi = _BORDER_FRACTION * r, size - _BORDER_FRACTION * r
    for _ in range(30):
        cx, cy = rng.uniform(lo, hi, 2)
        if all(math.hypot(cx - px, cy - py) >= _MIN_SEPARATION * (r + pr) for px, py, pr in placed):
            return float(cx), float(cy)
    return None


def _shape_mask(
    rng: np.random.Generator, cls: int, box: tuple[slice, slice], cx: float, cy: float, r: float
) -> np.ndarray:
    """Bool array of the box's shape: the pixels the shape covers inside `box`."""
    y0, x0 = box[0].start, box[1].start
    img = Image.new("L", (box[1].stop - x0, box[0].stop - y0), 0)
    draw = ImageDraw.Draw(img)
    cx, cy = cx - x0, cy - y0
    if cls in (_DISC, _RING):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        if cls == _RING:
            # The hole shows whatever lies beneath, so it keeps that label in the mask.
            ri = r * rng.uniform(0.45, 0.65)
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    else:
        n = 4 if cls == _SQUARE else 3
        start = rng.uniform(0.0, 2.0 * math.pi)
        pts = [
            (cx + r * math.cos(start + 2 * math.pi * k / n), cy + r * math.sin(start + 2 * math.pi * k / n))
            for k in range(n)
        ]
        draw.polygon(pts, fill=1)
    return np.asarray(img, dtype=bool)


def _texture(
    rng: np.random.Generator,
    cls: int,
    patch: np.ndarray,
    region: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
    scale: float,
) -> np.ndarray:
    """Float32 RGB fill shaped like `patch` (h, w, 3); only pixels under `region` are used.

    Colours come from the class's hue family; the pattern follows the class (discs dotted,
    squares striped, triangles speckled, rings flat) with random period, angle and phase.
    """
    under = patch[region].mean(axis=0)
    for _ in range(20):
        c1 = _class_colour(rng, cls)
        if np.linalg.norm(c1 - under) >= _MIN_CONTRAST:
            break
    c2 = _pattern_partner(rng, cls, c1)
    if cls == _RING:  # flat: the hole in the outline is what sets a ring apart
        return np.broadcast_to(c1, patch.shape)
    if cls == _SQUARE:  # stripes
        return _blend(c1, c2, _stripes(rng, xx, yy, rng.uniform(*_PATTERN_PERIOD) * scale))
    if cls == _TRIANGLE:  # speckle: a random grid of small cells, no period, no orientation
        cell = max(1.0, rng.uniform(*_SPECKLE_CELL) * scale)
        h, w_ = patch.shape[:2]
        grid = rng.random((math.ceil(h / cell) + 1, math.ceil(w_ / cell) + 1)) < 0.5
        rows = (np.arange(h) / cell).astype(int)
        cols = (np.arange(w_) / cell).astype(int)
        return _blend(c1, c2, grid[rows][:, cols].astype(np.float32))
    # disc: polka dots on a lattice at a random angle
    period = rng.uniform(*_PATTERN_PERIOD) * scale
    angle = rng.uniform(0.0, math.pi / 2)
    u = (xx * math.cos(angle) + yy * math.sin(angle)) / period
    v = (-xx * math.sin(angle) + yy * math.cos(angle)) / period
    du, dv = u - np.floor(u) - 0.5, v - np.floor(v) - 0.5
    w = (du * du + dv * dv < 0.09).astype(np.float32)
    return _blend(c1, c2, w)


def _hsv_to_rgb(h: float, sat: float, val: float) -> np.ndarray:
    """One colour from hue (degrees), saturation and value in [0, 1] to float32 RGB in [0, 255]."""
    k = (np.array([5.0, 3.0, 1.0]) + (h % 360.0) / 60.0) % 6.0
    rgb = val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return (255.0 * rgb).astype(np.float32)


def _class_colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    """A saturated colour from the class's hue family (backgrounds may take any colour)."""
    hue = _CLASS_HUES[cls] + rng.uniform(-_HUE_SPREAD, _HUE_SPREAD)
    return _hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0))


def _pattern_partner(rng: np.random.Generator, cls: int, base: np.ndarray) -> np.ndarray:
    """The pattern's second colour: same hue family, clearly different from `base`."""
    c = base
    for _ in range(20):
        c = _class_colour(rng, cls) * rng.uniform(0.35, 1.0)
        if np.linalg.norm(c - base) >= 80.0:
            return c.astype(np.float32)
    return (base * 0.4).astype(np.float32)
