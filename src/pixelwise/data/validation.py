"""Read every image and mask once, decide how the masks are encoded, and find every problem.

:func:`check_samples` is shared by training, evaluation and ``pixelwise inspect``. Each file is
opened and decoded exactly once, in parallel threads (Pillow and NumPy release the GIL while
decoding and counting); what is kept per sample is a histogram of the stored mask values, from
which the encoding, the classes and every per-class count are derived without reading again.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
from tqdm.auto import tqdm

from ..classes import ClassInfo, default_palette
from ..errors import PixelwiseError
from .decode import CITYSCAPES_INSTANCE_SUFFIX, cityscapes_ids, read_id_file, resize_nearest
from .encodings import (
    INVALID,
    FileError,
    describe_key,
    first_position,
    histogram,
    map_values,
    open_image,
    pack,
    raw_from_image,
    unpack,
)
from .problems import raise_first
from .render import render, render_layers
from .types import DataReport, DecodeSpec, Problem, Sample, listing, plural


@dataclass
class SampleCheck:
    """What reading one sample found. ``keys``/``counts``: histogram of the stored mask values."""

    sample: Sample
    size: tuple[int, int] | None = None  # image (H, W) after EXIF orientation
    image_mode: str = ""
    rotated: bool = False  # EXIF orientation other than "upright"
    image_error: FileError | None = None
    mask_error: FileError | None = None
    mask_size: tuple[int, int] | None = None
    kind: str = ""  # gray | rgb | rendered
    mode: str = ""
    bits: int = 8
    lossy: bool = False
    resized: bool = False
    keys: np.ndarray | None = None
    counts: np.ndarray | None = None
    palette: np.ndarray | None = None  # (256,) packed colours of a palette (P) mask's indices
    id_error: FileError | None = None  # the sample's object id map cannot be read
    id_size: tuple[int, int] | None = None  # (H, W) of the id map as stored
    id_pairs: np.ndarray | None = None  # (K, 3) int64: stored mask key, object id, pixels (objects only)
    touching: np.ndarray | None = None  # (P, 2) int64: ids of objects sharing a 4-neighbour border
    overlaps: set[tuple[int, int]] = field(default_factory=set)  # shapes of two objects painted over each other

    @property
    def ok(self) -> bool:
        return self.image_error is None and self.mask_error is None and self.keys is not None


@dataclass
class CheckResult:
    """The outcome of :func:`check_samples`."""

    classes: ClassInfo
    spec: DecodeSpec  # the resolved encoding, classes and limits
    report: DataReport  # class counts of every usable sample (stem -> {class: pixels})
    problems: list[Problem]
    notes: list[str]
    checks: list[SampleCheck]
    bad: dict[str, str] = field(default_factory=dict)  # stem -> "path (reason)" of unusable samples
    objects: dict[str, SampleObjects] = field(default_factory=dict)  # usable samples with object ids
    instances: bool = False  # some sample has object ids


def _packed_palette(im) -> np.ndarray:
    """(256,) int64: the colour of each index of a palette image, packed as r << 16 | g << 8 | b."""
    rows = np.zeros((256, 3), np.int64)
    flat = np.asarray((im.getpalette() or [])[:768], np.int64)
    rows[: len(flat) // 3] = flat[: len(flat) // 3 * 3].reshape(-1, 3)
    return (rows[:, 0] << 16) | (rows[:, 1] << 8) | rows[:, 2]


def _scan_one(sample: Sample, spec: DecodeSpec) -> SampleCheck:
    c = SampleCheck(sample)
    try:
        im = open_image(sample.image, spec.max_pixels, "image")
        with im:
            w, h = im.size
            c.image_mode = im.mode
            orientation = im.getexif().get(0x0112, 1)
    except FileError as e:
        c.image_error = e
    else:
        if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: width and height swap
            h, w = w, h
        c.rotated = orientation not in (1, None)
        c.size = (h, w)
    try:
        arr, ids = _read_mask(c, sample, spec)
    except FileError as e:
        c.mask_error = e
        return c
    except Exception as e:  # malformed annotations can fail inside pycocotools in many ways
        c.mask_error = FileError(
            sample.mask, f"annotation cannot be drawn ({e.__class__.__name__}: {e})", "fix the annotation"
        )
        return c
    c.mask_size = arr.shape
    if c.size is not None and arr.shape != c.size and spec.resize_masks == "nearest":
        arr = resize_nearest(arr, c.size).astype(arr.dtype)
        c.resized = True
    c.keys, c.counts = histogram(arr)
    if sample.instances is not None:
        _scan_ids(c, sample, spec, arr, ids)
    return c


def _read_mask(c: SampleCheck, sample: Sample, spec: DecodeSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """The stored mask values of a sample, and the object ids of a vector sample with objects (else None)."""
    if sample.vector is not None:
        c.kind, c.mode, c.bits = "rendered", "shapes", 0
        if sample.instances is None:
            return render(sample.vector, spec.max_pixels), None
        arr, ids, c.overlaps = render_layers(sample.vector, spec.max_pixels)
        return arr, ids
    im = open_image(sample.mask, spec.max_pixels, "mask")
    with im:
        raw = raw_from_image(im, sample.mask, colour=spec.encoding == "rgb")
        c.palette = _packed_palette(im) if raw.kind == "gray" and im.mode in ("P", "PA") else None
    c.kind, c.mode, c.bits, c.lossy = raw.kind, raw.mode, raw.bits, raw.lossy
    return raw.array, None


def _scan_ids(c: SampleCheck, sample: Sample, spec: DecodeSpec, arr: np.ndarray, ids: np.ndarray | None) -> None:
    """Read a sample's object ids once and keep what checks and reports need: (mask key, id, pixels)
    triples and the pairs of objects that touch. ``arr``: the stored mask values, resized as the mask was."""
    if ids is None:
        try:
            ids = read_id_file(sample.instances, spec.max_pixels)
        except FileError as e:
            c.id_error = e
            return
        if sample.instances.name.endswith(CITYSCAPES_INSTANCE_SUFFIX):
            ids = cityscapes_ids(ids)
    c.id_size = ids.shape
    if ids.shape != arr.shape:
        if not (c.resized and ids.shape == c.mask_size):
            return  # a size mismatch: reported by the checks
        ids = resize_nearest(ids, arr.shape)
    ids = ids.astype(np.int64)
    on = ids > 0
    keys, objs = arr[on].astype(np.int64), ids[on]
    span = int(keys.max()) + 1 if keys.size else 1
    codes, counts = np.unique(objs * span + keys, return_counts=True)
    c.id_pairs = np.stack([codes % span, codes // span, counts], axis=1) if codes.size else np.zeros((0, 3), np.int64)
    pairs = [
        np.stack([a[m], b[m]], axis=1)
        for a, b in ((ids[:, :-1], ids[:, 1:]), (ids[:-1, :], ids[1:, :]))
        for m in [(a != b) & (a > 0) & (b > 0)]
    ]
    both = np.sort(np.concatenate(pairs), axis=1)
    c.touching = np.unique(both, axis=0) if both.size else np.zeros((0, 2), np.int64)


def scan(
    samples: list[Sample], spec: DecodeSpec, workers: int | None = None, progress: bool = False
) -> list[SampleCheck]:
    """Open every image and mask once, in parallel threads; one :class:`SampleCheck` per sample, in order."""
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        it = pool.map(lambda s: _scan_one(s, spec), samples)
        return list(tqdm(it, total=len(samples), desc="reading", unit="pair", disable=not progress, leave=False))


def _union(checks: list[SampleCheck]) -> dict[int, int]:
    total: dict[int, int] = {}
    for c in checks:
        for k, n in zip(c.keys.tolist(), c.counts.tolist()):
            total[k] = total.get(k, 0) + n
    return total


def _colour_summary(hist: dict[int, int], limit: int = 8) -> str:
    tot = sum(hist.values()) or 1
    top = sorted(hist.items(), key=lambda kv: -kv[1])[:limit]
    text = ", ".join(f"{unpack(k)} {100 * n / tot:.1f}%" for k, n in top)
    return text + (f" and {len(hist) - limit} more" if len(hist) > limit else "")


def _looks_binary(hist: dict[int, int], lossy: bool) -> bool:
    if not hist:
        return False
    if not lossy:
        return set(hist) <= {0, 255} and 255 in hist
    total = sum(hist.values())
    extreme = sum(n for k, n in hist.items() if k <= 63 or k >= 192)
    return extreme >= 0.99 * total and any(k >= 192 for k in hist) and max(hist) <= 255


@dataclass
class _Findings:
    """What checking collects as it goes: problems, notes, and the unusable samples with a reason."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)  # stem -> "path (reason)"


_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr")


def _colour_keys(c: SampleCheck) -> np.ndarray | None:
    """The packed colours of a single-channel check that came from a colour file: a colour PNG whose
    pixels are all grey or black (equal channels), or a palette mask; None for any other."""
    if c.kind != "gray" or c.keys is None:
        return None
    return _as_colour_keys(c, c.keys)


def _as_colour_keys(c: SampleCheck, keys: np.ndarray) -> np.ndarray | None:
    """``keys`` of a single-channel check read as the colours they show (see :func:`_colour_keys`)."""
    if c.mode in _COLOUR_MODES and c.bits == 8:
        return keys * 0x010101
    if c.palette is not None and (not c.keys.size or c.keys.max() < 256):
        return c.palette[keys]
    return None


def _majority_kind(files: list[SampleCheck], spec: DecodeSpec, forced: bool) -> str:
    """The kind of mask ("rgb" or "gray") the data set holds: the one given, or the majority.

    A colour file of class colours that happen to be grey (an all-background black mask) or a
    palette mask whose colours are all class colours could be either: it does not vote.
    """
    if forced:
        return "rgb" if spec.encoding == "rgb" else "gray"
    known = {pack(c) for c in spec.colors} | {pack(c) for c in spec.ignore_colors}
    n_rgb = n_gray = 0
    for c in files:
        colours = _colour_keys(c)
        if c.kind == "rgb":
            n_rgb += 1
        elif colours is None or not known or not set(colours.tolist()) <= known:
            n_gray += 1
    return "rgb" if n_rgb > n_gray else "gray"


def _as_colours(files: list[SampleCheck], found: _Findings) -> None:
    """In a colour-coded data set, read grey colour files and palette masks as the colours they show."""
    moved = 0
    for c in files:
        colours = _colour_keys(c)
        if colours is None:
            continue
        if c.id_pairs is not None and len(c.id_pairs):
            c.id_pairs = c.id_pairs.copy()
            c.id_pairs[:, 0] = _as_colour_keys(c, c.id_pairs[:, 0])
        keys, inverse = np.unique(colours, return_inverse=True)
        counts = np.zeros(len(keys), np.int64)
        np.add.at(counts, inverse.reshape(-1), c.counts)
        c.keys, c.counts, c.kind = keys, counts, "rgb"
        moved += c.palette is not None
    if moved:
        found.notes.append(f"{plural(moved, 'palette mask')} read as the colours of the palette, like the other masks")


def _odd_kind_problem(odd: list[SampleCheck], kind: str) -> Problem:
    """The masks stored another way (colour versus single-channel) than the data set's ``kind``."""
    want = "colour (RGB) class colours" if kind == "rgb" else "single-channel class indices"
    first = odd[0]
    if kind == "gray":
        solo = (
            f"{first.sample.mask}: mask is {first.mode}, not what the other masks hold ({want}); save each pixel's "
            "class index (0, 1, 2, ...) as an 8-bit grayscale or palette PNG"
        )
    else:
        solo = (
            f"{first.sample.mask}: mask is single-channel ({first.mode}) but the data set's masks are colour-coded; "
            "save it with the class colours"
        )
    return Problem(
        f"masks are {'single-channel' if kind == 'rgb' else 'colour (RGB)'} while the data set's masks hold {want}",
        "save every mask the same way",
        [f"{c.sample.mask} ({c.mode})" for c in odd],
        stems=[c.sample.stem for c in odd],
        solo=solo,
        one=f"mask is {'single-channel' if kind == 'rgb' else 'colour (RGB)'} while the data set's masks hold {want}",
    )


def _choose_encoding(
    files: list[SampleCheck], spec: DecodeSpec, classes: ClassInfo | None, kind: str, forced: bool, snap: bool
) -> str:
    """The encoding: the one given, or the one the stored values show (see :mod:`pixelwise.data.encodings`)."""
    if forced:
        return spec.encoding
    if kind == "rgb":
        return "rgb"
    if spec.lut:
        return "index"
    if any(c.bits == 16 for c in files):
        return "16bit"
    if (classes is None or classes.num_classes == 2) and _looks_binary(_union(files), snap):
        return "binary"
    return "index"


def _encoding_findings(files: list[SampleCheck], spec: DecodeSpec, classes: ClassInfo | None, found: _Findings) -> None:
    """What the user must know about the chosen encoding: missing colours or classes, binary reading."""
    if spec.encoding == "rgb" and not spec.colors:
        found.problems.append(
            Problem(
                f"{plural(len(files), 'mask')} {'is' if len(files) == 1 else 'are'} colour-coded (RGB) "
                "but no class colours are known",
                "add classes.yaml with names: and colors: (one [r, g, b] per class; ignore_color: for ignored pixels) "
                f"or pass --classes FILE; colours found: {_colour_summary(_union(files))}",
                skippable=False,
            )
        )
    n_lossy = sum(c.lossy for c in files)
    if spec.snap and spec.encoding == "index" and classes is None:
        found.problems.append(
            Problem(
                f"{plural(n_lossy, 'mask')} {'is' if n_lossy == 1 else 'are'} lossy (JPEG) and the classes are "
                "unknown, so their values cannot be snapped",
                "add classes.yaml listing the classes (or pass --classes FILE), or save masks as PNG",
                skippable=False,
            )
        )
    if spec.encoding == "binary" and not spec.snap:
        found.notes.append(
            "masks are binary 0/255: 0 -> class 0, 255 -> class 1 (pass --encoding index if 255 means 'ignore')"
        )
    if any(c.kind == "gray" and c.mode in ("RGB", "RGBA") for c in files):
        found.notes.append("grey masks stored as RGB (equal channels) were read as single-channel values")


def _resolve(
    good: list[SampleCheck], spec: DecodeSpec, classes: ClassInfo | None, found: _Findings
) -> tuple[DecodeSpec, list[SampleCheck]]:
    """Decide the data set's encoding from the scanned masks; returns the spec and the usable checks."""
    files = [c for c in good if c.kind in ("gray", "rgb")]
    if not files:
        rendered = any(c.kind == "rendered" for c in good)
        return replace(
            spec, encoding="rendered" if rendered else (spec.encoding if spec.encoding != "auto" else "index")
        ), good
    forced = spec.encoding not in ("auto", "jpeg-snap")
    kind = _majority_kind(files, spec, forced)
    if kind == "rgb":
        _as_colours(files, found)
    odd = [c for c in files if c.kind != kind]
    if odd:
        found.problems.append(_odd_kind_problem(odd, kind))
        for c in odd:
            found.bad[c.sample.stem] = f"{c.sample.mask} ({c.mode} mask)"
        files = [c for c in files if c.kind == kind]
        good = [c for c in good if c.kind != ("gray" if kind == "rgb" else "rgb")]
    snap = spec.encoding == "jpeg-snap" or (not forced and any(c.lossy for c in files))
    out = replace(spec, encoding=_choose_encoding(files, spec, classes, kind, forced, snap), snap=snap)
    _encoding_findings(files, out, classes, found)
    return out, good


def _error_of(c: SampleCheck) -> FileError | None:
    return c.image_error or c.mask_error


def _too_large(c: SampleCheck) -> bool:
    err = _error_of(c)
    return err is not None and err.kind == "too_large"


def _file_findings(checks: list[SampleCheck], spec: DecodeSpec, found: _Findings) -> list[SampleCheck]:
    """Problems of files that cannot be read at all; returns the checks whose files were read."""
    unreadable = [c for c in checks if c.image_error and not _too_large(c)]
    if unreadable:
        found.problems.append(
            Problem(
                "images cannot be read",
                "replace or remove them",
                [c.image_error.item for c in unreadable],
                [c.sample.stem for c in unreadable],
                one="image cannot be read",
            )
        )
    big = [c for c in checks if _too_large(c)]
    if big:
        found.problems.append(
            Problem(
                "files are above the pixel limit and were not decoded",
                f"pass --max-image-pixels N (now {spec.max_pixels:,}) if they are genuine, or remove them",
                [_error_of(c).item for c in big],
                [c.sample.stem for c in big],
                one="file is above the pixel limit and was not decoded",
            )
        )
    mask_bad = [c for c in checks if c.mask_error and not c.image_error and not _too_large(c)]
    if mask_bad:
        found.problems.append(
            Problem(
                "masks cannot be used",
                "fix them",
                [c.mask_error.item for c in mask_bad],
                [c.sample.stem for c in mask_bad],
                solo=str(mask_bad[0].mask_error),
                one="mask cannot be used",
            )
        )
    for c in checks:
        if _error_of(c) is not None:
            found.bad[c.sample.stem] = _error_of(c).item
    return [c for c in checks if c.ok]


def _size_findings(good: list[SampleCheck], found: _Findings) -> list[SampleCheck]:
    """Masks of another size than their image: an error, or a warning when they were resized."""
    mismatch = [c for c in good if c.size is not None and c.mask_size != c.size and not c.resized]
    if mismatch:
        items = [
            f"{c.sample.mask} is {c.mask_size[1]}x{c.mask_size[0]}, image is {c.size[1]}x{c.size[0]}" for c in mismatch
        ]
        found.problems.append(
            Problem(
                "masks differ in size from their images",
                "masks must have exactly the image's height and width (or pass --resize-masks nearest to resize them)",
                items,
                [c.sample.stem for c in mismatch],
                one="mask differs in size from its image",
            )
        )
        for c, item in zip(mismatch, items):
            found.bad[c.sample.stem] = item
        dropped = {id(c) for c in mismatch}
        good = [c for c in good if id(c) not in dropped]
    resized = [c for c in good if c.resized]
    if resized:
        found.problems.append(
            Problem(
                "masks differ in size from their images and are resized (nearest neighbour)",
                "check that each mask belongs to its image",
                [f"{c.sample.mask} {c.mask_size[1]}x{c.mask_size[0]} -> {c.size[1]}x{c.size[0]}" for c in resized],
                severity="warning",
                one="mask differs in size from its image and is resized (nearest neighbour)",
            )
        )
    return good


# More classes than this from mask values alone are no class indices: instance ids, or a 16-bit
# "ignore" value such as 65535. A classes file may list more.
MAX_INFERRED_CLASSES = 1024


def _too_many_classes(good: list[SampleCheck], top: int, ignore: int) -> Problem:
    high = [c for c in good if any(k >= MAX_INFERRED_CLASSES and k != ignore for k in c.keys.tolist())]
    return Problem(
        f"mask values go up to {top}, which would make {top + 1:,} classes: these are no class indices "
        "(instance ids, or a value that marks ignored pixels?)",
        "write classes.yaml with names: (one per class) and ignore_index: (the value to ignore), or map the "
        "masks to class indices 0, 1, 2, ...",
        [f"{c.sample.mask} (values up to {max(k for k in c.keys.tolist() if k != ignore)})" for c in high],
        skippable=False,
        one=f"mask holds a value of {top}, which would make {top + 1:,} classes (no class index)",
    )


def _zero_or_ignore_masks(good: list[SampleCheck], ignore: int) -> Problem | None:
    """Masks that hold only 0 and the ignore index (255) while others use class 1, 2, ...: 0/255
    binary masks among 0/1 masks, whose foreground would silently be ignored."""
    only = [c for c in good if ignore in c.keys.tolist() and set(c.keys.tolist()) <= {0, ignore}]
    if not only or not any(set(c.keys.tolist()) - {0, ignore} for c in good):
        return None
    return Problem(
        f"masks hold only 0 and {ignore} while the others use 1, 2, ...: their {ignore} pixels are ignored, "
        "not a class",
        f"if {ignore} marks the foreground there (0/{ignore} binary masks), save them as 0/1 like the others; "
        f"if it marks pixels to ignore, write classes.yaml to say so",
        [f"{c.sample.mask}" for c in only],
        severity="warning",
        skippable=False,
        one=f"mask holds only 0 and {ignore} while the others use 1, 2, ...: its {ignore} pixels are ignored, "
        "not a class",
    )


def _infer_classes(spec: DecodeSpec, good: list[SampleCheck], found: _Findings) -> ClassInfo:
    """Classes when no classes file gives them: background/foreground, unknown, or 0..max value."""
    ignore = spec.ignore_index
    if spec.encoding == "binary":
        return ClassInfo(["background", "foreground"], default_palette(2), ignore)
    if spec.encoding in ("rgb",) or (spec.snap and spec.encoding == "index"):
        return ClassInfo([], [], ignore)  # unknown: a problem says why
    seen = sorted(k for k in _union(good) if k != ignore) if good else []
    top = seen[-1] if seen else 0
    if top >= MAX_INFERRED_CLASSES:
        found.problems.append(_too_many_classes(good, top, ignore))
        return ClassInfo([], [], ignore)  # unknown: the problem says why
    found.notes.append(
        f"no classes file: classes inferred from the mask values as 0..{top}, {ignore} = ignore "
        "(write classes.yaml with names: and ignore_index: to name them or to ignore a value)"
    )
    mixed = _zero_or_ignore_masks(good, ignore)
    if mixed:
        found.problems.append(mixed)
    absent = sorted(set(range(top + 1)) - set(seen))
    if absent and seen:
        found.problems.append(
            Problem(
                f"mask value{'s' if len(absent) > 1 else ''} {', '.join(map(str, absent[:10]))}"
                f"{' and more' if len(absent) > 10 else ''} never occur{'s' if len(absent) == 1 else ''} "
                f"between 0 and {top}, yet {'is' if len(absent) == 1 else 'are'} counted as classes",
                "if the values are not class indices, write classes.yaml",
                severity="warning",
                skippable=False,
            )
        )
    return ClassInfo([f"class_{i}" for i in range(top + 1)], default_palette(top + 1), ignore)


@dataclass
class _Counts:
    """Class pixel counts of the usable samples, and the samples whose values are no class."""

    values: dict[str, dict[int, int]] = field(default_factory=dict)  # stem -> {class: pixels}
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    invalid: list[tuple[SampleCheck, list[int]]] = field(default_factory=list)  # check, keys that are no class
    moved: list[tuple[SampleCheck, int]] = field(default_factory=list)  # check, pixels snapped (lossy masks)


def _classes_of(c: SampleCheck, spec: DecodeSpec, ncls: int, ignore: int, keys: np.ndarray | None = None) -> np.ndarray:
    """Class (or ignore index, or INVALID) of each stored key of a check's histogram (or of ``keys``)."""
    keys = c.keys if keys is None else keys
    if c.kind != "rendered":
        return map_values(keys, c.kind, spec)
    mapped = keys.copy()
    mapped[~(((mapped >= 0) & (mapped < ncls)) | (mapped == ignore))] = INVALID
    return mapped


def _count(good: list[SampleCheck], spec: DecodeSpec, classes: ClassInfo) -> _Counts:
    """Map every histogram to classes; a lossy mask's pixels that were no exact class are counted as moved."""
    ncls, ignore = classes.num_classes, classes.ignore_index
    out = _Counts()
    exact_colors = {pack(c) for c in spec.colors} | {pack(c) for c in spec.ignore_colors}
    for c in good:
        mapped = _classes_of(c, spec, ncls, ignore)
        wrong = mapped == INVALID
        if wrong.any():
            out.invalid.append((c, c.keys[wrong].tolist()))
            continue
        if spec.snap and c.kind != "rendered":
            if c.kind == "rgb":
                exact = np.array([k in exact_colors for k in c.keys.tolist()], dtype=bool)
            elif spec.encoding == "binary":
                exact = (c.keys == 0) | (c.keys == 255)
            else:
                exact = c.keys == mapped
            moved = int(c.counts[~exact].sum())
            if moved:
                out.moved.append((c, moved))
        d: dict[int, int] = {}
        for k, n in zip(mapped.tolist(), c.counts.tolist()):
            d[k] = d.get(k, 0) + n
        out.values[c.sample.stem] = d
        out.sizes[c.sample.stem] = c.size
    return out


def _invalid_problem(invalid: list[tuple[SampleCheck, list[int]]], spec: DecodeSpec, classes: ClassInfo) -> Problem:
    """Masks holding colours or values that are no class, each with the first such key."""
    if invalid[0][0].kind == "rgb":
        items = []
        for i, (c, keys) in enumerate(invalid):
            # Finding the pixel reads the file again: done for the first few files only.
            where = first_position(c.sample.mask, keys[0], "rgb", spec.max_pixels) if i < 5 else None
            at = f" at pixel x={where[0]}, y={where[1]}" if where else ""
            more = f" and {len(keys) - 1} more colours" if len(keys) > 1 else ""
            items.append(f"{c.sample.mask} (colour {unpack(keys[0])}{at}{more})")
        return Problem(
            "masks have colours that are no class colour",
            "add the colours to the classes file (colors:, or ignore_color: for ignored pixels) or fix the masks",
            items,
            [c.sample.stem for c, _ in invalid],
            one="mask has colours that are no class colour",
        )
    if spec.lut:
        what = f"stored values outside the {spec.lut_name} table"
        todo = "fix the masks or choose another --format"
    else:
        what = "values that are neither a class nor the ignore index"
        todo = (
            f"valid values are 0..{max(classes.num_classes, 1) - 1} and {classes.ignore_index}; "
            "fix the masks or the class list in classes.yaml"
        )
    items = [f"{c.sample.mask} ({', '.join(describe_key(k, 'gray') for k in keys[:5])})" for c, keys in invalid]
    return Problem(f"masks have {what}", todo, items, [c.sample.stem for c, _ in invalid], one=f"mask has {what}")


def _snap_findings(counts: _Counts, good: list[SampleCheck], spec: DecodeSpec, found: _Findings) -> None:
    """How many pixels of lossy masks were snapped to the nearest class: a note and a warning."""
    total_moved = sum(m for _, m in counts.moved)
    total = sum(int(c.counts.sum()) for c in good if c.lossy)
    found.notes.append(
        f"jpeg-snap: {total_moved:,} of {total:,} pixels ({100 * total_moved / max(total, 1):.2f}%) in "
        f"{plural(len(counts.moved), 'lossy mask')} were not exactly a class "
        f"{'colour' if spec.encoding == 'rgb' else 'value'} and were moved to the nearest one"
    )
    found.problems.append(
        Problem(
            "lossy (JPEG) masks had pixels snapped to the nearest class",
            "save masks as PNG to keep exact labels",
            [f"{c.sample.mask} ({plural(m, 'pixel')} moved)" for c, m in counts.moved],
            severity="warning",
            skippable=False,
            one="lossy (JPEG) mask had pixels snapped to the nearest class",
        )
    )


@dataclass
class SampleObjects:
    """The objects of one sample, as the report counts them."""

    classes: dict[int, int]  # object id -> class index
    areas: dict[int, int]  # object id -> pixels
    touching: int = 0  # pairs of objects of one class sharing a 4-neighbour border
    overlapping: int = 0  # pairs of objects whose shapes are painted over each other (vector sources)


def _derived(c: SampleCheck) -> bool:
    """Ids drawn from shapes or Cityscapes ids: those on pixels of no thing class are dropped, not errors."""
    name = c.sample.instances.name if c.sample.instances else ""
    return c.sample.vector is not None or name.endswith(CITYSCAPES_INSTANCE_SUFFIX)


def _id_classes(c: SampleCheck, spec: DecodeSpec, classes: ClassInfo) -> dict[int, dict[int, int]]:
    """Object id -> {class (or the ignore index): pixels} of one check."""
    mapped = _classes_of(c, spec, classes.num_classes, classes.ignore_index, c.id_pairs[:, 0])
    out: dict[int, dict[int, int]] = {}
    for cls, i, n in zip(mapped.tolist(), c.id_pairs[:, 1].tolist(), c.id_pairs[:, 2].tolist()):
        d = out.setdefault(i, {})
        d[cls] = d.get(cls, 0) + n
    return out


@dataclass
class ThingsRule:
    """How the thing classes are chosen: given (a classes file, a model), by the format, or from the data."""

    given: tuple[int, ...] | None = None
    default_names: tuple[str, ...] | None = None
    source: str = ""


def _resolve_things(
    rule: ThingsRule, classes: ClassInfo, per_id: list[dict[int, dict[int, int]]], found: _Findings
) -> tuple[int, ...]:
    """The thing classes, with a note saying where they come from when the data has object ids."""
    names = classes.names
    if rule.given is not None:
        things, why = tuple(rule.given), rule.source or "given"
    elif rule.default_names is not None:
        things = tuple(sorted(names.index(n) for n in rule.default_names if n in names))
        why = f"{rule.source}; list things: in classes.yaml to choose others"
    else:
        carried = {k for ids in per_id for d in ids.values() for k in d}
        things = tuple(sorted(k for k in carried if 0 < k < classes.num_classes))
        why = "the classes that carry object ids in the data, class 0 taken as background; list things: in classes.yaml"
    if per_id or rule.given or rule.default_names:
        shown = ", ".join(names[i] for i in things) or "none"
        found.notes.append(f"things (countable objects): {shown} ({why})")
    return things


def _instance_file_problems(checks: list[SampleCheck], found: _Findings) -> None:
    """Samples without object ids among samples with them; id maps that cannot be read or differ in size."""
    missing = [c for c in checks if c.sample.instances is None]
    unreadable = [c for c in checks if c.id_error is not None]
    sized = [c for c in checks if c.id_size is not None and c.id_pairs is None and c.mask_size is not None]
    todo = "give every sample its object ids (folder layout: instances/<stem>.png, 0 = no object)"
    for bad, title, one, items, what in (
        (
            missing,
            "samples have no object ids while the others have",
            "sample has no object ids while the others have",
            [f"{c.sample.mask} (no object id map)" for c in missing],
            todo,
        ),
        (
            unreadable,
            "object id maps cannot be read",
            "object id map cannot be read",
            [c.id_error.item for c in unreadable],
            "replace them with 8-bit or 16-bit single-channel PNGs",
        ),
        (
            sized,
            "object id maps differ in size from their masks",
            "object id map differs in size from its mask",
            [
                f"{c.sample.instances} is {c.id_size[1]}x{c.id_size[0]}, mask is {c.mask_size[1]}x{c.mask_size[0]}"
                for c in sized
            ],
            "an id map must have exactly its mask's height and width",
        ),
    ):
        if bad:
            found.problems.append(Problem(title, what, items, [c.sample.stem for c in bad], one=one))
            for c, item in zip(bad, items):
                found.bad.setdefault(c.sample.stem, item)


def _objects_of(
    c: SampleCheck, ids: dict[int, dict[int, int]], things: tuple[int, ...], names: list[str]
) -> tuple[SampleObjects, list[str], list[str]]:
    """One sample's objects, and its ids that span two classes or lie on pixels of no thing class (as text)."""
    objects = SampleObjects({}, {})
    spanning, classless = [], []
    for i, d in sorted(ids.items()):
        on_things = {k: n for k, n in d.items() if k in things}
        if len(on_things) > 1:
            spanning.append(f"id {i}: {' and '.join(names[k] for k in sorted(on_things))}")
        if len(on_things) < len(d) and not _derived(c):
            classless.append(f"id {i}")
        if on_things:
            objects.classes[i] = max(on_things, key=lambda k: on_things[k])
            objects.areas[i] = sum(on_things.values())
    cls = objects.classes
    objects.touching = sum(
        1
        for a, b in (c.touching.tolist() if c.touching is not None else [])
        if a in cls and b in cls and cls[a] == cls[b]
    )
    objects.overlapping = sum(1 for a, b in c.overlaps if a in cls and b in cls)
    return objects, spanning, classless


def _instance_findings(
    checks: list[SampleCheck],
    usable: set[str],
    spec: DecodeSpec,
    classes: ClassInfo,
    rule: ThingsRule,
    found: _Findings,
) -> tuple[tuple[int, ...], dict[str, SampleObjects]]:
    """The thing classes, the problems of object ids, and the objects of each usable sample."""
    with_ids = [c for c in checks if c.sample.instances is not None]
    read = [c for c in with_ids if c.id_pairs is not None and c.sample.stem in usable]
    per_id = [_id_classes(c, spec, classes) for c in read]
    things = _resolve_things(rule, classes, per_id, found)
    if not with_ids:
        return things, {}
    _instance_file_problems(checks, found)
    objects: dict[str, SampleObjects] = {}
    spans, none = [], []
    for c, ids in zip(read, per_id):
        objects[c.sample.stem], spanning, classless = _objects_of(c, ids, things, classes.names)
        if spanning:
            spans.append((c, f"{c.sample.instances} ({'; '.join(spanning[:3])})"))
        if classless:
            none.append((c, f"{c.sample.instances} ({listing(classless)} on background, stuff or ignored pixels)"))
    for bad, title, one, todo in (
        (
            spans,
            "object id maps have ids that span two classes",
            "object id map has an id that spans two classes",
            "an object is of one class: give each object its own id",
        ),
        (
            none,
            "object id maps have an id with no class",
            "object id map has an id with no class",
            "ids belong on pixels of thing classes only (things: in classes.yaml); set the others to 0",
        ),
    ):
        if bad:
            found.problems.append(Problem(title, todo, [t for _, t in bad], [c.sample.stem for c, _ in bad], one=one))
            for c, t in bad:
                found.bad.setdefault(c.sample.stem, t)
    return things, objects


def check_samples(
    samples: list[Sample],
    classes: ClassInfo | None,
    spec: DecodeSpec | None = None,
    workers: int | None = None,
    progress: bool = False,
    things: ThingsRule | None = None,
) -> CheckResult:
    """Read every sample once and return what was found; raises nothing for problems in files.

    ``classes`` None: inferred from the masks (0..max value, or background/foreground for
    binary masks). ``spec.encoding`` "auto": detected from the masks (see
    :mod:`pixelwise.data.encodings`); ``spec.colors`` must hold the class colours for
    colour-coded masks. ``workers``: reader threads (default from the CPU count). Object ids
    are read only for samples that have them; ``things`` says how the thing classes are chosen
    (default: ``classes.things`` when it lists any, else the classes that carry ids).
    """
    spec = spec or DecodeSpec()
    checks = scan(samples, spec, workers, progress)
    found = _Findings()
    good = _size_findings(_file_findings(checks, spec, found), found)
    spec, good = _resolve(good, spec, classes, found)
    if classes is None:
        classes = _infer_classes(spec, good, found)
    spec = replace(spec, num_classes=classes.num_classes if classes.names else None, ignore_index=classes.ignore_index)
    counts = _count(good, spec, classes)
    if counts.invalid:
        found.problems.append(_invalid_problem(counts.invalid, spec, classes))
        for c, keys in counts.invalid:
            found.bad[c.sample.stem] = f"{c.sample.mask} ({describe_key(keys[0], c.kind)} is no class)"
    if counts.moved:
        _snap_findings(counts, good, spec, found)
    rule = things or ThingsRule(given=tuple(classes.things) or None, source="the classes given")
    chosen, objects = _instance_findings(checks, set(counts.values), spec, classes, rule, found)
    classes, spec = replace(classes, things=chosen), replace(spec, things=chosen)
    found.notes.insert(0, f"mask encoding: {spec.describe()}")
    full = DataReport(np.zeros(0, dtype=np.int64), 0, counts.sizes, counts.values)
    ncls = classes.num_classes
    report = full.subset(list(counts.values), max(ncls, 0), classes.ignore_index) if ncls else full
    instances = any(c.sample.instances is not None for c in checks)
    return CheckResult(classes, spec, report, found.problems, found.notes, checks, found.bad, objects, instances)


def validate_samples(
    samples: list[Sample],
    classes: ClassInfo | None,
    workers: int | None = None,
    what: str = "data",
    spec: DecodeSpec | None = None,
) -> tuple[ClassInfo, DataReport]:
    """Open every image and mask once (in parallel) and fail with the file names on any problem.

    Checks: each image decodes; each mask decodes under the data set's encoding (detected when
    ``spec`` is None or "auto"); image and mask have the same height and width; every mask value
    is a class index or the ignore index. When ``classes`` is None the classes are inferred as
    0..max(mask value) (ignore index excluded).

    Returns the class information and a :class:`DataReport` with per-class pixel counts.
    """
    if not samples:
        raise PixelwiseError(f"{what}: no samples to validate; the split is empty")
    result = check_samples(samples, classes, spec or DecodeSpec(), workers=workers)
    raise_first(result.problems)
    return result.classes, result.report
