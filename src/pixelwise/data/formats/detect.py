"""Recognise a data set's format by its layout, before any reader runs."""

from __future__ import annotations

from pathlib import Path

from ...errors import PixelwiseError
from .ade20k import is_ade20k
from .camvid import has_camvid_labels, is_camvid_segnet
from .coco import coco_files
from .labelme import labelme_files
from .voc import voc_base

# Named when nothing matches, in the order of FORMATS (see pixelwise.data.formats).
_OTHER_FORMATS = ("voc", "cityscapes", "camvid", "camvid-color", "ade20k", "coco", "labelme")


def detect_format(root: str | Path) -> tuple[str, str]:
    """Recognise a data set by its layout; returns (format name, the evidence, for the user).

    Layouts are tried from the most specific to the least, so a data set whose folders happen to
    include images/ and masks/ is still recognised by its own layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise PixelwiseError(f"{root}: data folder not found; give the folder that holds the data set")
    if voc_base(root) is not None:
        return "voc", "JPEGImages/ and SegmentationClass/"
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes", "leftImg8bit/ and gtFine/"
    if is_ade20k(root):
        return "ade20k", "images/training/ and annotations/training/"
    if is_camvid_segnet(root):
        return "camvid", "train/ and trainannot/ (SegNet CamVid)"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folder", "images/ and masks/"
    if coco_files(root):
        return "coco", "a COCO JSON with images, annotations and categories"
    if labelme_files(root):
        return "labelme", "LabelMe JSON files with shapes and imagePath"
    if has_camvid_labels(root):
        return "camvid-color", "colour-coded <name>_L.png labels"
    raise PixelwiseError(
        f"{root}: data set format not recognised; expected images/ + masks/ (pixelwise layout), or one of "
        f"{', '.join(_OTHER_FORMATS)} (see --format)"
    )
