"""``pixelwise inspect``: what pixelwise understands of a data set, read before any training.

The report says which format and mask encoding were detected, how many images each split has,
how large they are, how often each class occurs (pixel share and number of images), how
unbalanced the classes are and which loss weights would balance them, and every problem found,
with its files and what to do. It is computed from one parallel read of every file (see
:func:`pixelwise.data.scan_dataset`), the same read training starts with.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import DEFAULT_MAX_PIXELS, SPLIT_NAMES, Problem, ScannedData, scan_dataset
from .data.types import plural
from .fileio import write_json

# A class with fewer training pixels gets no suggested weight (stray labels, too few to learn
# from: a median-frequency weight would be in the thousands); the others are capped.
MIN_WEIGHT_PIXELS = 100
MAX_SUGGESTED_WEIGHT = 50.0

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


@dataclass
class _Tally:
    """Per-class counts over the usable samples: (C,) int64 arrays, and the ignored pixels."""

    pixels: np.ndarray  # labelled pixels of each class, every split
    train_pixels: np.ndarray  # the same, training split only
    images_with: np.ndarray  # number of images that show the class
    ignored: int


def _tally(values: dict[str, dict[int, int]], train: set[str], ncls: int, ignore: int) -> _Tally:
    """Count each class's pixels and images from the per-sample histograms ``values`` (stem -> {class: pixels})."""
    t = _Tally(np.zeros(ncls, np.int64), np.zeros(ncls, np.int64), np.zeros(ncls, np.int64), 0)
    for stem, d in values.items():
        for k, n in d.items():
            if k == ignore:
                t.ignored += n
            elif 0 <= k < ncls:
                t.pixels[k] += n
                t.images_with[k] += 1
                if stem in train:
                    t.train_pixels[k] += n
    return t


def _imbalance(pixels: np.ndarray, names: list[str]) -> dict | None:
    """Pixels of the most common class over those of the rarest present one; None when fewer than two occur."""
    present = [i for i in range(len(names)) if pixels[i] > 0]
    if len(present) < 2:
        return None
    hi, lo = max(present, key=lambda i: pixels[i]), min(present, key=lambda i: pixels[i])
    return {"ratio": round(float(pixels[hi] / pixels[lo]), 2), "most": names[hi], "least": names[lo]}


def _class_warnings(
    names: list[str], tally: _Tally, ratio: dict | None, per_split: dict, any_usable: bool
) -> list[Problem]:
    """What the class counts and splits say before training: absent, train-less, unbalanced classes."""
    out = []
    absent = [names[i] for i in range(len(names)) if tally.pixels[i] == 0]
    if absent and any_usable:
        out.append(
            Problem(
                "classes never occur in the checked masks",
                "remove them from the class list, or "
                "add data that shows them (a class without pixels cannot be learnt)",
                absent,
                severity="warning",
                skippable=False,
                one="class never occurs in the checked masks",
            )
        )
    not_in_train = [names[i] for i in range(len(names)) if tally.pixels[i] > 0 and tally.train_pixels[i] == 0]
    if not_in_train and per_split["train"]["usable"]:
        out.append(
            Problem(
                "classes occur only outside the training split",
                "move some of their images to train",
                not_in_train,
                severity="warning",
                skippable=False,
                one="class occurs only outside the training split",
            )
        )
    if per_split["train"]["images"] and not per_split["val"]["images"]:
        out.append(
            Problem(
                "the validation split is empty",
                "training keeps the last epoch, not the best; add splits/val.txt or use --val-fraction",
                severity="warning",
                skippable=False,
            )
        )
    if ratio and ratio["ratio"] >= 100:
        out.append(
            Problem(
                f"classes are very unbalanced: {ratio['most']} has {ratio['ratio']:g}x the pixels of {ratio['least']}",
                "consider --class-weights (the class table's weight column shows suggested weights) "
                "or the dice/focal losses",
                severity="warning",
                skippable=False,
            )
        )
    return out


@dataclass
class _Weights:
    """Suggested loss weights per class (NaN: none suggested) and what ``--class-weights median`` gives."""

    suggested: np.ndarray  # (C,) float64
    median: np.ndarray  # (C,) float64, uncapped, every present class
    rare: list[int]  # classes with 0 < training pixels < MIN_WEIGHT_PIXELS
    capped: list[int]


def _suggested_weights(train_pixels: np.ndarray) -> _Weights:
    """Median-frequency weights over the training split, without the classes of too few pixels
    (no suggestion: NaN) and capped at MAX_SUGGESTED_WEIGHT; absent classes get none either."""
    from .losses import class_weights_from_counts  # imports torch: only when a report is made

    n = len(train_pixels)
    median = class_weights_from_counts(train_pixels, "median").astype(np.float64) if train_pixels.sum() else np.zeros(n)
    rare = [i for i in range(n) if 0 < train_pixels[i] < MIN_WEIGHT_PIXELS]
    kept = train_pixels.copy()
    kept[rare] = 0
    raw = class_weights_from_counts(kept, "median").astype(np.float64) if kept.sum() else np.zeros(n)
    capped = [i for i in range(n) if raw[i] > MAX_SUGGESTED_WEIGHT]
    suggested = np.where(kept > 0, np.minimum(raw, MAX_SUGGESTED_WEIGHT), np.nan)
    return _Weights(suggested, median, rare, capped)


def _rare_warning(names: list[str], train_pixels: np.ndarray, w: _Weights) -> list[Problem]:
    """Classes with too few training pixels to learn from (often stray labels), with the weight
    ``--class-weights median`` would give them."""
    if not w.rare:
        return []
    items = [
        f"{names[i]} ({plural(int(train_pixels[i]), 'training pixel')}; "
        f"--class-weights median would weigh it {w.median[i]:,.0f})"
        for i in w.rare
    ]
    return [
        Problem(
            f"classes have fewer than {MIN_WEIGHT_PIXELS} pixels in the training split",
            "check those masks for stray labels; no weight is suggested for them, and --class-weights sqrt "
            "weighs them far less than median",
            items,
            severity="warning",
            skippable=False,
            one=f"class has fewer than {MIN_WEIGHT_PIXELS} pixels in the training split",
        )
    ]


def _images_section(scanned: ScannedData) -> dict:
    """How many images, of which sizes and modes, and which were converted or EXIF-rotated."""
    res = scanned.result
    checks = [c for c in res.checks if c.size is not None]
    sizes = Counter((c.size[1], c.size[0]) for c in checks)
    modes = Counter(c.image_mode for c in checks)
    return {
        "total": len(res.checks),
        "usable": len(res.report.values),
        "unusable": len(res.bad),
        "sizes": {
            "distinct": len(sizes),
            "most_common": [{"width": w, "height": h, "images": n} for (w, h), n in sizes.most_common(5)],
            "width": _stats([w for (w, h), n in sizes.items() for _ in range(n)]),
            "height": _stats([h for (w, h), n in sizes.items() for _ in range(n)]),
        },
        "modes": dict(modes),
        "converted": {m: f"{n} ({_IMAGE_MODES[m]})" for m, n in modes.items() if m in _IMAGE_MODES},
        "exif_rotated": sum(c.rotated for c in checks),
    }


def _weight_of(w: _Weights, i: int) -> float | None:
    return None if np.isnan(w.suggested[i]) else round(float(w.suggested[i]), 4)


def _per_class(names: list[str], tally: _Tally, weights: _Weights) -> list[dict]:
    """One row per class: pixels, share of the labelled pixels (fraction), images, suggested weight (None: none)."""
    labelled = int(tally.pixels.sum())
    return [
        {
            "index": i,
            "name": names[i],
            "pixels": int(tally.pixels[i]),
            "share": round(float(tally.pixels[i] / labelled), 6) if labelled else 0.0,
            "images": int(tally.images_with[i]),
            "train_pixels": int(tally.train_pixels[i]),
            "suggested_weight": _weight_of(weights, i),
        }
        for i in range(len(names))
    ]


def _objects_section(scanned: ScannedData) -> dict | None:
    """Objects per thing class and their sizes in pixels, touching and overlapping pairs; None without object ids."""
    res = scanned.result
    if not res.instances:
        return None
    names, things = res.classes.names, res.classes.things
    areas: dict[int, list[int]] = {k: [] for k in things}
    images: dict[int, int] = {k: 0 for k in things}
    for so in res.objects.values():
        for i, cls in so.classes.items():
            areas.setdefault(cls, []).append(so.areas[i])
        for cls in set(so.classes.values()):
            images[cls] = images.get(cls, 0) + 1
    vector = any(s.vector is not None for s in scanned.source.samples)
    return {
        "things": [names[k] for k in things],
        "images": len(res.objects),
        "total": sum(len(a) for a in areas.values()),
        "size": _stats([v for a in areas.values() for v in a]),
        "per_class": [
            {
                "index": k,
                "name": names[k],
                "objects": len(areas[k]),
                "images": images.get(k, 0),
                "size": _stats(areas[k]),
            }
            for k in sorted(areas)
        ],
        "touching_pairs": sum(so.touching for so in res.objects.values()),
        "images_with_touching": sum(so.touching > 0 for so in res.objects.values()),
        "overlapping_pairs": sum(so.overlapping for so in res.objects.values()) if vector else None,
    }


def _report(root: Path, scanned: ScannedData) -> dict:
    """The report of a scanned data set as a JSON-ready dict (without chart and timing)."""
    res, splits, src = scanned.result, scanned.splits, scanned.source
    classes, spec = res.classes, res.spec
    ncls, ignore = classes.num_classes, classes.ignore_index
    values = res.report.values  # usable samples only: stem -> {class: pixels}
    per_split = {n: {"images": len(splits[n]), "usable": sum(s.stem in values for s in splits[n])} for n in SPLIT_NAMES}
    # A stem is in one split only (a second listing is a problem and is dropped when the lists are read).
    split_of = {s.stem: n for n in SPLIT_NAMES for s in splits[n]}
    tally = _tally(values, {stem for stem, n in split_of.items() if n == "train"}, ncls, ignore)
    weights = _suggested_weights(tally.train_pixels)
    ratio = _imbalance(tally.pixels, classes.names)
    problems = list(scanned.problems) + _class_warnings(classes.names, tally, ratio, per_split, bool(values))
    problems += _rare_warning(classes.names, tally.train_pixels, weights)
    labelled = int(tally.pixels.sum())
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
        "images": _images_section(scanned),
        "per_class": _per_class(classes.names, tally, weights),
        "labelled_pixels": labelled,
        "ignored_pixels": int(tally.ignored),
        "ignored_share": round(tally.ignored / max(1, labelled + tally.ignored), 6),
        "imbalance": ratio,
        "absent_classes": [classes.names[i] for i in range(ncls) if tally.pixels[i] == 0],
        "suggested_class_weights": {
            "method": "median frequency over the training split (as --class-weights median), capped at "
            f"{MAX_SUGGESTED_WEIGHT:g}; none (null) for absent classes and classes of fewer than "
            f"{MIN_WEIGHT_PIXELS} training pixels",
            "weights": [_weight_of(weights, i) for i in range(ncls)],
            "capped": [classes.names[i] for i in weights.capped],
            "too_few_pixels": [classes.names[i] for i in weights.rare],
            "median_weights": [round(float(w), 4) for w in weights.median],
        },
        "problems": [p.to_dict() for p in problems],
        "errors": sum(p.severity == "error" for p in problems),
        "warnings": sum(p.severity == "warning" for p in problems),
        "chart": None,
        "seconds": None,
    }
    objects = _objects_section(scanned)
    if objects is not None:  # only for data with object ids
        report["objects"] = objects
    return report


def inspect_data(
    data: str | Path,
    format: str | None = "auto",
    encoding: str | None = "auto",
    classes_file: str | None = None,
    resize_masks: str | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    out: str | Path | None = None,
    read_threads: int | None = None,
    progress: bool = False,
    chart: bool = True,
) -> dict:
    """Read every image and mask of a data set once and return the report as a JSON-ready dict.

    ``max_image_pixels``: an image or mask with more pixels is refused before it is decoded;
    ``read_threads``: threads that read files (default from the CPU count). Writes
    ``class_frequencies.png`` and ``report.json`` into ``out`` (default ``inspect-<data folder
    name>``) unless ``chart`` is False. Problems in files are reported, never raised; only a data
    set that cannot be understood at all raises PixelwiseError.
    """
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
        max_pixels=max_image_pixels or DEFAULT_MAX_PIXELS,
        workers=read_threads,
        progress=progress,
    )
    report = _report(root, scanned)
    if chart:
        out = Path(out) if out else Path(f"inspect-{root.resolve().name}")
        if report["per_class"]:
            plot_class_frequencies(report, out / "class_frequencies.png")
            report["chart"] = str(out / "class_frequencies.png")
        report["seconds"] = round(time.perf_counter() - t0, 2)
        write_json(out / "report.json", report)
        report["report_json"] = str(out / "report.json")
    else:
        report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def plot_class_frequencies(report: dict, out_png: str | Path) -> None:
    """Horizontal bars: each class's share of the labelled pixels in % (log scale when they span
    much), in the class colours, labelled with the share and the number of images that show the class."""
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
    ax.set_ylim(n - 0.5, -0.5)  # first class on top; every row, an absent one too, inside the axes
    positive = [s for s in shares if s > 0]
    if positive and max(positive) / min(positive) > 50:
        ax.set_xscale("log")
        ax.set_xlim(min(positive) / 2, max(positive) * 8)  # room for the labels right of the bars
    elif positive:
        ax.set_xlim(0, max(positive) * 1.45)
    ax.set_xlabel("share of labelled pixels (%)")
    total = report["images"]["usable"]
    if n <= 60:
        for i, r in enumerate(rows):
            text = f"{shares[i]:.2f} %, in {r['images']} of {plural(total, 'image')}" if shares[i] > 0 else "absent"
            ax.text(
                shares[i] if shares[i] > 0 else ax.get_xlim()[0],
                i,
                "  " + text,
                va="center",
                fontsize=7,
            )
    ax.set_title(
        f"Class frequencies: {Path(report['data']).name} ({report['format']}, {plural(total, 'usable image')})"
    )
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, out_png)


def _split_counts(report: dict) -> str:
    """'train 6 (4 usable), val 2, test 0': images listed in each split, and how many can be used when not all."""
    parts = []
    for n in SPLIT_NAMES:
        s = report["splits"][n]
        parts.append(f"{n} {s['images']}" + (f" ({s['usable']} usable)" if s["usable"] != s["images"] else ""))
    return ", ".join(parts)


def _data_lines(report: dict) -> list[str]:
    """Where the data is, what was detected, how many images of which sizes."""
    lines = [f"data:      {report['data']}"]
    lines += [f"           {n}" for n in report["notes"]]
    im = report["images"]
    unusable = f", {im['unusable']} unusable (see problems)" if im["unusable"] else ""
    lines.append(f"images:    {im['total']} checked, {im['usable']} usable{unusable}")
    lines.append(f"splits:    {_split_counts(report)} images")
    sz = im["sizes"]
    if sz["distinct"]:
        common = ", ".join(f"{s['width']}x{s['height']} ({s['images']})" for s in sz["most_common"])
        lines.append(f"sizes:     {sz['distinct']} distinct; most common (images) {common}")
        lines.append(
            f"           width {sz['width']['min']}..{sz['width']['max']} (median {sz['width']['median']:g}), "
            f"height {sz['height']['min']}..{sz['height']['max']} (median {sz['height']['median']:g})"
        )
    if im["converted"]:
        lines.append("converted: " + ", ".join(f"{m}: {t}" for m, t in im["converted"].items()))
    if im["exif_rotated"]:
        n = im["exif_rotated"]
        lines.append(
            f"EXIF:      {plural(n, 'image')} carr{'ies' if n == 1 else 'y'} an orientation; applied, masks checked "
            "against it"
        )
    return lines


def _weight_line(report: dict) -> str:
    """How the weight column was made, and which classes it leaves out or caps."""
    w = report["suggested_class_weights"]
    line = (
        "weights:   suggested loss weights: median frequency over the training split (--class-weights median), "
        f"capped at {MAX_SUGGESTED_WEIGHT:g}"
    )
    if w["capped"]:
        line += f" ({', '.join(w['capped'])} capped)"
    if w["too_few_pixels"]:
        line += f"; none for {', '.join(w['too_few_pixels'])}: under {MIN_WEIGHT_PIXELS} training pixels"
    return line


def _class_lines(report: dict) -> list[str]:
    """The class table: pixels, share, images and suggested weight of each class."""
    c = report["classes"]
    if not c["names"]:
        return [f"classes:   unknown (see problems); ignore index {c['ignore_index']}"]
    lines = [f"classes:   {len(c['names'])} ({c['source']}); ignore index {c['ignore_index']}", ""]
    width = max([len(r["name"]) for r in report["per_class"]] + [5])
    lines.append(f"  {'#':>3}  {'class':<{width}}  {'pixels':>12}  {'share':>8}  {'images':>14}  {'weight':>7}")
    total = max(1, report["images"]["usable"])
    for r in report["per_class"]:
        weight = "-" if r["suggested_weight"] is None else f"{r['suggested_weight']:.3f}"
        lines.append(
            f"  {r['index']:>3}  {r['name']:<{width}}  {r['pixels']:>12,}  {100 * r['share']:>6.2f} %  "
            f"{r['images']:>6} ({100 * r['images'] / total:>3.0f} %)  {weight:>7}"
        )
    n_ignored = report["ignored_pixels"]
    lines.append(
        f"  ignored pixels ({c['ignore_index']}): {n_ignored:,} ({100 * report['ignored_share']:.2f} % of all pixels)"
    )
    if report["imbalance"]:
        b = report["imbalance"]
        lines.append(f"imbalance: {b['ratio']:g}x ({b['most']} has {b['ratio']:g}x the pixels of {b['least']})")
    lines.append(_weight_line(report))
    return lines


def _size_text(size: dict) -> str:
    if size["min"] is None:
        return "-"
    return f"{size['min']:,}..{size['max']:,} px (median {size['median']:g})"


def _object_lines(report: dict) -> list[str]:
    """Objects per thing class, their sizes, touching and overlapping pairs (data with object ids only)."""
    o = report.get("objects")
    if o is None:
        return []
    lines = [
        "",
        f"objects:   {plural(o['total'], 'object')} in {plural(o['images'], 'image')}; sizes {_size_text(o['size'])}",
    ]
    if not o["things"]:
        lines.append("           no thing classes: list the countable ones as things: in classes.yaml")
    width = max([len(r["name"]) for r in o["per_class"]] + [5])
    lines.append(f"  {'class':<{width}}  {'objects':>8}  {'images':>6}  size (pixels)")
    for r in o["per_class"]:
        lines.append(f"  {r['name']:<{width}}  {r['objects']:>8,}  {r['images']:>6}  {_size_text(r['size'])}")
    lines.append(
        f"touching:  {plural(o['touching_pairs'], 'pair')} of objects of one class share a border "
        f"(in {plural(o['images_with_touching'], 'image')}): only their ids tell them apart"
    )
    if o["overlapping_pairs"] is not None:
        lines.append(
            f"overlaps:  {plural(o['overlapping_pairs'], 'pair')} of objects whose shapes are painted over each other "
            "(the later shape covers the earlier)"
        )
    return lines


def _problem_lines(report: dict, max_files: int) -> list[str]:
    """Every problem with its first files and what to do."""
    if not report["problems"]:
        return ["problems:  none found"]
    lines = [f"problems:  {plural(report['errors'], 'error')}, {plural(report['warnings'], 'warning')}"]
    for p in report["problems"]:
        lines.append(f"  {p['severity'].upper():<7} {p.get('heading') or p['title']}")
        lines += [f"          - {f}" for f in p["files"][:max_files]]
        if p["count"] > max_files:
            lines.append(f"          ... and {p['count'] - max_files} more (see --json)")
        lines.append(f"          what to do: {p['todo']}")
        if p["severity"] == "error" and p["skippable"]:
            lines.append("          or train on the rest with --skip-bad")
    return lines


def format_report(report: dict, max_files: int = 10) -> str:
    """The report as text for a person to read before training."""
    lines = _data_lines(report) + _class_lines(report) + _object_lines(report) + [""]
    lines += _problem_lines(report, max_files)
    if report.get("chart"):
        lines.append(f"chart:     {report['chart']}")
    if report.get("report_json"):
        lines.append(f"report:    {report['report_json']}")
    return "\n".join(lines)
