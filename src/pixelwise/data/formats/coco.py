"""COCO-style instance JSON drawn into semantic masks.

Any JSON with ``images``, ``annotations`` and ``categories`` (``instances_<split>.json`` first)
in DATA/ or DATA/annotations/; polygons and RLE are drawn by pycocotools when a mask is read.
Class 0 is the background; the categories follow in order of their id. Overlaps: crowd regions
are painted first as ignore, then objects from the largest area to the smallest, so a small
object lying on a larger one stays visible and a crowd region is ignored only where no single
object covers it. Each non-crowd annotation is one object (ids 1, 2, ... in painting order); crowd
regions get no id. Every category is a thing class unless classes.yaml says otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...classes import ClassInfo, default_palette
from ...errors import PixelwiseError
from ..pairing import duplicate_stems
from ..render import outside
from ..splits import split_from_file_name, split_of
from ..types import SPLIT_NAMES, DataSource, Problem, Sample, Shape, VectorMask, plural


def _is_coco(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(65536).decode("utf-8", errors="ignore")
        if '"shapes"' in head or '"images"' not in head:  # LabelMe, or not an instance file
            return False
        if path.stat().st_size > 64_000_000:  # too big to parse just to look: trust the name
            return path.name.startswith("instances_")
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and all(k in data for k in ("images", "annotations", "categories"))


def coco_files(root: Path) -> list[Path]:
    """The COCO instance files in ``root`` and ``root``/annotations (``instances_*`` when there are any)."""
    cands = sorted(p for d in (root, root / "annotations") if d.is_dir() for p in d.glob("*.json"))
    found = [p for p in cands if _is_coco(p)]
    instances = [p for p in found if p.name.startswith("instances_")]
    return instances or found


def _image_path(root: Path, json_path: Path, file_name: str, split_dir: str) -> Path:
    """Where an image entry's file is: the first of the usual places that has it (else where it should be)."""
    rel = Path(file_name.replace("\\", "/"))
    bases = [root, root / "images", json_path.parent, json_path.parent.parent / "images"]
    if split_dir:
        bases += [root / split_dir, root / "images" / split_dir]
    for b in bases:
        if (b / rel).is_file():
            return b / rel
    return (root / "images" / split_dir / rel) if split_dir else root / "images" / rel


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise PixelwiseError(f"{path}: cannot read this JSON ({e.__class__.__name__}); fix the file") from None


def _entries(jp: Path, data: dict, key: str) -> list:
    """The list under ``key`` (images, annotations, categories); anything else is an error naming the file."""
    value = data.get(key, [])
    if not isinstance(value, list):
        raise PixelwiseError(f"{jp}: '{key}' must be a list; fix the file")
    return value


def _categories(jp: Path, data: dict) -> dict[int, str]:
    try:
        return {int(c["id"]): str(c["name"]) for c in _entries(jp, data, "categories")}
    except (KeyError, TypeError, ValueError):
        raise PixelwiseError(f"{jp}: every category needs an integer id and a name; fix the file") from None


def _flaw(a: dict) -> str:
    """Why an annotation of an image cannot be drawn; "" when it can."""
    try:
        hash(a.get("category_id"))
        float(a.get("area", 0))
    except (TypeError, ValueError):
        return "category_id or area is not a number"
    seg = a.get("segmentation")
    if isinstance(seg, list) and not all(
        isinstance(p, (list, tuple)) and all(isinstance(v, (int, float)) for v in p) for p in seg
    ):
        return "a polygon is not a list of numbers"
    return ""


def _id_order(v) -> tuple:
    # Annotation ids break ties of area; ids of another type than a number are ordered after numbers.
    return (0, v) if isinstance(v, (int, float)) else (1, str(v))


def _shapes(name: str, anns: list[dict], label_of: dict[int, int], bad_cat: list[str]) -> tuple[Shape, ...]:
    """One image's annotations as shapes in painting order: crowd regions (ignored), then largest object first."""
    crowd = [a for a in anns if a.get("iscrowd")]
    objects = sorted(
        (a for a in anns if not a.get("iscrowd")), key=lambda a: (-float(a.get("area", 0)), _id_order(a.get("id", 0)))
    )
    shapes = []
    for a in crowd + objects:
        if a.get("category_id") not in label_of:
            bad_cat.append(f"{name} (annotation {a.get('id')}: category {a.get('category_id')})")
            continue
        label = 255 if a.get("iscrowd") else label_of[a["category_id"]]
        # Each object its own id, in painting order; a crowd region is no object.
        instance = 0 if a.get("iscrowd") else sum(s.instance > 0 for s in shapes) + 1
        seg = a.get("segmentation")
        if isinstance(seg, list):
            shapes.append(Shape(label, "coco-polygon", tuple(tuple(p) for p in seg), instance=instance))
        elif isinstance(seg, dict):
            shapes.append(Shape(label, "rle", seg, instance=instance))
    return tuple(shapes)


def _by_image(jp: Path, data: dict, flawed: list[str]) -> dict[object, list[dict]]:
    """The annotations of each image id; annotations that name no image id are listed in ``flawed``."""
    anns: dict[object, list[dict]] = {}
    for i, a in enumerate(_entries(jp, data, "annotations")):
        try:
            anns.setdefault(a.get("image_id"), []).append(a)
        except (AttributeError, TypeError):  # not an object, or an image id that is a list or an object
            flawed.append(f"annotation {i} in {jp.name} (no image_id)")
    return anns


def _file_samples(root: Path, jp: Path, data: dict, cats: dict[int, str]) -> tuple[list[Sample], list[Problem]]:
    """The samples of one COCO file; problems for annotations that cannot be drawn or name unknown categories."""
    split_dir = next((part for part in jp.stem.split("_") if split_of(part)), "")
    flawed: list[str] = []
    anns = _by_image(jp, data, flawed)
    label_of = {cid: i + 1 for i, cid in enumerate(sorted(cats))}
    bad_cat: list[str] = []
    samples, flawed_stems = [], []
    for im in _entries(jp, data, "images"):
        try:
            iid, name, h, w = im["id"], str(im["file_name"]), int(im["height"]), int(im["width"])
            mine = anns.get(iid, [])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise PixelwiseError(f"{jp}: an image entry lacks id, file_name, height or width; fix the file") from None
        flaws = [f"{name} (annotation {a.get('id')}: {_flaw(a)})" for a in mine if _flaw(a)]
        if flaws:
            flawed += flaws
            flawed_stems.append(Path(name).stem)
        vm = VectorMask(
            h, w, _shapes(name, [a for a in mine if not _flaw(a)], label_of, bad_cat), f"{jp} (image {name})"
        )
        samples.append(Sample(Path(name).stem, _image_path(root, jp, name, split_dir), jp, vector=vm, instances=jp))
    return samples, _annotation_problems(jp, flawed, flawed_stems, bad_cat) + shape_warnings(samples, jp)


def shape_warnings(samples: list[Sample], source: Path | str, crowd: bool = True) -> list[Problem]:
    """Warnings about the shapes of vector samples: shapes reaching outside their image (clipped) and
    images whose only annotations are crowd regions (no object to learn from)."""
    clipped = [
        f"{s.image.name} ({plural(sum(outside(sh, s.vector.height, s.vector.width) for sh in s.vector.shapes), 'shape')})"
        for s in samples
        if any(outside(sh, s.vector.height, s.vector.width) for sh in s.vector.shapes)
    ]
    crowd_only = [
        s.image.name
        for s in samples
        if crowd and s.vector.shapes and all(sh.instance == 0 and sh.label == 255 for sh in s.vector.shapes)
    ]
    out = []
    if clipped:
        out.append(
            Problem(
                f"images in {source} have shapes reaching outside the image (clipped to it)",
                "check the coordinates of those annotations",
                clipped,
                severity="warning",
                one=f"image in {source} has shapes reaching outside the image (clipped to it)",
            )
        )
    if crowd_only:
        out.append(
            Problem(
                f"images in {source} have crowd regions only (ignored, no object)",
                "annotate their objects one by one, or leave them out",
                crowd_only,
                severity="warning",
                one=f"image in {source} has crowd regions only (ignored, no object)",
            )
        )
    return out


def _annotation_problems(jp: Path, flawed: list[str], stems: list[str], bad_cat: list[str]) -> list[Problem]:
    out = []
    if flawed:
        out.append(
            Problem(
                f"annotations in {jp} cannot be drawn",
                "fix them: each needs image_id, category_id, a numeric area and polygons of numbers or an RLE",
                flawed,
                stems=stems,
                one=f"annotation in {jp} cannot be drawn",
            )
        )
    if bad_cat:
        out.append(
            Problem(
                f"annotations in {jp} name a category that is not in its categories",
                "fix the category ids",
                bad_cat,
                severity="warning",
                skippable=False,
                one=f"annotation in {jp} names a category that is not in its categories",
            )
        )
    return out


def read_coco(root: Path) -> DataSource:
    """COCO-style instance JSON drawn into semantic masks (see the module's description)."""
    files = coco_files(root)
    if not files:
        raise PixelwiseError(
            f"{root}: no COCO JSON found (a .json with images, annotations, categories in {root} or {root}/annotations)"
        )
    problems: list[Problem] = []
    categories: dict[int, str] | None = None
    per_split: dict[str, list[Sample]] = {n: [] for n in SPLIT_NAMES}
    for jp in files:
        data = _load(jp)
        cats = _categories(jp, data)
        if categories is None:
            categories = cats
        elif cats != categories:
            raise PixelwiseError(
                f"{jp}: its categories differ from those of {files[0]}; every file needs the same list"
            )
        samples, warnings = _file_samples(root, jp, data, cats)
        per_split[split_from_file_name(jp.stem) or "train"] += samples
        problems += warnings
    names = ["background"] + [categories[c] for c in sorted(categories or {})]
    if len(set(names)) != len(names):
        raise PixelwiseError(f"{files[0]}: category names must be unique (and none named 'background')")
    samples = [s for n in SPLIT_NAMES for s in per_split[n]]
    dup = duplicate_stems(samples)
    if dup:
        problems.append(
            Problem(
                "image names occur more than once in the COCO files",
                "give each image a unique name",
                dup,
                stems=dup,
                one="image name occurs more than once in the COCO files",
            )
        )
    return DataSource(
        "coco",
        root,
        samples,
        ClassInfo(names, default_palette(len(names)), 255),
        f"COCO categories of {', '.join(p.name for p in files)}",
        splits=per_split,
        problems=problems,
        notes=[f"COCO: {len(files)} JSON file(s); crowd regions ignored; overlaps: smaller objects on top"],
        default_things=tuple(names[1:]),
        things_from="COCO: every category",
    )
