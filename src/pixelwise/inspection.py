"""``pixelwise inspect``: what pixelwise understands of a data set, read before any training.

The report says which format and mask encoding were detected, how many images each split has,
how large they are, how often each class occurs (pixel share and number of images), how
unbalanced the classes are and which loss weights would balance them, and every problem found,
with its files and what to do. It is computed from one parallel read of every file (see
:func:`pixelwise.data.validation.check_samples`), the same read training starts with.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from .data.encodings import DEFAULT_MAX_PIXELS
from .data.folder import SPLIT_NAMES
from .data.formats import scan_dataset
from .data.problems import Problem
from .fileio import write_json

# Converted on reading, worth a line in the report: mode -> what happens.
_IMAGE_MODES = {
    "L": "grayscale -> RGB",
    "LA": "grayscale+alpha -> RGB",
    "RGBA": "alpha dropped",
    "P": "palette -> RGB",
    "PA": "palette+alpha -> RGB",
    "CMYK": "CMYK -> RGB",
    "I;16": "16-bit -> 8-bit",
    "I;16B": "16-bit -> 8-bit",
    "I;16L": "16-bit -> 8-bit",
    "I": "32-bit -> 8-bit",
    "1": "1-bit -> RGB",
    "YCbCr": "YCbCr -> RGB",
}


def _stats(values: list[int]) -> dict:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": int(min(values)), "median": float(np.median(values)), "max": int(max(values))}


def inspect_data(
    data: str | Path,
    format: str | None = "auto",
    encoding: str | None = "auto",
    classes_file: str | None = None,
    resize_masks: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    out: str | Path | None = None,
    workers: int | None = None,
    progress: bool = False,
    chart: bool = True,
) -> dict:
    """Read every image and mask of a data set once and return the report as a JSON-ready dict.

    Writes ``class_frequencies.png`` and ``report.json`` into ``out`` (default
    ``inspect-<data folder name>``) unless ``chart`` is False. Problems in files are reported,
    never raised; only a data set that cannot be understood at all raises PixelwiseError.
    """
    from .losses import class_weights_from_counts

    t0 = time.perf_counter()
    root = Path(data)
    scanned = scan_dataset(
        root,
        format or "auto",
        encoding or "auto",
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        classes_file=classes_file,
        resize_masks=resize_masks,
        max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
        skip_missing=True,
        workers=workers,
        progress=progress,
    )
    res, splits, src = scanned.result, scanned.splits, scanned.source
    classes, spec = res.classes, res.spec
    ncls, ignore = classes.num_classes, classes.ignore_index
    problems = list(scanned.problems)
    values = res.report.values  # usable samples only: stem -> {class: pixels}

    split_of = {s.stem: n for n in SPLIT_NAMES for s in splits[n]}
    per_split = {n: {"images": len(splits[n]), "usable": sum(s.stem in values for s in splits[n])} for n in SPLIT_NAMES}

    pixels = np.zeros(ncls, dtype=np.int64)
    train_pixels = np.zeros(ncls, dtype=np.int64)
    images_with = np.zeros(ncls, dtype=np.int64)
    ignored = 0
    for stem, d in values.items():
        for k, n in d.items():
            if k == ignore:
                ignored += n
            elif 0 <= k < ncls:
                pixels[k] += n
                images_with[k] += 1
                if split_of.get(stem) == "train":
                    train_pixels[k] += n
    labelled = int(pixels.sum())
    weights = class_weights_from_counts(train_pixels, "median") if ncls and train_pixels.sum() else np.zeros(ncls)

    checks = [c for c in res.checks if c.size is not None]
    sizes = Counter((c.size[1], c.size[0]) for c in checks)
    modes = Counter(c.image_mode for c in checks)
    rotated = sum(c.rotated for c in checks)
    converted = {m: n for m, n in modes.items() if m in _IMAGE_MODES}

    present = [i for i in range(ncls) if pixels[i] > 0]
    absent = [classes.names[i] for i in range(ncls) if pixels[i] == 0]
    ratio = None
    if present:
        hi, lo = max(present, key=lambda i: pixels[i]), min(present, key=lambda i: pixels[i])
        ratio = {
            "ratio": round(float(pixels[hi] / pixels[lo]), 2),
            "most": classes.names[hi],
            "least": classes.names[lo],
        }

    if absent and values:
        problems.append(
            Problem(
                "classes never occur in the checked masks",
                "remove them from the class list, or "
                "add data that shows them (a class without pixels cannot be learnt)",
                absent,
                severity="warning",
                skippable=False,
            )
        )
    not_in_train = [classes.names[i] for i in present if train_pixels[i] == 0]
    if not_in_train and per_split["train"]["usable"]:
        problems.append(
            Problem(
                "classes occur only outside the training split",
                "move some of their images to train",
                not_in_train,
                severity="warning",
                skippable=False,
            )
        )
    if per_split["train"]["images"] and not per_split["val"]["images"]:
        problems.append(
            Problem(
                "the validation split is empty",
                "training keeps the last epoch, not the best; add splits/val.txt or use --val-fraction",
                severity="warning",
                skippable=False,
            )
        )
    if ratio and ratio["ratio"] >= 100:
        problems.append(
            Problem(
                f"classes are very unbalanced: {ratio['most']} has {ratio['ratio']:g}x the pixels of {ratio['least']}",
                "consider --class-weights (suggested weights below) or the dice/focal losses",
                severity="warning",
                skippable=False,
            )
        )

    report = {
        "data": str(root.resolve()),
        "format": src.format,
        "encoding": spec.encoding + ("+jpeg-snap" if spec.snap else ""),
        "encoding_description": spec.describe(),
        "notes": list(scanned.notes),
        "classes": {
            "names": list(classes.names),
            "colors": [list(c) for c in classes.colors],
            "ignore_index": ignore,
            "source": src.classes_from or "inferred from the masks",
        },
        "splits": per_split,
        "images": {
            "total": len(res.checks),
            "usable": len(values),
            "unusable": len(res.bad),
            "sizes": {
                "distinct": len(sizes),
                "most_common": [{"width": w, "height": h, "images": n} for (w, h), n in sizes.most_common(5)],
                "width": _stats([w for (w, h), n in sizes.items() for _ in range(n)]),
                "height": _stats([h for (w, h), n in sizes.items() for _ in range(n)]),
            },
            "modes": dict(modes),
            "converted": {m: f"{n} ({_IMAGE_MODES[m]})" for m, n in converted.items()},
            "exif_rotated": rotated,
        },
        "per_class": [
            {
                "index": i,
                "name": classes.names[i],
                "pixels": int(pixels[i]),
                "share": round(float(pixels[i] / labelled), 6) if labelled else 0.0,
                "images": int(images_with[i]),
                "train_pixels": int(train_pixels[i]),
                "suggested_weight": round(float(weights[i]), 4) if ncls else None,
            }
            for i in range(ncls)
        ],
        "labelled_pixels": labelled,
        "ignored_pixels": int(ignored),
        "ignored_share": round(ignored / max(1, labelled + ignored), 6),
        "imbalance": ratio,
        "absent_classes": absent,
        "suggested_class_weights": {
            "method": "median frequency over the training split (as --class-weights)",
            "weights": [round(float(w), 4) for w in weights],
        },
        "problems": [p.to_dict() for p in problems],
        "errors": sum(p.severity == "error" for p in problems),
        "warnings": sum(p.severity == "warning" for p in problems),
        "chart": None,
        "seconds": None,
    }
    if chart:
        out = Path(out) if out else Path(f"inspect-{root.resolve().name}")
        if ncls:
            plot_class_frequencies(report, out / "class_frequencies.png")
            report["chart"] = str(out / "class_frequencies.png")
        report["seconds"] = round(time.perf_counter() - t0, 2)
        write_json(out / "report.json", report)
        report["report_json"] = str(out / "report.json")
    else:
        report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def plot_class_frequencies(report: dict, out_png: str | Path) -> None:
    """Horizontal bars: each class's share of the labelled pixels (log scale), in the class colours,
    labelled with the number of images that contain the class."""
    from .viz import _new_figure, _save_figure

    rows = report["per_class"]
    colors = report["classes"]["colors"]
    n = len(rows)
    fig = _new_figure((8.0, min(30.0, max(3.0, 0.28 * n + 1.6))))
    ax = fig.subplots()
    shares = [100 * r["share"] for r in rows]
    y = np.arange(n)
    ax.barh(
        y,
        [s if s > 0 else np.nan for s in shares],
        color=[np.array(c) / 255 for c in colors],
        edgecolor="black",
        linewidth=0.5,
    )
    ax.set_yticks(y)
    ax.set_yticklabels([f"{r['index']} {r['name']}" for r in rows], fontsize=8 if n <= 40 else 6)
    ax.invert_yaxis()
    positive = [s for s in shares if s > 0]
    if positive and max(positive) / min(positive) > 50:
        ax.set_xscale("log")
        ax.set_xlim(min(positive) / 2, max(positive) * 8)  # room for the labels right of the bars
    elif positive:
        ax.set_xlim(0, max(positive) * 1.3)
    ax.set_xlabel("share of labelled pixels (%)")
    total = report["images"]["usable"]
    if n <= 60:
        for i, r in enumerate(rows):
            text = f"{shares[i]:.2f}%  in {r['images']}/{total} img" if shares[i] > 0 else "absent"
            ax.text(
                shares[i] if shares[i] > 0 else (min(positive) if positive else 1),
                i,
                "  " + text,
                va="center",
                fontsize=7,
            )
    ax.set_title(f"Class frequencies: {Path(report['data']).name} ({report['format']}, {total} images)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, out_png)


def format_report(report: dict, max_files: int = 10) -> str:
    """The report as text for a person to read before training."""
    lines = [f"data:      {report['data']}"]
    lines += [f"           {n}" for n in report["notes"]]
    sp = report["splits"]
    im = report["images"]
    lines.append(
        f"images:    {im['total']} checked, {im['usable']} usable  ("
        + ", ".join(f"{n} {sp[n]['images']}" for n in SPLIT_NAMES)
        + ")"
    )
    sz = im["sizes"]
    if sz["distinct"]:
        common = ", ".join(f"{s['width']}x{s['height']} ({s['images']})" for s in sz["most_common"])
        lines.append(f"sizes:     {sz['distinct']} distinct; most common {common}")
        lines.append(
            f"           width {sz['width']['min']}..{sz['width']['max']} (median {sz['width']['median']:g}), "
            f"height {sz['height']['min']}..{sz['height']['max']} (median {sz['height']['median']:g})"
        )
    if im["converted"]:
        lines.append("converted: " + ", ".join(f"{m}: {t}" for m, t in im["converted"].items()))
    if im["exif_rotated"]:
        lines.append(f"EXIF:      {im['exif_rotated']} images carry an orientation; applied, masks checked against it")
    c = report["classes"]
    lines.append(f"classes:   {len(c['names'])} ({c['source']}); ignore index {c['ignore_index']}")
    lines.append("")
    width = max([len(r["name"]) for r in report["per_class"]] + [5])
    lines.append(f"  {'#':>3}  {'class':<{width}}  {'pixels':>12}  {'share':>7}  {'images':>13}  {'weight':>7}")
    total = max(1, im["usable"])
    for r in report["per_class"]:
        lines.append(
            f"  {r['index']:>3}  {r['name']:<{width}}  {r['pixels']:>12,}  {100 * r['share']:>6.2f}%  "
            f"{r['images']:>6} ({100 * r['images'] / total:>3.0f}%)  {r['suggested_weight'] or 0:>7.3f}"
        )
    lines.append(
        f"  ignored pixels ({c['ignore_index']}): {report['ignored_pixels']:,} "
        f"({100 * report['ignored_share']:.2f}% of all pixels)"
    )
    if report["imbalance"]:
        b = report["imbalance"]
        lines.append(f"imbalance: {b['ratio']:g} ({b['most']} has {b['ratio']:g}x the pixels of {b['least']})")
    lines.append(
        "weights:   median-frequency weights from the training split (use with --class-weights): "
        + ", ".join(f"{w:g}" for w in report["suggested_class_weights"]["weights"])
    )
    lines.append("")
    if not report["problems"]:
        lines.append("problems:  none found")
    else:
        lines.append(f"problems:  {report['errors']} errors, {report['warnings']} warnings")
        for p in report["problems"]:
            head = f"{p['count']} {p['title']}" if p["count"] else p["title"]
            lines.append(f"  {p['severity'].upper():<7} {head}")
            for f in p["files"][:max_files]:
                lines.append(f"          - {f}")
            if p["count"] > max_files:
                lines.append(f"          ... and {p['count'] - max_files} more (see --json)")
            lines.append(f"          what to do: {p['todo']}")
            if p["severity"] == "error" and p["skippable"]:
                lines.append("          or train on the rest with --skip-bad")
    if report.get("chart"):
        lines.append(f"chart:     {report['chart']}")
    if report.get("report_json"):
        lines.append(f"report:    {report['report_json']}")
    return "\n".join(lines)
