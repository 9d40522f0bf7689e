"""Segmentation metrics from one dataset-level confusion matrix.

Every figure (IoU, Dice, accuracies) is derived from a single confusion matrix accumulated over the
whole evaluation set, never averaged per image: a per-image mean would give a 10-pixel crop the
same say as a full frame and would make a class missing from one image count as a perfect (or a
failed) score there.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["AGGREGATION", "ConfusionMatrix", "compute_metrics", "format_metrics_table"]

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
    The header and every summary value carry the unit: the table shows percentages, while
    ``metrics`` (and every file pixelwise writes) holds fractions in [0, 1].
    """
    total = metrics.get("num_pixels", 0)
    header = ["class", "IoU %", "Dice %", "Acc %", "GT share %"]
    rows = []
    for pc in metrics["per_class"]:
        share = pc["gt_pixels"] / total if total else None
        rows.append([pc["name"], _pct(pc["iou"]), _pct(pc["dice"]), _pct(pc["accuracy"]), _pct(share)])

    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]

    def line(cells: list[str]) -> str:
        # Names left-aligned, numbers right-aligned so decimal points line up.
        parts = [cells[0].ljust(widths[0])] + [cells[k].rjust(widths[k]) for k in range(1, len(cells))]
        return "  ".join(parts).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    out.append("")
    summary = [
        ("mIoU", metrics.get("miou")),
        ("mean Dice", metrics.get("mean_dice")),
        ("pixel acc", metrics.get("pixel_accuracy")),
        ("mean class acc", metrics.get("mean_accuracy")),
        ("fwIoU", metrics.get("fwiou")),
    ]
    label_w = max(len(k) for k, _ in summary)
    out += [f"{k.ljust(label_w)}  {_pct(v).rjust(6)}{' %' if v is not None else ''}" for k, v in summary]
    return "\n".join(out)
