"""Colour palettes, mask overlays and the plots written next to a training run.

Plots are drawn on matplotlib ``Figure`` objects with the Agg canvas directly, never through
pyplot, so nothing here needs a display or touches global figure state. Every file is written
through :func:`pixelwise.fileio.atomic_write`, so a reader never sees half a PNG.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .fileio import atomic_write


def colorize(mask: np.ndarray, colors: Sequence[Sequence[int]]) -> np.ndarray:
    """Paint a class-index mask with one colour per class.

    Args:
        mask: (H, W) integer class indices. Values outside [0, len(colors)), such as an
            ignore index of 255, are drawn black.
        colors: (r, g, b) per class, ints in [0, 255].

    Returns:
        (H, W, 3) uint8 RGB.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must hold integers, got dtype {mask.dtype}")
    # One extra black entry at the end catches every out-of-range value.
    lut = np.zeros((len(colors) + 1, 3), dtype=np.uint8)
    if len(colors):
        lut[:-1] = np.asarray(colors, dtype=np.int64).reshape(len(colors), 3).clip(0, 255)
    valid = (mask >= 0) & (mask < len(colors))
    return lut[np.where(valid, mask, len(colors))]


def overlay(image: np.ndarray, mask: np.ndarray, colors: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised mask over an image; the inputs are not modified.

    Args:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) integer class indices (out-of-range values blend towards black).
        colors: (r, g, b) per class.
        alpha: weight of the mask colour in [0, 1]; 0 gives the image back, 1 the colour mask.

    Returns:
        (H, W, 3) uint8 RGB, a new array.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if np.shape(mask) != image.shape[:2]:
        raise ValueError(f"mask shape {np.shape(mask)} does not match image {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    painted = colorize(mask, colors)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * painted.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def plot_training_curves(csv_path: str | Path, out_png: str | Path) -> None:
    """Plot losses and validation mIoU per epoch from a run's metrics.csv.

    The CSV has a header with columns ``epoch, train_loss, val_loss, val_miou, lr``; empty
    cells (an epoch without validation, say) and missing columns are skipped. Writes a PNG with
    two panels: train/val loss, and val mIoU, both against epoch.
    """
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))

    def column(name: str) -> np.ndarray:
        return np.array([_to_float(row.get(name)) for row in rows], dtype=np.float64)

    epochs = column("epoch")
    if np.isnan(epochs).all():
        epochs = np.arange(1, len(rows) + 1, dtype=np.float64)

    fig = _new_figure((10.0, 4.0))
    ax_loss, ax_iou = fig.subplots(1, 2)
    drawn = False
    for name, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        drawn |= _plot_series(ax_loss, epochs, column(name), label)
    ax_loss.set_title("Loss")
    ax_loss.set_xlabel("epoch")
    if drawn:
        ax_loss.legend()
    else:
        _no_data(ax_loss)

    if _plot_series(ax_iou, epochs, column("val_miou"), "val mIoU"):
        ax_iou.set_ylim(0.0, 1.0)
    else:
        _no_data(ax_iou)
    ax_iou.set_title("Validation mIoU")
    ax_iou.set_xlabel("epoch")
    for ax in (ax_loss, ax_iou):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, out_png)


def plot_confusion_matrix(
    cm: np.ndarray, class_names: Sequence[str], out_png: str | Path, normalize: bool = True
) -> None:
    """Draw a confusion matrix as a labelled heat map.

    Args:
        cm: (C, C) counts, rows = ground truth, columns = prediction.
        class_names: C names for the axes.
        out_png: destination PNG.
        normalize: divide each row by its total, so a cell reads "fraction of this true class
            predicted as that class"; rows with no pixels stay 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {cm.shape}")
    n = cm.shape[0]
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for a {n}x{n} confusion matrix")
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)
        values = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
        vmax = 1.0
    else:
        values = cm
        vmax = max(float(cm.max()), 1.0) if n else 1.0

    side = min(max(4.0, 0.6 * n + 2.5), 30.0)
    fig = _new_figure((side + 1.0, side))
    ax = fig.subplots()
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("Confusion matrix" + (" (row-normalised)" if normalize else ""))
    # Numbers in the cells help only while they are still legible.
    if 0 < n <= 20:
        for i in range(n):
            for j in range(n):
                v = values[i, j]
                text = f"{v:.2f}" if normalize else _compact_count(v)
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if v > 0.6 * vmax else "black")
    fig.tight_layout()
    _save_figure(fig, out_png)


def _to_float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _plot_series(ax, x: np.ndarray, y: np.ndarray, label: str) -> bool:
    # Join only the epochs that have a value, so sparse validation still draws as a line.
    keep = np.isfinite(x) & np.isfinite(y)
    if not keep.any():
        return False
    ax.plot(x[keep], y[keep], marker="o", markersize=3, label=label)
    return True


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="grey")


def _compact_count(v: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= limit:
            return f"{v / limit:.1f}{suffix}"
    return f"{v:.0f}"


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, out_png: str | Path) -> None:
    atomic_write(out_png, lambda f: fig.savefig(f, format="png"))
