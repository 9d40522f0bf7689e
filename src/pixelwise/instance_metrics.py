"""Instance and panoptic scores: mask AP through COCOeval, panoptic quality.

Both scores take label maps, not files: an ``(H, W)`` integer map of segment ids (0 = no segment)
and a dictionary from id to class index, for the ground truth and for the prediction of one image
at a time (``add``), then ``summary()`` over every image added. Every figure is a fraction in
[0, 1], or ``None`` where there was nothing to score.

- :class:`MaskAP` is the COCO mask average precision of the thing classes (pycocotools' own
  ``COCOeval(iouType="segm")``, so the numbers are COCO's).
- :class:`PanopticQuality` is PQ = SQ x RQ (Kirillov et al., "Panoptic Segmentation", CVPR 2019),
  computed as the reference ``panopticapi`` computes it; the rules are in the class docstring.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .errors import PixelwiseError

# COCOeval's IoU thresholds are 0.50, 0.55, ..., 0.95: index 0 is AP50, index 5 is AP75.
_IOU_50, _IOU_75 = 0, 5


def _check_maps(what: str, ids: np.ndarray, categories: dict[int, int], shape=None) -> np.ndarray:
    """``ids`` as a 2-D int64 array whose every positive id has a class; one-line error otherwise."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise PixelwiseError(f"{what} ids must be an (H, W) integer map, got {ids.dtype} of shape {ids.shape}")
    if shape is not None and ids.shape != tuple(shape):
        raise PixelwiseError(f"{what} ids are {ids.shape[0]}x{ids.shape[1]}, the ground truth {shape[0]}x{shape[1]}")
    present = np.unique(ids)
    missing = [int(i) for i in present if i > 0 and int(i) not in categories]
    if missing:
        raise PixelwiseError(f"{what} ids {missing[:5]} have no class: give each id > 0 a class in its categories")
    return ids.astype(np.int64, copy=False)


def _check_region(what: str, region, shape) -> np.ndarray | None:
    """An optional ``(H, W)`` bool region of the image's shape."""
    if region is None:
        return None
    region = np.asarray(region, dtype=bool)
    if region.shape != tuple(shape):
        raise PixelwiseError(f"the {what} map is {region.shape}, the ground truth {tuple(shape)}: give one of its size")
    return region


def _rle(binary: np.ndarray) -> dict:
    """COCO run-length encoding of an ``(H, W)`` bool mask (counts as str, JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _mean_valid(precision: np.ndarray) -> float | None:
    """COCO's average of a precision slice: entries of -1 (no ground truth) left out; None if all are."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


class MaskAP:
    """COCO mask average precision of the thing classes over a set of images.

    Each image's objects become COCO annotations (run-length encoded masks, ``pycocotools.mask``)
    and pycocotools' ``COCOeval(iouType="segm")`` scores them with COCO's own rules:

    - detections, highest score first, each match the unmatched ground-truth object of their class
      with the highest mask IoU at or above the threshold; AP is the area under the 101-point interpolated
      precision-recall curve; ``AP`` averages the thresholds 0.50:0.05:0.95, ``AP50`` and ``AP75``
      are the single thresholds; at most 100 detections per image are kept (highest scores), all
      object sizes;
    - crowd regions are ground-truth annotations with ``iscrowd=1``: a detection on one is neither
      a true nor a false positive (its overlap with a crowd region is measured over the detection's
      own area), and a crowd region is never missed;
    - the mean runs over the classes that have ground truth; a class with none has AP ``None``;
    - images with no object and no detection count as images (``"images"``) and change no AP.
    """

    def __init__(self, categories: Sequence[int], names: Sequence[str]):
        """``categories``: the thing class indices scored; ``names``: class names indexed by class index
        (a list as long as ``categories`` is taken in their order)."""
        self.categories = [int(c) for c in categories]
        if len(set(self.categories)) != len(self.categories):
            raise PixelwiseError(f"MaskAP: categories {self.categories} repeat a class; give each once")
        if len(names) > max(self.categories, default=-1):
            self.names = {c: str(names[c]) for c in self.categories}
        elif len(names) == len(self.categories):
            self.names = {c: str(n) for c, n in zip(self.categories, names)}
        else:
            raise PixelwiseError(f"MaskAP: {len(names)} names for classes up to {max(self.categories)}")
        self._images: list[dict] = []
        self._gt: list[dict] = []
        self._dt: list[dict] = []

    def add(
        self,
        gt_ids: np.ndarray,
        gt_categories: dict[int, int],
        pred_ids: np.ndarray,
        pred_categories: dict[int, int],
        pred_scores: dict[int, float],
        crowd: np.ndarray | None = None,
        crowd_categories: Sequence[int] | None = None,
    ) -> None:
        """Add one image.

        ``gt_ids``/``pred_ids``: ``(H, W)`` integer object ids, 0 = no object; ``*_categories``: id ->
        class index; ``pred_scores``: id -> confidence in [0, 1] (ranks the detections; a missing
        score counts as 1). ``crowd``: ``(H, W)`` bool crowd regions, a crowd annotation of every
        scored class, or of ``crowd_categories`` only when given. Objects of classes not scored are
        left out.
        """
        gt_ids = _check_maps("ground-truth", gt_ids, gt_categories)
        pred_ids = _check_maps("predicted", pred_ids, pred_categories, gt_ids.shape)
        crowd = _check_region("crowd", crowd, gt_ids.shape)
        image_id = len(self._images) + 1
        height, width = gt_ids.shape
        self._images.append({"id": image_id, "height": height, "width": width})
        scored = set(self.categories)
        for obj in np.unique(gt_ids[gt_ids > 0]):
            if gt_categories[int(obj)] in scored:
                self._gt.append(self._annotation(image_id, gt_ids == obj, gt_categories[int(obj)], iscrowd=0))
        if crowd is not None and crowd.any():
            for cat in scored if crowd_categories is None else set(crowd_categories) & scored:
                self._gt.append(self._annotation(image_id, crowd, cat, iscrowd=1))
        for obj in np.unique(pred_ids[pred_ids > 0]):
            if pred_categories[int(obj)] in scored:
                ann = self._annotation(image_id, pred_ids == obj, pred_categories[int(obj)], iscrowd=0)
                ann["score"] = float(pred_scores.get(int(obj), 1.0))
                self._dt.append(ann)

    @staticmethod
    def _annotation(image_id: int, binary: np.ndarray, category: int, iscrowd: int) -> dict:
        """One COCO annotation of an ``(H, W)`` bool mask; ids are given when the set is built."""
        rle = _rle(binary)
        return {
            "image_id": image_id,
            "category_id": int(category),
            "segmentation": rle,
            "area": float(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "iscrowd": iscrowd,
        }

    def _coco(self, annotations: list[dict]) -> COCO:
        """A pycocotools COCO set of this object's images and ``annotations`` (quietly: it prints)."""
        coco = COCO()
        coco.dataset = {
            "images": list(self._images),
            "categories": [{"id": c, "name": self.names[c]} for c in self.categories],
            "annotations": [{**ann, "id": i + 1} for i, ann in enumerate(annotations)],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def summary(self) -> dict:
        """``{"AP", "AP50", "AP75", "per_class": {name: AP}, "images", "objects", "detections"}``.

        AP figures are fractions in [0, 1], ``None`` when no image had a ground-truth object of a
        scored class (or no image was added); ``"objects"`` counts non-crowd ground-truth objects.
        """
        result = {
            "AP": None,
            "AP50": None,
            "AP75": None,
            "per_class": {self.names[c]: None for c in self.categories},
            "images": len(self._images),
            "objects": sum(1 for ann in self._gt if not ann["iscrowd"]),
            "detections": len(self._dt),
        }
        if not self._images or not self.categories:
            return result
        evaluator = COCOeval(self._coco(self._gt), self._coco(self._dt), iouType="segm")
        evaluator.params.imgIds = [image["id"] for image in self._images]
        evaluator.params.catIds = list(self.categories)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
        # precision: (IoU thresholds, recall points, classes, area ranges, max detections);
        # area range 0 is "all", max detections -1 is 100.
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        result["AP"] = _mean_valid(precision)
        result["AP50"] = _mean_valid(precision[_IOU_50])
        result["AP75"] = _mean_valid(precision[_IOU_75])
        for k, cat in enumerate(evaluator.params.catIds):
            result["per_class"][self.names[cat]] = _mean_valid(precision[:, :, k])
        return result


class PanopticQuality:
    """Panoptic quality PQ = SQ x RQ per class and averaged, as ``panopticapi`` computes it.

    Per image, a ground-truth segment and a predicted segment of the same class match when their
    IoU is above 0.5 (so at most one match each). The rules, each from the reference code:

    - void: ground-truth pixels in ``void`` (default: where ``gt_ids`` is 0) are not scored. The IoU
      of a pair leaves out the predicted segment's pixels that fall on void:
      ``IoU = |G & P| / (|G| + |P| - |G & P| - |P & void|)``. Pixels where the prediction has no
      segment (``pred_ids`` 0) still count in the ground-truth segment's area.
    - a matched pair is a true positive (TP) of its class and adds its IoU to the class's sum;
    - an unmatched ground-truth segment is a false negative (FN), unless it is crowd;
    - a ground-truth crowd segment (``gt_crowd[id]`` true) is never matched and never counted;
    - an unmatched predicted segment is a false positive (FP), unless more than half of its area
      lies on void or on crowd segments of its own class;
    - per class: ``SQ = IoU sum / TP`` (0 without TP), ``RQ = TP / (TP + FP/2 + FN/2)``,
      ``PQ = SQ x RQ``; a class with TP + FP + FN = 0 is left out of every mean (its figures are None);
    - ``PQ``/``SQ``/``RQ`` are means over those classes; ``"things"`` and ``"stuff"`` the same means
      over the thing classes and over the other classes. Counts add up over the images first
      (dataset-level), then the ratios are taken.

    Stuff segments follow the same rules as things (one segment per stuff class and image, as in a
    COCO panoptic file). Unlike panopticapi, several crowd segments of one class in an image are
    all honoured (panopticapi keeps the last one).
    """

    def __init__(self, num_classes: int, things: Sequence[int], names: Sequence[str]):
        """``num_classes`` classes indexed 0..num_classes-1; ``things``: the thing class indices;
        ``names``: the class names by index."""
        if num_classes < 1 or len(names) != num_classes:
            raise PixelwiseError(f"PanopticQuality: {len(names)} names for {num_classes} classes; give one name each")
        self.things = tuple(sorted({int(t) for t in things}))
        if any(t < 0 or t >= num_classes for t in self.things):
            raise PixelwiseError(f"PanopticQuality: thing classes {self.things} outside 0..{num_classes - 1}")
        self.num_classes = num_classes
        self.names = [str(n) for n in names]
        self.tp = np.zeros(num_classes, np.int64)
        self.fp = np.zeros(num_classes, np.int64)
        self.fn = np.zeros(num_classes, np.int64)
        self.iou = np.zeros(num_classes, np.float64)
        self.images = 0

    def _class_of(self, what: str, categories: dict[int, int], ids) -> dict[int, int]:
        """id -> class for the ``ids`` present, each checked to lie in 0..num_classes-1."""
        out = {int(i): int(categories[int(i)]) for i in ids}
        bad = {i: c for i, c in out.items() if not 0 <= c < self.num_classes}
        if bad:
            raise PixelwiseError(f"{what} segments {bad} have classes outside 0..{self.num_classes - 1}")
        return out

    def add(
        self,
        gt_ids: np.ndarray,
        gt_categories: dict[int, int],
        pred_ids: np.ndarray,
        pred_categories: dict[int, int],
        void: np.ndarray | None = None,
        gt_crowd: dict[int, bool] | None = None,
    ) -> None:
        """Add one image: ``(H, W)`` integer segment ids (0 = none) and id -> class dictionaries;
        ``void``: ``(H, W)`` bool pixels not scored (default ``gt_ids == 0``); ``gt_crowd``: id -> bool."""
        gt_ids = _check_maps("ground-truth", gt_ids, gt_categories)
        pred_ids = _check_maps("predicted", pred_ids, pred_categories, gt_ids.shape)
        void = _check_region("void", void, gt_ids.shape)
        void = gt_ids == 0 if void is None else void
        # Ground-truth key per pixel: -1 void, 0 no segment but scored, else the segment id.
        gt_key = np.where(void, -1, gt_ids)
        overlaps = self._overlaps(gt_key, pred_ids)
        gt_area = {g: a for (g, p), a in _sum_by(overlaps, 0).items() if g > 0}
        pred_area = {p: a for (g, p), a in _sum_by(overlaps, 1).items() if p > 0}
        gt_class = self._class_of("ground-truth", gt_categories, gt_area)
        pred_class = self._class_of("predicted", pred_categories, pred_area)
        crowd = {g for g in gt_area if gt_crowd and gt_crowd.get(g, False)}
        matched_gt, matched_pred = set(), set()
        for (g, p), inter in overlaps.items():
            if g <= 0 or p <= 0 or g in crowd or gt_class[g] != pred_class[p]:
                continue
            union = gt_area[g] + pred_area[p] - inter - overlaps.get((-1, p), 0)
            iou = inter / union
            if iou > 0.5:
                self.tp[gt_class[g]] += 1
                self.iou[gt_class[g]] += iou
                matched_gt.add(g)
                matched_pred.add(p)
        for g, cls in gt_class.items():
            if g not in matched_gt and g not in crowd:
                self.fn[cls] += 1
        for p, cls in pred_class.items():
            if p in matched_pred:
                continue
            ignored = overlaps.get((-1, p), 0)
            ignored += sum(overlaps.get((g, p), 0) for g in crowd if gt_class[g] == cls)
            if ignored / pred_area[p] <= 0.5:
                self.fp[cls] += 1
        self.images += 1

    @staticmethod
    def _overlaps(gt_key: np.ndarray, pred_ids: np.ndarray) -> dict[tuple[int, int], int]:
        """Pixel counts of every (ground-truth key, predicted id) pair present in the image."""
        g = gt_key.ravel() + 1  # >= 0
        p = pred_ids.ravel()
        base = int(p.max(initial=0)) + 1
        pairs, counts = np.unique(g * base + p, return_counts=True)
        return {(int(k // base) - 1, int(k % base)): int(n) for k, n in zip(pairs, counts)}

    def _means(self, classes: Sequence[int], pq, sq, rq) -> dict:
        """PQ/SQ/RQ means over ``classes`` that had any segment; None where none had."""
        counted = [c for c in classes if self.tp[c] + self.fp[c] + self.fn[c] > 0]
        if not counted:
            return {"PQ": None, "SQ": None, "RQ": None}
        return {
            "PQ": float(np.mean(pq[counted])),
            "SQ": float(np.mean(sq[counted])),
            "RQ": float(np.mean(rq[counted])),
        }

    def summary(self) -> dict:
        """``{"PQ", "SQ", "RQ", "things": {PQ, SQ, RQ}, "stuff": {...}, "per_class": {name: {"PQ",
        "SQ", "RQ", "TP", "FP", "FN"}}, "images"}``; fractions in [0, 1], None where nothing was scored."""
        denominator = self.tp + 0.5 * self.fp + 0.5 * self.fn
        sq = np.divide(self.iou, self.tp, out=np.zeros(self.num_classes), where=self.tp > 0)
        rq = np.divide(self.tp, denominator, out=np.zeros(self.num_classes), where=denominator > 0)
        pq = sq * rq
        stuff = [c for c in range(self.num_classes) if c not in self.things]
        result = self._means(range(self.num_classes), pq, sq, rq)
        result["things"] = self._means(self.things, pq, sq, rq)
        result["stuff"] = self._means(stuff, pq, sq, rq)
        result["per_class"] = {}
        for c, name in enumerate(self.names):
            scored = denominator[c] > 0
            result["per_class"][name] = {
                "PQ": float(pq[c]) if scored else None,
                "SQ": float(sq[c]) if scored else None,
                "RQ": float(rq[c]) if scored else None,
                "TP": int(self.tp[c]),
                "FP": int(self.fp[c]),
                "FN": int(self.fn[c]),
            }
        result["images"] = self.images
        return result


def _sum_by(overlaps: dict[tuple[int, int], int], side: int) -> dict[tuple[int, int], int]:
    """Areas of one side's keys: ``{(g, 0) or (0, p): pixels}`` summed over the other side."""
    out: dict[tuple[int, int], int] = {}
    for pair, n in overlaps.items():
        key = (pair[0], 0) if side == 0 else (0, pair[1])
        out[key] = out.get(key, 0) + n
    return out
