"""``pixelwise train DATA --budget 20m``: choose the training recipe that fits the time a user has.

The planner works in three steps:

1. **Fingerprint** the data (from the validation pass that runs anyway): number of images per
   split, image sizes, classes and their pixel shares, the imbalance ratio.
2. **Measure** on this machine, for a few seconds, the training throughput (images/s) of the
   candidate models at the candidate crop sizes, and the time to predict one validation image
   at full resolution; only the configurations that can change the plan are measured (see
   :func:`worth_measuring`).
3. **Choose** the largest model and crop that still get enough optimizer steps in the budget,
   the number of epochs that fills it, how often to validate, class weights and augmentation
   strength. Each choice carries its reason; an explicit flag always wins and is listed as
   overridden.

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

    @classmethod
    def from_data(cls, data) -> Fingerprint:
        """From a :class:`pixelwise.data.folder.FolderDataset` (its validation report)."""
        train = data.splits["train"]
        sizes = [data.report.sizes[s.stem] for s in train] or [(0, 0)]
        counts = data.report.subset(
            [s.stem for s in train], data.classes.num_classes, data.classes.ignore_index
        ).class_pixels
        return cls.from_counts(len(train), len(data.splits["val"]), sizes, counts)

    @classmethod
    def from_counts(cls, train_images: int, val_images: int, sizes: list[tuple[int, int]], class_pixels) -> Fingerprint:
        hs = np.array([h for h, _ in sizes])
        ws = np.array([w for _, w in sizes])
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
        )


@dataclass(frozen=True)
class Candidate:
    """A model the planner may choose, from the lightest to the most capable."""

    name: str
    arch: str
    encoder: str
    model_kwargs: dict = field(default_factory=dict)
    batch_size: int = 8


CANDIDATES: list[Candidate] = [
    Candidate("unet-resnet10t-light", "unet", "tu-resnet10t", {"decoder_channels": [128, 64, 32, 16, 8]}),
    Candidate("unet-resnet18-light", "unet", "resnet18", {"decoder_channels": [128, 64, 32, 16, 8]}),
    Candidate("unet-resnet18", "unet", "resnet18"),
    Candidate("unet-resnet34", "unet", "resnet34"),
]
CROP_SIZES = (128, 192, 256, 320, 384, 512)

# A model from scratch needs a few thousand optimizer steps before it is worth trading steps
# for capacity; below that the planner prefers speed.
MIN_STEPS = 1500
# At least this many passes over the training images, so every image is seen in many crops.
MIN_EPOCHS = 20
# The crop is the largest at which a candidate still gets this many steps and passes (on CamVid,
# a loop that saw whole frames for 158 steps learnt building and pavement far better than 128 px
# crops did in 1000 steps); the model is then chosen at that crop by MIN_STEPS and MIN_EPOCHS.
# In 20 minutes on a 2-core CPU, 256 px crops got 510-550 steps and 26.26-36.62 mIoU in four
# runs, 192 px crops 960-1060 steps and 38.33-41.31 in three; at 500 the choice between them flipped with
# measurement noise, so the threshold sits above both.
CONTEXT_MIN_STEPS = 800
CONTEXT_MIN_EPOCHS = 10
# Share of the budget that validation during training may use (the final one included).
VALIDATION_SHARE = 0.08
MAX_VALIDATIONS = 12
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
        if self.pretrained is not None:
            lines.append(f"  weights from {self.pretrained}")
        return "\n".join(lines)


def usable_crops(fp: Fingerprint) -> list[int]:
    """Crop sizes up to the median image's shorter side; for small images that side rounded up to 32."""
    short = min(fp.median_hw)
    crops = [c for c in CROP_SIZES if c <= short]
    return crops or [max(32, math.ceil(short / 32) * 32)]


def _options(
    fp: Fingerprint,
    budget_s: float,
    elapsed_s: float,
    measurements: list[Measurement],
    eval_s_per_image: dict[str, float],
    overrides: dict,
    candidates: list[Candidate],
) -> list[dict]:
    """What each measured (candidate, crop) would get from the rest of the budget: steps, epochs, validations."""
    remaining = budget_s - elapsed_s - FINISH_RESERVE
    names = [c.name for c in candidates]
    by_name = dict(zip(names, candidates))
    n_train = max(1, fp.train_images)
    options = []
    for m in measurements:
        if m.images_per_s <= 0 or m.candidate not in by_name:
            continue
        per_val = fp.val_images * eval_s_per_image.get(m.candidate, 0.0)
        n_val = 0
        if fp.val_images:
            n_val = int(min(MAX_VALIDATIONS, max(1, VALIDATION_SHARE * budget_s // max(per_val, 1e-6))))
        train_s = remaining - n_val * per_val
        if train_s <= 0:
            continue
        batch = int(overrides.get("batch_size", by_name[m.candidate].batch_size))
        options.append(
            dict(
                name=m.candidate,
                crop=m.crop_size,
                rate=m.images_per_s,
                train_s=train_s,
                per_val=per_val,
                n_val=n_val,
                steps=int(train_s * m.images_per_s / batch),
                epochs=train_s * m.images_per_s / n_train,
                rank=names.index(m.candidate),
            )
        )
    return options


def _has_context(o: dict) -> bool:
    return o["steps"] >= CONTEXT_MIN_STEPS and o["epochs"] >= CONTEXT_MIN_EPOCHS


def _has_steps(o: dict) -> bool:
    return o["steps"] >= MIN_STEPS and o["epochs"] >= MIN_EPOCHS


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
) -> bool:
    """Whether measuring ``candidate`` at ``crop`` can change the plan, given what is measured so far.

    Candidates are measured lightest first, each lighter one faster at every crop, and crops
    smallest first. The crop rule needs only the lightest candidate: once it misses
    CONTEXT_MIN_STEPS at a crop, larger crops (slower) miss too. A heavier candidate matters only
    at the crop the lightest settled on, and only while the one before it reaches MIN_STEPS there.
    """
    overrides = overrides or {}
    lightest = candidates[0].name
    mine = sorted((m for m in measurements if m.candidate == lightest), key=lambda m: m.crop_size)
    opts = {
        (o["name"], o["crop"]): o
        for o in _options(fp, budget_s, elapsed_s, measurements, eval_s_per_image, overrides, candidates)
    }
    if candidate.name == lightest:
        if not mine:
            return True
        last = opts.get((lightest, mine[-1].crop_size))
        return last is not None and _has_context(last)
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
) -> Plan:
    """Choose the recipe. Pure: all machine facts come in as arguments, so it is unit-testable.

    Args:
        fp: the data fingerprint.
        budget_s: the whole run's budget in seconds.
        elapsed_s: seconds already spent (validation, measuring) when training starts.
        measurements: training throughput per (candidate, crop).
        eval_s_per_image: seconds to predict one full-size image, per candidate name.
        overrides: options the user gave explicitly (TrainConfig field -> value); they win.
        candidates: the models that were measured, lightest first (default CANDIDATES).
    """
    candidates = candidates or CANDIDATES
    overrides = dict(overrides or {})
    if budget_s - elapsed_s - FINISH_RESERVE <= 5:
        raise PixelwiseError(
            f"the budget of {budget_s:.0f} s is used up before training starts ({elapsed_s:.0f} s went on reading "
            "and measuring); give a larger --budget"
        )
    if not any(m.images_per_s > 0 for m in measurements):
        raise PixelwiseError("no candidate configuration could be measured on this machine")
    options = _options(fp, budget_s, elapsed_s, measurements, eval_s_per_image, overrides, candidates)
    if not options:
        raise PixelwiseError(
            f"validation alone would take longer than the budget of {budget_s:.0f} s; "
            "give a larger --budget or fewer validation images"
        )
    if "crop_size" in overrides:
        options = [o for o in options if o["crop"] == overrides["crop_size"]] or options
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
    estimates = {
        "steps": best["steps"],
        "epochs": epochs,
        "train_seconds": round(best["train_s"], 1),
        "validations": best["n_val"],
        "validation_seconds": round(best["per_val"], 2),
        "images_per_s": round(best["rate"], 2),
        "elapsed_before_training": round(elapsed_s, 1),
    }
    return Plan(
        budget_s, choices, reasons, sorted(overridden), estimates, asdict(fp), [asdict(m) for m in measurements]
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
            f"no candidate reaches {CONTEXT_MIN_STEPS} steps and {CONTEXT_MIN_EPOCHS} epochs at any crop in "
            f"this budget, so the one with the most steps ({best['steps']} at {best['rate']:.1f} img/s)"
        )
    crop = max(o["crop"] for o in context)
    why_crop = (
        f"crop {crop}: the largest at which a candidate still gets >= {CONTEXT_MIN_STEPS} steps and "
        f">= {CONTEXT_MIN_EPOCHS} epochs"
    )
    enough = [o for o in options if o["crop"] == crop and _has_steps(o)]
    if enough:
        best = max(enough, key=lambda o: o["rank"])
        return best, (
            f"{why_crop}; at it, the most capable candidate that still gets >= {MIN_STEPS} steps and "
            f">= {MIN_EPOCHS} epochs ({best['steps']} steps, {int(best['epochs'])} epochs at "
            f"{best['rate']:.1f} img/s)"
        )
    best = max((o for o in context if o["crop"] == crop), key=lambda o: o["steps"])
    return best, (
        f"{why_crop}; at it no candidate reaches {MIN_STEPS} steps and {MIN_EPOCHS} epochs, so the "
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
        "crop_size": best["crop"],
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
        "crop_size": f"the largest measured crop up to the median image side {min(fp.median_hw)} px that fits the "
        "rule above",
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
) -> tuple[list[Measurement], dict[str, float]]:
    """Time a few training steps of each candidate at each crop, and one full-size prediction.

    Candidates are measured lightest first and crops smallest first. ``wanted(candidate, crop,
    measured so far, eval times so far)`` (see :func:`worth_measuring`) skips the ones that
    cannot change the plan; once ``max_seconds`` have gone by, the remaining ones are left out
    (the first is always measured).

    Each step is the one the run trains with: :func:`pixelwise.training.step.build_train_step`
    builds it from ``config`` (its loss, AdamW, autocast dtype and GradScaler, gradient clipping,
    EMA, memory layout) for the candidate's model. Steps run on random tensors of the right shape
    (speed does not depend on the pixel values); the first step builds the kernels and is not
    counted, and at least two steps are timed unless that would take more than four times
    ``seconds_per_config``.
    """
    import torch

    from .step import build_criterion

    candidates = candidates or CANDIDATES
    wanted = wanted or (lambda *_: True)
    num_classes = data.classes.num_classes
    median_hw = Fingerprint.from_data(data).median_hw
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
        evals[cand.name] = _time_prediction(step, median_hw, device, gen)
        for crop in crops:
            if not time_left() or not wanted(cand, crop, out, evals):
                continue
            x = torch.randn(cand.batch_size, 3, crop, crop, generator=gen).to(device)
            y = _synthetic_target(config.task, num_classes, cand.batch_size, crop, gen).to(device)
            out.append(Measurement(cand.name, crop, _images_per_s(step, x, y, device, seconds_per_config)))
        del step
    return out, evals


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


def _time_prediction(step, hw: tuple[int, int], device, gen) -> float:
    """Seconds a validation takes per full-size image: twice the bare forward pass.

    A validation also decodes, normalises and scores each image: on CamVid (480x360) it took
    about twice the bare forward pass, so that is what the plan reserves.
    """
    import torch

    model = step.model
    model.eval()
    with torch.no_grad():
        x = torch.randn(1, 3, *hw, generator=gen).to(device)
        if step.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ts = []
        for _ in range(2):
            t = time.perf_counter()
            with torch.autocast(device.type, dtype=step.amp_dtype, enabled=step.amp_dtype is not None):
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
    model.train()
    return 2.0 * min(ts[1:])


def _images_per_s(step, x, y, device, seconds_per_config: float) -> float:
    """Training images per second of ``step`` on the batch ``x``, ``y``; the first step is not counted."""
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
    candidates, crops = CANDIDATES, usable_crops(fp)
    if "crop_size" in config.keep:
        crops = [config.crop_size]
    if config.budget < 300:  # short budgets: no time to measure big models
        candidates = candidates[:1]
        crops = crops[-2:] if "crop_size" not in config.keep else crops
    if any(k in config.keep for k in ("arch", "encoder", "model_kwargs")):
        candidates = [Candidate("given", config.arch, config.encoder, dict(config.model_kwargs), config.batch_size)]
    per_config = min(2.0, max(0.3, 0.03 * config.budget / max(1, len(candidates) * len(crops))))
    overrides = {k: getattr(config, k) for k in config.keep if hasattr(config, k)}

    def wanted(cand, crop, measured, evals) -> bool:
        elapsed = time.perf_counter() - run_clock
        return worth_measuring(fp, config.budget, elapsed, measured, evals, overrides, candidates, cand, crop)

    # Measure the step the plan trains with: its memory layout and loss weighting, unless given.
    planned = {"channels_last": True, "class_weights": _class_weights_choice(fp)[0]}
    as_planned = replace(config, **{k: v for k, v in planned.items() if k not in config.keep})
    # The models built for measuring draw from the random generators; forking them keeps the trained
    # model's initialisation the one --seed gives, however many configurations were measured.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        measurements, evals = measure(
            data, device, as_planned, crops, per_config, candidates, max_seconds=0.06 * config.budget, wanted=wanted
        )
    elapsed = time.perf_counter() - run_clock
    plan = make_plan(fp, config.budget, elapsed, measurements, evals, overrides, candidates)
    changes = {k: v for k, v in plan.choices.items() if k in TrainConfig.__dataclass_fields__}
    if "scale_range" in changes:
        changes["scale_range"] = tuple(changes["scale_range"])
    # The clock, not the epoch count, ends a planned run: leave room for a faster machine than measured.
    changes["epochs"] = max(1, int(changes["epochs"] * 3))
    return plan, TrainConfig.from_dict({**config.to_dict(), **changes})
