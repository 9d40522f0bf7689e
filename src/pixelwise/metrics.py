"""Segmentation metrics from one dataset-level confusion matrix.

Every figure (IoU, Dice, accuracies) is derived from a single confusion matrix accumulated over the
whole evaluation set, never averaged per image: a per-image mean would give a 10-pixel crop the
same say as a full frame and would make a class missing from one image count as a perfect (or a
failed) score there.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "AGGREGATION",
    "BoundaryIoU",
    "ConfusionMatrix",
    "boundary_distance",
    "boundary_region",
    "compute_metrics",
    "format_metrics_table",
]

AGGREGATION = (
    "dataset-level confusion matrix; ignore index not counted; "
    "classes absent from both ground truth and prediction excluded from means"
)


def _as_index_tensor(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Return ``x`` as an int64 tensor; reject floats, which would mean logits were passed by mistake."""
    t = torch.as_tensor(x)
    if t.is_floating_point() or t.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    return t.long()


class ConfusionMatrix:
    """Accumulates a (C, C) pixel confusion matrix over a dataset.

    Rows are ground-truth classes, columns predicted classes; entry (i, j) counts pixels of true
    class i predicted as j. Pixels whose target equals ``ignore_index`` are not counted.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add one batch of predictions.

        Args:
            pred: integer class indices, any shape, e.g. (N, H, W) or (H, W).
            target: integer class indices, same shape as ``pred``; ``ignore_index`` marks pixels
                that are not counted.

        Counting runs on the tensors' device (the stored matrix follows it). A target outside
        [0, C) that is not ``ignore_index``, or a prediction outside [0, C) at a counted pixel,
        raises ValueError: the data layer validates masks, so this is a bug upstream. Predictions
        at ignored pixels are not looked at.
        """
        p = _as_index_tensor(pred, "pred")
        t = _as_index_tensor(target, "target")
        if p.shape != t.shape:
            raise ValueError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
        if p.device != t.device:
            raise ValueError(f"pred and target are on different devices: {p.device} vs {t.device}")

        valid = t != self.ignore_index
        t = t[valid]
        p = p[valid]
        c = self.num_classes
        if t.numel() > 0:
            # One min/max pair each instead of a full comparison mask; this is the only host sync.
            t_min, t_max = int(t.min()), int(t.max())
            if t_min < 0 or t_max >= c:
                bad = t_min if t_min < 0 else t_max
                raise ValueError(f"target value {bad} outside [0, {c}) and not the ignore index {self.ignore_index}")
            p_min, p_max = int(p.min()), int(p.max())
            if p_min < 0 or p_max >= c:
                bad = p_min if p_min < 0 else p_max
                raise ValueError(f"prediction value {bad} outside [0, {c})")

        counts = torch.bincount(c * t + p, minlength=c * c).reshape(c, c)
        if self._matrix.device != counts.device:
            self._matrix = self._matrix.to(counts.device)
        self._matrix += counts

    @property
    def matrix(self) -> torch.Tensor:
        """(C, C) int64 counts; rows = ground truth, columns = prediction."""
        return self._matrix

    def reset(self) -> None:
        """Zero all counts (keeps the device)."""
        self._matrix.zero_()

    def merge(self, other: ConfusionMatrix) -> None:
        """Add the counts of ``other`` (same number of classes) into this matrix."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one")
        self._matrix += other.matrix.to(self._matrix.device)

    def all_reduce(self) -> None:
        """Sum the matrix over all processes when torch.distributed is initialised; else no-op."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return
        # NCCL only reduces CUDA tensors; a rank that saw no batch still holds a CPU matrix.
        if dist.get_backend() == "nccl" and self._matrix.device.type != "cuda":
            self._matrix = self._matrix.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(self._matrix, op=dist.ReduceOp.SUM)

    def compute(self, class_names: list[str] | None = None) -> dict:
        """Metrics of the accumulated matrix; see :func:`compute_metrics`."""
        return compute_metrics(self._matrix.detach().cpu().numpy(), class_names)


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(sum(kept) / len(kept)) if kept else None


def compute_metrics(cm: np.ndarray, class_names: list[str] | None = None) -> dict:
    """Derive segmentation metrics from a confusion matrix.

    Args:
        cm: (C, C) non-negative pixel counts, rows = ground truth, columns = prediction.
        class_names: C names; defaults to "class_0", "class_1", ...

    Returns:
        A JSON-serialisable dict (plain float/int/None). Ratios are fractions in [0, 1]:
        ``pixel_accuracy``, ``mean_accuracy`` (over classes with ground-truth pixels), ``miou``,
        ``mean_dice``, ``fwiou`` (means over *present* classes, i.e. gt + pred pixels > 0),
        ``per_class`` (list of dicts with index, name, iou, dice, accuracy, gt_pixels,
        pred_pixels), ``num_pixels``, ``num_classes``, ``present_classes`` and ``aggregation``.
        A class absent from both ground truth and prediction has iou/dice/accuracy None and is left
        out of every mean; accuracy is None whenever the class has no ground-truth pixels. With no
        counted pixel every mean is None.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {cm.shape}")
    c = cm.shape[0]
    if class_names is None:
        class_names = [f"class_{i}" for i in range(c)]
    if len(class_names) != c:
        raise ValueError(f"{len(class_names)} class names for {c} classes")

    # Python ints: exact for any pixel count and JSON-serialisable.
    counts = [[int(v) for v in row] for row in cm.tolist()]
    gt = [sum(row) for row in counts]
    total = sum(gt)
    per_class = [_class_scores(counts, i, str(class_names[i])) for i in range(c)]
    present = [r for r in per_class if r["gt_pixels"] + r["pred_pixels"] > 0]
    return {
        "pixel_accuracy": _ratio(sum(counts[i][i] for i in range(c)), total),
        "mean_accuracy": _mean([r["accuracy"] for r in per_class]),
        "miou": _mean([r["iou"] for r in per_class]),
        "mean_dice": _mean([r["dice"] for r in per_class]),
        "fwiou": float(sum(r["gt_pixels"] / total * r["iou"] for r in present)) if total > 0 else None,
        "per_class": per_class,
        "num_pixels": total,
        "num_classes": c,
        "present_classes": len(present),
        "aggregation": AGGREGATION,
    }


def _class_scores(counts: list[list[int]], i: int, name: str) -> dict:
    """IoU, Dice and accuracy of class ``i`` from the (C, C) counts; None where the class is absent."""
    tp = counts[i][i]
    gt = sum(counts[i])
    pred = sum(row[i] for row in counts)
    fp, fn = pred - tp, gt - tp
    present = gt + pred > 0
    return {
        "index": i,
        "name": name,
        "iou": _ratio(tp, tp + fp + fn) if present else None,
        "dice": _ratio(2 * tp, 2 * tp + fp + fn) if present else None,
        "accuracy": _ratio(tp, gt),
        "gt_pixels": gt,
        "pred_pixels": pred,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.2f}"


def format_metrics_table(metrics: dict) -> str:
    """Plain-text table of a :func:`compute_metrics` result.

    One aligned row per class (IoU, Dice, accuracy and the class's share of ground-truth pixels,
    all in percent with 2 decimals, "-" when undefined), then the summary lines (``mIoU  89.40 %``).
    With a ``boundary_iou`` section (see :meth:`BoundaryIoU.compute`) the rows gain a boundary
    IoU column and the summary a ``boundary IoU`` line. The header and every summary value carry
    the unit: the table shows percentages, while ``metrics`` (and every file pixelwise writes)
    holds fractions in [0, 1].
    """
    total = metrics.get("num_pixels", 0)
    edges = metrics.get("boundary_iou") or None
    header = ["class", "IoU %"] + (["Boundary IoU %"] if edges else []) + ["Dice %", "Acc %", "GT share %"]
    rows = []
    for pc in metrics["per_class"]:
        share = pc["gt_pixels"] / total if total else None
        edge = [_pct(edges["per_class"].get(pc["name"]))] if edges else []
        rows.append([pc["name"], _pct(pc["iou"]), *edge, _pct(pc["dice"]), _pct(pc["accuracy"]), _pct(share)])

    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]

    def line(cells: list[str]) -> str:
        # Names left-aligned, numbers right-aligned so decimal points line up.
        parts = [cells[0].ljust(widths[0])] + [cells[k].rjust(widths[k]) for k in range(1, len(cells))]
        return "  ".join(parts).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    out.append("")
    summary = [("mIoU", metrics.get("miou"))]
    summary += [("boundary IoU", edges.get("mean"))] if edges else []
    summary += [
        ("mean Dice", metrics.get("mean_dice")),
        ("pixel acc", metrics.get("pixel_accuracy")),
        ("mean class acc", metrics.get("mean_accuracy")),
        ("fwIoU", metrics.get("fwiou")),
    ]
    label_w = max(len(k) for k, _ in summary)
    notes = {"boundary IoU": f"  ({boundary_width(edges)})"} if edges else {}
    out += [
        f"{k.ljust(label_w)}  {_pct(v).rjust(6)}{' %' if v is not None else '  '}{notes.get(k, '')}" for k, v in summary
    ]
    return "\n".join(line.rstrip() for line in out)


def boundary_width(section: dict) -> str:
    """How wide the boundaries of a :meth:`BoundaryIoU.compute` section are, in words."""
    if section.get("distance_px") is not None:
        return f"d = {section['distance_px']} px"
    return f"d = {100 * float(section.get('ratio', BOUNDARY_RATIO)):g} % of the diagonal"


BOUNDARY_RATIO = 0.02
BOUNDARY_AGGREGATION = (
    "Boundary IoU (Cheng et al. 2021) per class: boundary = mask minus its erosion by a (2d+1)x(2d+1) square, "
    "zero outside the image (pixels within d of the image border are boundary); intersections and unions "
    "summed over the data set; ignore index left out of both regions (and given the predicted label when the "
    "ground-truth boundary is drawn); mean over classes with a non-empty union"
)


def boundary_distance(height: int, width: int, ratio: float = BOUNDARY_RATIO) -> int:
    """The boundary width ``d`` in pixels for an image of ``height`` x ``width``: ``ratio`` times the
    image diagonal, rounded, at least 1 (as in the Boundary IoU reference implementation)."""
    return max(1, int(round(float(ratio) * float(np.hypot(height, width)))))


def boundary_region(labels: np.ndarray, d: int) -> np.ndarray:
    """Which pixels of ``labels`` (N, H, W) lie on the boundary of their own class's mask at distance ``d``.

    For the binary mask M of any class c, M minus its erosion by a (2d+1)x(2d+1) square with zeros
    outside the image holds exactly the pixels of class c whose window holds another value or
    reaches past the image border; as every pixel has one class, one (N, H, W) bool map serves all
    classes: the boundary of class c is ``boundary & (labels == c)``. Any value other than c (the
    ignore index too) counts as outside the mask of c. Two separable window filters (max and min),
    whatever the number of classes.
    """
    from scipy import ndimage

    x = np.asarray(labels)
    # int16 when the values fit: the window filters run faster on narrower values.
    x = x.astype(np.int16 if x.size == 0 or (x.min() >= 0 and x.max() < 2**15) else np.int64, copy=False)
    size = (1, 2 * d + 1, 2 * d + 1)
    # -1 is below every class: a window reaching past the border is never uniform.
    high = ndimage.maximum_filter(x, size=size, mode="constant", cval=-1)
    low = ndimage.minimum_filter(x, size=size, mode="constant", cval=-1)
    return high != low


class BoundaryIoU:
    """Accumulates Boundary IoU (Cheng et al. 2021) per class over a data set.

    For each image and class c, the ground-truth and predicted boundary regions Gb and Pb are the
    pixels of the class's mask within ``d`` (Chebyshev distance) of a pixel outside it; pixels
    outside the image count as outside the mask, as in the reference implementation (one zero
    pixel of padding, then ``d`` erosions with a 3x3 square), so a mask touching the image border
    has a boundary along it. Boundary IoU of class c = sum over images |Gb & Pb| / sum over images
    |Gb | Pb|, like mIoU from a dataset-level confusion matrix. Pixels whose target is
    ``ignore_index`` are left out of both regions, and for drawing the ground-truth boundary they
    take the predicted label, so an ignore band neither makes nor ends a ground-truth edge.

    ``d`` is ``distance`` pixels when given, else ``ratio`` times each image's diagonal, rounded,
    at least 1 (paper default 0.02).
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, ratio: float = BOUNDARY_RATIO, distance: int | None = None
    ):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if distance is None and not 0.0 < float(ratio) <= 0.5:
            raise ValueError(f"ratio must be in (0, 0.5], got {ratio}")
        if distance is not None and int(distance) < 1:
            raise ValueError(f"distance must be >= 1 pixel, got {distance}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.ratio = None if distance is not None else float(ratio)
        self.distance = None if distance is None else int(distance)
        self._inter = torch.zeros(self.num_classes, dtype=torch.int64)
        self._union = torch.zeros(self.num_classes, dtype=torch.int64)

    def distance_for(self, height: int, width: int) -> int:
        """The boundary width ``d`` used for an image of ``height`` x ``width``."""
        return self.distance if self.distance is not None else boundary_distance(height, width, self.ratio)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add one image (H, W) or a batch of same-size images (N, H, W) of integer class indices;
        value errors as :meth:`ConfusionMatrix.update`."""
        p = _as_index_tensor(pred, "pred")
        t = _as_index_tensor(target, "target")
        if p.shape != t.shape:
            raise ValueError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
        if p.ndim == 2:
            p, t = p.unsqueeze(0), t.unsqueeze(0)
        if p.ndim != 3:
            raise ValueError(f"pred and target must be (H, W) or (N, H, W), got shape {tuple(p.shape)}")
        p, t = p.cpu().numpy(), t.cpu().numpy()
        valid = t != self.ignore_index
        c = self.num_classes
        _check_range(t[valid], c, f"not the ignore index {self.ignore_index}", "target")
        _check_range(p[valid], c, "", "prediction")
        d = self.distance_for(p.shape[1], p.shape[2])
        # Ignored target pixels take the predicted label before the target's boundary is drawn, so an
        # ignore band (VOC's 5 px around objects) neither makes nor ends a ground-truth edge: a
        # prediction that is perfect on the scored pixels scores 1.
        gb = boundary_region(np.where(valid, t, p), d) & valid
        pb = boundary_region(p, d) & valid
        both = gb & pb & (t == p)
        inter = np.bincount(t[both], minlength=c)
        union = np.bincount(t[gb], minlength=c) + np.bincount(p[pb], minlength=c) - inter
        self._inter += torch.from_numpy(inter)
        self._union += torch.from_numpy(union)

    @property
    def intersection(self) -> torch.Tensor:
        """(C,) int64: summed |Gb & Pb| per class."""
        return self._inter

    @property
    def union(self) -> torch.Tensor:
        """(C,) int64: summed |Gb | Pb| per class."""
        return self._union

    def per_class(self) -> list[float | None]:
        """Boundary IoU per class as a fraction; None where the union is empty."""
        return [_ratio(i, u) for i, u in zip(self._inter.tolist(), self._union.tolist())]

    def compute(self, class_names: list[str] | None = None) -> dict:
        """``{"ratio": r}`` or ``{"distance_px": d}``, then ``mean`` (over classes with a non-empty
        union; None if none), ``per_class`` ({name: fraction or None}) and ``aggregation``."""
        names = class_names or [f"class_{i}" for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        values = self.per_class()
        how = {"ratio": self.ratio} if self.distance is None else {"distance_px": self.distance}
        return {
            **how,
            "mean": _mean(values),
            "per_class": {str(n): v for n, v in zip(names, values)},
            "aggregation": BOUNDARY_AGGREGATION,
        }


def _check_range(values: np.ndarray, c: int, also: str, what: str) -> None:
    if values.size == 0:
        return
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= c:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{what} value {bad} outside [0, {c})" + (f" and {also}" if also else ""))
