"""Which samples train, which validate, which test.

Three sources, in this order: split lists the data set ships (``splits/<split>.txt`` of the
pixelwise layout, or a format's own, read by its reader), split names in folder or file names
(``training/``, ``instances_val2017.json``), and otherwise a seeded permutation of the sorted
stems, so the same data and seed always give the same split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PixelwiseError
from .types import IMAGE_EXTENSIONS, SPLIT_NAMES, Problem, Sample, listing, plural

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
    """The lines of a list file (split list, labels file), read as UTF-8 text (a byte-order mark,
    as Windows editors write, is dropped; Windows line ends too).

    Raises PixelwiseError naming the file when it cannot be read or is not text.
    """
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise PixelwiseError(f"{path}: not a UTF-8 text file; save it as plain text, one name per line") from None
    except OSError as e:
        raise PixelwiseError(f"{path}: cannot read this file ({e.__class__.__name__})") from None


def read_split_list(path: Path) -> list[str]:
    """The stems listed in a split file: one per line, ``#`` comments and blank lines skipped.

    Lines written as image file names ("a.png") or paths ("images/a.png", "images\\a.png" as
    Windows writes them) are taken as their stem ("a"). A name listed twice counts once: a sample
    is neither trained on nor scored twice per pass.
    """
    names = [ln.strip() for ln in read_lines(path) if ln.strip() and not ln.startswith("#")]
    names = [n.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or n for n in names]  # stems hold no folder
    return list(dict.fromkeys(Path(n).stem if Path(n).suffix.lower() in IMAGE_EXTENSIONS else n for n in names))


@dataclass
class SplitLists:
    """What the split files of a data set say: the samples of each split, and what is wrong with the lists.

    ``problems``: names that have no image/mask pair (left out with ``--skip-bad``) and names listed
    in two files (kept in the first); ``files``: the split files found (split -> path);
    ``unlisted``: stems of pairs on disk that no file names (not used).
    """

    splits: dict[str, list[Sample]]
    problems: list[Problem]
    files: dict[str, Path]
    unlisted: list[str]

    def notes(self) -> list[str]:
        """Lines for the user: the pairs that no split file names."""
        if not self.unlisted:
            return []
        n = len(self.unlisted)
        return [
            f"{plural(n, 'image/mask pair')} {'is' if n == 1 else 'are'} in no split file and not used: "
            f"{listing(self.unlisted)}"
        ]


def read_split_files(root: str | Path, samples: list[Sample]) -> SplitLists | None:
    """The samples that DATA/splits/<split>.txt list, or None when there is no split file.

    Never raises for what the lists name (see :class:`SplitLists`); only for a file that cannot
    be read. A split without a file is empty: a folder with only ``val.txt`` serves evaluation.
    """
    split_dir = Path(root) / "splits"
    files = {n: split_dir / f"{n}.txt" for n in SPLIT_NAMES if (split_dir / f"{n}.txt").exists()}
    if not files:
        return None
    by_stem = {s.stem: s for s in samples}
    out = SplitLists({n: [] for n in SPLIT_NAMES}, [], files, [])
    seen: dict[str, str] = {}
    for name, path in files.items():
        stems = read_split_list(path)
        unknown = [s for s in stems if s not in by_stem]
        if unknown:
            out.problems.append(
                Problem(
                    f"names in {path} have no image/mask pair",
                    "fix the list or add the files",
                    unknown,
                    one=f"name in {path} has no image/mask pair",
                )
            )
        twice = [s for s in stems if s in seen]
        if twice:
            out.problems.append(
                Problem(
                    f"names in {path} are in another split file too",
                    "a sample belongs to one split; remove them from one of the lists",
                    [f"{s} (in {seen[s]}.txt)" for s in twice],
                    skippable=False,
                    one=f"name in {path} is in another split file too",
                )
            )
        out.splits[name] = [by_stem[s] for s in stems if s in by_stem and s not in seen]
        seen.update((s, name) for s in stems if s not in seen)
    out.unlisted = sorted(s for s in by_stem if s not in seen)
    return out


def split_samples(
    root: str | Path,
    samples: list[Sample],
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    skip_missing: bool = False,
) -> dict[str, list[Sample]]:
    """Return {'train': [...], 'val': [...], 'test': [...]}.

    Uses DATA/splits/<split>.txt where present (:func:`read_split_files`); otherwise a seeded
    permutation of the sorted stems (:func:`seeded_split`). A listed name without a sample is an
    error, unless ``skip_missing`` (``--skip-bad``) leaves it out; so is a list without train.txt.
    """
    lists = read_split_files(root, samples)
    if lists is None:
        return seeded_split(root, samples, val_fraction, test_fraction, seed)
    for p in lists.problems:
        if not (skip_missing and p.skippable):
            raise PixelwiseError(p.message())
    if "train" not in lists.files:
        raise PixelwiseError(f"{Path(root) / 'splits'}: has split files but no train.txt; add it")
    if not lists.splits["train"]:
        raise PixelwiseError(f"{lists.files['train']}: the train split is empty; list at least one stem")
    return lists.splits


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
