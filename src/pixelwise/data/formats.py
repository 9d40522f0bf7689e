"""Data set formats: each reader turns a folder as it is shipped into the same samples and classes.

``FORMATS`` maps a name to a reader ``reader(root) -> DataSource``; :func:`detect_format`
recognises a folder by its layout; :func:`open_dataset` reads, splits and validates any of them
for training and evaluation, and :func:`scan_dataset` does the same without stopping at problems
(for ``pixelwise inspect``).

=============  ===========================================================================
folder         DATA/images/, DATA/masks/, optional classes.yaml and splits/*.txt
voc            Pascal VOC 2012: JPEGImages/, SegmentationClass/ (palette PNGs, 255 = boundary,
               ignored), ImageSets/Segmentation/{train,val}.txt; the 21 VOC classes and colours
cityscapes     leftImg8bit/<split>/<city>/*_leftImg8bit.png with gtFine/..._gtFine_labelIds.png,
               label ids mapped to the 19 training ids, every other id ignored
camvid         the SegNet preparation: train/, trainannot/, val/, valannot/, test/, testannot/;
               index masks, 11 classes, 11 = void (ignored)
camvid-color   the original colour-coded CamVid labels <name>_L.png beside the frames; the 32
               CamVid colours (class_dict.csv when present), Void (0, 0, 0) ignored
ade20k         ADEChallengeData2016: images/{training,validation}/, annotations/...; stored
               0 = "other" is ignored and 1..150 become classes 0..149
coco           COCO-style JSON (instances_<split>.json or any JSON with images, annotations and
               categories): polygons and RLE drawn into semantic masks; class 0 = background
labelme        LabelMe JSON files (one per image, beside it): polygons, rectangles, circles
=============  ===========================================================================
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..classes import ClassInfo, default_palette, read_classes_file
from ..errors import PixelwiseError
from .encodings import DEFAULT_MAX_PIXELS, ENCODINGS, INVALID, DecodeSpec
from .folder import (
    IMAGE_EXTENSIONS,
    SPLIT_NAMES,
    FolderDataset,
    Sample,
    list_folder,
    seeded_split,
    split_samples,
)
from .problems import Problem, raise_first
from .render import Shape, VectorMask
from .validation import CheckResult, check_samples

# ----------------------------------------------------------------------------- class lists

VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
VOC_BOUNDARY_COLOR = (224, 224, 192)  # palette entry 255, the "void" outline around objects

# Cityscapes: (label id, name, colour) of the 19 classes used for training, in train-id order.
CITYSCAPES_TRAIN = [
    (7, "road", (128, 64, 128)),
    (8, "sidewalk", (244, 35, 232)),
    (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)),
    (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)),
    (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)),
    (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)),
    (26, "car", (0, 0, 142)),
    (27, "truck", (0, 0, 70)),
    (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)),
    (32, "motorcycle", (0, 0, 230)),
    (33, "bicycle", (119, 11, 32)),
]
CITYSCAPES_NUM_IDS = 34  # label ids 0..33; every id not in the table above is ignored

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

SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass
class DataSource:
    """What a format reader found on disk, before any file is decoded."""

    format: str
    root: Path
    samples: list[Sample]
    classes: ClassInfo | None = None  # None: inferred from the masks
    classes_from: str = ""  # where the classes come from, for the report
    colors: list[tuple[int, int, int]] = field(default_factory=list)  # colours masks may be coded in
    ignore_colors: list[tuple[int, int, int]] = field(default_factory=list)
    spec: DecodeSpec = field(default_factory=DecodeSpec)  # parts the format fixes (lookup table, encoding)
    splits: dict[str, list[Sample]] | None = None  # None: splits/*.txt or a seeded split
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers


def _images_in(folder: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS:
                out.setdefault(p.stem, []).append(p)
    return out


def _pair(
    images: dict[str, list[Path]], masks: dict[str, list[Path]], problems: list[Problem], where: str, mask_hint: str
) -> list[Sample]:
    """Samples for stems with exactly one image and one mask; the rest become problems."""
    bad = set()
    for what, table in (("image", images), ("mask", masks)):
        dup = {s: ps for s, ps in table.items() if len(ps) > 1}
        if dup:
            problems.append(
                Problem(
                    f"stems have more than one {what} in {where}",
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
                f"images in {where} have no mask",
                f"add {mask_hint} or remove the images",
                [str(images[s][0]) for s in missing],
                stems=missing,
            )
        )
    orphans = [s for s in masks if s not in images]
    if orphans:
        problems.append(
            Problem(
                f"masks in {where} have no image",
                "add the images or remove the masks",
                [str(masks[s][0]) for s in orphans],
            )
        )
    return [Sample(s, images[s][0], masks[s][0]) for s in sorted(images) if s in masks and s not in bad]


def _split_of(name: str) -> str | None:
    for word, split in SPLIT_WORDS.items():
        if name.lower() == word or name.lower().startswith(word) and name[len(word) :].isdigit():
            return split
    return None


def _split_from_file_name(stem: str) -> str | None:
    for part in stem.replace("-", "_").split("_"):
        s = _split_of(part)
        if s:
            return s
    return None


def _classes_file_source(src: DataSource, path: Path) -> None:
    cf = read_classes_file(path)
    src.classes, src.classes_from = cf.info, str(path)
    if cf.colors_given:
        src.colors = list(cf.info.colors)
    if cf.ignore_colors:
        src.ignore_colors = list(cf.ignore_colors)


# ----------------------------------------------------------------------------- readers


def read_folder(root: Path) -> DataSource:
    """The pixelwise layout: images/, masks/, optional classes.yaml and splits/."""
    samples, problems, notes = list_folder(root)
    src = DataSource("folder", root, samples, problems=problems, notes=notes)
    if (root / "classes.yaml").exists():
        _classes_file_source(src, root / "classes.yaml")
    return src


def _voc_base(root: Path) -> Path | None:
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and (cand / "SegmentationClass").is_dir():
            return cand
    return None


def read_voc(root: Path) -> DataSource:
    """Pascal VOC 2012 segmentation: SegmentationClass/*.png paired with JPEGImages/*.jpg."""
    base = _voc_base(root)
    if base is None:
        raise PixelwiseError(f"{root}: not a Pascal VOC folder (needs JPEGImages/ and SegmentationClass/)")
    problems: list[Problem] = []
    masks = {p.stem: [p] for p in sorted((base / "SegmentationClass").glob("*.png"))}
    all_images = _images_in(base / "JPEGImages")
    images = {s: all_images[s] for s in masks if s in all_images}
    samples = _pair(images, masks, problems, str(base / "SegmentationClass"), "the image to JPEGImages/")
    # Only images with a mask are samples: most of JPEGImages/ is not annotated for segmentation.
    src = DataSource(
        "voc",
        base,
        samples,
        ClassInfo(list(VOC_CLASSES), default_palette(21), 255),
        "Pascal VOC 2012",
        colors=default_palette(21),
        ignore_colors=[VOC_BOUNDARY_COLOR],
        problems=problems,
    )
    sets = base / "ImageSets" / "Segmentation"
    if sets.is_dir():
        by_stem = {s.stem: s for s in samples}
        splits: dict[str, list[Sample]] = {n: [] for n in SPLIT_NAMES}
        for name in SPLIT_NAMES:
            path = sets / f"{name}.txt"
            if not path.is_file():
                continue
            stems = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
            missing = [s for s in stems if s not in by_stem]
            if stems and len(missing) == len(stems):
                src.notes.append(f"{path}: none of its {len(stems)} images has a mask (not annotated); left out")
                continue
            if missing:
                problems.append(
                    Problem(
                        f"names in {path} have no image/mask pair",
                        "add the files or remove the names",
                        missing,
                        stems=missing,
                    )
                )
            splits[name] = [by_stem[s] for s in stems if s in by_stem]
        src.splits = splits
    return src


def read_cityscapes(root: Path) -> DataSource:
    """Cityscapes fine annotations: labelIds mapped to the 19 training ids, every other id ignored."""
    left, gt = root / "leftImg8bit", root / "gtFine"
    problems: list[Problem] = []
    splits: dict[str, list[Sample]] = {n: [] for n in SPLIT_NAMES}
    notes: list[str] = []
    for split in SPLIT_NAMES:
        if not (left / split).is_dir():
            continue
        suffix = "_leftImg8bit"
        images: dict[str, list[Path]] = {}
        for p in sorted((left / split).glob("*/*_leftImg8bit.*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                images.setdefault(p.stem[: -len(suffix)], []).append(p)
        masks: dict[str, list[Path]] = {}
        for p in sorted((gt / split).glob("*/*_gtFine_labelIds.png")):
            masks.setdefault(p.name[: -len("_gtFine_labelIds.png")], []).append(p)
        if images and not masks:
            notes.append(f"{left / split}: no gtFine labelIds masks for this split; left out")
            continue
        splits[split] = _pair(
            images, masks, problems, f"{left / split}", f"gtFine/{split}/<city>/<name>_gtFine_labelIds.png"
        )
    lut = [INVALID] * 256
    for i in range(CITYSCAPES_NUM_IDS):
        lut[i] = 255
    lut[255] = 255
    for train_id, (label_id, _, _) in enumerate(CITYSCAPES_TRAIN):
        lut[label_id] = train_id
    classes = ClassInfo([n for _, n, _ in CITYSCAPES_TRAIN], [c for _, _, c in CITYSCAPES_TRAIN], 255)
    samples = [s for n in SPLIT_NAMES for s in splits[n]]
    return DataSource(
        "cityscapes",
        root,
        samples,
        classes,
        "Cityscapes (19 training classes)",
        spec=DecodeSpec(encoding="index", lut=tuple(lut), lut_name="Cityscapes labelId -> trainId"),
        splits=splits,
        problems=problems,
        notes=notes,
    )


def read_camvid(root: Path) -> DataSource:
    """CamVid as prepared for SegNet: <split>/ images with <split>annot/ index masks, 11 = void."""
    problems: list[Problem] = []
    splits: dict[str, list[Sample]] = {n: [] for n in SPLIT_NAMES}
    for split in SPLIT_NAMES:
        img_dir, ann_dir = root / split, root / f"{split}annot"
        if img_dir.is_dir() and ann_dir.is_dir():
            splits[split] = _pair(
                _images_in(img_dir), _images_in(ann_dir), problems, str(img_dir), f"{ann_dir}/<name>.png"
            )
    classes = ClassInfo([n for n, _ in CAMVID_CLASSES], [c for _, c in CAMVID_CLASSES], CAMVID_VOID)
    samples = [s for n in SPLIT_NAMES for s in splits[n]]
    return DataSource(
        "camvid",
        root,
        samples,
        classes,
        "CamVid (SegNet, 11 classes, 11 = void)",
        colors=[c for _, c in CAMVID_CLASSES],
        splits=splits,
        problems=problems,
    )


def _camvid_color_classes(root: Path) -> tuple[list[tuple[str, tuple[int, int, int]]], str]:
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
    problems: list[Problem] = []
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
    samples = _pair(images, masks, problems, str(root), "<name>_L.png")
    table, source = _camvid_color_classes(root)
    void = [c for n, c in table if n.lower() in ("void", "unlabelled", "unlabeled")]
    named = [(n, c) for n, c in table if n.lower() not in ("void", "unlabelled", "unlabeled")]
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
    parents = {s.stem: _split_of(s.image.parent.name) for s in samples}
    if samples and all(parents.values()):
        src.splits = {n: [s for s in samples if parents[s.stem] == n] for n in SPLIT_NAMES}
    return src


def _ade_base(root: Path) -> Path:
    return root / "ADEChallengeData2016" if (root / "ADEChallengeData2016" / "images").is_dir() else root


def read_ade20k(root: Path) -> DataSource:
    """ADE20K scene parsing (ADEChallengeData2016): stored 0 = other (ignored), 1..150 -> classes 0..149."""
    base = _ade_base(root)
    problems: list[Problem] = []
    splits: dict[str, list[Sample]] = {n: [] for n in SPLIT_NAMES}
    for folder, split in (("training", "train"), ("validation", "val")):
        img_dir, ann_dir = base / "images" / folder, base / "annotations" / folder
        if img_dir.is_dir():
            splits[split] = _pair(
                _images_in(img_dir), _images_in(ann_dir), problems, str(img_dir), f"{ann_dir}/<name>.png"
            )
    names, source = list(ADE20K_CLASSES), "ADE20K scene parsing (150 classes)"
    info = next((p for p in (base / "objectInfo150.csv", root / "objectInfo150.csv") if p.is_file()), None)
    if info is not None:
        with open(info, newline="") as f:
            found = [row["Name"].split(";")[0].strip() for row in csv.DictReader(f) if row.get("Name")]
        if len(found) == 150 and len(set(found)) == 150:
            names, source = found, str(info)
    lut = [INVALID] * 256
    lut[0] = 255
    for v in range(1, 151):
        lut[v] = v - 1
    samples = [s for n in SPLIT_NAMES for s in splits[n]]
    return DataSource(
        "ade20k",
        base,
        samples,
        ClassInfo(names, default_palette(150), 255),
        source,
        spec=DecodeSpec(encoding="index", lut=tuple(lut), lut_name="ADE20K (0 = other -> ignore, v -> v-1)"),
        splits=splits,
        problems=problems,
    )


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


def _coco_files(root: Path) -> list[Path]:
    cands = sorted(p for d in (root, root / "annotations") if d.is_dir() for p in d.glob("*.json"))
    found = [p for p in cands if _is_coco(p)]
    instances = [p for p in found if p.name.startswith("instances_")]
    return instances or found


def _coco_image_path(root: Path, json_path: Path, file_name: str, split_dir: str) -> Path:
    rel = Path(file_name.replace("\\", "/"))
    bases = [root, root / "images", json_path.parent, json_path.parent.parent / "images"]
    if split_dir:
        bases += [root / split_dir, root / "images" / split_dir]
    for b in bases:
        if (b / rel).is_file():
            return b / rel
    return (root / "images" / split_dir / rel) if split_dir else root / "images" / rel


def read_coco(root: Path) -> DataSource:
    """COCO-style instance JSON drawn into semantic masks.

    Class 0 is the background; the categories follow in order of their id. Overlaps: crowd
    regions are painted first as ignore, then objects from the largest area to the smallest, so
    a small object lying on a larger one stays visible and a crowd region is ignored only where
    no single object covers it.
    """
    files = _coco_files(root)
    if not files:
        raise PixelwiseError(
            f"{root}: no COCO JSON found (a .json with images, annotations, categories in {root} or {root}/annotations)"
        )
    problems: list[Problem] = []
    categories: dict[int, str] | None = None
    per_split: dict[str, list[Sample]] = {n: [] for n in SPLIT_NAMES}
    for jp in files:
        try:
            data = json.loads(jp.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise PixelwiseError(f"{jp}: cannot read this JSON ({e.__class__.__name__}); fix the file") from None
        cats = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
        if categories is None:
            categories = cats
        elif cats != categories:
            raise PixelwiseError(
                f"{jp}: its categories differ from those of {files[0]}; every file needs the same list"
            )
        split = _split_from_file_name(jp.stem) or "train"
        split_dir = next((part for part in jp.stem.split("_") if _split_of(part)), "")
        anns: dict[int, list[dict]] = {}
        for a in data.get("annotations", []):
            anns.setdefault(a.get("image_id"), []).append(a)
        label_of = {cid: i + 1 for i, cid in enumerate(sorted(cats))}
        bad_cat: list[str] = []
        for im in data.get("images", []):
            try:
                iid, name, h, w = im["id"], str(im["file_name"]), int(im["height"]), int(im["width"])
            except (KeyError, TypeError, ValueError):
                raise PixelwiseError(
                    f"{jp}: an image entry lacks id, file_name, height or width; fix the file"
                ) from None
            shapes = []
            mine = anns.get(iid, [])
            crowd = [a for a in mine if a.get("iscrowd")]
            objects = sorted(
                (a for a in mine if not a.get("iscrowd")), key=lambda a: (-float(a.get("area", 0)), a.get("id", 0))
            )
            for a in crowd + objects:
                if a.get("category_id") not in label_of:
                    bad_cat.append(f"{name} (annotation {a.get('id')}: category {a.get('category_id')})")
                    continue
                label = 255 if a.get("iscrowd") else label_of[a["category_id"]]
                seg = a.get("segmentation")
                if isinstance(seg, list):
                    shapes.append(Shape(label, "coco-polygon", tuple(tuple(p) for p in seg)))
                elif isinstance(seg, dict):
                    shapes.append(Shape(label, "rle", seg))
            path = _coco_image_path(root, jp, name, split_dir)
            vm = VectorMask(h, w, tuple(shapes), f"{jp} (image {name})")
            per_split[split].append(Sample(Path(name).stem, path, jp, vector=vm))
        if bad_cat:
            problems.append(
                Problem(
                    f"annotations in {jp} name a category that is not in its categories",
                    "fix the category ids",
                    bad_cat,
                    severity="warning",
                    skippable=False,
                )
            )
    names = ["background"] + [categories[c] for c in sorted(categories or {})]
    if len(set(names)) != len(names):
        raise PixelwiseError(f"{files[0]}: category names must be unique (and none named 'background')")
    samples = [s for n in SPLIT_NAMES for s in per_split[n]]
    stems: dict[str, int] = {}
    for s in samples:
        stems[s.stem] = stems.get(s.stem, 0) + 1
    dup = [s for s, n in stems.items() if n > 1]
    if dup:
        problems.append(
            Problem(
                "image names occur more than once in the COCO files", "give each image a unique name", dup, stems=dup
            )
        )
    classes = ClassInfo(names, default_palette(len(names)), 255)
    return DataSource(
        "coco",
        root,
        samples,
        classes,
        f"COCO categories of {', '.join(p.name for p in files)}",
        splits=per_split,
        problems=problems,
        notes=[f"COCO: {len(files)} JSON file(s); crowd regions ignored; overlaps: smaller objects on top"],
    )


def _labelme_files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.glob("*.json")) + sorted(root.glob("*/*.json")):
        try:
            head = p.read_text()[:100_000]
        except (OSError, UnicodeDecodeError):
            continue
        if '"shapes"' in head and '"imagePath"' in head:
            out.append(p)
    return out


def read_labelme(root: Path) -> DataSource:
    """LabelMe: one JSON per image (shapes in image coordinates); later shapes cover earlier ones.

    Classes: labels.txt (one per line; ``__ignore__`` = ignored pixels, ``_background_`` = class 0)
    or classes.yaml when present, otherwise ``_background_`` followed by the labels found, sorted.
    """
    files = _labelme_files(root)
    if not files:
        raise PixelwiseError(f"{root}: no LabelMe JSON files found (*.json with shapes and imagePath)")
    problems: list[Problem] = []
    notes: list[str] = []
    docs: list[tuple[Path, dict]] = []
    unreadable: list[str] = []
    for jp in files:
        try:
            docs.append((jp, json.loads(jp.read_text())))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            unreadable.append(f"{jp} ({e.__class__.__name__})")
    if unreadable:
        problems.append(Problem("LabelMe files cannot be read", "fix or remove them", unreadable))
    ignore_labels = {"__ignore__"}
    src = DataSource("labelme", root, [])
    if (root / "labels.txt").is_file():
        labels = [ln.strip() for ln in (root / "labels.txt").read_text().splitlines() if ln.strip()]
        names = [n for n in labels if n not in ignore_labels]
        if "_background_" in names:
            names.remove("_background_")
        names = ["_background_"] + names
        src.classes, src.classes_from = ClassInfo(names, default_palette(len(names)), 255), str(root / "labels.txt")
    elif (root / "classes.yaml").is_file():
        _classes_file_source(src, root / "classes.yaml")
    else:
        found = sorted(
            {str(s.get("label")) for _, d in docs for s in d.get("shapes", [])} - ignore_labels - {"_background_"}
        )
        names = ["_background_"] + found
        src.classes, src.classes_from = (
            ClassInfo(names, default_palette(len(names)), 255),
            "labels found in the JSON files",
        )
    index = {n: i for i, n in enumerate(src.classes.names)}
    ignore = src.classes.ignore_index
    unknown: list[str] = []
    unknown_stems: list[str] = []
    no_area = 0
    samples = []
    for jp, d in docs:
        try:
            h, w = int(d["imageHeight"]), int(d["imageWidth"])
            image_path = str(d["imagePath"]).replace("\\", "/")
        except (KeyError, TypeError, ValueError):
            unknown.append(f"{jp} (no imageHeight, imageWidth or imagePath)")
            unknown_stems.append(jp.stem)
            continue
        image = jp.parent / image_path
        if not image.is_file():
            alt = [jp.with_suffix(e) for e in IMAGE_EXTENSIONS if jp.with_suffix(e).is_file()]
            image = alt[0] if alt else image
        shapes = []
        for s in d.get("shapes", []):
            label = str(s.get("label"))
            kind = s.get("shape_type") or "polygon"
            pts = s.get("points") or []
            if label in ignore_labels:
                cls = ignore
            elif label in index:
                cls = index[label]
            else:
                unknown.append(f"{jp} (label '{label}')")
                unknown_stems.append(jp.stem)
                continue
            try:
                if kind == "polygon":
                    shapes.append(Shape(cls, "polygon", (tuple(v for p in pts for v in p),)))
                elif kind in ("rectangle", "circle"):
                    (x0, y0), (x1, y1) = pts[:2]
                    shapes.append(Shape(cls, kind, ((x0, y0), (x1, y1))))
                elif kind == "mask" and s.get("mask"):
                    (x0, y0) = pts[0]
                    shapes.append(Shape(cls, "bitmap", s["mask"], origin=(int(round(x0)), int(round(y0)))))
                else:
                    no_area += 1
            except (TypeError, ValueError):
                unknown.append(f"{jp} (malformed points of a {kind} shape)")
                unknown_stems.append(jp.stem)
        samples.append(Sample(jp.stem, image, jp, vector=VectorMask(h, w, tuple(shapes), str(jp))))
    if unknown:
        problems.append(
            Problem(
                "LabelMe shapes cannot be used",
                f"labels must be one of the classes ({src.classes_from}); fix the files",
                unknown,
                stems=sorted(set(unknown_stems)),
            )
        )
    if no_area:
        notes.append(f"LabelMe: {no_area} line/point shapes carry no area and were left out")
    notes.append("LabelMe: shapes painted in file order, a later shape covers an earlier one")
    stems: dict[str, int] = {}
    for s in samples:
        stems[s.stem] = stems.get(s.stem, 0) + 1
    dup = [s for s, n in stems.items() if n > 1]
    if dup:
        problems.append(Problem("LabelMe files share a name in different folders", "rename them", dup, stems=dup))
    src.samples, src.problems, src.notes = samples, problems, notes
    return src


FORMATS: dict[str, Callable[[Path], DataSource]] = {
    "folder": read_folder,
    "voc": read_voc,
    "cityscapes": read_cityscapes,
    "camvid": read_camvid,
    "camvid-color": read_camvid_color,
    "ade20k": read_ade20k,
    "coco": read_coco,
    "labelme": read_labelme,
}


def detect_format(root: str | Path) -> tuple[str, str]:
    """Recognise a data set by its layout; returns (format name, the evidence, for the user)."""
    root = Path(root)
    if not root.is_dir():
        raise PixelwiseError(f"{root}: data folder not found; give the folder that holds the data set")
    if _voc_base(root) is not None:
        return "voc", "JPEGImages/ and SegmentationClass/"
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes", "leftImg8bit/ and gtFine/"
    base = _ade_base(root)
    if (base / "images" / "training").is_dir() and (base / "annotations" / "training").is_dir():
        return "ade20k", "images/training/ and annotations/training/"
    if any((root / s).is_dir() and (root / f"{s}annot").is_dir() for s in SPLIT_NAMES):
        return "camvid", "train/ and trainannot/ (SegNet CamVid)"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folder", "images/ and masks/"
    if _coco_files(root):
        return "coco", "a COCO JSON with images, annotations and categories"
    if _labelme_files(root):
        return "labelme", "LabelMe JSON files with shapes and imagePath"
    if any(p.stem.endswith("_L") for pattern in ("*_L.png", "*/*_L.png") for p in root.glob(pattern)):
        return "camvid-color", "colour-coded <name>_L.png labels"
    raise PixelwiseError(
        f"{root}: data set format not recognised; expected images/ + masks/ (pixelwise layout), or one of "
        f"{', '.join(n for n in FORMATS if n != 'folder')} (see --format)"
    )


def load_source(root: str | Path, format: str = "auto") -> tuple[DataSource, str]:
    """Run the reader of ``format`` (detected when "auto"); returns the source and a line saying which."""
    root = Path(root)
    if format in (None, "", "auto"):
        format, why = detect_format(root)
        line = f"format: {format} (detected: {why})"
    elif format not in FORMATS:
        raise PixelwiseError(f"unknown format '{format}'; use one of {', '.join(FORMATS)} or auto")
    else:
        if not root.is_dir():
            raise PixelwiseError(f"{root}: data folder not found")
        line = f"format: {format} (given)"
    return FORMATS[format](root), line


@dataclass
class ScannedData:
    """A data set read once: its source, splits, the checks of every sample, problems and notes."""

    source: DataSource
    splits: dict[str, list[Sample]]
    result: CheckResult
    problems: list[Problem]
    notes: list[str]


def scan_dataset(
    root: str | Path,
    format: str = "auto",
    encoding: str = "auto",
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    classes: ClassInfo | None = None,
    classes_file: str | Path | None = None,
    validate_splits: tuple[str, ...] = SPLIT_NAMES,
    resize_masks: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    skip_missing: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> ScannedData:
    """Read a data set of any format and check every sample of ``validate_splits``; raises only when
    the data set as a whole cannot be understood (no folder, unknown format, bad classes file)."""
    if encoding not in ENCODINGS:
        raise PixelwiseError(f"unknown encoding '{encoding}'; use one of {', '.join(ENCODINGS)}")
    if resize_masks not in (None, "", "nearest"):
        raise PixelwiseError(
            f"--resize-masks {resize_masks}: only 'nearest' is offered (a class index is never interpolated)"
        )
    if max_pixels < 1:
        raise PixelwiseError("--max-pixels must be at least 1")
    src, line = load_source(root, format)
    notes = [line]
    if classes_file:
        _classes_file_source(src, Path(classes_file))
    if src.classes_from:
        notes.append(
            f"classes: {src.classes.num_classes} from {src.classes_from}, ignore index {src.classes.ignore_index}"
        )
    if classes is not None:
        if src.classes is not None and src.classes.names != classes.names:
            raise PixelwiseError(
                f"{src.classes_from or root} lists {src.classes.names}, the model was trained on {classes.names}; "
                "evaluate on data with the model's classes"
            )
        effective = classes
    else:
        effective = src.classes
    spec = replace(
        src.spec,
        colors=tuple(tuple(c) for c in src.colors),
        ignore_colors=tuple(tuple(c) for c in src.ignore_colors),
        resize_masks=resize_masks or None,
        max_pixels=max_pixels,
        ignore_index=effective.ignore_index if effective else 255,
    )
    if encoding != "auto":
        spec = replace(
            spec,
            encoding=encoding,
            lut=() if encoding in ("rgb", "binary") else spec.lut,
            lut_name="" if encoding in ("rgb", "binary") else spec.lut_name,
        )
    if src.splits is not None:
        splits = {n: list(src.splits.get(n, [])) for n in SPLIT_NAMES}
        if not splits["val"] and val_fraction > 0 and len(splits["train"]) >= 2:
            held = seeded_split(root, splits["train"], val_fraction, 0.0, seed)
            splits["train"], splits["val"] = held["train"], held["val"]
            notes.append(
                f"no validation split in the data set: {len(held['val'])} training samples held out "
                f"(--val-fraction {val_fraction}, seed {seed})"
            )
    else:
        if not src.samples:
            splits = {n: [] for n in SPLIT_NAMES}
        else:
            splits = split_samples(src.root, src.samples, val_fraction, test_fraction, seed, skip_missing=skip_missing)
    seen: set[str] = set()
    to_check = []
    for n in validate_splits:
        for s in splits.get(n, []):
            if s.stem not in seen:
                seen.add(s.stem)
                to_check.append(s)
    result = check_samples(to_check, effective, spec, workers=workers, progress=progress)
    return ScannedData(src, splits, result, src.problems + result.problems, notes + src.notes + result.notes)


def open_dataset(
    root: str | Path,
    format: str = "auto",
    encoding: str = "auto",
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    classes: ClassInfo | None = None,
    classes_file: str | Path | None = None,
    validate_splits: tuple[str, ...] = SPLIT_NAMES,
    resize_masks: str | None = None,
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    progress: bool = False,
) -> FolderDataset:
    """Read, split and validate a data set of any format for training or evaluation.

    Every problem stops it with one line naming the files, unless ``skip_bad``: then the samples
    with problems are left out and listed in ``FolderDataset.skipped`` (problems of the data set
    as a whole still stop it). The returned samples carry the resolved decode spec, so
    :func:`pixelwise.data.folder.read_sample` decodes them as validation did.
    """
    scanned = scan_dataset(
        root,
        format,
        encoding,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        classes=classes,
        classes_file=classes_file,
        validate_splits=validate_splits,
        resize_masks=resize_masks,
        max_pixels=max_pixels,
        skip_missing=skip_bad,
        workers=workers,
        progress=progress,
    )
    result, splits = scanned.result, scanned.splits
    errs = [p for p in scanned.problems if p.severity == "error"]
    skipped: list[str] = []
    if errs:
        fatal = [p for p in errs if not p.skippable]
        if not skip_bad or fatal:
            raise_first(fatal or errs)
        drop = set(result.bad)
        for p in errs:
            drop |= set(p.stems)
            skipped += p.items
        splits = {n: [s for s in ss if s.stem not in drop] for n, ss in splits.items()}
    if not any(splits.get(n) for n in validate_splits):
        raise PixelwiseError(
            f"{root}: the {'/'.join(validate_splits)} split is empty"
            + (" after --skip-bad" if skipped else "")
            + f"; choose another split or list names in {root}/splits/<split>.txt"
        )
    if "train" in validate_splits and not splits["train"]:
        raise PixelwiseError(
            f"{root}: the train split is empty" + (" after --skip-bad" if skipped else "") + "; add training samples"
        )
    spec = result.spec
    splits = {n: [replace(s, spec=spec) for s in ss] for n, ss in splits.items()}
    train_stems = [s.stem for s in splits["train"] if s.stem in result.report.values]
    report = result.report.subset(train_stems, result.classes.num_classes, result.classes.ignore_index)
    warnings = [p for p in scanned.problems if p.severity == "warning"]
    return FolderDataset(
        root=Path(root),
        classes=result.classes,
        splits=splits,
        report=report,
        format=scanned.source.format,
        spec=spec,
        notes=scanned.notes,
        skipped=skipped,
        warnings=warnings,
    )
