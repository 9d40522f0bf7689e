"""Data set formats: each reader turns a folder as it is shipped into the same samples and classes.

``FORMATS`` maps a name to a reader ``reader(root: Path) -> DataSource`` (see
:class:`pixelwise.data.types.DataSource`); :func:`detect_format` recognises a folder by its
layout. One module per reader:

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

from collections.abc import Callable
from pathlib import Path

from ..types import DataSource
from .ade20k import read_ade20k
from .camvid import read_camvid, read_camvid_color
from .cityscapes import read_cityscapes
from .coco import read_coco
from .detect import detect_format
from .folder import read_folder
from .labelme import read_labelme
from .voc import read_voc

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

__all__ = ["FORMATS", "detect_format"]
