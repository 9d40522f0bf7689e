"""CamVid, in its two common shapes.

``camvid``: the SegNet preparation, train/, trainannot/, val/, valannot/, test/, testannot/;
index masks of 11 classes, 11 = void (ignored).
``camvid-color``: the original colour-coded labels <name>_L.png beside the frames; the 32 CamVid
colours (or class_dict.csv when present), Void (0, 0, 0) ignored.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ...classes import ClassInfo
from ...errors import PixelwiseError
from ..pairing import files_by_stem, pair_by_stem
from ..splits import split_of
from ..types import IMAGE_EXTENSIONS, SPLIT_NAMES, DataSource, Problem, Sample

CAMVID_CLASSES = [
    ("sky", (128, 128, 128)),
    ("building", (128, 0, 0)),
    ("pole", (192, 192, 128)),
    ("road", (128, 64, 128)),
    ("pavement", (60, 40, 222)),
    ("tree", (128, 128, 0)),
    ("sign_symbol", (192, 128, 128)),
    ("fence", (64, 64, 128)),
    ("car", (64, 0, 128)),
    ("pedestrian", (64, 64, 0)),
    ("bicyclist", (0, 128, 192)),
]
CAMVID_VOID = 11

# The 32 colour codes of the original CamVid labels; Void is ignored.
CAMVID_32 = [
    ("Animal", (64, 128, 64)),
    ("Archway", (192, 0, 128)),
    ("Bicyclist", (0, 128, 192)),
    ("Bridge", (0, 128, 64)),
    ("Building", (128, 0, 0)),
    ("Car", (64, 0, 128)),
    ("CartLuggagePram", (64, 0, 192)),
    ("Child", (192, 128, 64)),
    ("Column_Pole", (192, 192, 128)),
    ("Fence", (64, 64, 128)),
    ("LaneMkgsDriv", (128, 0, 192)),
    ("LaneMkgsNonDriv", (192, 0, 64)),
    ("Misc_Text", (128, 128, 64)),
    ("MotorcycleScooter", (192, 0, 192)),
    ("OtherMoving", (128, 64, 64)),
    ("ParkingBlock", (64, 192, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Road", (128, 64, 128)),
    ("RoadShoulder", (128, 128, 192)),
    ("Sidewalk", (0, 0, 192)),
    ("SignSymbol", (192, 128, 128)),
    ("Sky", (128, 128, 128)),
    ("SUVPickupTruck", (64, 128, 192)),
    ("TrafficCone", (0, 0, 64)),
    ("TrafficLight", (0, 64, 64)),
    ("Train", (192, 64, 128)),
    ("Tree", (128, 128, 0)),
    ("Truck_Bus", (192, 128, 192)),
    ("Tunnel", (64, 0, 64)),
    ("VegetationMisc", (192, 192, 0)),
    ("Void", (0, 0, 0)),
    ("Wall", (64, 192, 0)),
]
_VOID_NAMES = ("void", "unlabelled", "unlabeled")


def is_camvid_segnet(root: Path) -> bool:
    """Whether ``root`` holds a <split>/ folder with its <split>annot/ masks."""
    return any((root / s).is_dir() and (root / f"{s}annot").is_dir() for s in SPLIT_NAMES)


def has_camvid_labels(root: Path) -> bool:
    """Whether ``root`` or a folder in it holds colour-coded <name>_L.png labels."""
    return any(p.stem.endswith("_L") for pattern in ("*_L.png", "*/*_L.png") for p in root.glob(pattern))


def read_camvid(root: Path) -> DataSource:
    """CamVid as prepared for SegNet: <split>/ images with <split>annot/ index masks, 11 = void."""
    problems: list[Problem] = []
    splits: dict[str, list[Sample]] = {n: [] for n in SPLIT_NAMES}
    for split in SPLIT_NAMES:
        img_dir, ann_dir = root / split, root / f"{split}annot"
        if img_dir.is_dir() and ann_dir.is_dir():
            splits[split], unpaired = pair_by_stem(
                files_by_stem(img_dir, IMAGE_EXTENSIONS),
                files_by_stem(ann_dir, IMAGE_EXTENSIONS),
                f"{ann_dir}/<name>.png",
                where=str(img_dir),
            )
            problems += unpaired
    classes = ClassInfo([n for n, _ in CAMVID_CLASSES], [c for _, c in CAMVID_CLASSES], CAMVID_VOID)
    return DataSource(
        "camvid",
        root,
        [s for n in SPLIT_NAMES for s in splits[n]],
        classes,
        "CamVid (SegNet, 11 classes, 11 = void)",
        colors=[c for _, c in CAMVID_CLASSES],
        splits=splits,
        problems=problems,
    )


def _camvid_color_classes(root: Path) -> tuple[list[tuple[str, tuple[int, int, int]]], str]:
    """(name, colour) rows of class_dict.csv when present, else the 32 CamVid colours; and their source."""
    path = root / "class_dict.csv"
    if not path.is_file():
        return CAMVID_32, "CamVid (32 colour-coded classes)"
    rows = []
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows.append((row["name"].strip(), (int(row["r"]), int(row["g"]), int(row["b"]))))
    except (KeyError, ValueError, TypeError) as e:
        raise PixelwiseError(
            f"{path}: expected columns name,r,g,b with integer colours ({e.__class__.__name__})"
        ) from None
    return rows, str(path)


def read_camvid_color(root: Path) -> DataSource:
    """Original CamVid: frames <name>.png with colour-coded labels <name>_L.png (any subfolders)."""
    files = sorted(
        p
        for pattern in ("*", "*/*")
        for p in root.glob(pattern)
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    masks: dict[str, list[Path]] = {}
    images: dict[str, list[Path]] = {}
    for p in files:
        if p.stem.endswith("_L"):
            masks.setdefault(p.stem[:-2], []).append(p)
        else:
            images.setdefault(p.stem, []).append(p)
    samples, problems = pair_by_stem(images, masks, "<name>_L.png", where=str(root))
    table, source = _camvid_color_classes(root)
    void = [c for n, c in table if n.lower() in _VOID_NAMES]
    named = [(n, c) for n, c in table if n.lower() not in _VOID_NAMES]
    classes = ClassInfo([n for n, _ in named], [c for _, c in named], 255)
    src = DataSource(
        "camvid-color",
        root,
        samples,
        classes,
        source,
        colors=[c for _, c in named],
        ignore_colors=void,
        problems=problems,
    )
    # Frames kept in folders named after a split (train/, val/, test/) are split by them.
    parents = {s.stem: split_of(s.image.parent.name) for s in samples}
    if samples and all(parents.values()):
        src.splits = {n: [s for s in samples if parents[s.stem] == n] for n in SPLIT_NAMES}
    return src
