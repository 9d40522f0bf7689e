"""Score trained models on a split of a data set through the same Predictor that ``predict`` runs.

One dataset-level confusion matrix (ignore index never counted). The labels scored are exactly
those ``pixelwise predict`` writes with the same runs, inference options, post-processing,
backend and precision; ``metrics.json`` records all of them, and the data read.

Before any image is predicted, the data set's classes are checked against the model's (see
:func:`match_classes`) and the output folder against an earlier evaluation in it (see
:func:`check_output`). Ratios are fractions in [0, 1] in every file; pictures and the command
line show them in percent.

With objects on (an instance or panoptic model, or ``instances=InstanceOptions(...)``), each
image's ground-truth instance ids are read too (:func:`pixelwise.data.read_instances`), and
``metrics.json`` gains an ``instances`` section (mask AP, COCO definition) and a ``panoptic``
section (PQ, SQ, RQ; panopticapi definition), both as fractions.
"""

from __future__ import annotations

import heapq
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import data as data_readers
from . import instances as objects
from .bundle import Bundle
from .classes import ClassInfo
from .data import SPLIT_NAMES, load_source, open_dataset, read_image, read_sample_mask, scan_dataset
from .errors import PixelwiseError
from .fileio import prepare_output_dir, write_json, write_png
from .instance_metrics import MaskAP, PanopticQuality
from .metrics import BOUNDARY_RATIO, BoundaryIoU, ConfusionMatrix
from .postprocess import PostprocessConfig
from .predict.batch import load_object_predictor, objects_on
from .predict.engine import InferenceConfig
from .predict.predictor import BaseSegmenter, Predictor, as_predictor
from .training.config import TrainConfig

CLASS_MAPS = ("strict", "auto")
MAX_EXAMPLES = 64
# Every file an evaluation writes; a folder holding one of them without a metrics.json is not ours.
EVAL_FILES = ("metrics.json", "confusion_matrix.json", "confusion.png", "per_class_iou.png", "worst.png", "best.png")
# What makes two evaluations the same: an earlier one in the output folder with other values is kept.
SETTING_KEYS = (
    "data",
    "split",
    "runs",
    "format",
    "encoding",
    "classes_file",
    "class_map",
    "resize_masks",
    "skip_bad",
    "backend",
    "precision",
    "inference",
    "postprocess",
    "objects",
    "boundary_ratio",
)


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


def _resolved(options: DataOptions, bundle: Bundle) -> DataOptions:
    """``options`` with every None replaced by what the model was trained with."""
    cfg = _trained_with(bundle)

    def pick(value, trained):
        return value if value is not None else trained

    return DataOptions(
        format=pick(options.format, cfg.format),
        encoding=pick(options.encoding, cfg.encoding),
        classes_file=options.classes_file,
        resize_masks=pick(options.resize_masks, cfg.resize_masks),
        skip_bad=bool(pick(options.skip_bad, cfg.skip_bad)),
        max_image_pixels=int(pick(options.max_image_pixels, cfg.max_image_pixels)),
    )


def open_split(data: str | Path, split: str, bundle: Bundle, options: DataOptions, own_classes: bool = False):
    """Open ``data`` as the model's training did (same split seed and fractions, same classes).

    ``own_classes``: read the masks with the data set's own classes (for a mapping by name)
    instead of the model's. Returns ``(dataset, samples of split)``; ``split`` is train, val,
    test or all.
    """
    if split not in SPLIT_NAMES + ("all",):
        raise PixelwiseError(f"unknown split '{split}'; use train, val, test or all")
    cfg = _trained_with(bundle)
    opts = _resolved(options, bundle)
    ds = open_dataset(
        data,
        opts.format,
        opts.encoding,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        classes=None if own_classes else bundle.classes,
        classes_file=opts.classes_file,
        validate_splits=SPLIT_NAMES if split == "all" else (split,),
        resize_masks=opts.resize_masks,
        skip_bad=opts.skip_bad,
        max_pixels=opts.max_image_pixels,
    )
    samples = [s for n in SPLIT_NAMES for s in ds.splits[n]] if split == "all" else ds.splits[split]
    if not samples:
        raise PixelwiseError(
            f"{data}: the {split} split is empty; choose another --split or list stems in {data}/splits/{split}.txt"
        )
    return ds, samples


# --- the data set's classes against the model's ----------------------------------------------------


def _names(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
    return f"[{shown}]"


def match_classes(
    data: str | Path, bundle: Bundle, options: DataOptions, class_map: str = "strict", run: str = "the model"
) -> np.ndarray | None:
    """Check that the data set's classes are the model's; returns None (mask values are the model's
    class indices) or, with ``class_map="auto"``, a lookup table from the data set's mask values
    to the model's class indices (classes matched by name).

    ``strict`` (default): a data set that names its classes (classes file, format, or
    ``classes_file``) must name the model's classes in the model's order; one that does not must
    hold as many classes in its masks (all splits) as the model has, unless it is the folder the
    model was trained on. ``auto``: the names must be the model's, in any order. Anything else
    raises one-line :class:`PixelwiseError` before any image is predicted.
    """
    if class_map not in CLASS_MAPS:
        raise PixelwiseError(f"--class-map {class_map}: use one of {', '.join(CLASS_MAPS)}")
    model = bundle.classes
    opts = _resolved(options, bundle)
    src, _ = load_source(data, opts.format)
    if opts.classes_file:
        src.use_classes_file(Path(opts.classes_file))
    declared = src.classes
    if declared is None:
        if class_map == "auto":
            raise PixelwiseError(
                f"--class-map auto matches classes by name, and {data} names none (no classes file); "
                "give --classes-file with its class names"
            )
        _check_unnamed(data, bundle, opts, run)
        return None
    if declared.names == model.names:
        return None
    same_set = sorted(declared.names) == sorted(model.names)
    if class_map == "auto" and same_set:
        return _name_table(declared, model)
    if class_map == "auto":
        extra = [n for n in declared.names if n not in model.names]
        missing = [n for n in model.names if n not in declared.names]
        raise PixelwiseError(
            f"--class-map auto: {data} has classes the model {run} lacks {_names(extra)} or lacks some of "
            f"its classes {_names(missing)}; evaluate on data labelled with the model's classes"
        )
    hint = "pass --class-map auto to match them by name" if same_set else "evaluate on data labelled with them"
    raise PixelwiseError(
        f"{data} has the classes {_names(declared.names)} ({declared.num_classes}), the model {run} was trained "
        f"on {_names(model.names)} ({model.num_classes}); {hint}"
    )


def _name_table(declared: ClassInfo, model: ClassInfo) -> np.ndarray:
    """Data mask value -> model class index (the ignore index to the model's; anything else ignored)."""
    table = np.full(max(declared.num_classes, declared.ignore_index + 1), model.ignore_index, dtype=np.int64)
    for i, name in enumerate(declared.names):
        table[i] = model.names.index(name)
    return table


def _check_unnamed(data: str | Path, bundle: Bundle, opts: DataOptions, run: str) -> None:
    """A data set without class names: its masks (all splits) must hold the model's number of classes."""
    trained_on = bundle.data.get("root")
    if trained_on and Path(trained_on).resolve() == Path(data).resolve():
        return
    cfg = _trained_with(bundle)
    scanned = scan_dataset(
        data,
        opts.format,
        opts.encoding,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        classes_file=None,
        resize_masks=opts.resize_masks,
        max_pixels=opts.max_image_pixels,
    )
    found, model = scanned.result.classes, bundle.classes
    # No readable mask at all: opening the split reports the files' problems.
    if scanned.result.report.values and found.num_classes != model.num_classes:
        held = f"{found.num_classes} class{'es' if found.num_classes != 1 else ''}"
        raise PixelwiseError(
            f"{data}: its masks hold {held} (values 0..{found.num_classes - 1}, no class "
            f"names), the model {run} has {model.num_classes} {_names(model.names)}; evaluate on data labelled "
            "like the model's, or give --classes-file with the model's class names if the masks use them"
        )


# --- scoring, and the examples kept for the pictures ------------------------------------------------


def image_miou(truth: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int) -> float | None:
    """Mean IoU of one image (a fraction), over the classes in its ground truth or prediction;
    None when every pixel is ignored. ``truth``, ``pred``: (H, W) class indices."""
    keep = truth != ignore_index
    t = truth[keep].astype(np.int64)
    if t.size == 0:
        return None
    p = np.clip(pred[keep].astype(np.int64), 0, num_classes - 1)
    cm = np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present]))


class ExampleKeeper:
    """The ``k`` images with the lowest and the ``k`` with the highest per-image mIoU seen so far.

    Only those are kept, shrunk to panel size, so memory stays at 2k small pictures whatever the
    number of images scored; an image is shrunk only when it enters one of the two lists.
    """

    def __init__(self, k: int, num_classes: int, ignore_index: int):
        self.k, self.num_classes, self.ignore_index = int(k), num_classes, ignore_index
        self.scored = 0
        self._worst: list = []  # heap of (-score, -order, Example): the best of the worst on top
        self._best: list = []  # heap of (score, order, Example): the worst of the best on top

    def add(self, name: str, image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> float | None:
        """Score one image; keep it if it is among the k worst or k best. Returns its mIoU."""
        from .viz import Example, shrink_example

        value = image_miou(truth, pred, self.num_classes, self.ignore_index)
        if value is None or self.k <= 0:
            return value
        self.scored += 1
        order = self.scored
        into_worst = len(self._worst) < self.k or value < -self._worst[0][0]
        into_best = len(self._best) < self.k or value > self._best[0][0]
        if into_worst or into_best:
            example = Example(name, value, *shrink_example(image, truth, pred))
            if into_worst:
                _push(self._worst, (-value, -order, example), self.k)
            if into_best:
                _push(self._best, (value, order, example), self.k)
        return value

    def worst(self) -> list:
        """The kept lowest-scoring examples, lowest first."""
        return [e for _, _, e in sorted(self._worst, key=lambda t: (-t[0], -t[1]))]

    def best(self) -> list:
        """The kept highest-scoring examples, highest first."""
        return [e for _, _, e in sorted(self._best, key=lambda t: (-t[0], t[1]))]


def _push(heap: list, item: tuple, k: int) -> None:
    if len(heap) < k:
        heapq.heappush(heap, item)
    else:
        heapq.heappushpop(heap, item)


def _print_data_notes(ds) -> None:
    for line in ds.notes:
        tqdm.write(f"data: {line}", file=sys.stderr)
    for w in ds.warnings:
        tqdm.write(f"data warning: {w.message()}", file=sys.stderr)
    for item in ds.skipped:
        tqdm.write(f"skipped: {item}", file=sys.stderr)


class ObjectScores:
    """Mask AP over the thing classes and panoptic quality over all classes, image by image.

    ``things``: the class indices that are objects (the Predictor's); ground truth is built from
    each image's mask and instance ids with the same split into things and stuff.
    """

    def __init__(self, classes: ClassInfo, things: Sequence[int]):
        self.things = tuple(int(t) for t in things)
        self.ignore_index = classes.ignore_index
        self.ap = MaskAP(self.things, classes.names)
        self.pq = PanopticQuality(classes.num_classes, self.things, classes.names)

    def add(self, truth: np.ndarray, instance_ids: np.ndarray, found) -> None:
        """One image: ``truth`` (H, W) model class indices, ``instance_ids`` (H, W) int ids (0 = none),
        ``found`` the Predictor's ObjectResult."""
        gt = objects.ground_truth_instances(truth, instance_ids, self.things, self.ignore_index)
        inst = found.instances
        self.ap.add(gt.ids, gt.categories(), inst.ids, inst.categories(), inst.scores())
        gt_pan, void = objects.ground_truth_panoptic(truth, instance_ids, self.things, self.ignore_index)
        pan = found.panoptic
        self.pq.add(gt_pan.ids, gt_pan.categories(), pan.ids, pan.categories(), void=void)

    def summary(self) -> dict:
        """``{"instances": MaskAP.summary(), "panoptic": PanopticQuality.summary()}``."""
        return {"instances": self.ap.summary(), "panoptic": self.pq.summary()}


def has_instance_ids(sample) -> bool:
    """Whether ``sample`` names a source of instance ids (a file, or annotations with objects)."""
    return getattr(sample, "instances", None) is not None


def check_instance_ids(data, samples) -> None:
    """Refuse, before any image is predicted, a split with an image lacking instance ids."""
    missing = [s for s in samples if not has_instance_ids(s)]
    if missing:
        name = Path(missing[0].image).name
        raise PixelwiseError(
            f"{data}: {len(missing)} of {len(samples)} images have no instance ids (first: {name}); objects are "
            "scored against instances/<name>.png (or the format's own ids): add them, or pass --instances off"
        )


def _instance_ids(sample, shape: tuple[int, int]) -> np.ndarray:
    ids = np.asarray(data_readers.read_instances(sample))
    if ids.shape != tuple(shape):
        raise PixelwiseError(
            f"{sample.instances}: instance ids of {ids.shape[1]}x{ids.shape[0]} pixels for an image of "
            f"{shape[1]}x{shape[0]}; give ids the size of the image"
        )
    return ids


class LatencyMeter:
    """The wall time of each prediction, one image at a time (evaluate never batches images).

    Only the Predictor's call is timed: the network with the inference options (scales, flips,
    tiles), post-processing and objects, as ``pixelwise predict`` runs them; reading the files
    and scoring are not. The labels come back as host arrays, so work on a GPU is finished when
    the clock stops.
    """

    MEASURE = (
        "wall time of one Predictor call per image (images predicted one at a time), inference options and "
        "post-processing included; reading files and scoring excluded; the first image (warm-up) is left out "
        "of the median and 90th percentile when more than 3 images were timed (it is first_ms)"
    )

    def __init__(self):
        self.ms: list[float] = []
        self.sizes: list[tuple[int, int]] = []

    def call(self, predict, image: np.ndarray):
        """``predict(image)``, timed; the image's (height, width) recorded with the time."""
        start = time.perf_counter()
        result = predict(image)
        self.ms.append(1000.0 * (time.perf_counter() - start))
        self.sizes.append((int(image.shape[0]), int(image.shape[1])))
        return result

    def summary(self, predictor: Predictor) -> dict | None:
        """Median and 90th percentile in ms per image, the median image size (by pixels), and the
        backend, device and CPU threads the Predictor ran with; None when no image was timed."""
        import torch

        if not self.ms:
            return None
        h, w = sorted(self.sizes, key=lambda hw: (hw[0] * hw[1], hw))[(len(self.sizes) - 1) // 2]
        steady = self.ms[1:] if len(self.ms) > 3 else self.ms
        backends = sorted({str(m.get("backend")) for m in predictor.describe()["members"]})
        return {
            "measure": self.MEASURE,
            "images": len(self.ms),
            "batch_size": 1,
            "median_ms_per_image": float(np.median(steady)),
            "p90_ms_per_image": float(np.percentile(steady, 90)),
            "first_ms": self.ms[0],
            "median_image_size": {"width": w, "height": h},
            "backend": ",".join(backends),
            "device": str(predictor.device),
            "threads": int(torch.get_num_threads()),
        }


def score(
    predictor: Predictor,
    samples,
    desc: str = "evaluate",
    progress: bool = True,
    table: np.ndarray | None = None,
    examples: ExampleKeeper | None = None,
    found: ObjectScores | None = None,
    boundary: BoundaryIoU | None = None,
    latency: LatencyMeter | None = None,
) -> ConfusionMatrix:
    """The confusion matrix of ``predictor``'s post-processed labels against the samples' masks.

    ``table``: data mask value -> model class index (from :func:`match_classes`), or None.
    ``examples``: collects the best and worst images for the pictures. ``found``: scores the
    objects too (the labels scored are then those of ``predictor.run_objects``). ``boundary``:
    accumulates Boundary IoU of the same labels. ``latency``: times each prediction.
    """
    timed = latency or LatencyMeter()
    classes = predictor.classes
    cm = ConfusionMatrix(classes.num_classes, classes.ignore_index)
    for s in tqdm(samples, desc=desc, unit="img", disable=not progress):
        image = read_image(s.image, s.spec.max_pixels)
        truth = read_sample_mask(s, image.shape[:2])
        if table is not None:
            truth = np.take(table, truth, mode="clip")
        if found is not None:
            result = timed.call(predictor.run_objects, image)
            pred = result.labels
            found.add(truth, _instance_ids(s, truth.shape), result)
        else:
            pred = timed.call(predictor.predict, image)
        cm.update(pred, truth)
        if boundary is not None:
            boundary.update(pred, truth)
        if examples is not None:
            examples.add(Path(s.image).name, image, truth, pred)
    return cm


# --- the output folder --------------------------------------------------------------------------------


def _comparable(key: str, value):
    if key == "runs" and isinstance(value, list):
        return [str(Path(r).resolve()) for r in value]
    return value


def check_output(out: Path, settings: dict, overwrite: bool = False) -> None:
    """Refuse to replace an earlier evaluation in ``out`` made with other data or options (any of
    :data:`SETTING_KEYS` differs), or files in ``out`` that no evaluation wrote, unless ``overwrite``.
    An earlier evaluation with the same settings is replaced (it would give the same figures)."""
    if overwrite or not out.is_dir():
        return
    earlier = out / "metrics.json"
    how = "pass --out DIR to keep both, or --overwrite to replace it"
    if not earlier.is_file():
        clash = [n for n in EVAL_FILES if (out / n).exists()]
        if clash:
            raise PixelwiseError(f"{out} holds {clash[0]}, which no evaluation wrote; {how}")
        return
    try:
        old = json.loads(earlier.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        old = None
    if not isinstance(old, dict):
        raise PixelwiseError(f"{earlier} is not the metrics.json of an evaluation; {how}")
    for key in SETTING_KEYS:
        if key in old and _comparable(key, old[key]) != _comparable(key, settings.get(key)):
            then, now = old[key], settings.get(key)
            detail = f" ({then} there, {now} now)" if not isinstance(then, (dict, list)) else ""
            raise PixelwiseError(f"{out} holds an evaluation with another {key.replace('_', ' ')}{detail}; {how}")


def _write_results(out: Path, metrics: dict, cm: ConfusionMatrix, classes: ClassInfo, keeper, title: str) -> None:
    from .viz import example_grid, plot_confusion_matrix, plot_per_class_iou

    out.mkdir(parents=True, exist_ok=True)
    # First: whatever stops the writing later (a full disk), the folder says what it holds, and
    # the same evaluation run again replaces it.
    write_json(out / "metrics.json", metrics)
    names = classes.names
    matrix = cm.matrix.cpu()
    write_json(
        out / "confusion_matrix.json",
        {"rows": "ground truth", "cols": "prediction", "names": names, "matrix": matrix.tolist()},
    )
    plot_confusion_matrix(np.asarray(matrix), names, out / "confusion.png")
    miou = metrics.get("miou")
    shown = "-" if miou is None else f"{100 * miou:.1f} %"
    plot_per_class_iou(metrics["per_class"], classes.colors, out / "per_class_iou.png", f"{title}: mIoU {shown}")
    for kind, chosen, what in (("worst", keeper.worst(), "Lowest"), ("best", keeper.best(), "Highest")):
        path = out / f"{kind}.png"
        if keeper.k <= 0:
            path.unlink(missing_ok=True)  # a picture of an earlier evaluation would mislead
            continue
        heading = f"{what} per-image mIoU: {len(chosen)} of {keeper.scored} images ({title})"
        write_png(path, example_grid(chosen, classes.colors, names, classes.ignore_index, heading))


def _provenance(split: str, images: int, data, ds, runs: list[str], predictor: Predictor, opts: dict) -> dict:
    """What metrics.json records besides the metrics: the data read and the Predictor that labelled it.

    The Predictor's object options go under ``objects``: ``instances`` is the mask AP section."""
    described = predictor.describe()
    described["objects"] = described.pop("instances", None)
    return {
        "split": split,
        "images": images,
        "data": str(Path(data).resolve()),
        "runs": runs,
        "format": ds.format,
        "encoding": ds.spec.describe(),
        **opts,
        "notes": list(ds.notes),
        "skipped": list(ds.skipped),
        **described,
    }


def _as_list(runs) -> list[str]:
    return [str(r) for r in ([runs] if isinstance(runs, (str, Path)) else runs)]


def _examples_summary(keeper: ExampleKeeper) -> dict:
    return {
        "measure": "per-image mIoU (fraction), over the classes in each image's ground truth or prediction",
        "worst": [{"image": e.name, "miou": e.score} for e in keeper.worst()],
        "best": [{"image": e.name, "miou": e.score} for e in keeper.best()],
    }


def _out_folder(out, runs: list[str], split: str) -> tuple[Path, str]:
    if out:
        return Path(out), "--out"
    default = f"eval-{split}" if len(runs) == 1 else f"eval-{split}-ensemble"
    return Path(runs[0]) / default, "the evaluation folder"


def _load(runs: list[str], where: dict, inference, postprocess, instances, stuff_run) -> Predictor:
    """The Predictor of ``runs``; ``instances`` and ``stuff_run`` passed on only when given."""
    extra = {} if instances is None else {"instances": instances}
    return load_object_predictor(
        runs, stuff_run=stuff_run, inference=inference, postprocess=postprocess, **where, **extra
    )


# long: the whole evaluation in order (checks before work, scoring, files); each step is a call
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
    examples: int = 4,
    class_map: str = "strict",
    overwrite: bool = False,
    instances=None,
    stuff_run: str | Path | None = None,
    boundary_ratio: float = BOUNDARY_RATIO,
) -> dict:
    """Predict every image of ``split`` at full resolution and score it against its mask.

    ``runs``: one run directory or several (an ensemble). The labels come from the Predictor
    that :func:`~pixelwise.predict.load_predictor` builds from ``inference``, ``postprocess``,
    ``backend``, ``precision``, ``device`` and ``onnx_path``, as ``pixelwise predict`` builds it;
    or from ``predictor`` (a loaded Predictor, Segmenter or Ensemble; ``segmenter`` is its former
    name). ``split``: train, val, test or all; without split files, the seeded split of training.
    The data options default to those the model was trained with. ``class_map``: ``strict`` or
    ``auto`` (see :func:`match_classes`). ``examples``: how many images ``worst.png`` and
    ``best.png`` show (0: neither is written). ``instances``: an
    :class:`~pixelwise.predict.InstanceOptions` (default: the model's own: objects for instance
    and panoptic models); ``stuff_run``: a semantic run whose labels give the stuff classes.
    ``boundary_ratio``: the boundary width of Boundary IoU as a fraction of each image's diagonal
    (0 < r <= 0.5; default 0.02, the paper's).

    Writes into ``out`` (default ``RUN/eval-<split>``, or ``RUN/eval-<split>-ensemble`` with RUN
    the first of several): ``metrics.json`` (metrics as fractions, the data and every option),
    ``confusion_matrix.json``, ``confusion.png``, ``per_class_iou.png``, ``worst.png`` and
    ``best.png``. An earlier evaluation there with other data or options is refused unless
    ``overwrite`` (see :func:`check_output`). Returns the metrics dict (see
    :func:`pixelwise.metrics.compute_metrics`) with ``out`` added, ``boundary_iou`` (see
    :meth:`pixelwise.metrics.BoundaryIoU.compute`), ``latency`` (see :class:`LatencyMeter`), and
    with objects on the ``instances`` and ``panoptic`` sections (see :class:`ObjectScores`); a
    split without instance ids is then refused.
    """
    runs = _as_list(runs)
    if not 0 <= int(examples) <= MAX_EXAMPLES:
        raise PixelwiseError(f"--examples {examples}: give 0 (no pictures) to {MAX_EXAMPLES} images")
    check_boundary_ratio(boundary_ratio)
    out, what = _out_folder(out, runs, split)
    prepare_output_dir(out, what, create=False)
    loaded = predictor or segmenter
    pred = (
        as_predictor(loaded, inference, postprocess)
        if loaded is not None
        else _load(
            runs,
            dict(device=device, backend=backend, precision=precision, onnx_path=onnx_path),
            inference,
            postprocess,
            instances,
            stuff_run,
        )
    )
    options = DataOptions(format, encoding, classes_file, resize_masks, skip_bad, max_image_pixels)
    table = match_classes(data, pred.bundle, options, class_map, runs[0] if runs else "the model")
    ds, samples = open_split(data, split, pred.bundle, options, own_classes=table is not None)
    opts = _resolved(options, pred.bundle)
    recorded = {
        "classes_file": str(Path(classes_file).resolve()) if classes_file else None,
        "class_map": class_map,
        "resize_masks": opts.resize_masks or None,
        "skip_bad": opts.skip_bad,
        "boundary_ratio": float(boundary_ratio),
    }
    provenance = _provenance(split, len(samples), data, ds, runs, pred, recorded)
    check_output(out, provenance, overwrite)
    found = ObjectScores(pred.classes, pred.things) if objects_on(pred) else None
    if found is not None:
        check_instance_ids(data, samples)
    if progress:
        _print_data_notes(ds)
    keeper = ExampleKeeper(int(examples), pred.classes.num_classes, pred.classes.ignore_index)
    cm, measured = _measure(pred, samples, f"evaluate {split}", progress, table, keeper, found, boundary_ratio)
    metrics = {**measured, **provenance, "examples": _examples_summary(keeper)}
    if found is not None:
        metrics.update(found.summary())
    title = f"{split} split of {Path(data).resolve().name}"
    _write_results(out, metrics, cm, pred.classes, keeper, title)
    metrics["out"] = str(out)
    return metrics


def check_boundary_ratio(ratio) -> None:
    """Refuse a Boundary IoU width that is not a fraction of the diagonal in (0, 0.5]."""
    try:
        ok = math.isfinite(float(ratio)) and 0.0 < float(ratio) <= 0.5
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise PixelwiseError(
            f"--boundary-ratio {ratio}: give the boundary width as a fraction of the image diagonal, "
            "above 0 and at most 0.5 (default 0.02)"
        )


def _measure(pred: Predictor, samples, desc, progress, table, keeper, found, boundary_ratio) -> tuple:
    """Predict and score every sample: the confusion matrix, and the metrics from it with
    ``boundary_iou`` beside them and the ``latency`` measured."""
    classes = pred.classes
    boundary = BoundaryIoU(classes.num_classes, classes.ignore_index, ratio=float(boundary_ratio))
    latency = LatencyMeter()
    cm = score(pred, samples, desc, progress, table, keeper, found, boundary, latency)
    metrics = cm.compute(classes.names)
    metrics["boundary_iou"] = boundary.compute(classes.names)
    metrics["latency"] = latency.summary(pred)
    return cm, metrics


def latency_line(metrics: dict) -> str | None:
    """One line with the prediction time per image that ``metrics`` records, or None."""
    lat = metrics.get("latency")
    if not lat:
        return None
    size = lat["median_image_size"]
    threads = lat["threads"]
    return (
        f"latency: median {lat['median_ms_per_image']:.1f} ms, 90th percentile {lat['p90_ms_per_image']:.1f} ms "
        f"per image ({size['width']}x{size['height']} median size, {lat['backend']} on {lat['device']}, "
        f"{threads} thread{'s' if threads != 1 else ''}; prediction only, one image at a time)"
    )


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def object_lines(metrics: dict) -> list[str]:
    """One line for mask AP and one for panoptic quality (in %), when ``metrics`` has them."""
    lines = []
    ap = metrics.get("instances")
    if ap:
        lines.append(
            f"instances: AP {_percent(ap.get('AP'))} %, AP50 {_percent(ap.get('AP50'))} %, "
            f"AP75 {_percent(ap.get('AP75'))} % ({ap.get('objects', 0)} objects, {ap.get('detections', 0)} found)"
        )
    pq = metrics.get("panoptic")
    if pq:
        parts = [f"PQ {_percent(pq.get('PQ'))} %, SQ {_percent(pq.get('SQ'))} %, RQ {_percent(pq.get('RQ'))} %"]
        parts += [f"{kind} PQ {_percent((pq.get(kind) or {}).get('PQ'))} %" for kind in ("things", "stuff")]
        lines.append("panoptic: " + "; ".join(parts))
    return lines
