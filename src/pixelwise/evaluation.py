"""Score a trained model on a split of a data set: one dataset-level confusion matrix."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .classes import ClassInfo
from .data.encodings import DEFAULT_MAX_PIXELS
from .data.folder import SPLIT_NAMES, read_image, read_sample_mask
from .data.formats import open_dataset
from .errors import PixelwiseError
from .fileio import write_json
from .metrics import ConfusionMatrix
from .predict.predictor import Segmenter, load


def evaluate(
    run: str | Path,
    data: str | Path,
    split: str = "val",
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    segmenter: Segmenter | None = None,
    format: str | None = None,
    encoding: str | None = None,
    classes_file: str | None = None,
    resize_masks: str | None = None,
    skip_bad: bool | None = None,
    max_pixels: int | None = None,
) -> dict:
    """Predict every image of ``split`` at full resolution and score it against its mask.

    ``split`` is train, val, test or all. Without split files the split is the same seeded split
    the model was trained with (seed and fractions are read from the bundle). The data options
    (``format``, ``encoding``, ``classes_file``, ``resize_masks``, ``skip_bad``, ``max_pixels``)
    default to those the model was trained with. Writes ``metrics.json`` and ``confusion.png``
    into ``out`` (default ``RUN/eval-<split>``) and returns the metrics dict (see
    :func:`pixelwise.metrics.compute_metrics`), with ``notes`` saying how the data was read.
    """
    seg = segmenter or load(run, device)
    classes: ClassInfo = seg.classes
    cfg = seg.bundle.train_config
    if split not in SPLIT_NAMES + ("all",):
        raise PixelwiseError(f"unknown split '{split}'; use train, val, test or all")

    def pick(value, key, default):
        return value if value is not None else cfg.get(key, default)

    ds = open_dataset(
        data,
        pick(format, "format", "auto"),
        pick(encoding, "encoding", "auto"),
        val_fraction=cfg.get("val_fraction", 0.2),
        test_fraction=cfg.get("test_fraction", 0.0),
        seed=cfg.get("seed", 0),
        classes=classes,
        classes_file=classes_file,
        validate_splits=SPLIT_NAMES if split == "all" else (split,),
        resize_masks=pick(resize_masks, "resize_masks", None),
        skip_bad=bool(pick(skip_bad, "skip_bad", False)),
        max_pixels=int(pick(max_pixels, "max_pixels", DEFAULT_MAX_PIXELS)),
    )
    samples = [s for n in SPLIT_NAMES for s in ds.splits[n]] if split == "all" else ds.splits[split]
    if not samples:
        raise PixelwiseError(
            f"{data}: the {split} split is empty; choose another --split or list stems in {data}/splits/{split}.txt"
        )
    if progress:
        for line in ds.notes:
            tqdm.write(f"data: {line}", file=sys.stderr)
        for w in ds.warnings:
            tqdm.write(f"data warning: {w.message()}", file=sys.stderr)
        for item in ds.skipped:
            tqdm.write(f"skipped: {item}", file=sys.stderr)
    cm = ConfusionMatrix(classes.num_classes, classes.ignore_index)
    for s in tqdm(samples, desc=f"evaluate {split}", unit="img", disable=not progress):
        image = read_image(s.image, s.spec.max_pixels)
        pred = seg.predict(image)
        cm.update(pred, read_sample_mask(s, image.shape[:2]))
    metrics = cm.compute(classes.names)
    metrics.update(
        split=split,
        images=len(samples),
        data=str(Path(data).resolve()),
        run=str(run),
        format=ds.format,
        encoding=ds.spec.describe(),
        notes=list(ds.notes),
        skipped=list(ds.skipped),
    )
    out = Path(out) if out else Path(run) / f"eval-{split}"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    write_json(
        out / "confusion_matrix.json",
        {"rows": "ground truth", "cols": "prediction", "names": classes.names, "matrix": cm.matrix.cpu().tolist()},
    )
    from .viz import plot_confusion_matrix

    plot_confusion_matrix(np.asarray(cm.matrix.cpu()), classes.names, out / "confusion.png")
    metrics["out"] = str(out)
    return metrics
