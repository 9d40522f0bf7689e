"""Score a trained model on a split of a data set: one dataset-level confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .data.folder import (
    SPLIT_NAMES, ClassInfo, find_samples, load_classes, read_image, read_mask, split_samples, validate_samples,
)
from .errors import PixelwiseError
from .io import write_json
from .metrics import ConfusionMatrix
from .predict import Segmenter, load


def evaluate(run: str | Path, data: str | Path, split: str = "val", out: str | Path | None = None,
             device: str = "auto", progress: bool = True, segmenter: Segmenter | None = None) -> dict:
    """Predict every image of ``split`` at full resolution and score it against its mask.

    ``split`` is train, val, test or all. Without DATA/splits/*.txt the split is the same seeded
    split the model was trained with (seed and fractions are read from the bundle). Writes
    ``metrics.json`` and ``confusion.png`` into ``out`` (default ``RUN/eval-<split>``) and
    returns the metrics dict (see :func:`pixelwise.metrics.compute_metrics`).
    """
    seg = segmenter or load(run, device)
    classes: ClassInfo = seg.classes
    cfg = seg.meta.get("training", {}).get("config", {})
    if split not in SPLIT_NAMES + ("all",):
        raise PixelwiseError(f"unknown split '{split}'; use train, val, test or all")
    file_classes = load_classes(data)
    if file_classes is not None and file_classes.names != classes.names:
        raise PixelwiseError(
            f"{data}/classes.yaml lists {file_classes.names}, the model was trained on {classes.names}; "
            "evaluate on data with the model's classes"
        )
    samples = find_samples(data)
    if split != "all":
        splits = split_samples(data, samples, cfg.get("val_fraction", 0.2), cfg.get("test_fraction", 0.0),
                               cfg.get("seed", 0))
        samples = splits[split]
    if not samples:
        raise PixelwiseError(
            f"{data}: the {split} split is empty; choose another --split or list stems in {data}/splits/{split}.txt"
        )
    validate_samples(samples, classes, what=f"{data} ({split})")
    cm = ConfusionMatrix(classes.num_classes, classes.ignore_index)
    for s in tqdm(samples, desc=f"evaluate {split}", unit="img", disable=not progress):
        pred = seg.predict(read_image(s.image))
        cm.update(pred, read_mask(s.mask))
    metrics = cm.compute(classes.names)
    metrics.update(split=split, images=len(samples), data=str(Path(data).resolve()), run=str(run))
    out = Path(out) if out else Path(run) / f"eval-{split}"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    write_json(out / "confusion_matrix.json", {"rows": "ground truth", "cols": "prediction",
                                                "names": classes.names, "matrix": cm.matrix.cpu().tolist()})
    from .viz import plot_confusion_matrix

    plot_confusion_matrix(np.asarray(cm.matrix.cpu()), classes.names, out / "confusion.png")
    metrics["out"] = str(out)
    return metrics
