"""LabelMe JSON files, one per image beside it: polygons, rectangles, circles and masks, painted in
file order (a later shape covers an earlier one).

Classes: labels.txt (one per line; ``__ignore__`` = ignored pixels, ``_background_`` = class 0)
or classes.yaml when present, otherwise ``_background_`` followed by the labels found, sorted.

Objects: shapes that share a ``group_id`` and a label are one object; any other shape of a thing
class is an object of its own. The thing classes are classes.yaml's ``things:``, otherwise the
labels of the shapes that carry a group_id.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from ...classes import ClassInfo, default_palette
from ...errors import PixelwiseError
from ..pairing import duplicate_stems
from ..splits import read_lines
from ..types import IMAGE_EXTENSIONS, DataSource, Problem, Sample, Shape, VectorMask
from .coco import shape_warnings

_IGNORE_LABELS = {"__ignore__"}
_BACKGROUND = "_background_"


def labelme_files(root: Path) -> list[Path]:
    """The LabelMe files (JSON with ``shapes`` and ``imagePath``) in ``root`` and its folders."""
    out = []
    for p in sorted(root.glob("*.json")) + sorted(root.glob("*/*.json")):
        try:
            head = p.read_text()[:100_000]
        except (OSError, UnicodeDecodeError):
            continue
        if '"shapes"' in head and '"imagePath"' in head:
            out.append(p)
    return out


def _read_docs(files: list[Path]) -> tuple[list[tuple[Path, dict]], list[Problem]]:
    docs: list[tuple[Path, dict]] = []
    unreadable: list[str] = []
    for jp in files:
        try:
            doc = json.loads(jp.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as e:
            unreadable.append(f"{jp} ({e.__class__.__name__})")
            continue
        if isinstance(doc, dict):
            docs.append((jp, doc))
        else:
            unreadable.append(f"{jp} (not a JSON object)")
    if not unreadable:
        return docs, []
    return docs, [
        Problem("LabelMe files cannot be read", "fix or remove them", unreadable, one="LabelMe file cannot be read")
    ]


def _take_classes(src: DataSource, docs: list[tuple[Path, dict]]) -> None:
    """The classes from labels.txt, classes.yaml or the labels found, in that order of preference."""
    root = src.root
    if (root / "labels.txt").is_file():
        labels = [ln.strip() for ln in read_lines(root / "labels.txt") if ln.strip()]
        names = [n for n in labels if n not in _IGNORE_LABELS]
        if _BACKGROUND in names:
            names.remove(_BACKGROUND)
        src.classes_from = str(root / "labels.txt")
    elif (root / "classes.yaml").is_file():
        src.use_classes_file(root / "classes.yaml")
        return
    else:
        found = {str(s.get("label")) for _, d in docs for s in _shape_list(d) if isinstance(s, dict)}
        names = sorted(found - _IGNORE_LABELS - {_BACKGROUND})
        src.classes_from = "labels found in the JSON files"
    names = [_BACKGROUND] + names
    src.classes = ClassInfo(names, default_palette(len(names)), 255)


@dataclass
class _Unusable:
    """Shapes that cannot be used ("file (why)") and the samples they belong to; shapes without area."""

    items: list[str] = field(default_factory=list)
    stems: list[str] = field(default_factory=list)
    no_area: int = 0

    def add(self, jp: Path, why: str) -> None:
        self.items.append(f"{jp} ({why})")
        self.stems.append(jp.stem)


def _shape_list(d: dict) -> list:
    """The ``shapes`` of a LabelMe document; [] when it holds none (or something else than a list)."""
    shapes = d.get("shapes")
    return shapes if isinstance(shapes, list) else []


def _points(value) -> list[tuple[float, float]]:
    """LabelMe ``points``: a list of [x, y] pairs of finite numbers; ValueError for anything else
    (strings, whose characters would otherwise pass for coordinates, booleans, NaN)."""
    if not isinstance(value, list):
        raise ValueError("points is not a list")
    pairs = []
    for p in value:
        if not isinstance(p, list | tuple) or len(p) != 2:
            raise ValueError("a point is not an [x, y] pair")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in p):
            raise ValueError("a coordinate is not a finite number")
        pairs.append((p[0], p[1]))
    return pairs


def _shape(s: dict, cls: int) -> Shape | None:
    """One LabelMe shape of class ``cls``; None for a shape without area (line, point)."""
    kind = s.get("shape_type") or "polygon"
    pts = _points(s.get("points") or [])
    if kind == "polygon":
        return Shape(cls, "polygon", (tuple(v for p in pts for v in p),))
    if kind in ("rectangle", "circle"):
        (x0, y0), (x1, y1) = pts[:2]
        return Shape(cls, kind, ((x0, y0), (x1, y1)))
    if kind == "mask" and s.get("mask"):
        (x0, y0) = pts[0]
        return Shape(cls, "bitmap", s["mask"], origin=(int(round(x0)), int(round(y0))))
    return None


def _shapes(jp: Path, d: dict, classes: ClassInfo, bad: _Unusable) -> tuple[Shape, ...]:
    """The shapes of one file in file order; unknown labels and malformed points go to ``bad``."""
    index = {n: i for i, n in enumerate(classes.names)}
    groups: dict = {}
    if not isinstance(d.get("shapes", []), list):
        bad.add(jp, "'shapes' is not a list")
    shapes = []
    for s in _shape_list(d):
        if not isinstance(s, dict):
            bad.add(jp, "a shape is not a JSON object")
            continue
        label = str(s.get("label"))
        if label in _IGNORE_LABELS:
            cls = classes.ignore_index
        elif label in index:
            cls = index[label]
        else:
            bad.add(jp, f"label '{label}'")
            continue
        try:
            shape = _shape(s, cls)
        except (TypeError, ValueError, IndexError):
            bad.add(jp, f"malformed points of a {s.get('shape_type') or 'polygon'} shape")
            continue
        if shape is None:
            bad.no_area += 1
        else:
            shapes.append(shape if cls == classes.ignore_index else replace(shape, instance=_object_id(s, groups)))
    return tuple(shapes)


def _object_id(s: dict, groups: dict) -> int:
    """The object id of a shape: shared by the shapes of one group_id and label, else a new one."""
    gid = s.get("group_id")
    key = (gid if isinstance(gid, (int, str)) and not isinstance(gid, bool) else None, str(s.get("label")))
    if key[0] is None:
        key = ("", len(groups))  # no group: an object of its own
    if key not in groups:
        groups[key] = len(groups) + 1
    return groups[key]


def _grouped_labels(docs: list[tuple[Path, dict]]) -> tuple[str, ...]:
    """The labels of shapes that carry a group_id (sorted): the thing classes when no file names them."""
    found = {
        str(s.get("label"))
        for _, d in docs
        for s in _shape_list(d)
        if isinstance(s, dict) and s.get("group_id") is not None
    }
    return tuple(sorted(found - _IGNORE_LABELS - {_BACKGROUND}))


def _sample(jp: Path, d: dict, classes: ClassInfo, bad: _Unusable) -> Sample | None:
    """The sample of one LabelMe file: its image (imagePath, or an image of the same name) and shapes."""
    try:
        h, w = int(d["imageHeight"]), int(d["imageWidth"])
        image_path = str(d["imagePath"]).replace("\\", "/")
    except (KeyError, TypeError, ValueError, OverflowError):
        bad.add(jp, "no imageHeight, imageWidth or imagePath")
        return None
    image = jp.parent / image_path
    if not image.is_file():
        alt = [jp.with_suffix(e) for e in IMAGE_EXTENSIONS if jp.with_suffix(e).is_file()]
        image = alt[0] if alt else image
    return Sample(jp.stem, image, jp, vector=VectorMask(h, w, _shapes(jp, d, classes, bad), str(jp)))


def read_labelme(root: Path) -> DataSource:
    """LabelMe: one JSON per image (shapes in image coordinates); later shapes cover earlier ones.

    Classes: labels.txt (one per line; ``__ignore__`` = ignored pixels, ``_background_`` = class 0)
    or classes.yaml when present, otherwise ``_background_`` followed by the labels found, sorted.
    """
    files = labelme_files(root)
    if not files:
        raise PixelwiseError(f"{root}: no LabelMe JSON files found (*.json with shapes and imagePath)")
    docs, problems = _read_docs(files)
    src = DataSource("labelme", root, [], problems=problems)
    _take_classes(src, docs)
    bad = _Unusable()
    src.samples = [s for jp, d in docs if (s := _sample(jp, d, src.classes, bad)) is not None]
    if not src.things_given:
        src.default_things = tuple(n for n in _grouped_labels(docs) if n in src.classes.names) or None
        src.things_from = "LabelMe: the labels of shapes with a group_id"
    if src.classes.things or src.default_things:
        src.samples = [replace(s, instances=s.mask) for s in src.samples]
    problems += shape_warnings(src.samples, "LabelMe files", crowd=False)
    if bad.items:
        problems.append(
            Problem(
                "LabelMe shapes cannot be used",
                f"labels must be one of the classes ({src.classes_from}); fix the files",
                bad.items,
                stems=sorted(set(bad.stems)),
                one="LabelMe shape cannot be used",
            )
        )
    if bad.no_area:
        src.notes.append(f"LabelMe: {bad.no_area} line/point shapes carry no area and were left out")
    src.notes.append("LabelMe: shapes painted in file order, a later shape covers an earlier one")
    dup = duplicate_stems(src.samples)
    if dup:
        problems.append(
            Problem(
                "names are shared by LabelMe files in different folders",
                "rename them",
                dup,
                stems=dup,
                one="name is shared by LabelMe files in different folders",
            )
        )
    return src
