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
from .encodings import (
    INVALID,
    DecodeSpec,
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
from .folder import DataReport, Sample, resize_nearest
from .problems import Problem
from .render import render


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
        if sample.vector is not None:
            arr = render(sample.vector)
            c.kind, c.mode, c.bits = "rendered", "shapes", 0
        else:
            im = open_image(sample.mask, spec.max_pixels, "mask")
            with im:
                raw = raw_from_image(im, sample.mask)
            arr = raw.array
            c.kind, c.mode, c.bits, c.lossy = raw.kind, raw.mode, raw.bits, raw.lossy
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
    return c


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


def _resolve(
    good: list[SampleCheck],
    spec: DecodeSpec,
    classes: ClassInfo | None,
    problems: list[Problem],
    notes: list[str],
    bad: dict[str, str],
) -> tuple[DecodeSpec, list[SampleCheck]]:
    """Decide the data set's encoding from the scanned masks; returns the spec and the usable checks."""
    files = [c for c in good if c.kind in ("gray", "rgb")]
    rendered = [c for c in good if c.kind == "rendered"]
    if not files:
        return replace(
            spec, encoding="rendered" if rendered else (spec.encoding if spec.encoding != "auto" else "index")
        ), good
    forced = spec.encoding not in ("auto", "jpeg-snap")
    n_rgb = sum(c.kind == "rgb" for c in files)
    if forced:
        kind = "rgb" if spec.encoding == "rgb" else "gray"
    else:
        kind = "rgb" if n_rgb > len(files) - n_rgb else "gray"
    odd = [c for c in files if c.kind != kind]
    if odd:
        want = "colour (RGB) class colours" if kind == "rgb" else "single-channel class indices"
        others = "--encoding rgb" if kind == "rgb" else "the other masks"
        first = odd[0]
        problems.append(
            Problem(
                f"masks are {'single-channel' if kind == 'rgb' else 'colour (RGB)'} while the data set's masks hold {want}",
                "save every mask the same way",
                [f"{c.sample.mask} ({c.mode})" for c in odd],
                stems=[c.sample.stem for c in odd],
                solo=(
                    f"{first.sample.mask}: mask is {first.mode}, not what {others} hold ({want}); save each pixel's "
                    "class index (0, 1, 2, ...) as an 8-bit grayscale or palette PNG"
                    if kind == "gray"
                    else f"{first.sample.mask}: mask is single-channel ({first.mode}) but the data set's masks are colour-coded; "
                    "save it with the class colours"
                ),
            )
        )
        for c in odd:
            bad[c.sample.stem] = f"{c.sample.mask} ({c.mode} mask)"
        files = [c for c in files if c.kind == kind]
        good = [c for c in good if c.kind != ("gray" if kind == "rgb" else "rgb")]
    lossy = any(c.lossy for c in files)
    snap = spec.encoding == "jpeg-snap" or (not forced and lossy)
    hist = _union(files)
    if forced:
        enc = spec.encoding
    elif kind == "rgb":
        enc = "rgb"
    elif spec.lut:
        enc = "index"
    elif any(c.bits == 16 for c in files):
        enc = "16bit"
    elif (classes is None or classes.num_classes == 2) and _looks_binary(hist, snap):
        enc = "binary"
    else:
        enc = "index"
    out = replace(spec, encoding=enc, snap=snap)
    if enc == "rgb" and not spec.colors:
        problems.append(
            Problem(
                f"{len(files)} masks are colour-coded (RGB) but no class colours are known",
                "add classes.yaml with names: and colors: (one [r, g, b] per class; ignore_color: for ignored pixels) "
                f"or pass --classes FILE; colours found: {_colour_summary(hist)}",
                skippable=False,
            )
        )
    if snap and enc == "index" and classes is None:
        problems.append(
            Problem(
                f"{sum(c.lossy for c in files)} masks are lossy (JPEG) and the classes are unknown, so their values "
                "cannot be snapped",
                "add classes.yaml listing the classes (or pass --classes FILE), or save masks as PNG",
                skippable=False,
            )
        )
    if enc == "binary" and not snap:
        notes.append(
            "masks are binary 0/255: 0 -> class 0, 255 -> class 1 (pass --encoding index if 255 means 'ignore')"
        )
    if any(c.kind == "gray" and c.mode in ("RGB", "RGBA") for c in files):
        notes.append("grey masks stored as RGB (equal channels) were read as single-channel values")
    return out, good


def check_samples(
    samples: list[Sample],
    classes: ClassInfo | None,
    spec: DecodeSpec | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> CheckResult:
    """Read every sample once and return what was found; raises nothing for problems in files.

    ``classes`` None: inferred from the masks (0..max value, or background/foreground for
    binary masks). ``spec.encoding`` "auto": detected from the masks (see
    :mod:`pixelwise.data.encodings`); ``spec.colors`` must hold the class colours for
    colour-coded masks.
    """
    spec = spec or DecodeSpec()
    checks = scan(samples, spec, workers, progress)
    problems: list[Problem] = []
    notes: list[str] = []
    bad: dict[str, str] = {}

    img_bad = [c for c in checks if c.image_error]
    big = [c for c in checks if (c.image_error or c.mask_error) and (c.image_error or c.mask_error).kind == "too_large"]
    unreadable = [c for c in img_bad if c not in big]
    if unreadable:
        problems.append(
            Problem(
                "images cannot be read",
                "replace or remove them",
                [c.image_error.item for c in unreadable],
                [c.sample.stem for c in unreadable],
            )
        )
    if big:
        problems.append(
            Problem(
                "files are above the pixel limit and were not decoded",
                f"pass --max-pixels N (now {spec.max_pixels:,}) if they are genuine, or remove them",
                [(c.image_error or c.mask_error).item for c in big],
                [c.sample.stem for c in big],
            )
        )
    mask_bad = [c for c in checks if c.mask_error and not c.image_error and c not in big]
    if mask_bad:
        problems.append(
            Problem(
                "masks cannot be used",
                "fix them",
                [c.mask_error.item for c in mask_bad],
                [c.sample.stem for c in mask_bad],
                solo=str(mask_bad[0].mask_error),
            )
        )
    for c in img_bad + mask_bad:
        err = c.image_error or c.mask_error
        bad[c.sample.stem] = err.item
    good = [c for c in checks if c.ok]

    mismatch = [c for c in good if c.size is not None and c.mask_size != c.size and not c.resized]
    if mismatch:
        items = [
            f"{c.sample.mask} is {c.mask_size[1]}x{c.mask_size[0]}, image is {c.size[1]}x{c.size[0]}" for c in mismatch
        ]
        problems.append(
            Problem(
                "masks differ in size from their images",
                "masks must have exactly the image's height and width (or pass --resize-masks nearest to resize them)",
                items,
                [c.sample.stem for c in mismatch],
            )
        )
        for c, item in zip(mismatch, items):
            bad[c.sample.stem] = item
        good = [c for c in good if c not in mismatch]
    resized = [c for c in good if c.resized]
    if resized:
        problems.append(
            Problem(
                "masks differ in size from their images and are resized (nearest neighbour)",
                "check that each mask belongs to its image",
                [f"{c.sample.mask} {c.mask_size[1]}x{c.mask_size[0]} -> {c.size[1]}x{c.size[0]}" for c in resized],
                severity="warning",
            )
        )

    spec, good = _resolve(good, spec, classes, problems, notes, bad)
    if classes is None:
        if spec.encoding == "binary":
            classes = ClassInfo(["background", "foreground"], default_palette(2), spec.ignore_index)
        elif spec.encoding in ("rgb",) or (spec.snap and spec.encoding == "index"):
            classes = ClassInfo([], [], spec.ignore_index)  # unknown: a problem says why
        else:
            ignore = spec.ignore_index
            seen = sorted(k for k in _union(good) if k != ignore) if good else []
            top = seen[-1] if seen else 0
            classes = ClassInfo([f"class_{i}" for i in range(top + 1)], default_palette(top + 1), ignore)
            absent = sorted(set(range(top + 1)) - set(seen))
            notes.append(
                f"no classes file: classes inferred from the mask values as 0..{top}, {ignore} = ignore "
                "(write classes.yaml with names: and ignore_index: to name them or to ignore a value)"
            )
            if absent:
                problems.append(
                    Problem(
                        f"mask values {', '.join(map(str, absent[:10]))} never occur between 0 and {top}, "
                        "yet are counted as classes",
                        "if the values are not class indices, write classes.yaml",
                        severity="warning",
                        skippable=False,
                    )
                )
    spec = replace(spec, num_classes=classes.num_classes if classes.names else None, ignore_index=classes.ignore_index)

    ncls, ignore = classes.num_classes, classes.ignore_index
    values: dict[str, dict[int, int]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    invalid: list[tuple[SampleCheck, list[int]]] = []
    moved_files: list[tuple[SampleCheck, int]] = []
    exact_colors = {pack(c) for c in spec.colors} | {pack(c) for c in spec.ignore_colors}
    for c in good:
        if c.kind == "rendered":
            mapped = c.keys.copy()
            mapped[~(((mapped >= 0) & (mapped < ncls)) | (mapped == ignore))] = INVALID
        else:
            mapped = map_values(c.keys, c.kind, spec)
        wrong = mapped == INVALID
        if wrong.any():
            invalid.append((c, c.keys[wrong].tolist()))
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
                moved_files.append((c, moved))
        d: dict[int, int] = {}
        for k, n in zip(mapped.tolist(), c.counts.tolist()):
            d[k] = d.get(k, 0) + n
        values[c.sample.stem] = d
        sizes[c.sample.stem] = c.size
    if invalid:
        if invalid[0][0].kind == "rgb":
            items = []
            for i, (c, keys) in enumerate(invalid):
                where = first_position(c.sample.mask, keys[0], "rgb", spec.max_pixels) if i < 5 else None
                at = f" at pixel x={where[0]}, y={where[1]}" if where else ""
                more = f" and {len(keys) - 1} more colours" if len(keys) > 1 else ""
                items.append(f"{c.sample.mask} (colour {unpack(keys[0])}{at}{more})")
            problems.append(
                Problem(
                    "masks have colours that are no class colour",
                    "add the colours to the classes file (colors:, or ignore_color: for ignored "
                    "pixels) or fix the masks",
                    items,
                    [c.sample.stem for c, _ in invalid],
                )
            )
        else:
            what = (
                f"stored values outside the {spec.lut_name} table"
                if spec.lut
                else "values that are neither a class nor the ignore index"
            )
            todo = (
                f"valid values are 0..{max(ncls, 1) - 1} and {ignore}; fix the masks or the class list in classes.yaml"
                if not spec.lut
                else "fix the masks or choose another --format"
            )
            items = [f"{c.sample.mask} ({', '.join(describe_key(k, 'gray') for k in keys[:5])})" for c, keys in invalid]
            problems.append(Problem(f"masks have {what}", todo, items, [c.sample.stem for c, _ in invalid]))
        for c, keys in invalid:
            bad[c.sample.stem] = f"{c.sample.mask} ({describe_key(keys[0], c.kind)} is no class)"
    if moved_files:
        total_moved = sum(m for _, m in moved_files)
        total = sum(int(c.counts.sum()) for c in good if c.lossy)
        notes.append(
            f"jpeg-snap: {total_moved:,} of {total:,} pixels ({100 * total_moved / max(total, 1):.2f}%) in "
            f"{len(moved_files)} lossy masks were not exactly a class "
            f"{'colour' if spec.encoding == 'rgb' else 'value'} and were moved to the nearest one"
        )
        problems.append(
            Problem(
                "lossy (JPEG) masks had pixels snapped to the nearest class",
                "save masks as PNG to keep exact labels",
                [f"{c.sample.mask} ({m:,} pixels moved)" for c, m in moved_files],
                severity="warning",
                skippable=False,
            )
        )
    notes.insert(0, f"mask encoding: {spec.describe()}")
    full = DataReport(np.zeros(0, dtype=np.int64), 0, sizes, values)
    report = full.subset(list(values), max(ncls, 0), ignore) if ncls else full
    return CheckResult(classes, spec, report, problems, notes, checks, bad)


def require(result: CheckResult, what: str) -> None:
    if not result.report.values:
        raise PixelwiseError(f"{what}: no usable samples")
