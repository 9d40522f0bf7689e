"""Cityscapes fine annotations: leftImg8bit/<split>/<city>/*_leftImg8bit.png with
gtFine/<split>/<city>/*_gtFine_labelIds.png; label ids mapped to the 19 training ids, every other
id ignored. Object ids come from the ``*_gtFine_instanceIds.png`` beside each mask when it is there.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ...classes import ClassInfo
from ..encodings import INVALID
from ..pairing import pair_by_stem
from ..types import IMAGE_EXTENSIONS, SPLIT_NAMES, DataSource, DecodeSpec, Problem, Sample

# (label id, name, colour) of the 19 classes used for training, in train-id order.
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
# The training classes Cityscapes annotates object by object (instanceIds >= 1000).
CITYSCAPES_THINGS = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
_INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
CITYSCAPES_NUM_IDS = 34  # label ids 0..33; every id not in the table above is ignored
_IMAGE_SUFFIX = "_leftImg8bit"
_MASK_SUFFIX = "_gtFine_labelIds.png"


def _label_id_table() -> tuple[int, ...]:
    """Stored label id -> train id; the other ids of the data set -> 255 (ignored); unknown ids INVALID."""
    lut = [INVALID] * 256
    for i in range(CITYSCAPES_NUM_IDS):
        lut[i] = 255
    lut[255] = 255
    for train_id, (label_id, _, _) in enumerate(CITYSCAPES_TRAIN):
        lut[label_id] = train_id
    return tuple(lut)


def _split_files(left: Path, gt: Path, split: str) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Images and labelId masks of one split, by the name they share (city_seq_frame)."""
    images: dict[str, list[Path]] = {}
    for p in sorted((left / split).glob(f"*/*{_IMAGE_SUFFIX}.*")):
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            images.setdefault(p.stem[: -len(_IMAGE_SUFFIX)], []).append(p)
    masks: dict[str, list[Path]] = {}
    for p in sorted((gt / split).glob(f"*/*{_MASK_SUFFIX}")):
        masks.setdefault(p.name[: -len(_MASK_SUFFIX)], []).append(p)
    return images, masks


def read_cityscapes(root: Path) -> DataSource:
    """Cityscapes fine annotations: labelIds mapped to the 19 training ids, every other id ignored."""
    left, gt = root / "leftImg8bit", root / "gtFine"
    problems: list[Problem] = []
    splits: dict[str, list[Sample]] = {n: [] for n in SPLIT_NAMES}
    notes: list[str] = []
    for split in SPLIT_NAMES:
        if not (left / split).is_dir():
            continue
        images, masks = _split_files(left, gt, split)
        if images and not masks:
            notes.append(f"{left / split}: no gtFine labelIds masks for this split; left out")
            continue
        splits[split], unpaired = pair_by_stem(
            images, masks, f"gtFine/{split}/<city>/<name>{_MASK_SUFFIX}", where=f"{left / split}"
        )
        problems += unpaired
    classes = ClassInfo([n for _, n, _ in CITYSCAPES_TRAIN], [c for _, _, c in CITYSCAPES_TRAIN], 255)
    splits = {n: [_with_instances(s) for s in ss] for n, ss in splits.items()}
    src = DataSource(
        "cityscapes",
        root,
        [s for n in SPLIT_NAMES for s in splits[n]],
        classes,
        "Cityscapes (19 training classes)",
        spec=DecodeSpec(encoding="index", lut=_label_id_table(), lut_name="Cityscapes labelId -> trainId"),
        splits=splits,
        problems=problems,
        notes=notes,
        default_things=CITYSCAPES_THINGS,
        things_from="Cityscapes",
    )
    return src


def _with_instances(sample: Sample) -> Sample:
    """The sample with its ``_gtFine_instanceIds.png`` (beside the labelIds mask) when there is one."""
    path = sample.mask.with_name(sample.mask.name[: -len(_MASK_SUFFIX)] + _INSTANCE_SUFFIX)
    return replace(sample, instances=path) if path.is_file() else sample
