"""Score trained models on a split of a data set through the same Predictor that ``predict`` runs.

One dataset-level confusion matrix (ignore index never counted). The labels scored are exactly
those ``pixelwise predict`` writes with the same runs, inference options, post-processing,
backend and precision; ``metrics.json`` records all of them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .bundle import Bundle
from .data import SPLIT_NAMES, open_dataset, read_image, read_sample_mask
from .errors import PixelwiseError
from .fileio import write_json
from .metrics import ConfusionMatrix
from .postprocess import PostprocessConfig
from .predict.engine import InferenceConfig
from .predict.predictor import BaseSegmenter, Predictor, as_predictor, load_predictor
from .training.config import TrainConfig


@dataclass
class DataOptions:
    """How to read the data set; None = as the model was trained (read from its bundle)."""

    format: str | None = None
    encoding: str | None = None
    classes_file: str | None = None
    resize_masks: str | None = None
    skip_bad: bool | None = None
    max_image_pixels: int | None = None


def _trained_with(bundle: Bundle) -> TrainConfig:
    """The training configuration saved in the bundle (defaults for what it does not say; keys of
    older versions mapped by :meth:`TrainConfig.from_dict`)."""
    return TrainConfig.from_dict(bundle.train_config)


def open_split(data: str | Path, split: str, bundle: Bundle, options: DataOptions):
    """Open ``data`` as the model's training did (same split seed and fractions, same classes).

    Returns ``(dataset, samples of split)``; ``split`` is train, val, test or all.
    """
    if split not in SPLIT_NAMES + ("all",):
        raise PixelwiseError(f"unknown split '{split}'; use train, val, test or all")
    cfg = _trained_with(bundle)

    def pick(value, trained):
        return value if value is not None else trained

    ds = open_dataset(
        data,
        pick(options.format, cfg.format),
        pick(options.encoding, cfg.encoding),
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        classes=bundle.classes,
        classes_file=options.classes_file,
        validate_splits=SPLIT_NAMES if split == "all" else (split,),
        resize_masks=pick(options.resize_masks, cfg.resize_masks),
        skip_bad=bool(pick(options.skip_bad, cfg.skip_bad)),
        max_pixels=int(pick(options.max_image_pixels, cfg.max_image_pixels)),
    )
    samples = [s for n in SPLIT_NAMES for s in ds.splits[n]] if split == "all" else ds.splits[split]
    if not samples:
        raise PixelwiseError(
            f"{data}: the {split} split is empty; choose another --split or list stems in {data}/splits/{split}.txt"
        )
    return ds, samples


def _print_data_notes(ds) -> None:
    for line in ds.notes:
        tqdm.write(f"data: {line}", file=sys.stderr)
    for w in ds.warnings:
        tqdm.write(f"data warning: {w.message()}", file=sys.stderr)
    for item in ds.skipped:
        tqdm.write(f"skipped: {item}", file=sys.stderr)


def score(predictor: Predictor, samples, desc: str = "evaluate", progress: bool = True) -> ConfusionMatrix:
    """The confusion matrix of ``predictor``'s post-processed labels against the samples' masks."""
    classes = predictor.classes
    cm = ConfusionMatrix(classes.num_classes, classes.ignore_index)
    for s in tqdm(samples, desc=desc, unit="img", disable=not progress):
        image = read_image(s.image, s.spec.max_pixels)
        cm.update(predictor.predict(image), read_sample_mask(s, image.shape[:2]))
    return cm


def _write_results(out: Path, metrics: dict, cm: ConfusionMatrix, names: list[str]) -> None:
    from .viz import plot_confusion_matrix

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    matrix = cm.matrix.cpu()
    write_json(
        out / "confusion_matrix.json",
        {"rows": "ground truth", "cols": "prediction", "names": names, "matrix": matrix.tolist()},
    )
    plot_confusion_matrix(np.asarray(matrix), names, out / "confusion.png")


def _provenance(split: str, images: int, data, ds, runs: list[str], predictor: Predictor) -> dict:
    """What metrics.json records besides the metrics: the data read and the Predictor that labelled it."""
    return {
        "split": split,
        "images": images,
        "data": str(Path(data).resolve()),
        "runs": runs,
        "format": ds.format,
        "encoding": ds.spec.describe(),
        "notes": list(ds.notes),
        "skipped": list(ds.skipped),
        **predictor.describe(),
    }


def _as_list(runs) -> list[str]:
    return [str(r) for r in ([runs] if isinstance(runs, (str, Path)) else runs)]


def evaluate(
    runs: str | Path | Sequence[str | Path],
    data: str | Path,
    split: str = "val",
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    onnx_path: str | Path | None = None,
    predictor: Predictor | BaseSegmenter | None = None,
    segmenter: BaseSegmenter | None = None,
    format: str | None = None,
    encoding: str | None = None,
    classes_file: str | None = None,
    resize_masks: str | None = None,
    skip_bad: bool | None = None,
    max_image_pixels: int | None = None,
) -> dict:
    """Predict every image of ``split`` at full resolution and score it against its mask.

    ``runs``: one run directory or several (an ensemble). The labels come from the Predictor
    that :func:`~pixelwise.predict.load_predictor` builds from ``inference``, ``postprocess``,
    ``backend``, ``precision``, ``device`` and ``onnx_path``, as ``pixelwise predict`` builds it;
    or from ``predictor`` (a loaded Predictor, Segmenter or Ensemble; ``segmenter`` is its former
    name). ``split``: train, val, test or all; without split files, the seeded split of training.
    The data options default to those the model was trained with.

    Writes ``metrics.json`` (metrics, runs, members, backend, precision, inference options,
    post-processing), ``confusion_matrix.json`` and ``confusion.png`` into ``out`` (default
    ``RUN/eval-<split>``, or ``RUN/eval-<split>-ensemble`` with RUN the first of several) and
    returns the metrics dict (see :func:`pixelwise.metrics.compute_metrics`).
    """
    runs = _as_list(runs)
    loaded = predictor or segmenter
    pred = (
        as_predictor(loaded, inference, postprocess)
        if loaded is not None
        else load_predictor(runs, device, backend, precision, inference, postprocess, onnx_path)
    )
    options = DataOptions(format, encoding, classes_file, resize_masks, skip_bad, max_image_pixels)
    ds, samples = open_split(data, split, pred.bundle, options)
    if progress:
        _print_data_notes(ds)
    cm = score(pred, samples, f"evaluate {split}", progress)
    metrics = {**cm.compute(pred.classes.names), **_provenance(split, len(samples), data, ds, runs, pred)}
    default = f"eval-{split}" if len(runs) == 1 else f"eval-{split}-ensemble"
    out = Path(out) if out else Path(runs[0]) / default
    _write_results(out, metrics, cm, pred.classes.names)
    metrics["out"] = str(out)
    return metrics
