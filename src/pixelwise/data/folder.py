"""The pixelwise folder layout: find image/mask pairs, read the classes file, split, validate.

Layout::

    DATA/images/<stem>.<png|jpg|jpeg|tif|tiff|bmp>
    DATA/masks/<stem>.png            single-channel (L, I;16) or palette (P) PNG of class indices
    DATA/classes.yaml                optional: names, colors, ignore_index (default 255)
    DATA/splits/{train,val,test}.txt optional: one stem per line

Everything here runs before the first training step, so a broken data set fails in seconds with
the names of the files to fix, never half-way through an epoch.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageOps

from ..errors import PixelwiseError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LOSSY_MASK_EXTENSIONS = (".jpg", ".jpeg")
SPLIT_NAMES = ("train", "val", "test")
# Index masks must be read as indices, never through a colour conversion.
INDEX_MASK_MODES = ("L", "P", "I;16", "I;16L", "I;16B", "I", "1")


@dataclass
class ClassInfo:
    """Class names, display colours and the ignore index of a data set or a trained model."""

    names: list[str]
    colors: list[tuple[int, int, int]]
    ignore_index: int = 255

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "colors": [list(c) for c in self.colors],
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ClassInfo":
        return cls(
            names=[str(n) for n in d["names"]],
            colors=[tuple(int(v) for v in c) for c in d["colors"]],
            ignore_index=int(d.get("ignore_index", 255)),
        )


@dataclass(frozen=True)
class Sample:
    """One image and its mask, paired by file stem."""

    stem: str
    image: Path
    mask: Path


@dataclass
class DataReport:
    """What validation learnt about a split: class pixel counts and image sizes."""

    class_pixels: np.ndarray  # (C,) int64 pixels per class, ignore index excluded
    ignored_pixels: int
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # stem -> (H, W)
    values: dict[str, dict[int, int]] = field(default_factory=dict)  # stem -> {mask value: pixels}

    def subset(self, stems, num_classes: int, ignore_index: int) -> "DataReport":
        """The report restricted to some samples (e.g. the training split), without re-reading files."""
        counts = np.zeros(num_classes, dtype=np.int64)
        ignored = 0
        for s in stems:
            for v, c in self.values[s].items():
                if v == ignore_index:
                    ignored += c
                else:
                    counts[v] += c
        return DataReport(counts, ignored, {s: self.sizes[s] for s in stems}, {s: self.values[s] for s in stems})


def _listing(items: list[str], limit: int = 3) -> str:
    """'a, b, c and 12 more' so an error stays one readable line."""
    shown = ", ".join(items[:limit])
    rest = len(items) - limit
    return shown + (f" and {rest} more" if rest > 0 else "")


def _palette(num_classes: int) -> list[tuple[int, int, int]]:
    from ..viz import default_palette

    return default_palette(num_classes)


def load_classes(root: str | Path) -> ClassInfo | None:
    """Read DATA/classes.yaml, or return None when the data set has none.

    Accepted keys: ``names`` (list, required), ``colors`` (list of [r, g, b], optional),
    ``ignore_index`` (int in 0..255, optional, default 255).
    """
    path = Path(root) / "classes.yaml"
    if not path.exists():
        return None
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise PixelwiseError(f"{path}: not valid YAML ({e.__class__.__name__}); fix the file") from None
    if isinstance(raw, list):
        raw = {"names": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("names"), list) or not raw["names"]:
        raise PixelwiseError(f"{path}: needs a non-empty list 'names:' of class names")
    names = [str(n) for n in raw["names"]]
    if len(set(names)) != len(names):
        raise PixelwiseError(f"{path}: class names must be unique")
    ignore = raw.get("ignore_index", 255)
    if not isinstance(ignore, int) or not 0 <= ignore <= 65535:
        raise PixelwiseError(f"{path}: ignore_index must be an integer (usually 255)")
    if ignore < len(names):
        raise PixelwiseError(
            f"{path}: ignore_index {ignore} is also a class index (0..{len(names) - 1}); "
            "use a value outside the classes, such as 255"
        )
    colors = raw.get("colors")
    if colors is None:
        colors = _palette(len(names))
    else:
        ok = isinstance(colors, list) and len(colors) == len(names) and all(
            isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in colors
        )
        if not ok:
            raise PixelwiseError(
                f"{path}: 'colors' must list one [r, g, b] (0..255) per class ({len(names)} classes)"
            )
        colors = [tuple(c) for c in colors]
    return ClassInfo(names=names, colors=colors, ignore_index=ignore)


def find_samples(root: str | Path) -> list[Sample]:
    """Pair DATA/images/* with DATA/masks/<stem>.png; every unpaired or ambiguous file is an error."""
    root = Path(root)
    if not root.is_dir():
        raise PixelwiseError(f"{root}: data folder not found; give a folder with images/ and masks/")
    images_dir, masks_dir = root / "images", root / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise PixelwiseError(
                f"{d}: folder not found; a data set needs {root}/images/<name>.png and {root}/masks/<name>.png"
            )

    images: dict[str, list[Path]] = {}
    for p in sorted(images_dir.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS:
            images.setdefault(p.stem, []).append(p)
    masks: dict[str, list[Path]] = {}
    for p in sorted(masks_dir.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            masks.setdefault(p.stem, []).append(p)

    if not images:
        raise PixelwiseError(
            f"{images_dir}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}); add images or fix the path"
        )
    dup = [f"{s} ({', '.join(p.name for p in ps)})" for s, ps in images.items() if len(ps) > 1]
    if dup:
        raise PixelwiseError(
            f"{images_dir}: {len(dup)} stems have more than one image: {_listing(dup)}; keep one file per stem"
        )
    lossy = [str(p) for ps in masks.values() for p in ps if p.suffix.lower() in LOSSY_MASK_EXTENSIONS]
    if lossy:
        raise PixelwiseError(
            f"{len(lossy)} masks are JPEG: {_listing(lossy)}; JPEG compression changes class values at edges, "
            "save masks as PNG"
        )
    mask_png = {s: [p for p in ps if p.suffix.lower() == ".png"] for s, ps in masks.items()}
    missing = [str(images[s][0]) for s in images if not mask_png.get(s)]
    if missing:
        raise PixelwiseError(
            f"{len(missing)} images have no mask: {_listing(missing)}; add {masks_dir}/<stem>.png for each "
            "or remove the images"
        )
    orphans = [str(p) for s, ps in mask_png.items() for p in ps if s not in images]
    if orphans:
        raise PixelwiseError(
            f"{len(orphans)} masks have no image: {_listing(orphans)}; add the images or remove the masks"
        )
    return [Sample(stem=s, image=images[s][0], mask=mask_png[s][0]) for s in sorted(images)]


def split_samples(
    root: str | Path,
    samples: list[Sample],
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, list[Sample]]:
    """Return {'train': [...], 'val': [...], 'test': [...]}.

    Uses DATA/splits/<split>.txt where present; otherwise a seeded permutation of the sorted
    stems, so the same data and seed always give the same split.
    """
    root = Path(root)
    by_stem = {s.stem: s for s in samples}
    split_dir = root / "splits"
    files = {n: split_dir / f"{n}.txt" for n in SPLIT_NAMES if (split_dir / f"{n}.txt").exists()}
    if files:
        if "train" not in files:
            raise PixelwiseError(f"{split_dir}: has split files but no train.txt; add it")
        out: dict[str, list[Sample]] = {n: [] for n in SPLIT_NAMES}
        seen: dict[str, str] = {}
        for name, path in files.items():
            stems = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            # Tolerate lines written as file names ("a.png") as well as stems ("a").
            stems = [Path(s).stem if Path(s).suffix.lower() in IMAGE_EXTENSIONS else s for s in stems]
            unknown = [s for s in stems if s not in by_stem]
            if unknown:
                raise PixelwiseError(
                    f"{path}: {len(unknown)} names have no image/mask pair: {_listing(unknown)}; "
                    "fix the list or add the files"
                )
            twice = [s for s in stems if s in seen]
            if twice:
                raise PixelwiseError(
                    f"{path}: {len(twice)} names are already in {seen[twice[0]]}.txt: {_listing(twice)}; "
                    "a sample belongs to one split"
                )
            for s in stems:
                seen[s] = name
            out[name] = [by_stem[s] for s in stems]
        if not out["train"]:
            raise PixelwiseError(f"{files['train']}: the train split is empty; list at least one stem")
        return out

    n = len(samples)
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise PixelwiseError("--val-fraction and --test-fraction must be in [0, 1) and sum to less than 1")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction)) if val_fraction else 0
    n_test = int(round(n * test_fraction)) if test_fraction else 0
    if val_fraction and n >= 2:
        n_val = max(n_val, 1)
    if n - n_val - n_test < 1:
        raise PixelwiseError(f"{root}: {n} samples are too few to split; add data or lower --val-fraction")
    ordered = [samples[i] for i in order]
    return {
        "val": sorted(ordered[:n_val], key=lambda s: s.stem),
        "test": sorted(ordered[n_val : n_val + n_test], key=lambda s: s.stem),
        "train": sorted(ordered[n_val + n_test :], key=lambda s: s.stem),
    }


def image_to_rgb(im: Image.Image) -> np.ndarray:
    """An opened PIL image -> (H, W, 3) uint8 RGB, EXIF orientation applied (decodes the pixels).

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted.
    """
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16L", "I;16B", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.array(im.convert("RGB"))


def read_image(path: str | Path) -> np.ndarray:
    """Decode any common image file into (H, W, 3) uint8 RGB, EXIF orientation applied.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted.
    """
    try:
        with Image.open(path) as im:
            return image_to_rgb(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise PixelwiseError(f"{path}: cannot read this image ({_short(e)}); replace or remove the file") from None


def read_mask(path: str | Path) -> np.ndarray:
    """Decode an index mask PNG into (H, W) int64 class indices (values as stored, no colour conversion)."""
    try:
        with Image.open(path) as im:
            if im.mode not in INDEX_MASK_MODES:
                raise PixelwiseError(
                    f"{path}: mask is {im.mode}, not a single-channel or palette PNG of class indices; "
                    "save each pixel's class index (0, 1, 2, ...) as an 8-bit grayscale or palette PNG"
                )
            return np.array(im, dtype=np.int64)
    except PixelwiseError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise PixelwiseError(f"{path}: cannot read this mask ({_short(e)}); replace or remove the file") from None


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:120] if str(e) else e.__class__.__name__


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) after EXIF orientation, reading the header and fully decoding to catch truncation."""
    with Image.open(path) as im:
        im.load()
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: width and height swap
        h, w = w, h
    return h, w


def _check_one(sample: Sample, num_classes: int | None, ignore_index: int) -> dict:
    out: dict = {"sample": sample}
    try:
        out["size"] = _image_size(sample.image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        out["bad_image"] = f"{sample.image} ({_short(e)})"
        return out
    try:
        mask = read_mask(sample.mask)
    except PixelwiseError as e:
        out["bad_mask"] = str(e)
        return out
    if mask.shape != out["size"]:
        out["size_mismatch"] = (
            f"{sample.mask} is {mask.shape[1]}x{mask.shape[0]}, image is {out['size'][1]}x{out['size'][0]}"
        )
        return out
    values, counts = np.unique(mask, return_counts=True)
    out["values"] = dict(zip(values.tolist(), counts.tolist()))
    if num_classes is not None:
        bad = [v for v in out["values"] if v != ignore_index and not 0 <= v < num_classes]
        if bad:
            out["bad_values"] = f"{sample.mask} (values {', '.join(map(str, bad[:5]))})"
    return out


def validate_samples(
    samples: list[Sample],
    classes: ClassInfo | None,
    workers: int | None = None,
    what: str = "data",
) -> tuple[ClassInfo, DataReport]:
    """Open every image and mask once (in parallel) and fail with the file names on any problem.

    Checks: each image decodes; each mask is an index PNG that decodes; image and mask have the
    same height and width; every mask value is a class index or the ignore index. When
    ``classes`` is None the classes are inferred as 0..max(mask value) (ignore index excluded).

    Returns the class information and a :class:`DataReport` with per-class pixel counts.
    """
    if not samples:
        raise PixelwiseError(f"{what}: no samples to validate; the split is empty")
    ignore = classes.ignore_index if classes else 255
    ncls = classes.num_classes if classes else None
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda s: _check_one(s, ncls, ignore), samples))

    problems = [
        ("images cannot be read", "replace or remove them", [r["bad_image"] for r in results if "bad_image" in r]),
        ("masks cannot be used", "fix them", [r["bad_mask"] for r in results if "bad_mask" in r]),
        (
            "masks differ in size from their images",
            "masks must have exactly the image's height and width",
            [r["size_mismatch"] for r in results if "size_mismatch" in r],
        ),
        (
            "masks have values that are neither a class nor the ignore index",
            f"valid values are 0..{(ncls or 1) - 1} and {ignore}; fix the masks or the class list in classes.yaml",
            [r["bad_values"] for r in results if "bad_values" in r],
        ),
    ]
    for title, todo, items in problems:
        if items:
            if len(items) == 1 and title == "masks cannot be used":
                raise PixelwiseError(items[0])
            raise PixelwiseError(f"{len(items)} {title}: {_listing(items)}; {todo}")

    if classes is None:
        seen = {v for r in results for v in r["values"] if v != ignore}
        top = max(seen) if seen else 0
        classes = ClassInfo([f"class_{i}" for i in range(top + 1)], _palette(top + 1), ignore)
    full = DataReport(
        class_pixels=np.zeros(0, dtype=np.int64),
        ignored_pixels=0,
        sizes={r["sample"].stem: r["size"] for r in results},
        values={r["sample"].stem: r["values"] for r in results},
    )
    return classes, full.subset(full.values.keys(), classes.num_classes, ignore)


@dataclass
class FolderDataset:
    """A validated data set on disk: its classes and its splits."""

    root: Path
    classes: ClassInfo
    splits: dict[str, list[Sample]]
    report: DataReport  # over the training split


def open_folder(
    root: str | Path,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    classes: ClassInfo | None = None,
    validate_splits: tuple[str, ...] = SPLIT_NAMES,
) -> FolderDataset:
    """Find, split and validate a data set in the pixelwise folder layout.

    ``classes`` overrides DATA/classes.yaml (used by evaluate, where the model's classes rule).
    Without either, classes are inferred from the masks of all splits.
    """
    root = Path(root)
    samples = find_samples(root)
    file_classes = load_classes(root)
    if classes is not None and file_classes is not None and file_classes.names != classes.names:
        raise PixelwiseError(
            f"{root}/classes.yaml lists {file_classes.names}, the model was trained on {classes.names}; "
            "evaluate on data with the model's classes"
        )
    classes = classes or file_classes
    splits = split_samples(root, samples, val_fraction, test_fraction, seed)
    to_check = [s for name in validate_splits for s in splits.get(name, [])]
    classes, report_all = validate_samples(to_check, classes, what=str(root))
    # Class weights come from the training split alone.
    train_stems = [s.stem for s in splits["train"] if s.stem in report_all.values]
    report = report_all.subset(train_stems, classes.num_classes, classes.ignore_index)
    return FolderDataset(root=root, classes=classes, splits=splits, report=report)
