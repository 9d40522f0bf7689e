"""``pixelwise train DATA --budget 20m``: choose the training recipe that fits the time a user has.

The planner works in three steps:

1. **Fingerprint** the data (from the validation pass that runs anyway, plus up to 48 training
   masks read again): number of images per split, image sizes and their longer sides, classes,
   their pixel shares and the imbalance ratio, and each class's typical structure width in
   native pixels (:func:`mask_widths`).
2. **Measure** on this machine, for a few seconds, the training throughput (images/s) of the
   candidate models at the candidate crop sizes, the time to validate one image, and the latency
   of predicting one image of the median size through the engine ``pixelwise predict`` uses, at
   the working resolution; only the configurations that can change the plan are measured (see
   :func:`worth_measuring`).
3. **Choose** the crop, then the working resolution that goes with it (:func:`working_side`),
   then the most capable model that still gets enough optimizer steps and views of each image
   in the budget and predicts within ``--max-latency``; the number of epochs that fills the
   budget, how often to validate, class weights and augmentation strength. Each choice carries
   its reason; an explicit flag always wins and is listed as overridden.

What follows from measurements on the data in front of the planner: the crops (up to the median
image's shorter side at the working size), the working resolution (structure widths, image
sides, the crop), validation time (at the working size), latency, steps per epoch and views of
each image (epochs x the share of the working image one crop covers), the class weights (the
pixel shares). What remains a fixed figure, and its evidence:

- CONTEXT_MIN_STEPS (800): CamVid, 20 minutes on a 2-core CPU: 192 px crops at 960-1060 steps
  beat 256 px crops at 510-550 steps in every run (BENCHMARKS.md).
- CONTEXT_MIN_VIEWS (2) and MIN_VIEWS (4): the 10 and 20 epochs of the earlier rules, at the
  share of a CamVid frame a 192 px crop covers; not measured on other data.
- MIN_STEPS (1500): a prior ("a few thousand steps from scratch"), not measured.
- SPAN_FACTOR (2): native size while a crop spans twice the widest class's structure; any factor
  from 1.43 to 2.84 agrees with CamVid and ISBI membranes (see its comment).
- THIN_FLOOR (4 px): an assumption, not measured (see its comment); on CamVid, pedestrians
  (7.0 px) shrunk to 3.7 px still scored higher than at native size.
- SUB_FLOOR_SCALE (0.5): classes already thinner than THIN_FLOOR at native size keep half their
  width; measured on CamVid only (see its comment).
- VALIDATION_SHARE, MAX_VALIDATIONS, the 60-epoch switch to strong scale augmentation and the
  imbalance ratio 10 for class weights: choices, not measured; the square root on the weights
  and leaving class-drawn crops off were measured on CamVid only.

The run then trains against the clock: the learning rate follows the elapsed share of the
training time (warm-up, then cosine decay reaching zero at the end), so the decay always
completes, whatever the throughput turns out to be. The plan is saved as ``plan.json`` in the
run directory.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..errors import PixelwiseError
from .config import TrainConfig

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_budget(text: str | float | int) -> float:
    """Seconds from '90s', '20m', '2h', '1d', '1h30m' or a plain number of seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", s):
            seconds = float(s)
        else:
            parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", s)
            if not parts or "".join(n + u for n, u in parts) != s:
                raise PixelwiseError(f"cannot read the budget '{text}'; use e.g. 90s, 20m, 2h, 1d or 1h30m")
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 30:
        raise PixelwiseError(f"a budget of {seconds:g} s is too short to train anything; give at least 30s")
    return seconds


# Masks read to measure structure widths: spread evenly over the training split. 48 masks of
# 480x360 take under a second; larger masks are subsampled to a longer side of at most
# WIDTH_MAX_SIDE px first (widths scaled back), so the cost stays bounded on large images.
WIDTH_MASKS = 48
WIDTH_MAX_SIDE = 1024


@dataclass
class Fingerprint:
    """What the planner knows about the data."""

    train_images: int
    val_images: int
    num_classes: int
    median_hw: tuple[int, int]
    max_hw: tuple[int, int]
    class_share: list[float]  # training pixels per class / all labelled training pixels
    imbalance: float  # largest share / smallest non-zero share
    long_side_median: int = 0  # median of the training images' longer sides, px
    long_side_max: int = 0  # the largest longer side, px
    # Per class, the typical width of its structures in native pixels (see structure_widths);
    # None for a class absent from the masks measured.
    class_width: list[float | None] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)  # for the plan's reasons; class indices without

    @classmethod
    def from_data(cls, data, widths: bool = True) -> Fingerprint:
        """From a :class:`pixelwise.data.types.FolderDataset` (its validation report), and with
        ``widths`` the structure widths measured on up to WIDTH_MASKS of its training masks."""
        train = data.splits["train"]
        sizes = [data.report.sizes[s.stem] for s in train] or [(0, 0)]
        num_classes = data.classes.num_classes
        counts = data.report.subset([s.stem for s in train], num_classes, data.classes.ignore_index).class_pixels
        measured = None
        if widths and train:
            from ..data.decode import read_sample_mask

            picks = np.unique(np.linspace(0, len(train) - 1, min(WIDTH_MASKS, len(train))).round().astype(int))
            # At the image's size, as training reads them (a mask resized with --resize-masks nearest too).
            masks = (read_sample_mask(train[i], data.report.sizes[train[i].stem]) for i in picks)
            measured = structure_widths(masks, num_classes)
        fp = cls.from_counts(len(train), len(data.splits["val"]), sizes, counts, measured)
        fp.class_names = [str(n) for n in data.classes.names]
        return fp

    @classmethod
    def from_counts(
        cls,
        train_images: int,
        val_images: int,
        sizes: list[tuple[int, int]],
        class_pixels,
        class_width: list[float | None] | None = None,
    ) -> Fingerprint:
        hs = np.array([h for h, _ in sizes])
        ws = np.array([w for _, w in sizes])
        longs = np.maximum(hs, ws)
        counts = np.asarray(class_pixels, dtype=np.float64)
        share = counts / max(counts.sum(), 1.0)
        nonzero = share[share > 0]
        imbalance = float(nonzero.max() / nonzero.min()) if len(nonzero) else 1.0
        return cls(
            train_images,
            val_images,
            len(counts),
            (int(np.median(hs)), int(np.median(ws))),
            (int(hs.max()), int(ws.max())),
            [round(float(x), 6) for x in share],
            round(imbalance, 2),
            int(np.median(longs)),
            int(longs.max()),
            list(class_width) if class_width is not None else [],
        )


def mask_widths(mask: np.ndarray, num_classes: int) -> dict[int, float]:
    """Typical structure width, in pixels, of each class present in one (H, W) integer mask.

    4 x the mean distance from the class's pixels to the nearest pixel of another label (the
    ignore index counts as a label; the image border does not): a stripe of width w gives w, a
    disc of diameter d about 2d/3. One Euclidean distance transform per mask: the distance to
    the nearest pixel on a label edge (a pixel with a 4-neighbour of another label) plus one is
    the distance to the other label; half a pixel is taken off for the pixel centres.
    A mask holding one label only gives its longer side.
    """
    from scipy import ndimage

    h, w = mask.shape
    step = max(1, math.ceil(max(h, w) / WIDTH_MAX_SIDE))
    m = np.asarray(mask[::step, ::step], dtype=np.int64)
    labels = m.ravel()
    inside = (labels >= 0) & (labels < num_classes)
    counts = np.bincount(labels[inside], minlength=num_classes)[:num_classes]
    present = [int(k) for k in np.nonzero(counts)[0]]
    edge = np.zeros(m.shape, dtype=bool)
    down, right = m[1:] != m[:-1], m[:, 1:] != m[:, :-1]
    edge[1:] |= down
    edge[:-1] |= down
    edge[:, 1:] |= right
    edge[:, :-1] |= right
    if not edge.any():
        return {k: float(max(h, w)) for k in present}
    dist = ndimage.distance_transform_edt(~edge).ravel() + 1.0
    sums = np.bincount(labels[inside], weights=dist[inside], minlength=num_classes)[:num_classes]
    return {k: 4.0 * (sums[k] / counts[k] - 0.5) * step for k in present}


def structure_widths(masks, num_classes: int) -> list[float | None]:
    """Per class, the median over ``masks`` that hold it of :func:`mask_widths` (None when absent)."""
    per: dict[int, list[float]] = {}
    for m in masks:
        for k, v in mask_widths(m, num_classes).items():
            per.setdefault(k, []).append(v)
    return [round(float(np.median(per[k])), 2) if k in per else None for k in range(num_classes)]


@dataclass(frozen=True)
class Candidate:
    """A model the planner may choose, from the lightest to the most capable."""

    name: str
    arch: str
    encoder: str
    model_kwargs: dict = field(default_factory=dict)
    batch_size: int = 8


# Semantic runs: SegFormer (the all-MLP head on the Mix Transformer encoders), lightest first. In
# equal time it beat the lightest U-Net below where both were measured: CamVid, 20 minutes on a
# 2-core CPU, three seeds, 55.06 mIoU against 45.45 with fewer steps (837-945 against 915-1012; same
# crop and working size, BENCHMARKS.md); on ISBI membranes in 5 minutes (thin structures, which a
# head that predicts at a quarter of the resolution could lose) it scored 0.6 points of membrane
# Dice below the U-Net, three seeds each. The heavier encoders come after it on the same prior as
# before: more capacity once the steps suffice (not measured).
CANDIDATES: list[Candidate] = [
    Candidate("segformer-mit_b0", "segformer", "mit_b0"),
    Candidate("segformer-mit_b1", "segformer", "mit_b1"),
    Candidate("segformer-mit_b2", "segformer", "mit_b2"),
]
# Instance and panoptic runs (class logits plus a centre heatmap and offsets at full resolution):
# U-Nets, as before; SegFormer was not measured on objects.
OBJECT_CANDIDATES: list[Candidate] = [
    Candidate("unet-resnet10t-light", "unet", "tu-resnet10t", {"decoder_channels": [128, 64, 32, 16, 8]}),
    Candidate("unet-resnet18-light", "unet", "resnet18", {"decoder_channels": [128, 64, 32, 16, 8]}),
    Candidate("unet-resnet18", "unet", "resnet18"),
    Candidate("unet-resnet34", "unet", "resnet34"),
]


def candidates_for(task: str) -> list[Candidate]:
    """The models the planner may choose for ``task``, lightest first."""
    return CANDIDATES if task == "semantic" else OBJECT_CANDIDATES


CROP_SIZES = (128, 192, 256, 320, 384, 512)

# How much training the plan asks for is counted in two units that follow from the data and the
# measurements: optimizer steps, and views of every image (epochs x the share of the working image
# one crop covers: 1 per epoch when a crop holds a whole image, 0.21 per epoch for 192 px crops of
# 480x360 CamVid frames), so a data set of large images cut into small crops is asked for more
# epochs than one trained on whole images. The figures themselves come from CamVid alone:
#
# A model from scratch needs a few thousand optimizer steps before it is worth trading steps
# for capacity; below that the planner prefers speed (a prior, not measured).
MIN_STEPS = 1500
# ... and every image seen several times over: 4 views, what 20 epochs of 192 px crops give on CamVid.
MIN_VIEWS = 4.0
# The crop is the largest at which a candidate still gets this many steps and views (on CamVid,
# a loop that saw whole frames for 158 steps learnt building and pavement far better than 128 px
# crops did in 1000 steps); the model is then chosen at that crop by MIN_STEPS and MIN_VIEWS.
# In 20 minutes on a 2-core CPU, 256 px crops got 510-550 steps and 26.26-36.62 mIoU in four
# runs, 192 px crops 960-1060 steps (19-22 epochs, 4-4.7 views) and 38.33-41.31 in three; at 500
# the choice between them flipped with measurement noise, so the threshold sits above both.
CONTEXT_MIN_STEPS = 800
# 2 views: 10 epochs of 192 px CamVid crops, the epoch minimum this rule had before it was counted in views.
CONTEXT_MIN_VIEWS = 2.0
# Share of the budget that validation during training may use (the final one included).
VALIDATION_SHARE = 0.08
MAX_VALIDATIONS = 12
# Working resolution: images stay at native size while a crop spans this many times the widest class's
# typical structure (a structure with its surroundings on either side). Measured on two data sets: on
# CamVid (road 179 px, 256 px crops: 0.70 of a crop) whole frames shrunk to 256 px scored 6.2 mIoU
# points above native crops in 20 minutes; on ISBI membranes (cells 45 px, 128 px crops: 0.35 of a
# crop) slices shrunk to 256 px scored lower membrane Dice than native crops in 5 minutes. Any factor
# from 1.43 to 2.84 separates the two; 2 is the round figure between.
SPAN_FACTOR = 2.0
# Working resolution: otherwise images are never shrunk so far that a class's typical structure
# (Fingerprint.class_width) at least this wide at native size falls below this many pixels. An
# assumption, not a measurement: a structure a few pixels wide survives an antialiased downscale
# and the bilinear resize of the logits back to the mask; one narrower than that blurs into its
# neighbours.
THIN_FLOOR = 4.0
# ... and a class already thinner than THIN_FLOOR at native size is not shrunk below this share of its
# width: it does not hold every image at native size, at the cost of the context the other classes
# gain (CamVid, 20 minutes, three seeds each: poles 3.2 px wide scored 0.0-0.7 IoU at native size,
# 0.0-0.3 at 0.53 and 0.6 of it, while the frames at 0.6 scored 45.45 mIoU against 40.90), but
# neither is it made to vanish.
SUB_FLOOR_SCALE = 0.5
# Seconds kept for writing the last checkpoint, the bundle and the curves.
FINISH_RESERVE = 3.0
WARMUP_SHARE = 0.03


@dataclass
class Measurement:
    candidate: str
    crop_size: int
    images_per_s: float  # training, forward + backward + optimizer step


@dataclass
class Plan:
    """The recipe for one budget, with a reason for every choice."""

    budget_s: float
    choices: dict
    reasons: dict
    overridden: list[str]
    estimates: dict
    fingerprint: dict
    measurements: list[dict]
    # What the trained model's weights started from ("imagenet (cache)", "none: offline", a path,
    # None for random), filled in when the run's model is built.
    pretrained: str | None = None
    # Milliseconds to predict one image of the median size, per "candidate@max_side" measured.
    latencies: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"plan for a budget of {self.budget_s:.0f} s:"]
        for k, v in self.choices.items():
            tag = " (your flag)" if k in self.overridden else ""
            lines.append(f"  {k:<14} {v!s:<34}{tag}  {self.reasons.get(k, '')}")
        e = self.estimates
        lines.append(
            f"  estimate: {e['epochs']} epochs, {e['steps']} steps in {e['train_seconds']:.0f} s of training, "
            f"{e['validations']} validations of ~{e['validation_seconds']:.1f} s"
        )
        if e.get("latency_ms") is not None:
            side = e.get("max_side", 0)
            h, w = e.get("working_hw", (0, 0))
            lines.append(
                f"  latency: {e['latency_ms']:.1f} ms to predict one image of the median size on this machine "
                f"(max side {side or 'native'}: the network sees {w}x{h})"
            )
        if self.pretrained is not None:
            lines.append(f"  weights from {self.pretrained}")
        return "\n".join(lines)


def usable_crops(fp: Fingerprint, max_side: int = 0) -> list[int]:
    """Crop sizes up to the median image's shorter side at working resolution ``max_side``; for small
    images that side rounded up to 32."""
    from ..data.transforms import working_size

    short = min(working_size(*fp.median_hw, max_side))
    crops = [c for c in CROP_SIZES if c <= short]
    return crops or [max(32, math.ceil(short / 32) * 32)]


def _round_up(x: float, to: int = 32) -> int:
    return int(math.ceil(x / to) * to)


def working_side(fp: Fingerprint, crop: int) -> tuple[int, str]:
    """The working resolution (longer side in px, 0 = native) for training crops of ``crop`` px, and why.

    Native size while a crop spans SPAN_FACTOR times the widest class's typical structure: crops
    then see whole structures with their surroundings. Otherwise the images are shrunk until a
    whole image fits one crop (its longer side = the crop), but never so far that a class at least
    THIN_FLOOR px wide at native size falls below THIN_FLOOR px, and a class already thinner than
    that at native size keeps at least SUB_FLOOR_SCALE of its width. Native size when that
    side is no smaller than the largest image. Widths are at the median image's longer side.
    """
    widths = [(w, k) for k, w in enumerate(fp.class_width) if w]
    if not widths or not fp.long_side_median:
        return 0, "native size: no structure widths were measured"
    wide = max(widths)[0]
    if crop >= SPAN_FACTOR * wide:
        return 0, (
            f"native size: a {crop} px crop spans {SPAN_FACTOR:g} x the widest class's typical structure "
            f"({wide:.0f} px), a structure with its surroundings"
        )
    long = fp.long_side_median
    kept = [(w, k) for w, k in widths if w >= THIN_FLOOR]
    below = [(w, k) for w, k in widths if w < THIN_FLOOR]
    floor_side = _round_up(long * THIN_FLOOR / min(kept)[0]) if kept else 0
    below_side = _round_up(long * SUB_FLOOR_SCALE) if below else 0
    side = max(crop, floor_side, below_side)
    if side >= fp.long_side_max:
        if side == crop:
            return 0, f"native size: a whole image already fits a {crop} px crop"
        return 0, "native size: " + _side_limit(fp, kept, below, floor_side, below_side)
    if side == crop:
        why = f"longer side {side} px: images are shrunk until a whole image fits one {crop} px crop"
    else:
        why = f"longer side {side} px: images are shrunk towards a {crop} px crop, but " + _side_limit(
            fp, kept, below, floor_side, below_side
        )
    return side, why + _thinnest_at(fp, min(widths), side)


def _side_limit(fp: Fingerprint, kept, below, floor_side: int, below_side: int) -> str:
    """Why the working side is not smaller: the class that holds it."""
    if floor_side >= below_side:
        w, k = min(kept)
        return f"below {floor_side} px the {_name(fp, k)} structures ({w:.1f} px) would fall under {THIN_FLOOR:g} px"
    w, k = min(below)
    return (
        f"the {_name(fp, k)} structures ({w:.1f} px, under {THIN_FLOOR:g} px already at native size) keep at "
        f"least {SUB_FLOOR_SCALE:g} of their width"
    )


def _name(fp: Fingerprint, k: int) -> str:
    return f"'{fp.class_names[k]}'" if k < len(fp.class_names) else f"class {k}"


def _thinnest_at(fp: Fingerprint, thinnest: tuple[float, int], side: int) -> str:
    w, k = thinnest
    return f" (the thinnest class, {_name(fp, k)}, keeps {w * side / fp.long_side_median:.1f} px of {w:.1f})"


def _working_hw(fp: Fingerprint, side: int) -> tuple[int, int]:
    from ..data.transforms import working_size

    return working_size(*fp.median_hw, side)


def latency_key(candidate: str, side: int) -> str:
    """The key of a latency measurement: the candidate's name and the working resolution."""
    return f"{candidate}@{side}"


@dataclass
class Limits:
    """What the plan must meet besides the budget: a working resolution given, a latency ceiling."""

    max_side: int | None = None  # given on the command line; None = the planner chooses
    max_latency_ms: float = 0.0  # 0 = any
    latency_ms: dict = field(default_factory=dict)  # measured: latency_key(name, side) -> ms


def _options(
    fp: Fingerprint,
    budget_s: float,
    elapsed_s: float,
    measurements: list[Measurement],
    eval_s_per_image: dict[str, float],
    overrides: dict,
    candidates: list[Candidate],
    limits: Limits | None = None,
) -> list[dict]:
    """What each measured (candidate, crop) would get from the rest of the budget: steps, epochs,
    validations, at its working resolution (validation time scales with the working image's pixels)."""
    limits = limits or Limits(overrides.get("max_side"))
    remaining = budget_s - elapsed_s - FINISH_RESERVE
    names = [c.name for c in candidates]
    by_name = dict(zip(names, candidates))
    n_train = max(1, fp.train_images)
    native_px = max(1, fp.median_hw[0] * fp.median_hw[1])
    options = []
    for m in measurements:
        if m.images_per_s <= 0 or m.candidate not in by_name:
            continue
        side, why_side = (limits.max_side, "given") if limits.max_side is not None else working_side(fp, m.crop_size)
        side, why_side = _side_for_latency(fp, m.candidate, side, why_side, limits)
        wh = _working_hw(fp, side)
        per_val = fp.val_images * eval_s_per_image.get(m.candidate, 0.0) * (wh[0] * wh[1]) / native_px
        n_val = 0
        if fp.val_images:
            n_val = int(min(MAX_VALIDATIONS, max(1, VALIDATION_SHARE * budget_s // max(per_val, 1e-6))))
        train_s = remaining - n_val * per_val
        if train_s <= 0:
            continue
        batch = int(overrides.get("batch_size", by_name[m.candidate].batch_size))
        epochs = train_s * m.images_per_s / n_train
        options.append(
            dict(
                name=m.candidate,
                crop=m.crop_size,
                # Never larger than a whole working image needs (the throughput measured at the crop is then a bound).
                train_crop=min(m.crop_size, _round_up(max(wh))) if side else m.crop_size,
                rate=m.images_per_s,
                train_s=train_s,
                per_val=per_val,
                n_val=n_val,
                steps=int(train_s * m.images_per_s / batch),
                epochs=epochs,
                views=epochs * min(m.crop_size, wh[0]) * min(m.crop_size, wh[1]) / max(1, wh[0] * wh[1]),
                rank=names.index(m.candidate),
                side=side,
                why_side=why_side,
                working_hw=wh,
                latency=limits.latency_ms.get(latency_key(m.candidate, side)),
            )
        )
    return options


def _side_for_latency(fp: Fingerprint, name: str, side: int, why: str, limits: Limits) -> tuple[int, str]:
    """``side``, or when ``name`` misses --max-latency there (and --max-side was not given), the largest
    smaller working resolution measured at which it meets it."""
    ceiling = limits.max_latency_ms
    ms = limits.latency_ms.get(latency_key(name, side))
    if not ceiling or limits.max_side is not None or (ms is not None and ms <= ceiling):
        return side, why
    top = side or max(fp.median_hw)
    met = []
    for key, v in limits.latency_ms.items():
        cand, _, s = key.rpartition("@")
        if cand == name and 0 < int(s) < top and v <= ceiling:
            met.append((int(s), v))
    if not met:
        return side, why
    s, v = max(met)
    thin = [w for w in fp.class_width if w]
    kept = f"; the thinnest class keeps {min(thin) * s / max(fp.long_side_median, 1):.1f} px" if thin else ""
    return (
        s,
        f"longer side {s} px: the largest measured at which the model predicts within --max-latency ({v:.0f} ms){kept}",
    )


def _fast_enough(options: list[dict], limits: Limits) -> list[dict]:
    """The options whose measured latency meets the ceiling (all of them without one)."""
    if not limits.max_latency_ms:
        return options
    return [o for o in options if o["latency"] is not None and o["latency"] <= limits.max_latency_ms]


def _has_context(o: dict) -> bool:
    return o["steps"] >= CONTEXT_MIN_STEPS and o["views"] >= CONTEXT_MIN_VIEWS


def _has_steps(o: dict) -> bool:
    return o["steps"] >= MIN_STEPS and o["views"] >= MIN_VIEWS


def worth_measuring(
    fp: Fingerprint,
    budget_s: float,
    elapsed_s: float,
    measurements: list[Measurement],
    eval_s_per_image: dict[str, float],
    overrides: dict,
    candidates: list[Candidate],
    candidate: Candidate,
    crop: int,
    limits: Limits | None = None,
) -> bool:
    """Whether measuring ``candidate`` at ``crop`` can change the plan, given what is measured so far.

    Candidates are measured lightest first, each lighter one faster at every crop, and crops
    smallest first. The crop rule needs only the lightest candidate: once it misses
    CONTEXT_MIN_STEPS at a crop, larger crops (slower) miss too (views are not monotone in the crop:
    a larger crop covers more of each image). A heavier candidate matters only
    at the crop the lightest settled on, and only while the one before it reaches MIN_STEPS there.
    With a latency ceiling, options that miss it count as not there: a larger crop (a larger or
    equal working resolution) or a heavier candidate is no faster to predict with.
    """
    overrides = overrides or {}
    limits = limits or Limits(overrides.get("max_side"))
    lightest = candidates[0].name
    mine = sorted((m for m in measurements if m.candidate == lightest), key=lambda m: m.crop_size)
    opts = {
        (o["name"], o["crop"]): o
        for o in _fast_enough(
            _options(fp, budget_s, elapsed_s, measurements, eval_s_per_image, overrides, candidates, limits), limits
        )
    }
    if candidate.name == lightest:
        if not mine:
            return True
        last = opts.get((lightest, mine[-1].crop_size))
        return last is not None and last["steps"] >= CONTEXT_MIN_STEPS
    passed = [
        m.crop_size for m in mine if (lightest, m.crop_size) in opts and _has_context(opts[(lightest, m.crop_size)])
    ]
    if not passed or crop != max(passed):
        return False
    before = candidates[[c.name for c in candidates].index(candidate.name) - 1].name
    prev = opts.get((before, crop))
    return prev is not None and _has_steps(prev)


def make_plan(
    fp: Fingerprint,
    budget_s: float,
    elapsed_s: float,
    measurements: list[Measurement],
    eval_s_per_image: dict[str, float],
    overrides: dict | None = None,
    candidates: list[Candidate] | None = None,
    limits: Limits | None = None,
) -> Plan:
    """Choose the recipe. Pure: all machine facts come in as arguments, so it is unit-testable.

    Args:
        fp: the data fingerprint.
        budget_s: the whole run's budget in seconds.
        elapsed_s: seconds already spent (validation, measuring) when training starts.
        measurements: training throughput per (candidate, crop).
        eval_s_per_image: seconds to validate one image of the median size at native resolution,
            per candidate name (scaled by the working image's pixels).
        overrides: options the user gave explicitly (TrainConfig field -> value); they win.
        candidates: the models that were measured, lightest first (default CANDIDATES).
        limits: a latency ceiling and the latencies measured (ms per latency_key); the working
            resolution when given (else taken from ``overrides["max_side"]`` or chosen).
    """
    candidates = candidates or CANDIDATES
    overrides = dict(overrides or {})
    limits = limits or Limits()
    if limits.max_side is None and "max_side" in overrides:
        limits = replace(limits, max_side=overrides["max_side"])
    options = _usable_options(fp, budget_s, elapsed_s, measurements, eval_s_per_image, overrides, candidates, limits)
    best, why_model = _choose(options)
    cand = {c.name: c for c in candidates}[best["name"]]
    batch = int(overrides.get("batch_size", cand.batch_size))
    steps_per_epoch = max(1, max(1, fp.train_images) // batch)
    epochs = max(1, int(best["steps"] // steps_per_epoch))
    choices, reasons = _model_choices(fp, cand, best, batch, epochs, why_model)
    for k, (v, why) in _data_choices(fp, best).items():
        choices[k], reasons[k] = v, why
    overridden = [k for k in overrides if k in choices or k in ("lr", "loss")]
    for k in overridden:
        choices[k], reasons[k] = overrides[k], "given on the command line"
    estimates = _estimates(best, epochs, elapsed_s)
    return Plan(
        budget_s,
        choices,
        reasons,
        sorted(overridden),
        estimates,
        asdict(fp),
        [asdict(m) for m in measurements],
        latencies=dict(limits.latency_ms),
    )


def _estimates(best: dict, epochs: int, elapsed_s: float) -> dict:
    """What the plan expects of option ``best``: steps, time, validations, working size, latency."""
    return {
        "steps": best["steps"],
        "epochs": epochs,
        "views": round(best["views"], 2),
        "train_seconds": round(best["train_s"], 1),
        "validations": best["n_val"],
        "validation_seconds": round(best["per_val"], 2),
        "images_per_s": round(best["rate"], 2),
        "elapsed_before_training": round(elapsed_s, 1),
        "max_side": best["side"],
        "working_hw": list(best["working_hw"]),
        "latency_ms": None if best["latency"] is None else round(best["latency"], 1),
    }


def _usable_options(
    fp: Fingerprint,
    budget_s: float,
    elapsed_s: float,
    measurements: list[Measurement],
    eval_s_per_image: dict[str, float],
    overrides: dict,
    candidates: list[Candidate],
    limits: Limits,
) -> list[dict]:
    """The options :func:`_choose` picks from, or the one-line error that says why there are none."""
    if budget_s - elapsed_s - FINISH_RESERVE <= 5:
        raise PixelwiseError(
            f"the budget of {budget_s:.0f} s is used up before training starts ({elapsed_s:.0f} s went on reading "
            "and measuring); give a larger --budget"
        )
    if not any(m.images_per_s > 0 for m in measurements):
        raise PixelwiseError("no candidate configuration could be measured on this machine")
    options = _options(fp, budget_s, elapsed_s, measurements, eval_s_per_image, overrides, candidates, limits)
    if not options:
        raise PixelwiseError(
            f"validation alone would take longer than the budget of {budget_s:.0f} s; "
            "give a larger --budget or fewer validation images"
        )
    fast = _fast_enough(options, limits)
    if not fast:
        raise PixelwiseError(_too_slow(fp, options, limits))
    if "crop_size" in overrides:
        fast = [o for o in fast if o["crop"] == overrides["crop_size"]] or fast
    return fast


def _too_slow(fp: Fingerprint, options: list[dict], limits: Limits) -> str:
    """The one-line error when no option predicts within --max-latency: the fastest latency measured."""
    h, w = fp.median_hw
    timed = [(v, key) for key, v in limits.latency_ms.items()]
    if not timed:
        return f"--max-latency {limits.max_latency_ms:g}: no prediction latency could be measured on this machine"
    ms, key = min(timed)
    name, _, side = key.rpartition("@")
    where = f"max side {side}" if int(side) else "native size"
    return (
        f"--max-latency {limits.max_latency_ms:g} ms: no candidate predicts a {w}x{h} image that fast on this machine "
        f"(the fastest measured: {name} at {where}, {ms:.0f} ms); give a larger --max-latency, "
        "a smaller --max-side, or a faster device"
    )


def _choose(options: list[dict]) -> tuple[dict, str]:
    """The option to train, and why.

    The crop first: how much of a scene each step sees matters more than model capacity or
    extra steps (a 128 px crop of a 480x360 street sees a patch of road or sky, not where it
    meets the pavement). Then, at that crop, the most capable model that gets enough steps.
    """
    context = [o for o in options if _has_context(o)]
    if not context:
        best = max(options, key=lambda o: (o["steps"], o["crop"]))
        return best, (
            f"no candidate reaches {CONTEXT_MIN_STEPS} steps and {CONTEXT_MIN_VIEWS:g} views of each image "
            "at any crop in "
            f"this budget, so the one with the most steps ({best['steps']} at {best['rate']:.1f} img/s)"
        )
    crop = max(o["crop"] for o in context)
    why_crop = (
        f"crop {crop}: the largest at which a candidate still gets >= {CONTEXT_MIN_STEPS} steps and "
        f">= {CONTEXT_MIN_VIEWS:g} views of each image (epochs x the share of the image a crop covers)"
    )
    enough = [o for o in options if o["crop"] == crop and _has_steps(o)]
    if enough:
        best = max(enough, key=lambda o: o["rank"])
        return best, (
            f"{why_crop}; at it, the most capable candidate that still gets >= {MIN_STEPS} steps and "
            f">= {MIN_VIEWS:g} views ({best['steps']} steps, {int(best['epochs'])} epochs, "
            f"{best['views']:.1f} views at "
            f"{best['rate']:.1f} img/s)"
        )
    best = max((o for o in context if o["crop"] == crop), key=lambda o: o["steps"])
    return best, (
        f"{why_crop}; at it no candidate reaches {MIN_STEPS} steps and {MIN_VIEWS:g} views, so the "
        f"one with the most steps ({best['steps']} steps, {int(best['epochs'])} epochs at "
        f"{best['rate']:.1f} img/s)"
    )


def _model_choices(
    fp: Fingerprint, cand: Candidate, best: dict, batch: int, epochs: int, why_model: str
) -> tuple[dict, dict]:
    """(choices, reasons) for the model, crop, batch, epochs, clock and validations of option ``best``."""
    choices = {
        "arch": cand.arch,
        "encoder": cand.encoder,
        "model_kwargs": dict(cand.model_kwargs),
        "max_side": best["side"],
        "crop_size": best["train_crop"],
        "batch_size": batch,
        "epochs": epochs,
        # The training loop's wall time: steps plus all validations but the final one, which
        # runs when the time is up.
        "time_limit": round(best["train_s"] + max(0, best["n_val"] - 1) * best["per_val"], 1),
        "schedule": "cosine",
        "validations": best["n_val"],
        "channels_last": True,
    }
    reasons = {
        "arch": why_model,
        "encoder": "with the architecture",
        "model_kwargs": "with the architecture",
        "max_side": best["why_side"],
        "crop_size": _crop_reason(fp, best),
        "batch_size": "the candidate's batch",
        "epochs": "as many as the measured throughput fits; training stops on the clock in any case",
        "time_limit": "the budget minus reading, measuring, the final validation and saving",
        "schedule": "cosine decay over the training time, reaching zero at the end",
        "channels_last": "channels-last memory: faster on GPUs and on AVX2 CPUs (1.1x there), no slower on the "
        "other CPUs measured; the throughputs above were measured with it",
        "validations": f"{best['n_val']} validations of ~{best['per_val']:.1f} s keep validation under "
        f"{100 * VALIDATION_SHARE:.0f}% of the budget",
    }
    return choices, reasons


def _crop_reason(fp: Fingerprint, best: dict) -> str:
    h, w = best["working_hw"]
    if best["side"] and max(h, w) <= best["train_crop"]:
        return (
            f"the rule above; a crop holds a whole {w}x{h} working image (padded with the ignore index where smaller)"
        )
    return (
        f"the largest measured crop up to the median image's shorter side ({min(h, w)} px at the working size) "
        "that fits the rule above"
    )


def _class_weights_choice(fp: Fingerprint) -> tuple[str | None, str]:
    """The loss weighting for the data's class balance, and why."""
    if fp.imbalance > 10:
        return (
            "sqrt",
            f"classes are imbalanced (largest/smallest pixel share {fp.imbalance:g} > 10); "
            "square-rooted median-frequency weights, which do not trade the large classes "
            "for the rare ones as the full weights do in a short run",
        )
    return None, f"classes are balanced enough (ratio {fp.imbalance:g} <= 10)"


def _data_choices(fp: Fingerprint, best: dict) -> dict[str, tuple]:
    """Class weights, class crops and scale augmentation: option -> (value, reason)."""
    out: dict[str, tuple] = {"class_weights": _class_weights_choice(fp)}
    # Measured on CamVid in 20 minutes (2-core CPU): 35.85 mIoU with half of the crops class-drawn,
    # 36.62 without, the rare classes at 0 either way; no gain, so crops stay uniform.
    out["class_crops"] = (
        0.0,
        "crops placed uniformly: class-drawn crops (--class-crops) gave no gain on CamVid in a 20-minute budget",
    )
    strong = best["epochs"] >= 60
    out["scale_range"] = (
        (0.5, 2.0) if strong else (0.75, 1.5),
        "many passes over the data: strong scale augmentation"
        if strong
        else "few passes over the data: milder scale augmentation",
    )
    return out


def measure(
    data,
    device,
    config: TrainConfig,
    crops: list[int],
    seconds_per_config: float = 2.0,
    candidates: list[Candidate] | None = None,
    max_seconds: float = float("inf"),
    wanted: Callable[[Candidate, int, list[Measurement], dict[str, float]], bool] | None = None,
    limits: Limits | None = None,
    side_of: Callable[[int], int] | None = None,
) -> tuple[list[Measurement], dict[str, float]]:
    """Time a few training steps of each candidate at each crop, one full-size prediction, and the
    latency of each candidate at the working resolution of each crop it is measured at.

    Candidates are measured lightest first and crops smallest first. ``wanted(candidate, crop,
    measured so far, eval times so far)`` (see :func:`worth_measuring`) skips the ones that
    cannot change the plan; once ``max_seconds`` have gone by, the remaining ones are left out
    (the first is always measured). ``limits.latency_ms`` (filled in place) get each candidate's
    latency at each new working resolution ``side_of(crop)`` (see :func:`_time_latencies`).

    Each step is the one the run trains with (:func:`pixelwise.training.step.build_train_step`
    from ``config``: loss, AdamW, autocast, GradScaler, clipping, EMA, memory layout), on random
    tensors (speed does not depend on the pixels); see :func:`_images_per_s`.
    """
    import torch

    from .step import build_criterion

    candidates = candidates or CANDIDATES
    wanted = wanted or (lambda *_: True)
    limits = limits or Limits()
    side_of = side_of or (lambda crop: 0)
    num_classes = data.classes.num_classes
    median_hw = Fingerprint.from_data(data, widths=False).median_hw
    out: list[Measurement] = []
    evals: dict[str, float] = {}
    criterion = build_criterion(config, data.report.class_pixels, data.classes.ignore_index, device, num_classes)
    gen = torch.Generator().manual_seed(0)
    started = time.perf_counter()

    def time_left() -> bool:
        return not out or time.perf_counter() - started <= max_seconds

    for cand in candidates:
        if not time_left():
            break
        if not any(wanted(cand, crop, out, evals) for crop in crops):
            continue
        step = _candidate_step(cand, num_classes, criterion, config, device)
        evals[cand.name] = _time_validation(step, median_hw, side_of(max(crops)), device, gen)
        probe = LatencyProbe(step.model, median_hw, device, num_classes, config.task, step.channels_last)
        for crop in crops:
            if not time_left() or not wanted(cand, crop, out, evals):
                continue
            _time_latencies(probe, cand.name, median_hw, side_of(crop), limits)
            out.append(_measure_crop(step, cand, crop, config.task, num_classes, device, gen, seconds_per_config))
        del step
    return out, evals


def _measure_crop(step, cand: Candidate, crop: int, task: str, num_classes: int, device, gen, seconds: float):
    """The training throughput of ``step`` on random batches of ``crop`` px squares."""
    import torch

    x = torch.randn(cand.batch_size, 3, crop, crop, generator=gen).to(device)
    y = _synthetic_target(task, num_classes, cand.batch_size, crop, gen).to(device)
    return Measurement(cand.name, crop, _images_per_s(step, x, y, device, seconds))


def _synthetic_target(task: str, num_classes: int, batch: int, crop: int, gen):
    """Random labels (N, H, W) int64, and for instance/panoptic runs (N, 2, H, W) with instance ids:
    a grid of 16 px squares, one object each, so the centre and offset targets cost what real ones do."""
    import torch

    labels = torch.randint(0, num_classes, (batch, crop, crop), generator=gen)
    if task == "semantic":
        return labels
    rows = torch.arange(crop) // 16
    ids = (rows[:, None] * ((crop + 15) // 16) + rows[None, :] + 1).expand(batch, crop, crop)
    return torch.stack([labels, ids.to(torch.int64)], dim=1)


def _candidate_step(cand: Candidate, num_classes: int, criterion, config: TrainConfig, device):
    """The training step of ``config`` for the model of ``cand``, built as the Trainer builds it."""
    import torch

    from ..models import ModelConfig, build_model
    from .step import build_train_step, uses_channels_last

    # The same architecture without its weights: a measurement downloads nothing.
    model_cfg = ModelConfig(cand.arch, cand.encoder, num_classes, kwargs=dict(cand.model_kwargs), task=config.task)
    model = build_model(model_cfg, None)
    channels_last = uses_channels_last(config, device)
    model = model.to(device).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return build_train_step(model, criterion, config, device, channels_last=channels_last)


def _time_validation(step, hw: tuple[int, int], side: int, device, gen) -> float:
    """Seconds a validation takes per (H, W) = ``hw`` image: twice the bare forward pass, timed at the
    working size of ``side`` (the largest the plan may choose) and scaled to ``hw`` by the pixels.

    A validation also decodes, normalises and scores each image: on CamVid (480x360) it took
    about twice the bare forward pass, so that is what the plan reserves. Like the Trainer's
    validation, it runs under the run's autocast at native size and in float32 at a working size.
    """
    import torch

    from ..data.transforms import working_size

    wh = working_size(hw[0], hw[1], side)
    model = step.model
    model.eval()
    amp = step.amp_dtype is not None and not side
    with torch.no_grad():
        x = torch.randn(1, 3, *wh, generator=gen).to(device)
        if step.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ts = []
        for _ in range(2):
            t = time.perf_counter()
            with torch.autocast(device.type, dtype=step.amp_dtype, enabled=amp):
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
    model.train()
    return 2.0 * min(ts[1:]) * (hw[0] * hw[1]) / max(1, wh[0] * wh[1])


def _time_latencies(time_at: Callable[[int], float], name: str, hw, side: int, limits: Limits) -> None:
    """Time ``name`` at working resolution ``side`` (``time_at(side)``: ms per image of (H, W) = ``hw``) into
    ``limits.latency_ms``, unless timed already; when that misses ``limits.max_latency_ms``, also at the
    smaller side that should meet it (latency taken as proportional to the pixels, less 10%, rounded
    down to a multiple of 32)."""
    key = latency_key(name, side)
    if key in limits.latency_ms:
        return
    ms = limits.latency_ms[key] = time_at(side)
    if not limits.max_latency_ms or ms <= limits.max_latency_ms or limits.max_side is not None:
        return
    smaller = int(0.9 * (side or max(hw)) * math.sqrt(limits.max_latency_ms / ms)) // 32 * 32
    if smaller >= 32 and latency_key(name, smaller) not in limits.latency_ms:
        limits.latency_ms[latency_key(name, smaller)] = time_at(smaller)


class LatencyProbe:
    """Milliseconds to predict one (H, W) = ``hw`` image at a working resolution through the engine
    ``pixelwise predict`` picks on ``device`` (``--backend auto``, float32): ONNX Runtime on the CPU,
    from the model exported in memory as predict exports a run that has no model.onnx (PyTorch when
    that export fails, as predict falls back), PyTorch on a GPU. The export is made once, on the
    first call. Each call: one warm-up run, then the fastest of three.

    ``channels_last``: the memory layout the model trains in; it is restored after the export,
    which needs the contiguous one, and so is the model's training mode after each call.
    """

    def __init__(self, model, hw: tuple[int, int], device, num_classes: int, task: str, channels_last: bool = False):
        from ..instances import EXTRA_CHANNELS

        self.model, self.hw, self.device, self.num_classes = model, hw, device, num_classes
        self.extra = 0 if task == "semantic" else EXTRA_CHANNELS
        self.channels_last = channels_last
        self.graph: bytes | None = None
        self.session = None
        self.engine = "onnxruntime" if device.type == "cpu" else "torch"

    def __call__(self, side: int) -> float:
        from ..predict.engine import predict_labels

        image = np.random.default_rng(0).integers(0, 256, (*self.hw, 3), dtype=np.uint8)
        was_training = self.model.training
        times = []
        try:
            member = self._member(side)
            for _ in range(4):
                t = time.perf_counter()
                predict_labels([image], [member], device=self.device)
                times.append(time.perf_counter() - t)
        finally:
            self.model.train(was_training)
        return 1000.0 * min(times[1:])

    def _member(self, side: int):
        """The inference member at working resolution ``side``, the model in evaluation mode."""
        import torch

        from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
        from ..predict.backends import ExportableModel, OnnxMember, TorchMember, graph_bytes, onnx_session

        self.model.eval()
        if self.engine == "onnxruntime" and self.session is None:
            layout = torch.channels_last if self.channels_last else torch.contiguous_format
            try:
                plain = self.model.to(memory_format=torch.contiguous_format)
                self.graph = graph_bytes(ExportableModel(plain, IMAGENET_MEAN, IMAGENET_STD).eval(), "the candidate")
                self.session = onnx_session(self.graph, self.device)
            except PixelwiseError:
                self.engine = "torch"
            finally:
                self.model.to(memory_format=layout).eval()
        if self.engine == "onnxruntime":
            kw = dict(source=self.graph, extra_channels=self.extra, max_side=side)
            return OnnxMember(self.session, self.num_classes, **kw)
        kw = dict(bf16=False, extra_channels=self.extra, max_side=side)
        return TorchMember(self.model, IMAGENET_MEAN, IMAGENET_STD, self.device, self.num_classes, **kw)


def _images_per_s(step, x, y, device, seconds_per_config: float) -> float:
    """Training images per second of ``step`` on the batch ``x``, ``y``: the first step builds the kernels
    and is not counted; at least two steps are timed unless that would take over 4 x ``seconds_per_config``."""
    import torch

    timed, images, steps, config_start = 0.0, 0, 0, time.perf_counter()
    for i in range(50):
        t = time.perf_counter()
        loss = step(x, y)
        float(loss)  # the loop reads every step's loss (the NaN check): a synchronisation on GPUs
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 1:  # the first step builds kernels: not counted
            timed += time.perf_counter() - t
            images += x.shape[0]
            steps += 1
            wall = time.perf_counter() - config_start
            if (timed >= seconds_per_config and steps >= 2) or wall >= 4 * seconds_per_config:
                break
    return images / timed if timed > 0 else 0.0


def plan_for_budget(config: TrainConfig, data, device, run_clock: float) -> tuple[Plan, TrainConfig]:
    """Measure this machine, choose the recipe for ``config.budget`` and return (plan, new config).

    ``run_clock`` is the ``time.perf_counter()`` at which the budget started.
    """
    import torch

    fp = Fingerprint.from_data(data)
    candidates = candidates_for(config.task)
    crops = usable_crops(fp, config.max_side if "max_side" in config.keep else 0)
    if "crop_size" in config.keep:
        crops = [config.crop_size]
    if config.budget < 300:  # short budgets: no time to measure big models
        candidates = candidates[:1]
        crops = crops[-2:] if "crop_size" not in config.keep else crops
    if any(k in config.keep for k in ("arch", "encoder", "model_kwargs")):
        from ..models import FIXED_BACKBONES

        encoder = FIXED_BACKBONES.get(config.arch, config.encoder)  # fcn, lraspp, bisenetv2: their own
        candidates = [Candidate("given", config.arch, encoder, dict(config.model_kwargs), config.batch_size)]
    per_config = min(2.0, max(0.3, 0.03 * config.budget / max(1, len(candidates) * len(crops))))
    overrides = {k: getattr(config, k) for k in config.keep if hasattr(config, k)}
    overrides.pop("max_latency", None)
    limits = Limits(overrides.get("max_side"), config.max_latency)

    def side_of(crop: int) -> int:
        return limits.max_side if limits.max_side is not None else working_side(fp, crop)[0]

    def wanted(cand, crop, measured, evals) -> bool:
        elapsed = time.perf_counter() - run_clock
        return worth_measuring(fp, config.budget, elapsed, measured, evals, overrides, candidates, cand, crop, limits)

    # Measure the step the plan trains with: its memory layout and loss weighting, unless given.
    planned = {"channels_last": True, "class_weights": _class_weights_choice(fp)[0]}
    as_planned = replace(config, **{k: v for k, v in planned.items() if k not in config.keep})
    # The models built for measuring draw from the random generators; forking them keeps the trained
    # model's initialisation the one --seed gives, however many configurations were measured.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        measurements, evals = measure(
            data,
            device,
            as_planned,
            crops,
            per_config,
            candidates,
            max_seconds=0.06 * config.budget,
            wanted=wanted,
            limits=limits,
            side_of=side_of,
        )
    elapsed = time.perf_counter() - run_clock
    plan = make_plan(fp, config.budget, elapsed, measurements, evals, overrides, candidates, limits)
    changes = {k: v for k, v in plan.choices.items() if k in TrainConfig.__dataclass_fields__}
    if "scale_range" in changes:
        changes["scale_range"] = tuple(changes["scale_range"])
    # The clock, not the epoch count, ends a planned run: leave room for a faster machine than measured.
    changes["epochs"] = max(1, int(changes["epochs"] * 3))
    return plan, TrainConfig.from_dict({**config.to_dict(), **changes})
