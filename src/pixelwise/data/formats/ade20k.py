"""ADE20K scene parsing (ADEChallengeData2016): images/{training,validation}/ with
annotations/{training,validation}/; stored 0 = "other" is ignored and 1..150 become classes 0..149.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ...classes import ClassInfo, default_palette
from ..encodings import INVALID
from ..pairing import files_by_stem, pair_by_stem
from ..types import IMAGE_EXTENSIONS, SPLIT_NAMES, DataSource, DecodeSpec, Problem, Sample

ADE20K_CLASSES = [
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
]


def ade_base(root: Path) -> Path:
    """ADEChallengeData2016/ under ``root`` when it is there, else ``root`` itself."""
    return root / "ADEChallengeData2016" if (root / "ADEChallengeData2016" / "images").is_dir() else root


def is_ade20k(root: Path) -> bool:
    """Whether ``root`` (or its ADEChallengeData2016/) holds images/training/ and annotations/training/."""
    base = ade_base(root)
    return (base / "images" / "training").is_dir() and (base / "annotations" / "training").is_dir()


def _class_names(root: Path, base: Path) -> tuple[list[str], str]:
    """The 150 names of objectInfo150.csv when present and complete, else the built-in list; and their source."""
    info = next((p for p in (base / "objectInfo150.csv", root / "objectInfo150.csv") if p.is_file()), None)
    if info is not None:
        with open(info, newline="") as f:
            found = [row["Name"].split(";")[0].strip() for row in csv.DictReader(f) if row.get("Name")]
        if len(found) == 150 and len(set(found)) == 150:
            return found, str(info)
    return list(ADE20K_CLASSES), "ADE20K scene parsing (150 classes)"


def read_ade20k(root: Path) -> DataSource:
    """ADE20K scene parsing (ADEChallengeData2016): stored 0 = other (ignored), 1..150 -> classes 0..149."""
    base = ade_base(root)
    problems: list[Problem] = []
    splits: dict[str, list[Sample]] = {n: [] for n in SPLIT_NAMES}
    for folder, split in (("training", "train"), ("validation", "val")):
        img_dir, ann_dir = base / "images" / folder, base / "annotations" / folder
        if img_dir.is_dir():
            splits[split], unpaired = pair_by_stem(
                files_by_stem(img_dir, IMAGE_EXTENSIONS),
                files_by_stem(ann_dir, IMAGE_EXTENSIONS),
                f"{ann_dir}/<name>.png",
                where=str(img_dir),
            )
            problems += unpaired
    names, source = _class_names(root, base)
    lut = [INVALID] * 256
    lut[0] = 255
    for v in range(1, 151):
        lut[v] = v - 1
    return DataSource(
        "ade20k",
        base,
        [s for n in SPLIT_NAMES for s in splits[n]],
        ClassInfo(names, default_palette(150), 255),
        source,
        spec=DecodeSpec(encoding="index", lut=tuple(lut), lut_name="ADE20K (0 = other -> ignore, v -> v-1)"),
        splits=splits,
        problems=problems,
    )
