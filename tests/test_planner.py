"""The --budget planner: choices fit the budget, explicit options win, odd data gives sane plans."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pixelwise.errors import PixelwiseError
from pixelwise.training.planner import (
    CANDIDATES,
    CONTEXT_MIN_STEPS,
    CONTEXT_MIN_VIEWS,
    MIN_STEPS,
    MIN_VIEWS,
    SPAN_FACTOR,
    SUB_FLOOR_SCALE,
    THIN_FLOOR,
    Fingerprint,
    Limits,
    Measurement,
    latency_key,
    make_plan,
    mask_widths,
    parse_budget,
    structure_widths,
    usable_crops,
    worth_measuring,
)


@pytest.mark.parametrize(
    "text,seconds",
    [("90s", 90), ("20m", 1200), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("300", 300), (" 2H ", 7200)],
)
def test_parse_budget(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "20x", "10s", "m20", "1h-5m"])
def test_parse_budget_rejects(text):
    with pytest.raises(PixelwiseError):
        parse_budget(text)


def fingerprint(n=300, hw=(360, 480), shares=(0.5, 0.3, 0.2), val=60):
    counts = [int(1e6 * s) for s in shares]
    return Fingerprint.from_counts(n, val, [hw] * n, counts)


def measurements(base=40.0):
    """Made-up throughputs: bigger models and crops are slower (images/s scale with 1/pixels)."""
    out = []
    for i, c in enumerate(CANDIDATES):
        for crop in (128, 192, 256, 320):
            out.append(Measurement(c.name, crop, base / (1.6**i) * (128 / crop) ** 2))
    return out


EVALS = {c.name: 0.1 * (1.5**i) for i, c in enumerate(CANDIDATES)}


def _train_seconds_used(plan):
    e = plan.estimates
    return e["train_seconds"] + e["validations"] * e["validation_seconds"] + e["elapsed_before_training"]


@pytest.mark.parametrize("budget", [90, 600, 1200, 3600, 86400])
def test_plan_fits_the_budget(budget):
    plan = make_plan(fingerprint(), budget, elapsed_s=10, measurements=measurements(), eval_s_per_image=EVALS)
    used = _train_seconds_used(plan)
    assert used <= budget and used >= 0.9 * budget, (used, budget)
    e = plan.estimates
    # The planned epochs are what the measured throughput fits into the training time.
    per_epoch = (300 // plan.choices["batch_size"]) * plan.choices["batch_size"]  # last partial batch dropped
    assert plan.choices["epochs"] * per_epoch <= e["train_seconds"] * e["images_per_s"] * 1.001
    assert (plan.choices["epochs"] + 1) * per_epoch > e["train_seconds"] * e["images_per_s"] * 0.999
    assert plan.choices["time_limit"] == pytest.approx(
        e["train_seconds"] + (e["validations"] - 1) * e["validation_seconds"], abs=0.2
    )
    json.dumps(plan.to_dict())  # plan.json must be writable
    assert set(plan.reasons) >= set(plan.choices)


def test_more_time_buys_a_bigger_model_or_crop():
    small = make_plan(fingerprint(), 120, 5, measurements(), EVALS)
    large = make_plan(fingerprint(), 86400, 5, measurements(), EVALS)
    names = [c.name for c in CANDIDATES]

    def size(p):
        cand = next(
            c for c in CANDIDATES if c.encoder == p.choices["encoder"] and c.model_kwargs == p.choices["model_kwargs"]
        )
        return names.index(cand.name), p.choices["crop_size"]

    assert size(large) > size(small)
    assert large.estimates["steps"] >= MIN_STEPS and large.estimates["views"] >= MIN_VIEWS
    assert "no candidate reaches" in small.reasons["arch"]


def test_overrides_win_and_are_listed():
    plan = make_plan(
        fingerprint(), 1200, 5, measurements(), EVALS, overrides={"crop_size": 192, "batch_size": 4, "lr": 3e-4}
    )
    assert plan.choices["crop_size"] == 192 and plan.choices["batch_size"] == 4 and plan.choices["lr"] == 3e-4
    assert plan.overridden == ["batch_size", "crop_size", "lr"]
    assert plan.reasons["crop_size"] == "given on the command line"


def test_imbalance_turns_on_class_weights():
    balanced = make_plan(fingerprint(shares=(0.4, 0.3, 0.3)), 600, 5, measurements(), EVALS)
    skewed = make_plan(fingerprint(shares=(0.97, 0.025, 0.005)), 600, 5, measurements(), EVALS)
    assert balanced.choices["class_weights"] is None
    assert skewed.choices["class_weights"] == "sqrt"
    assert balanced.choices["class_crops"] == 0.0 and skewed.choices["class_crops"] == 0.0  # measured: no gain


def test_tiny_data_and_huge_images_give_sane_plans():
    assert usable_crops(fingerprint(hw=(48, 60))) == [64]  # small images: one crop, padded to a multiple of 32
    assert usable_crops(fingerprint(hw=(360, 480))) == [128, 192, 256, 320]
    tiny = make_plan(fingerprint(n=3, hw=(64, 64), val=1), 600, 2, measurements(), EVALS)
    assert tiny.choices["epochs"] >= 1 and tiny.estimates["validations"] >= 1
    huge = fingerprint(n=20, hw=(8000, 8000), val=5)
    evals = {k: v * 4000 for k, v in EVALS.items()}  # one huge image takes minutes to predict
    plan = make_plan(huge, 3600, 5, measurements(), evals)
    assert plan.choices["crop_size"] <= 512
    assert plan.estimates["validations"] >= 1 and _train_seconds_used(plan) <= 3600


def test_budget_too_small_is_a_clear_error():
    with pytest.raises(PixelwiseError, match="larger --budget"):
        make_plan(fingerprint(), 40, elapsed_s=39, measurements=measurements(), eval_s_per_image=EVALS)


def test_budget_run_end_to_end(tmp_path):
    import time

    from conftest import make_simple_dataset
    from pixelwise import train
    from pixelwise.predict.predictor import load

    data = make_simple_dataset(tmp_path / "data", n=12, size=(48, 48))
    start = time.perf_counter()
    from conftest import TINY_MODEL

    result = train(
        data=str(data),
        out=str(tmp_path / "run"),
        budget="45s",
        lr=3e-3,
        num_workers=0,
        device="cpu",
        progress=False,
        **TINY_MODEL,
    )
    took = time.perf_counter() - start
    run = result.run_dir
    plan = json.loads((run / "plan.json").read_text())
    assert plan["budget_s"] == 45 and plan["choices"]["lr"] == 3e-3
    # What was passed besides the budget is kept, and the plan says so.
    assert plan["overridden"] == ["arch", "encoder", "lr", "model_kwargs"]
    assert plan["choices"]["model_kwargs"] == TINY_MODEL["model_kwargs"]
    assert plan["pretrained"] == "none"  # what the weights started from, as model.json records it
    assert json.loads((run / "model.json").read_text())["training"]["pretrained"] == "none"
    assert (run / "model.safetensors").is_file() and load(run, "cpu").predict(
        __import__("numpy").zeros((48, 48, 3), "uint8")
    ).shape == (48, 48)
    history = result.history
    # The epochs took most of the training window; the rest went on writing checkpoints and
    # curves, which take longer on a busy machine (0.68 was seen under heavy load), hence 0.5.
    assert sum(r["seconds"] for r in history) >= 0.5 * plan["choices"]["time_limit"]
    # The learning rate decayed on the clock: the last step ran well below the peak (how far
    # below depends on how long one step takes on the machine running the tests).
    assert history[-1]["lr"] < 0.5 * 3e-3 and history[-1]["lr"] < max(r["lr"] for r in history)
    assert "time limit reached" in (run / "train.log").read_text()
    assert took < 45 * 1.5  # generous: the machine running the tests may be busy
    # Resuming a finished budget run has nothing left to do.
    again = train(resume=True, out=str(run), progress=False)
    assert len(again.history) == len(history)


def test_a_semantic_plan_measures_and_chooses_segformer_and_an_object_plan_u_nets(tmp_path):
    import time

    import torch

    from conftest import make_simple_dataset
    from pixelwise.data import open_dataset
    from pixelwise.training.config import TrainConfig
    from pixelwise.training.planner import OBJECT_CANDIDATES, candidates_for, plan_for_budget

    data = open_dataset(str(make_simple_dataset(tmp_path / "data", n=12, size=(48, 48))))
    config = TrainConfig(data=str(tmp_path / "data"), budget=60, device="cpu", pretrained="none")
    plan, planned = plan_for_budget(config, data, torch.device("cpu"), time.perf_counter())
    assert (planned.arch, planned.encoder, planned.model_kwargs) == ("segformer", "mit_b0", {})
    assert {m["candidate"] for m in plan.measurements} == {"segformer-mit_b0"}
    assert plan.estimates["latency_ms"] > 0 and set(plan.latencies) == {"segformer-mit_b0@0"}
    assert candidates_for("semantic") == CANDIDATES
    assert [c.encoder for c in CANDIDATES] == ["mit_b0", "mit_b1", "mit_b2"]
    assert candidates_for("instance") == candidates_for("panoptic") == OBJECT_CANDIDATES
    assert {c.arch for c in OBJECT_CANDIDATES} == {"unet"}


def test_a_given_architecture_with_its_own_backbone_is_planned_under_that_backbone(tmp_path):
    import time

    import torch

    from conftest import make_simple_dataset
    from pixelwise.data import open_dataset
    from pixelwise.training.config import TrainConfig
    from pixelwise.training.planner import plan_for_budget

    data = open_dataset(str(make_simple_dataset(tmp_path / "data", n=12, size=(48, 48))))
    config = TrainConfig(
        data=str(tmp_path / "data"),
        budget=60,
        device="cpu",
        pretrained="none",
        arch="bisenetv2",
        model_kwargs={"head_channels": 16},
        keep=["arch", "model_kwargs"],
    )
    plan, planned = plan_for_budget(config, data, torch.device("cpu"), time.perf_counter())
    assert (planned.arch, planned.encoder) == ("bisenetv2", "two-path")  # not the default resnet18
    assert plan.choices["encoder"] == "two-path" and {m["candidate"] for m in plan.measurements} == {"given"}


def test_short_of_steps_the_largest_crop_with_enough_epochs_wins():
    # 367 training images, 20 minutes: no option reaches MIN_STEPS, several reach CONTEXT_MIN_VIEWS.
    fp = fingerprint(n=367, val=101)
    rates = {128: 10.0, 192: 8.0, 256: 4.0, 320: 2.0}
    ms = [Measurement(c.name, crop, rate / (1.6**i)) for i, c in enumerate(CANDIDATES) for crop, rate in rates.items()]
    plan = make_plan(fp, 1200, 10, ms, EVALS)
    assert plan.estimates["steps"] < MIN_STEPS
    assert plan.estimates["steps"] >= CONTEXT_MIN_STEPS and plan.estimates["views"] >= CONTEXT_MIN_VIEWS
    # crop 192 still gets 800 steps and 2 views with the lightest model; 256 does not with any.
    assert plan.choices["crop_size"] == 192 and plan.choices["encoder"] == CANDIDATES[0].encoder
    assert "crop 192: the largest" in plan.reasons["arch"] and "most steps" in plan.reasons["arch"]
    assert plan.choices["channels_last"] is True and "channels_last" in plan.reasons
    # Without the steps either, the most steps decide (the smallest crop of the lightest model).
    starved = make_plan(fp, 1200, 10, [Measurement(m.candidate, m.crop_size, m.images_per_s / 8) for m in ms], EVALS)
    assert starved.choices["crop_size"] == 128 and "most steps" in starved.reasons["arch"]


def _measured_as_the_trainer_would(fp, budget, table, elapsed=10.0, overrides=None, limits=None):
    """Walk candidates (lightest first) and crops (smallest first) as planner.measure does, asking
    worth_measuring before each; ``table`` stands in for the machine (and ``limits.latency_ms`` for
    the latencies it would measure)."""
    rates = {(m.candidate, m.crop_size): m for m in table}
    crops = sorted({m.crop_size for m in table})
    measured, evals = [], {}
    for cand in CANDIDATES:
        if not any(
            worth_measuring(fp, budget, elapsed, measured, evals, overrides or {}, CANDIDATES, cand, c, limits)
            for c in crops
        ):
            continue
        evals[cand.name] = EVALS[cand.name]
        for crop in crops:
            if worth_measuring(fp, budget, elapsed, measured, evals, overrides or {}, CANDIDATES, cand, crop, limits):
                measured.append(rates[(cand.name, crop)])
    return measured, evals


@pytest.mark.parametrize("budget", [120, 600, 1200, 3600, 86400])
@pytest.mark.parametrize("n", [30, 367, 3000])
def test_measuring_only_what_can_change_the_plan_gives_the_same_plan(budget, n):
    fp = fingerprint(n=n, val=101)
    # Rates that fall faster than the pixel count grows (as on CPUs) and slower (as on GPUs).
    for table in (
        measurements(),
        [Measurement(m.candidate, m.crop_size, m.images_per_s * (m.crop_size / 128) ** 1.2) for m in measurements()],
    ):
        measured, evals = _measured_as_the_trainer_would(fp, budget, table)
        full = make_plan(fp, budget, 10, table, EVALS)
        pruned = make_plan(fp, budget, 10, measured, evals)
        assert pruned.choices == full.choices and pruned.estimates == full.estimates, (budget, n)
        assert len(measured) <= len(table)


def test_short_budgets_measure_a_fraction_of_the_configurations():
    fp = fingerprint(n=367, val=101)
    rates = {128: 14.4, 192: 8.0, 256: 3.9, 320: 2.2}  # the lightest candidate on a 2-core CPU (images/s)
    table = [Measurement(c.name, crop, r / (1.6**i)) for i, c in enumerate(CANDIDATES) for crop, r in rates.items()]
    measured, _ = _measured_as_the_trainer_would(fp, 1200, table)
    # The lightest up to the first crop that misses 800 steps; no heavier model, since the lightest
    # does not reach MIN_STEPS at the chosen crop.
    assert [(m.candidate, m.crop_size) for m in measured] == [(CANDIDATES[0].name, c) for c in (128, 192, 256)]
    assert make_plan(fp, 1200, 10, measured, EVALS).choices["crop_size"] == 192
    # A day: the heavier models are measured at the chosen crop only.
    measured, _ = _measured_as_the_trainer_would(fp, 86400, table)
    heavier = {(m.candidate, m.crop_size) for m in measured if m.candidate != CANDIDATES[0].name}
    assert heavier and {crop for _, crop in heavier} == {320}


def test_measuring_leaves_the_seeded_initialisation_alone(tmp_path):
    import time

    import torch

    from conftest import TINY_MODEL, make_simple_dataset
    from pixelwise.data import open_dataset
    from pixelwise.training.config import TrainConfig
    from pixelwise.training.planner import plan_for_budget

    data = open_dataset(str(make_simple_dataset(tmp_path / "data", n=12, size=(48, 48))))
    config = TrainConfig(
        data=str(tmp_path / "data"), budget=60, device="cpu", keep=["arch", "encoder", "model_kwargs"], **TINY_MODEL
    )
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    plan, _ = plan_for_budget(config, data, torch.device("cpu"), time.perf_counter())
    assert plan.measurements  # models were built and trained for measuring ...
    # ... and timed predicting through the engine, at the working resolution of the plan.
    assert plan.estimates["latency_ms"] > 0 and latency_key("given", plan.choices["max_side"]) in plan.latencies
    assert len(plan.fingerprint["class_width"]) == plan.fingerprint["num_classes"]
    assert torch.equal(torch.rand(4), expected)  # ... without drawing from the generator training uses next


# -- structure widths -------------------------------------------------------------------------


def test_structure_width_of_a_stripe_and_a_disc():
    stripe = np.zeros((64, 80), np.int64)
    stripe[:, 30:36] = 1
    assert mask_widths(stripe, 2)[1] == pytest.approx(6.0)
    yy, xx = np.mgrid[:121, :121]
    disc = (((yy - 60) ** 2 + (xx - 60) ** 2) <= 30**2).astype(np.int64)
    assert mask_widths(disc, 2)[1] == pytest.approx(2 / 3 * 60, rel=0.05)  # 4 x mean distance = 2/3 of the diameter
    # The ignore index is a neighbour like any label; one label alone gives the longer side.
    fenced = stripe.copy()
    fenced[:, 36:40] = 255
    assert mask_widths(fenced, 2)[1] == pytest.approx(6.0)
    assert mask_widths(np.ones((20, 50), np.int64), 2) == {1: 50.0}


def test_structure_widths_are_a_median_over_masks_and_cheap_on_large_masks():
    masks = []
    for w in (4, 6, 8):
        m = np.zeros((40, 40), np.int64)
        m[:, 10 : 10 + w] = 2
        masks.append(m)
    widths = structure_widths(masks, 3)
    assert widths[1] is None and widths[2] == pytest.approx(6.0)
    big = np.zeros((3000, 2400), np.int64)  # subsampled before the distance transform; widths scaled back
    big[:, 1000:1060] = 1
    assert mask_widths(big, 2)[1] == pytest.approx(60.0, rel=0.1)


def test_fingerprint_of_a_data_set_measures_widths_deterministically(tmp_path):
    from conftest import make_simple_dataset
    from pixelwise.data import open_dataset

    data = open_dataset(str(make_simple_dataset(tmp_path / "data", n=12, size=(48, 64))))
    a, b = Fingerprint.from_data(data), Fingerprint.from_data(data)
    assert a == b and len(a.class_width) == a.num_classes
    assert (a.long_side_median, a.long_side_max) == (64, 64)
    assert any(w is not None and w > 0 for w in a.class_width)
    assert Fingerprint.from_data(data, widths=False).class_width == []


# -- the working resolution -------------------------------------------------------------------

# The lightest candidate's training images/s on a 2-core CPU (CamVid, BENCHMARKS.md); heavier ones slower.
CPU_RATES = {128: 14.4, 192: 8.0, 256: 3.9, 320: 2.2, 384: 1.5, 512: 0.8}


def cpu_table(crops):
    return [Measurement(c.name, crop, CPU_RATES[crop] / (1.6**i)) for i, c in enumerate(CANDIDATES) for crop in crops]


def widths_fp(n, sizes, widths, val=40):
    shares = [1.0 / len(widths)] * len(widths)
    return Fingerprint.from_counts(n, val, sizes, [int(1e6 * s) for s in shares], widths)


def plan_on(fp, budget=1200, limits=None):
    return make_plan(fp, budget, 20, cpu_table(usable_crops(fp)), EVALS, limits=limits)


# Widths as measured on the demo's masks at 256 px (background, then four object classes).
DEMO_WIDTHS = [173.8, 54.4, 46.3, 33.2, 17.7]


def test_demo_like_images_train_whole():
    fp = widths_fp(160, [(256, 256)] * 160, DEMO_WIDTHS)
    plan = plan_on(fp)
    side, crop = plan.choices["max_side"], plan.choices["crop_size"]
    assert max(plan.estimates["working_hw"]) <= crop  # a whole scene in every crop
    assert side == 0 or side == crop
    # With time for 256 px crops, the images stay at native size, each one crop.
    native = make_plan(fp, 1200, 20, cpu_table([256]), EVALS)
    assert native.choices["max_side"] == 0 and "already fits a 256 px crop" in native.reasons["max_side"]


def test_the_same_scenes_five_times_larger_train_on_whole_downscaled_images():
    fp = widths_fp(160, [(960, 1280)] * 160, [5 * w for w in DEMO_WIDTHS])
    plan = plan_on(fp)
    side, crop = plan.choices["max_side"], plan.choices["crop_size"]
    assert 128 <= side <= 320 and max(plan.estimates["working_hw"]) <= crop  # a whole image fits one crop
    assert f"whole image fits one {crop} px crop" in plan.reasons["max_side"]
    # Validation is timed at the working size: the native estimate scaled by the pixels.
    h, w = plan.estimates["working_hw"]
    per_image = plan.estimates["validation_seconds"] / fp.val_images
    assert per_image == pytest.approx(EVALS[CANDIDATES[0].name] * h * w / (960 * 1280), rel=0.05)


def test_large_medical_images_with_one_large_object_class_train_whole_and_downscaled():
    rng = np.random.default_rng(0)
    sizes = [(int(h), int(w)) for h, w in zip(rng.integers(332, 1073, 700), rng.integers(487, 1921, 700))]
    plan = plan_on(widths_fp(700, sizes, [620.0, 310.0]))
    side, crop = plan.choices["max_side"], plan.choices["crop_size"]
    assert side > 0 and side == crop and max(plan.estimates["working_hw"]) <= crop
    # A crop holds a whole image: every epoch is one view of each image.
    assert plan.estimates["views"] == pytest.approx(plan.estimates["epochs"], rel=0.05)
    # At native size the same crop covers a fraction of each image: views fall behind epochs.
    native = make_plan(
        widths_fp(700, sizes, [620.0, 310.0]), 1200, 20, cpu_table([192]), EVALS, overrides={"max_side": 0}
    )
    assert native.estimates["views"] < 0.2 * native.estimates["epochs"]


# Widths as measured on CamVid's training masks (480x360): pole is 3.2 px wide.
CAMVID_WIDTHS = [82.1, 67.5, 3.2, 179.1, 24.6, 37.3, 9.0, 18.0, 32.7, 7.0, 8.2]


@pytest.mark.parametrize("budget", [300, 1200, 7200])
def test_camvid_like_streets_shrink_as_far_as_their_pedestrians_allow(budget):
    fp = widths_fp(367, [(360, 480)] * 367, CAMVID_WIDTHS, val=101)
    fp.class_names = "sky building pole road pavement tree sign fence car pedestrian bicyclist".split()
    plan = plan_on(fp, budget)
    side, crop = plan.choices["max_side"], plan.choices["crop_size"]
    # The thinnest class at or above the floor (pedestrians, 7 px) keeps THIN_FLOOR px: 480 * 4 / 7 = 274 -> 288.
    assert side == max(288, crop) and 7.0 * side / 480 >= THIN_FLOOR
    # Poles are under the floor at native size already: they do not hold native size, but keep half their width.
    assert 3.2 * side / 480 >= SUB_FLOOR_SCALE * 3.2
    if side == 288:
        assert "'pedestrian' structures (7.0 px) would fall under 4 px" in plan.reasons["max_side"]
        assert "the thinnest class, 'pole', keeps 1.9 px" in plan.reasons["max_side"]


def test_a_class_under_the_floor_at_native_size_keeps_half_its_width():
    fp = widths_fp(100, [(512, 512)] * 100, [120.0, 3.0])
    side = plan_on(fp).choices["max_side"]
    assert side == 256 and "keep at least 0.5 of their width" in plan_on(fp).reasons["max_side"]
    # Without it, the wide class alone would let the images shrink to the crop.
    assert plan_on(widths_fp(100, [(512, 512)] * 100, [120.0, 30.0])).choices["max_side"] < 256


def test_membrane_slices_stay_native_while_a_crop_spans_twice_the_cells():
    fp = widths_fp(30, [(512, 512)] * 30, [47.1, 8.6], val=6)
    plan = plan_on(fp)
    assert plan.choices["crop_size"] >= SPAN_FACTOR * 47.1
    assert plan.choices["max_side"] == 0 and "spans 2 x the widest" in plan.reasons["max_side"]
    # Cells three times as wide: a crop no longer spans two of them, so the slices shrink, as far as
    # the membranes allow (512 * 4 / 8.6 = 238 -> 256 px).
    wider = plan_on(widths_fp(30, [(512, 512)] * 30, [3 * 47.1, 8.6], val=6))
    assert wider.choices["crop_size"] < SPAN_FACTOR * 3 * 47.1 and wider.choices["max_side"] == 256


def test_a_given_max_side_wins_and_sets_the_crops():
    fp = widths_fp(160, [(960, 1280)] * 160, [5 * w for w in DEMO_WIDTHS])
    assert usable_crops(fp, 256) == [128, 192]
    plan = make_plan(fp, 1200, 20, cpu_table([128, 192]), EVALS, overrides={"max_side": 256})
    assert plan.choices["max_side"] == 256 and "max_side" in plan.overridden
    assert plan.estimates["working_hw"] == [192, 256]


# -- latency ----------------------------------------------------------------------------------


def latencies(fastest=30.0, side=0):
    return {latency_key(c.name, side): fastest * (1.5**i) for i, c in enumerate(CANDIDATES)}


def test_a_latency_ceiling_drops_the_slower_candidates():
    fp = fingerprint(n=367, val=101)
    free = make_plan(fp, 86400, 10, measurements(), EVALS, limits=Limits(latency_ms=latencies()))
    slowest = 30.0 * 1.5 ** (len(CANDIDATES) - 1)
    assert free.choices["encoder"] == CANDIDATES[-1].encoder and free.estimates["latency_ms"] == slowest
    capped = make_plan(fp, 86400, 10, measurements(), EVALS, limits=Limits(max_latency_ms=50, latency_ms=latencies()))
    assert capped.choices["encoder"] == CANDIDATES[1].encoder and capped.estimates["latency_ms"] == 45.0
    assert capped.latencies == latencies()
    line = next(x for x in capped.summary().splitlines() if "latency" in x)
    assert "45.0 ms" in line and "max side native" in line


def test_no_candidate_fast_enough_is_one_line_naming_the_fastest():
    fp = fingerprint(n=367, val=101)
    with pytest.raises(PixelwiseError, match="fastest measured: segformer-mit_b0 at native size, 30 ms") as e:
        make_plan(fp, 1200, 10, measurements(), EVALS, limits=Limits(max_latency_ms=10, latency_ms=latencies()))
    assert "\n" not in str(e.value) and "--max-latency" in str(e.value)


@pytest.mark.parametrize("ceiling", [35, 50, 1000])
@pytest.mark.parametrize("budget", [600, 86400])
def test_measuring_only_what_can_change_the_plan_holds_under_a_latency_ceiling(ceiling, budget):
    fp = fingerprint(n=367, val=101)
    limits = Limits(max_latency_ms=ceiling, latency_ms=latencies())
    measured, evals = _measured_as_the_trainer_would(fp, budget, measurements(), limits=limits)
    full = make_plan(fp, budget, 10, measurements(), EVALS, limits=limits)
    pruned = make_plan(fp, budget, 10, measured, evals, limits=limits)
    assert pruned.choices == full.choices and pruned.estimates == full.estimates


def test_a_latency_ceiling_can_be_met_by_a_smaller_working_resolution():
    fp = widths_fp(367, [(360, 480)] * 367, CAMVID_WIDTHS, val=101)
    lat = {latency_key(c.name, s): 60.0 * 1.5**i for i, c in enumerate(CANDIDATES) for s in (0, 288)}
    lat[latency_key(CANDIDATES[0].name, 256)] = 35.0
    lat[latency_key(CANDIDATES[0].name, 160)] = 20.0
    plan = plan_on(fp, 1200, Limits(max_latency_ms=40, latency_ms=lat))
    assert plan.choices["max_side"] == 256 and plan.estimates["latency_ms"] == 35.0
    assert (
        "within --max-latency" in plan.reasons["max_side"] and "thinnest class keeps 1.7 px" in plan.reasons["max_side"]
    )
    assert plan.estimates["working_hw"] == [192, 256]
    # A working image smaller than the crop the throughput allows: the crop shrinks to hold it whole.
    lat[latency_key(CANDIDATES[0].name, 96)] = 8.0
    tiny = plan_on(fp, 1200, Limits(max_latency_ms=10, latency_ms=lat))
    assert tiny.choices["max_side"] == 96 and tiny.choices["crop_size"] == 96
    assert tiny.estimates["working_hw"] == [72, 96] and "holds a whole 96x72" in tiny.reasons["crop_size"]
    # A --max-side given is kept as it is: the ceiling then only filters.
    with pytest.raises(PixelwiseError, match="--max-latency 40 ms"):
        make_plan(
            fp, 1200, 20, cpu_table([192]), EVALS, {"max_side": 0}, limits=Limits(max_latency_ms=40, latency_ms=lat)
        )


def test_measuring_latency_tries_the_side_that_should_meet_the_ceiling():
    from pixelwise.training import planner

    def time_at(side):  # 60 ms at 480x360, proportional to the pixels
        h, w = (360, 480) if not side else (round(360 * side / 480), side)
        return 60.0 * h * w / (360 * 480)

    limits = Limits(max_latency_ms=40)
    planner._time_latencies(time_at, "m", (360, 480), 0, limits)
    assert set(limits.latency_ms) == {"m@0", "m@352"} and limits.latency_ms["m@352"] <= 40
    fast = Limits(max_latency_ms=100)
    planner._time_latencies(time_at, "m", (360, 480), 0, fast)
    assert set(fast.latency_ms) == {"m@0"}  # met at the working resolution: nothing more measured


def test_latency_is_measured_through_the_engine_predict_picks_and_leaves_the_model_as_it_was(monkeypatch):
    import torch

    from pixelwise.models import ModelConfig, build_model
    from pixelwise.predict import backends
    from pixelwise.training.planner import LatencyProbe

    model = build_model(ModelConfig("unet", "resnet18", 3, kwargs={"decoder_channels": [16, 8, 8, 8, 8]}), None)
    model = model.to(memory_format=torch.channels_last).train()
    ran = []
    real = backends.OnnxMember.logits
    monkeypatch.setattr(backends.OnnxMember, "logits", lambda self, x, **kw: ran.append(self.max_side) or real(self, x))
    probe = LatencyProbe(model, (60, 80), torch.device("cpu"), 3, "semantic", channels_last=True)
    assert probe(0) > 0 and probe(32) > 0
    # ONNX Runtime on the CPU, as `pixelwise predict` runs a model there; one export for every side.
    assert probe.engine == "onnxruntime" and ran == [0] * 4 + [32] * 4
    graph = probe.graph
    probe(48)
    assert probe.graph is graph
    # The model trains on afterwards as it was: training mode, channels-last weights.
    assert model.training and model.net.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)

    # A model that cannot be exported is timed through PyTorch, as predict falls back.
    def refuse(*a, **k):
        raise PixelwiseError("cannot export")

    monkeypatch.setattr(backends, "graph_bytes", refuse)
    torch_probe = LatencyProbe(model, (60, 80), torch.device("cpu"), 3, "semantic")
    assert torch_probe(0) > 0 and torch_probe.engine == "torch" and model.training


def test_views_count_only_the_part_of_a_wide_image_a_crop_covers():
    # A 512 px crop of a 256 x 1024 image covers 256 x 512 pixels: half the image, not all of it.
    fp = widths_fp(100, [(256, 1024)] * 100, [40.0, 20.0])
    plan = make_plan(fp, 1200, 20, cpu_table([512]), EVALS, overrides={"max_side": 0, "crop_size": 512})
    assert plan.choices["crop_size"] == 512
    assert plan.estimates["views"] == pytest.approx(0.5 * plan.estimates["epochs"], rel=0.1)
