"""The pixelwise folder layout: find image/mask pairs, read the classes file, split, validate.

Layout::

    DATA/images/<stem>.<png|jpg|jpeg|tif|tiff|bmp>
    DATA/masks/<stem>.png            class indices (L, P, I;16), 0/255 binary, RGB class colours or
                                     JPEG: see pixelwise.data.encodings
    DATA/classes.yaml                optional: names, colors, ignore_index (default 255), ignore_color
    DATA/splits/{train,val,test}.txt optional: one stem per line

Also here: the types every format reader produces (:class:`Sample`, :class:`ClassInfo`,
:class:`DataReport`, :class:`FolderDataset`) and the functions that decode a sample
(:func:`read_image`, :func:`read_mask`, :func:`read_sample`). Everything runs before the first
training step, so a broken data set fails in seconds with the names of the files to fix, never
half-way through an epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..classes import ClassInfo, read_classes_file
from ..errors import PixelwiseError
from .encodings import (
    DEFAULT_MAX_PIXELS,
    INVALID,
    DecodeSpec,
    FileError,
    decode,
    describe_key,
    open_image,
    read_raw_mask,
)
from .problems import Problem, listing, raise_first
from .render import VectorMask, render

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
LOSSY_MASK_EXTENSIONS = (".jpg", ".jpeg")
SPLIT_NAMES = ("train", "val", "test")
# Index masks must be read as indices, never through a colour conversion.
INDEX_MASK_MODES = ("L", "P", "I;16", "I;16L", "I;16B", "I", "1")


@dataclass(frozen=True)
class Sample:
    """One image and its mask, paired by file stem.

    ``spec`` says how the mask is decoded (set once the data set has been scanned; None = index
    values as stored). ``vector`` holds the shapes of a mask drawn from annotations (COCO,
    LabelMe); then ``mask`` is the annotation file, named in messages.
    """

    stem: str
    image: Path
    mask: Path
    spec: DecodeSpec | None = field(default=None, compare=False)
    vector: VectorMask | None = field(default=None, compare=False, repr=False)


@dataclass
class DataReport:
    """What validation learnt about a split: class pixel counts and image sizes."""

    class_pixels: np.ndarray  # (C,) int64 pixels per class, ignore index excluded
    ignored_pixels: int
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # stem -> (H, W)
    values: dict[str, dict[int, int]] = field(default_factory=dict)  # stem -> {mask value: pixels}

    def subset(self, stems, num_classes: int, ignore_index: int) -> DataReport:
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


def load_classes(root: str | Path) -> ClassInfo | None:
    """Read DATA/classes.yaml (see :func:`read_classes_file`), or return None when the data set has none."""
    path = Path(root) / "classes.yaml"
    if not path.exists():
        return None
    return read_classes_file(path).info


def list_folder(root: str | Path) -> tuple[list[Sample], list[Problem], list[str]]:
    """Pair DATA/images/* with DATA/masks/<stem>.*; returns (samples, problems, notes).

    Problems concern single files (unpaired, ambiguous) and are left to the caller to raise or
    skip; a missing folder or an empty images/ folder raises at once.
    """
    root = Path(root)
    if not root.is_dir():
        raise PixelwiseError(f"{root}: data folder not found; give a folder with images/ and masks/")
    images_dir, masks_dir = root / "images", root / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise PixelwiseError(
                f"{d}: folder not found; a data set needs {root}/images/<name>.png and {root}/masks/<name>.png"
            )
    notes: list[str] = []
    problems: list[Problem] = []
    images: dict[str, list[Path]] = {}
    foreign: list[str] = []
    for p in sorted(images_dir.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            images.setdefault(p.stem, []).append(p)
        else:
            foreign.append(str(p))
    masks: dict[str, list[Path]] = {}
    for p in sorted(masks_dir.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            if p.suffix.lower() in MASK_EXTENSIONS:
                masks.setdefault(p.stem, []).append(p)
            else:
                foreign.append(str(p))
    if not images:
        raise PixelwiseError(
            f"{images_dir}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}); add images or fix the path"
        )
    if foreign:
        problems.append(
            Problem(
                "files are not images by their extension and were left out",
                "move them out of images/ and masks/",
                foreign,
                severity="warning",
            )
        )
    bad: set[str] = set()
    for what, table in (("image", images), ("mask", masks)):
        dup = {s: ps for s, ps in table.items() if len(ps) > 1}
        if dup:
            problems.append(
                Problem(
                    f"stems have more than one {what}",
                    "keep one file per stem",
                    [f"{s} ({', '.join(p.name for p in ps)})" for s, ps in dup.items()],
                    stems=[s for s in dup if s in images],
                )
            )
            bad |= set(dup)
    missing = [s for s in images if s not in masks]
    if missing:
        problems.append(
            Problem(
                "images have no mask",
                f"add {masks_dir}/<stem>.png for each or remove the images",
                [str(images[s][0]) for s in missing],
                stems=missing,
            )
        )
    orphans = [s for s in masks if s not in images]
    if orphans:
        problems.append(
            Problem("masks have no image", "add the images or remove the masks", [str(masks[s][0]) for s in orphans])
        )
    samples = [
        Sample(stem=s, image=images[s][0], mask=masks[s][0]) for s in sorted(images) if s in masks and s not in bad
    ]
    return samples, problems, notes


def find_samples(root: str | Path) -> list[Sample]:
    """Pair DATA/images/* with DATA/masks/<stem>.*; every unpaired or ambiguous file is an error."""
    samples, problems, _ = list_folder(root)
    raise_first(problems)
    return samples


def split_samples(
    root: str | Path,
    samples: list[Sample],
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    skip_missing: bool = False,
) -> dict[str, list[Sample]]:
    """Return {'train': [...], 'val': [...], 'test': [...]}.

    Uses DATA/splits/<split>.txt where present; otherwise a seeded permutation of the sorted
    stems, so the same data and seed always give the same split. ``skip_missing`` leaves out
    listed names that have no usable sample (``--skip-bad``) instead of failing.
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
            if unknown and not skip_missing:
                raise PixelwiseError(
                    f"{path}: {len(unknown)} names have no image/mask pair: {listing(unknown)}; "
                    "fix the list or add the files"
                )
            twice = [s for s in stems if s in seen]
            if twice:
                raise PixelwiseError(
                    f"{path}: {len(twice)} names are already in {seen[twice[0]]}.txt: {listing(twice)}; "
                    "a sample belongs to one split"
                )
            for s in stems:
                seen[s] = name
            out[name] = [by_stem[s] for s in stems if s in by_stem]
        if not out["train"]:
            raise PixelwiseError(f"{files['train']}: the train split is empty; list at least one stem")
        return out
    return seeded_split(root, samples, val_fraction, test_fraction, seed)


def seeded_split(
    root, samples: list[Sample], val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0
) -> dict[str, list[Sample]]:
    """Split samples by a seeded permutation of their sorted stems: same data and seed, same split."""
    n = len(samples)
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise PixelwiseError("--val-fraction and --test-fraction must be in [0, 1) and sum to less than 1")
    samples = sorted(samples, key=lambda s: s.stem)
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
    raw = read_raw_mask(path, spec.max_pixels if spec else DEFAULT_MAX_PIXELS)
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
    mask = render(sample.vector) if sample.vector is not None else read_mask(sample.mask, spec)
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
    from .validation import check_samples

    if not samples:
        raise PixelwiseError(f"{what}: no samples to validate; the split is empty")
    result = check_samples(samples, classes, spec or DecodeSpec(), workers=workers)
    raise_first(result.problems)
    return result.classes, result.report


@dataclass
class FolderDataset:
    """A validated data set on disk: its classes and its splits (samples carry their decode spec)."""

    root: Path
    classes: ClassInfo
    splits: dict[str, list[Sample]]
    report: DataReport  # over the training split
    format: str = "folder"
    spec: DecodeSpec = field(default_factory=DecodeSpec)
    notes: list[str] = field(default_factory=list)  # what was detected and decided, for the user
    skipped: list[str] = field(default_factory=list)  # "path (reason)" of samples left out by --skip-bad
    warnings: list[Problem] = field(default_factory=list)


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
    Without either, classes are inferred from the masks of all splits. See
    :func:`pixelwise.data.formats.open_dataset` for the other formats and options.
    """
    from .formats import open_dataset

    return open_dataset(
        root,
        "folder",
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        classes=classes,
        validate_splits=validate_splits,
    )
