"""Colour palettes, mask overlays and the plots written next to a training run.

Plots are drawn on matplotlib ``Figure`` objects with the Agg canvas directly, never through
pyplot, so nothing here needs a display or touches global figure state. Every file is written
through :func:`pixelwise.fileio.atomic_write`, so a reader never sees half a PNG.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
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


def class_boundaries(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """``(H, W)`` bool: pixels whose 4-neighbour holds another value, grown to ``width`` pixels."""
    mask = np.asarray(mask)
    edge = np.zeros(mask.shape, dtype=bool)
    vertical = mask[1:, :] != mask[:-1, :]
    horizontal = mask[:, 1:] != mask[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    for _ in range(max(int(width), 1) - 1):
        grown = edge.copy()
        grown[1:, :] |= edge[:-1, :]
        grown[:-1, :] |= edge[1:, :]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    colors: Sequence[Sequence[int]],
    alpha: float = 0.5,
    *,
    transparent: Sequence[int] = (0,),
    boundaries: bool = True,
    legend: Sequence[str] | None = None,
) -> np.ndarray:
    """Blend the class colours of ``mask`` over an image; the inputs are not modified.

    Args:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) integer class indices.
        colors: (r, g, b) per class.
        alpha: weight of the class colour in [0, 1]; 0 gives the image back.
        transparent: classes left unpainted (default the background class 0). Values outside
            [0, len(colors)), such as the ignore index 255, are never painted either, so the photo
            is not darkened where nothing was found.
        boundaries: outline every painted region in its own colour (opacity ``min(1, 2 * alpha)``).
        legend: the class names; when given, a white strip below the picture shows the colour and
            name of each painted class present in ``mask`` (the result is then taller, and wider
            when the names need more room than the image).

    Returns:
        (H, W, 3) uint8 RGB, a new array; (H + legend height, max(W, legend width), 3) with ``legend``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if legend is not None and len(legend) != len(colors):
        raise ValueError(f"{len(legend)} legend names for {len(colors)} class colours")
    painted = colorize(mask, colors)
    shown = (mask >= 0) & (mask < len(colors))
    if len(transparent):
        shown &= ~np.isin(mask, np.asarray(list(transparent), dtype=np.int64))
    weight = np.where(shown, np.float32(alpha), np.float32(0.0))
    if boundaries and alpha > 0:
        width = max(1, round(min(mask.shape) / 256))
        weight[class_boundaries(mask, width) & shown] = min(1.0, 2.0 * alpha)
    weight = weight[..., None]
    blended = (1.0 - weight) * image.astype(np.float32) + weight * painted.astype(np.float32)
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    if legend is None:
        return out
    present = [int(v) for v in np.unique(mask[shown])]
    strip = legend_strip(colors, legend, present, out.shape[1], empty="no class found")
    return stack_rows([out, strip])


# --- text and layout on pixel arrays (PIL draws the text; no display, no figure) ------------------


@lru_cache(maxsize=16)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _text_width(text: str, size: int) -> int:
    box = _font(size).getbbox(text)
    return int(math.ceil(box[2]))


def text_block(lines: Sequence[str], size: int, width: int = 0, color=(0, 0, 0), pad: int = 4) -> np.ndarray:
    """``(h, max(width, text width), 3)`` uint8: the lines drawn black on white, left-aligned."""
    from PIL import Image, ImageDraw

    line_h = int(size * 1.3)
    w = max(width, max((_text_width(t, size) for t in lines), default=0) + 2 * pad)
    canvas = Image.new("RGB", (w, len(lines) * line_h + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, fill=tuple(color), font=_font(size))
    return np.asarray(canvas).copy()


def stack_rows(parts: Sequence[np.ndarray], gap: int = 0) -> np.ndarray:
    """Stack (h, w, 3) uint8 pictures top to bottom, left-aligned on white, ``gap`` pixels apart."""
    width = max(p.shape[1] for p in parts)
    height = sum(p.shape[0] for p in parts) + gap * (len(parts) - 1)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    y = 0
    for p in parts:
        out[y : y + p.shape[0], : p.shape[1]] = p
        y += p.shape[0] + gap
    return out


def stack_columns(parts: Sequence[np.ndarray], gap: int = 0) -> np.ndarray:
    """Put (h, w, 3) uint8 pictures side by side, top-aligned on white, ``gap`` pixels apart."""
    height = max(p.shape[0] for p in parts)
    width = sum(p.shape[1] for p in parts) + gap * (len(parts) - 1)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for p in parts:
        out[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def legend_strip(
    colors: Sequence[Sequence[int]],
    names: Sequence[str],
    indices: Sequence[int],
    width: int,
    empty: str = "",
    size: int | None = None,
) -> np.ndarray:
    """``(h, >= width, 3)`` uint8 white strip: a colour swatch and the name of each class in
    ``indices``, flowing left to right and wrapping at ``width`` (wider only for one long name)."""
    from PIL import Image, ImageDraw

    size = size or int(np.clip(round(width / 45), 11, 22))
    pad, sw = max(size // 2, 4), size
    entries = [(tuple(int(v) for v in colors[i]), str(names[i])) for i in indices]
    if not entries:
        return text_block([empty], size, width, color=(110, 110, 110)) if empty else np.zeros((0, width, 3), np.uint8)
    widths = [sw + pad // 2 + _text_width(name, size) + 2 * pad for _, name in entries]
    width = max(width, max(widths) + pad)
    places, x, y, line_h = [], pad, pad, int(size * 1.5)
    for w in widths:
        if x + w > width and x > pad:
            x, y = pad, y + line_h
        places.append((x, y))
        x += w
    canvas = Image.new("RGB", (width, y + line_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for (color, name), (x, y) in zip(entries, places):
        top = y + (line_h - sw) // 2
        draw.rectangle([x, top, x + sw, top + sw], fill=color, outline=(90, 90, 90))
        draw.text((x + sw + pad // 2, y + (line_h - size) // 2 - 1), name, fill=(0, 0, 0), font=_font(size))
    return np.asarray(canvas).copy()


# --- heat maps --------------------------------------------------------------------------------------


def heatmap(values: np.ndarray, vmin: float, vmax: float, cmap: str = "magma") -> np.ndarray:
    """``(H, W)`` floats -> ``(H, W, 3)`` uint8 colours of a matplotlib colour map over [vmin, vmax]
    (values outside are clipped; NaN gets the colour of ``vmin``)."""
    lut = _colormap_lut(cmap)
    scaled = (np.asarray(values, dtype=np.float32) - vmin) / max(vmax - vmin, 1e-12)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=1.0, neginf=0.0)
    return lut[np.clip(scaled * 255 + 0.5, 0, 255).astype(np.uint8)]


def _tick_labels(values: np.ndarray, span: float) -> list[str]:
    """The tick values with one number of decimals, enough to tell them apart."""
    decimals = int(np.clip(2 - math.floor(math.log10(span)), 0, 8)) if span > 0 else 2
    return [f"{v:.{decimals}f}" for v in values]


def _colormap_lut(cmap: str) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def heatmap_with_colorbar(
    values: np.ndarray, vmin: float, vmax: float, label: str, cmap: str = "magma", ticks: int = 5
) -> np.ndarray:
    """The map of ``values`` at its own resolution with a labelled colour bar to its right.

    Args:
        values: (H, W) floats, e.g. confidence in [0, 1], entropy in nats, variance.
        vmin, vmax: the values at the bottom and the top of the colour bar (outside: clipped).
        label: what the values are, with their unit (``"entropy (nats)"``); written above the bar.
        cmap: a matplotlib colour map name.
        ticks: number of labelled values on the bar (at least 2).

    Returns:
        (H', W', 3) uint8 with H' >= H and W' > W: the map at the top left, pixel for pixel, on white.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be (H, W), got shape {values.shape}")
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmax > vmin):
        raise ValueError(f"need finite vmin < vmax, got {vmin}, {vmax}")
    picture = heatmap(values, vmin, vmax, cmap)
    bar = _colorbar_panel(values.shape[0], vmin, vmax, label, cmap, max(int(ticks), 2))
    return stack_columns([picture, bar])


def _colorbar_panel(height: int, vmin: float, vmax: float, label: str, cmap: str, ticks: int) -> np.ndarray:
    """White panel: ``label`` on top, a vertical colour bar (vmax at the top) with tick labels."""
    from PIL import Image, ImageDraw

    size = int(np.clip(round(height / 22), 11, 28))
    pad, bar_w = max(size // 2, 4), max(size, 10)
    left = 2 * pad  # a margin between the map and the panel
    tick_text = _tick_labels(np.linspace(vmax, vmin, ticks), vmax - vmin)
    top = pad + int(size * 1.4) + size // 2
    bar_h = max(height - top - pad, ticks * int(size * 1.3))
    tick_w = max(_text_width(t, size) for t in tick_text)
    width = left + max(bar_w + 6 + tick_w, _text_width(label, size)) + pad
    canvas = Image.new("RGB", (width, top + bar_h + pad + size // 2), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((left, pad // 2), label, fill=(0, 0, 0), font=_font(size))
    lut = _colormap_lut(cmap)
    gradient = lut[np.linspace(255, 0, bar_h).round().astype(np.uint8)]
    canvas.paste(Image.fromarray(np.repeat(gradient[:, None, :], bar_w, axis=1)), (left, top))
    draw.rectangle([left - 1, top - 1, left + bar_w, top + bar_h], outline=(60, 60, 60))
    for k, text in enumerate(tick_text):
        y = top + round(k * (bar_h - 1) / (ticks - 1))
        draw.line([left + bar_w, y, left + bar_w + 4, y], fill=(0, 0, 0))
        draw.text((left + bar_w + 6, y - size // 2 - 1), text, fill=(0, 0, 0), font=_font(size))
    return np.asarray(canvas).copy()


def plot_training_curves(csv_path: str | Path, out_png: str | Path, class_names: Sequence[str] | None = None) -> None:
    """Plot a run's metrics.csv: losses, validation IoU (mean and per class), learning rate.

    The CSV has a header with columns such as ``epoch, train_loss, val_loss, val_miou, lr`` and
    one ``val_iou_<index>`` per class (fractions, shown in %); empty cells (an epoch without
    validation, say) and missing columns are skipped. ``class_names`` names the per-class curves
    (default ``class <index>``). Writes a PNG with three panels against epoch: train/val loss,
    validation IoU, and learning rate (log scale when it spans more than a factor of 10).
    """
    from matplotlib.ticker import MaxNLocator

    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        rows, header = list(reader), list(reader.fieldnames or [])

    def column(name: str) -> np.ndarray:
        return np.array([_to_float(row.get(name)) for row in rows], dtype=np.float64)

    epochs = column("epoch")
    if np.isnan(epochs).all():
        epochs = np.arange(1, len(rows) + 1, dtype=np.float64)
    fig = _new_figure((15.0, 4.4))
    ax_loss, ax_iou, ax_lr = fig.subplots(1, 3)
    drawn = False
    for name, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        drawn |= _plot_series(ax_loss, epochs, column(name), label)
    ax_loss.set_title("Loss")
    if drawn:
        ax_loss.legend()
    else:
        _no_data(ax_loss)
    per_class = sorted(
        ((int(h[len("val_iou_") :]), h) for h in header if h.startswith("val_iou_") and h[8:].isdigit()),
    )
    _plot_iou_panel(ax_iou, epochs, column("val_miou"), [(i, column(h)) for i, h in per_class], class_names)
    lr = column("lr")
    if _plot_series(ax_lr, epochs, lr, "learning rate"):
        positive = lr[np.isfinite(lr) & (lr > 0)]
        if positive.size and positive.max() > 10 * positive.min():
            ax_lr.set_yscale("log")
    else:
        _no_data(ax_lr)
    ax_lr.set_title("Learning rate")
    for ax in (ax_loss, ax_iou, ax_lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, out_png)


def _plot_iou_panel(ax, epochs: np.ndarray, miou: np.ndarray, per_class, class_names) -> None:
    """Validation mIoU (thick, black) and each class's IoU (thin), in percent."""
    from matplotlib import colormaps

    palette = colormaps["tab20"] if len(per_class) > 10 else colormaps["tab10"]
    drawn = False
    for k, (index, values) in enumerate(per_class):
        name = str(class_names[index]) if class_names is not None and index < len(class_names) else f"class {index}"
        keep = np.isfinite(epochs) & np.isfinite(values)
        if keep.any():
            # Past 20 classes a legend would hide the plot: the lines stay, unnamed.
            label = name if len(per_class) <= 20 else None
            ax.plot(epochs[keep], 100 * values[keep], lw=1.2, color=palette(k % palette.N), label=label)
            drawn = True
    keep = np.isfinite(epochs) & np.isfinite(miou)
    if keep.any():
        ax.plot(epochs[keep], 100 * miou[keep], color="black", lw=2.4, marker="o", markersize=3, label="mIoU")
        drawn = True
    if not drawn:
        _no_data(ax)
    else:
        ax.set_ylim(0.0, 100.0)
        ax.legend(fontsize=7 if len(per_class) > 6 else 9, ncol=2 if len(per_class) > 8 else 1, loc="best")
    ax.set_ylabel("IoU (%)")
    ax.set_title("Validation IoU" + (" per class" if per_class else ""))


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


# --- evaluation pictures: examples (image | ground truth | prediction | errors), per-class IoU --------

IGNORE_COLOR = (224, 224, 192)  # pixels that are not scored (the ignore index)
ERROR_COLOR = (230, 20, 20)


@dataclass
class Example:
    """One scored image, already shrunk to panel size: (h, w, 3) uint8 and two (h, w) int masks."""

    name: str
    score: float  # per-image mIoU, a fraction
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray


def shrink_example(
    image: np.ndarray, truth: np.ndarray, pred: np.ndarray, height: int = 200, max_width: int = 360
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and both masks resized together to ``height`` rows (at most ``max_width`` columns).

    The masks are sampled by nearest neighbour at the same points, so the error panel drawn from
    them matches the ground-truth and prediction panels pixel for pixel.
    """
    from PIL import Image

    h, w = truth.shape
    scale = min(height / h, max_width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return image, truth, pred
    resample = Image.BILINEAR if scale < 1 else Image.NEAREST
    small = np.asarray(Image.fromarray(image).resize(size, resample))

    def nearest(mask: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(mask.astype(np.int32)).resize(size, Image.NEAREST))

    return small, nearest(truth), nearest(pred)


def mask_picture(mask: np.ndarray, colors: Sequence[Sequence[int]], ignore_index: int) -> np.ndarray:
    """(h, w, 3) uint8: each class in its colour, the ignore index light grey."""
    out = colorize(mask, colors)
    out[mask == ignore_index] = IGNORE_COLOR
    return out


def error_picture(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, ignore_index: int) -> np.ndarray:
    """(h, w, 3) uint8: the image in faded grey, wrong pixels red, pixels not scored light grey."""
    grey = image.astype(np.float32).mean(axis=2, keepdims=True)
    out = np.repeat(grey * 0.45 + 120.0, 3, axis=2).astype(np.uint8)
    ignored = truth == ignore_index
    out[ignored] = IGNORE_COLOR
    out[(truth != pred) & ~ignored] = ERROR_COLOR
    return out


# long: one picture assembled top to bottom (title, column heads, captioned rows, legend)
def example_grid(
    examples: Sequence[Example],
    colors: Sequence[Sequence[int]],
    names: Sequence[str],
    ignore_index: int,
    title: str,
) -> np.ndarray:
    """(H, W, 3) uint8: ``title``, then one captioned row per example (image | ground truth |
    prediction | errors in red) and a legend of the classes shown. Scores are shown in %."""
    gap = 8
    box_w = max(e.truth.shape[1] for e in examples) if examples else 200
    size = int(np.clip(round(box_w / 14), 13, 18))
    width = 4 * box_w + 3 * gap
    heads = ["image", "ground truth", "prediction", "errors (red)"]
    head = stack_columns([text_block([t], size, box_w) for t in heads], gap)
    parts = [text_block([title], size + 2, width), head]
    for e in examples:
        caption = text_block([f"{e.name}    mIoU {100 * e.score:.1f} %"], size, width)
        panels = [
            e.image,
            mask_picture(e.truth, colors, ignore_index),
            mask_picture(e.pred, colors, ignore_index),
            error_picture(e.image, e.truth, e.pred, ignore_index),
        ]
        boxed = [stack_columns([p, np.full((p.shape[0], box_w - p.shape[1], 3), 255, np.uint8)]) for p in panels]
        parts += [np.full((gap, width, 3), 255, np.uint8), caption, stack_columns(boxed, gap)]
    if not examples:
        parts.append(text_block(["no image was scored"], size, width, color=(110, 110, 110)))
    shown = np.unique(np.concatenate([np.r_[e.truth.ravel(), e.pred.ravel()] for e in examples] or [np.zeros(0)]))
    present = [int(v) for v in shown if 0 <= v < len(colors)]
    extra_colors = [*colors, IGNORE_COLOR, ERROR_COLOR]
    extra_names = [*names, "not scored", "error"]
    keys = present + ([len(colors)] if ignore_index in shown else []) + [len(colors) + 1]
    parts.append(legend_strip(extra_colors, extra_names, keys, width, size=size))
    picture = stack_rows(parts, gap=4)
    border = np.full((picture.shape[0] + 2 * gap, picture.shape[1] + 2 * gap, 3), 255, np.uint8)
    border[gap:-gap, gap:-gap] = picture
    return border


def plot_per_class_iou(
    per_class: Sequence[dict], colors: Sequence[Sequence[int]], out_png: str | Path, title: str = "IoU per class"
) -> None:
    """Horizontal bar per class in its colour, IoU labelled in %; classes absent from both ground
    truth and prediction are marked "absent", classes only predicted "not in ground truth".

    ``per_class``: the ``per_class`` list of :func:`pixelwise.metrics.compute_metrics` (iou a
    fraction or None, name, gt_pixels).
    """
    n = len(per_class)
    fig = _new_figure((8.5, min(max(2.4, 0.32 * n + 1.5), 60.0)))
    ax = fig.subplots()
    y = np.arange(n)
    ious = [100.0 * pc["iou"] if pc["iou"] is not None else 0.0 for pc in per_class]
    rgb = [tuple(v / 255 for v in colors[i]) if i < len(colors) else (0.5, 0.5, 0.5) for i in range(n)]
    ax.barh(y, ious, color=rgb, edgecolor="0.25", linewidth=0.6, height=0.7)
    fontsize = 9 if n <= 40 else 6
    for i, pc in enumerate(per_class):
        x, text, style = _bar_label(pc, ious[i], rgb[i])
        ax.text(x, i, text, va="center", fontsize=fontsize, **style)
    present = [v for v, pc in zip(ious, per_class) if pc["iou"] is not None]
    if present:
        mean = float(np.mean(present))
        ax.axvline(mean, color="0.3", linestyle="--", linewidth=1.0, label=f"mean (mIoU) {mean:.1f} %")
        # Below the axes, right-aligned: inside them it would cover the labels of short bars.
        ax.legend(loc="upper right", bbox_to_anchor=(1.0, -0.12), fontsize=8, frameon=False)
    ax.set_yticks(y)
    ax.set_yticklabels([str(pc["name"]) for pc in per_class], fontsize=fontsize)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 100.0)
    ax.set_xlabel("IoU (%)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, out_png)


def _bar_label(pc: dict, value: float, rgb: tuple) -> tuple[float, str, dict]:
    """Where and what to write for one bar: inside its end when long (in a colour that reads on the
    bar), else just after it; absent classes and classes only predicted say so."""
    if pc["iou"] is None:
        return 1.0, "absent (not in ground truth or prediction)", {"style": "italic", "color": "0.35"}
    text = f"{value:.1f} %" + ("  (not in ground truth)" if pc["gt_pixels"] == 0 else "")
    if value > 75.0:
        light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 0.55
        return value - 1.0, text, {"ha": "right", "color": "black" if light else "white"}
    return value + 1.0, text, {"color": "0.15"}


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
