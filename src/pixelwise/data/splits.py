"""Which samples train, which validate, which test.

Three sources, in this order: split lists the data set ships (``splits/<split>.txt`` of the
pixelwise layout, or a format's own, read by its reader), split names in folder or file names
(``training/``, ``instances_val2017.json``), and otherwise a seeded permutation of the sorted
stems, so the same data and seed always give the same split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PixelwiseError
from .types import IMAGE_EXTENSIONS, SPLIT_NAMES, Sample, listing

# Folder and file name words that name a split.
SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def split_of(name: str) -> str | None:
    """The split a folder name means ("training" -> "train", "val2017" -> "val"), or None."""
    for word, split in SPLIT_WORDS.items():
        if name.lower() == word or name.lower().startswith(word) and name[len(word) :].isdigit():
            return split
    return None


def split_from_file_name(stem: str) -> str | None:
    """The split named by a part of a file name ("instances_val2017" -> "val"), or None."""
    for part in stem.replace("-", "_").split("_"):
        s = split_of(part)
        if s:
            return s
    return None


def read_lines(path: Path) -> list[str]:
    """The lines of a list file (split list, labels file), read as UTF-8 text.

    Raises PixelwiseError naming the file when it cannot be read or is not text.
    """
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise PixelwiseError(f"{path}: not a UTF-8 text file; save it as plain text, one name per line") from None
    except OSError as e:
        raise PixelwiseError(f"{path}: cannot read this file ({e.__class__.__name__})") from None


def read_split_list(path: Path) -> list[str]:
    """The stems listed in a split file: one per line, ``#`` comments and blank lines skipped.

    Lines written as image file names ("a.png") are taken as their stem ("a"). A name listed
    twice counts once: a sample is neither trained on nor scored twice per pass.
    """
    stems = [ln.strip() for ln in read_lines(path) if ln.strip() and not ln.startswith("#")]
    return list(dict.fromkeys(Path(s).stem if Path(s).suffix.lower() in IMAGE_EXTENSIONS else s for s in stems))


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
    stems (:func:`seeded_split`). ``skip_missing`` leaves out listed names that have no usable
    sample (``--skip-bad``) instead of failing.
    """
    split_dir = Path(root) / "splits"
    files = {n: split_dir / f"{n}.txt" for n in SPLIT_NAMES if (split_dir / f"{n}.txt").exists()}
    if not files:
        return seeded_split(root, samples, val_fraction, test_fraction, seed)
    if "train" not in files:
        raise PixelwiseError(f"{split_dir}: has split files but no train.txt; add it")
    by_stem = {s.stem: s for s in samples}
    out: dict[str, list[Sample]] = {n: [] for n in SPLIT_NAMES}
    seen: dict[str, str] = {}
    for name, path in files.items():
        stems = read_split_list(path)
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
        seen.update((s, name) for s in stems)
        out[name] = [by_stem[s] for s in stems if s in by_stem]
    if not out["train"]:
        raise PixelwiseError(f"{files['train']}: the train split is empty; list at least one stem")
    return out


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


def shipped_splits(
    root, shipped: dict[str, list[Sample]], val_fraction: float, seed: int
) -> tuple[dict[str, list[Sample]], list[str]]:
    """The splits a format ships, with a validation split held out of train when it ships none.

    Returns the splits and the notes that say what was held out.
    """
    splits = {n: list(shipped.get(n, [])) for n in SPLIT_NAMES}
    if splits["val"] or val_fraction <= 0 or len(splits["train"]) < 2:
        return splits, []
    held = seeded_split(root, splits["train"], val_fraction, 0.0, seed)
    splits["train"], splits["val"] = held["train"], held["val"]
    note = (
        f"no validation split in the data set: {len(held['val'])} training samples held out "
        f"(--val-fraction {val_fraction}, seed {seed})"
    )
    return splits, [note]
