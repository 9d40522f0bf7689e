"""What the classes of a data set's masks allow: can a model learn from them, can a split score it?

A training split whose labelled pixels are all one class (every mask empty, or all background)
teaches nothing and validates at a meaningless "mIoU 100 %": training refuses it. A validation or
test split that shows one class only, or masks that each hold one class (image-level labels saved
as masks), are warned about. The checks read the per-sample class counts that validation already
made; no file is opened again.
"""

from __future__ import annotations

from pathlib import Path

from ..classes import ClassInfo
from .types import Problem, Sample, listing, plural


def _present(values: dict[str, dict[int, int]], stems: list[str], classes: ClassInfo) -> dict[int, int]:
    """Labelled pixels of each class that occurs in the masks of ``stems`` (ignored pixels left out)."""
    out: dict[int, int] = {}
    for s in stems:
        for k, n in values.get(s, {}).items():
            if k != classes.ignore_index and n:
                out[k] = out.get(k, 0) + n
    return out


def _name(classes: ClassInfo, k: int) -> str:
    return classes.names[k] if 0 <= k < len(classes.names) else str(k)


def training_problems(
    root: str | Path,
    splits: dict[str, list[Sample]],
    split_files: dict[str, Path] | None,
    values: dict[str, dict[int, int]],
    classes: ClassInfo,
) -> list[Problem]:
    """Errors that stop training whatever the files: no train split, or one class only in its masks.

    ``split_files``: the split files found (split -> path), None without any; ``values``: class
    pixel counts of every usable sample (stem -> {class: pixels}).
    """
    if split_files is not None and "train" not in split_files:
        have = ", ".join(p.name for p in split_files.values())
        return [
            Problem(
                f"{Path(root) / 'splits'} has {have} but no train.txt, so there is nothing to train on",
                f"list the training stems in {Path(root) / 'splits' / 'train.txt'} "
                "(a folder with only val.txt or test.txt serves pixelwise evaluate)",
                skippable=False,
            )
        ]
    if not splits.get("train"):
        if split_files:
            return [
                Problem(f"{split_files['train']}: the train split is empty", "list at least one stem", skippable=False)
            ]
        return [Problem(f"{root}: the train split is empty", "add training samples", skippable=False)]
    usable = [s.stem for s in splits["train"] if s.stem in values]
    if not usable:
        return []  # every training sample has a problem of its own
    present = _present(values, usable, classes)
    if len(present) > 1:
        return []
    if not present:
        what = f"every pixel of the {plural(len(usable), 'training mask')} is the ignore index {classes.ignore_index}"
    else:
        k = next(iter(present))
        what = f"every labelled pixel of the {plural(len(usable), 'training mask')} is class {k} ({_name(classes, k)})"
    todo = "check that the masks hold class indices (0, 1, 2, ...) or the class colours, and add masks that show "
    todo += "the other classes"
    if any(classes.ignore_index in values[s] for s in usable):
        todo += (
            f" ({classes.ignore_index} is the ignore index; if it marks a class, pass --encoding binary for 0/255 "
            "masks or set ignore_index in classes.yaml)"
        )
    return [
        Problem(f"{root}: {what}: a model cannot learn to tell classes apart from one class", todo, skippable=False)
    ]


def spread_warnings(
    splits: dict[str, list[Sample]],
    checked: tuple[str, ...],
    values: dict[str, dict[int, int]],
    classes: ClassInfo,
) -> list[Problem]:
    """Warnings: an evaluation split of ``checked`` that shows one class only (its mIoU scores that
    class alone), and masks that each hold a single class although the data set has several."""
    out = []
    for name in ("val", "test"):
        stems = [s.stem for s in splits.get(name, []) if s.stem in values]
        if name not in checked or not stems:
            continue
        present = _present(values, stems, classes)
        if len(present) == 1 and classes.num_classes > 1:
            k = next(iter(present))
            out.append(
                Problem(
                    f"the {name} masks show one class only, {_name(classes, k)}: its mIoU scores that class alone "
                    "(a model that paints everything that class gets 100 %)",
                    f"move images that show the other classes into the {name} split",
                    severity="warning",
                    skippable=False,
                )
            )
    stems = [s.stem for n in checked for s in splits.get(n, []) if s.stem in values]
    single = [s for s in stems if len(_present(values, [s], classes)) == 1]
    if len(stems) >= 2 and len(single) == len(stems) and len(_present(values, stems, classes)) > 1:
        out.append(
            Problem(
                "every mask holds a single class, as image-level labels would",
                "segmentation masks label each pixel; check that the masks are not class labels saved as images "
                f"(e.g. {listing(single)})",
                severity="warning",
                skippable=False,
            )
        )
    return out
