"""Pascal VOC 2012 segmentation: SegmentationClass/*.png paired with JPEGImages/*.jpg.

Palette PNG masks of the 21 VOC classes; 255 (the outline around objects) is ignored. Splits
come from ImageSets/Segmentation/{train,val}.txt.
"""

from __future__ import annotations

from pathlib import Path

from ...classes import ClassInfo, default_palette
from ...errors import PixelwiseError
from ..pairing import files_by_stem, pair_by_stem
from ..splits import read_lines
from ..types import IMAGE_EXTENSIONS, SPLIT_NAMES, DataSource, Problem, Sample

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


def voc_base(root: Path) -> Path | None:
    """The VOC2012 folder under ``root`` (``root`` itself, VOC2012/ or VOCdevkit/VOC2012/), or None."""
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and (cand / "SegmentationClass").is_dir():
            return cand
    return None


def _voc_splits(sets: Path, samples: list[Sample], src: DataSource) -> dict[str, list[Sample]]:
    """The samples each ImageSets/Segmentation/<split>.txt lists; a list with no annotated image is left out."""
    by_stem = {s.stem: s for s in samples}
    splits: dict[str, list[Sample]] = {n: [] for n in SPLIT_NAMES}
    for name in SPLIT_NAMES:
        path = sets / f"{name}.txt"
        if not path.is_file():
            continue
        stems = [ln.split()[0] for ln in read_lines(path) if ln.strip()]
        missing = [s for s in stems if s not in by_stem]
        if stems and len(missing) == len(stems):
            src.notes.append(f"{path}: none of its {len(stems)} images has a mask (not annotated); left out")
            continue
        if missing:
            src.problems.append(
                Problem(
                    f"names in {path} have no image/mask pair",
                    "add the files or remove the names",
                    missing,
                    stems=missing,
                    one=f"name in {path} has no image/mask pair",
                )
            )
        splits[name] = [by_stem[s] for s in stems if s in by_stem]
    return splits


def read_voc(root: Path) -> DataSource:
    """Pascal VOC 2012 segmentation: SegmentationClass/*.png paired with JPEGImages/*.jpg."""
    base = voc_base(root)
    if base is None:
        raise PixelwiseError(f"{root}: not a Pascal VOC folder (needs JPEGImages/ and SegmentationClass/)")
    masks = {p.stem: [p] for p in sorted((base / "SegmentationClass").glob("*.png"))}
    all_images = files_by_stem(base / "JPEGImages", IMAGE_EXTENSIONS)
    # Only images with a mask are samples: most of JPEGImages/ is not annotated for segmentation.
    images = {s: all_images[s] for s in masks if s in all_images}
    samples, problems = pair_by_stem(images, masks, "the image to JPEGImages/", where=str(base / "SegmentationClass"))
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
        src.splits = _voc_splits(sets, samples, src)
    return src
