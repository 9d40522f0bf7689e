"""Mask AP and panoptic quality on hand-made scenes, against torchmetrics or a hand count.

The scenes are 20x20 label maps: class 0 background (stuff), class 1 "object" (a thing), class 2
"grass" (stuff). torchmetrics' PanopticQuality is the reference where its definition is
panopticapi's; where it differs (crowd segments, pixels the prediction leaves unlabelled), the
expected figures are counted by hand in the test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.detection import PanopticQuality as TorchPQ

from pixelwise.errors import PixelwiseError
from pixelwise.instance_metrics import MaskAP, PanopticQuality

NAMES = ["background", "object", "grass"]
THINGS = [1]
STUFF = [0, 2]
SIZE = 20
BG = 100  # the background stuff segment's id in every map


def scene(*objects, background: int = BG) -> tuple[np.ndarray, dict[int, int]]:
    """(ids, categories): a background segment, then each (id, class, (y0, y1, x0, x1)) painted in order."""
    ids = np.full((SIZE, SIZE), background, np.int32)
    categories = {background: 0} if background else {}
    for seg, cls, (y0, y1, x0, x1) in objects:
        ids[y0:y1, x0:x1] = seg
        categories[seg] = cls
    return ids, categories


def ours(gt, pred, void=None, gt_crowd=None) -> dict:
    metric = PanopticQuality(3, THINGS, NAMES)
    metric.add(gt[0], gt[1], pred[0], pred[1], void=void, gt_crowd=gt_crowd)
    return metric.summary()


def torchmetrics_pq(gt, pred, void=None) -> tuple[list[float], dict[int, list[float]]]:
    """torchmetrics' (PQ, SQ, RQ) means and per-class triples for one image.

    Its layout is (N, H, W, 2) = (class, instance); a class outside things and stuff is void: the
    ground truth's void pixels and the prediction's unlabelled pixels (id 0) get class 3.
    """

    def layout(ids, categories, void_here):
        cls = np.vectorize(lambda i: categories.get(int(i), 3))(ids)
        cls[void_here] = 3
        return torch.from_numpy(np.stack([cls, ids], -1)[None].astype(np.int64))

    void = gt[0] == 0 if void is None else void
    target = layout(gt[0], gt[1], void)
    preds = layout(pred[0], pred[1], pred[0] == 0)
    kwargs = dict(things=set(THINGS), stuffs=set(STUFF), allow_unknown_preds_category=True, return_sq_and_rq=True)
    mean = TorchPQ(**kwargs)
    mean.update(preds, target)
    per_class = TorchPQ(**kwargs, return_per_class=True)
    per_class.update(preds, target)
    rows = per_class.compute().tolist()  # things first, then stuff, each sorted
    order = sorted(THINGS) + sorted(STUFF)
    return mean.compute().tolist(), {c: rows[k] for k, c in enumerate(order)}


def assert_matches_torchmetrics(gt, pred, void=None) -> dict:
    result = ours(gt, pred, void)
    mean, per_class = torchmetrics_pq(gt, pred, void)
    assert [result["PQ"], result["SQ"], result["RQ"]] == pytest.approx(mean)
    for c, name in enumerate(NAMES):
        row = result["per_class"][name]
        if row["PQ"] is not None:
            assert [row["PQ"], row["SQ"], row["RQ"]] == pytest.approx(per_class[c]), name
    return result


# ---------------------------------------------------------------- panoptic quality


def test_perfect_match_is_one():
    gt = scene((1, 1, (2, 8, 2, 8)), (2, 1, (10, 18, 10, 18)), (3, 2, (0, 2, 0, 20)))
    result = assert_matches_torchmetrics(gt, gt)
    assert (result["PQ"], result["SQ"], result["RQ"]) == (1.0, 1.0, 1.0)
    assert result["things"] == {"PQ": 1.0, "SQ": 1.0, "RQ": 1.0}
    assert result["per_class"]["object"]["TP"] == 2


def test_split_object_one_half_matches_the_other_is_a_false_positive():
    # A 10x10 object predicted as a 7-column part (IoU 0.7) and a 3-column part (IoU 0.3).
    gt = scene((1, 1, (5, 15, 5, 15)))
    pred = scene((1, 1, (5, 15, 5, 12)), (2, 1, (5, 15, 12, 15)))
    result = assert_matches_torchmetrics(gt, pred)
    row = result["per_class"]["object"]
    assert (row["TP"], row["FP"], row["FN"]) == (1, 1, 0)
    assert row["SQ"] == pytest.approx(0.7)
    assert row["RQ"] == pytest.approx(1 / 1.5)
    assert row["PQ"] == pytest.approx(0.7 / 1.5)


def test_halves_of_exactly_half_match_nothing():
    # IoU 0.5 is not above 0.5: the object is missed and both halves are false positives.
    gt = scene((1, 1, (5, 15, 5, 15)))
    pred = scene((1, 1, (5, 15, 5, 10)), (2, 1, (5, 15, 10, 15)))
    row = assert_matches_torchmetrics(gt, pred)["per_class"]["object"]
    assert (row["TP"], row["FP"], row["FN"], row["PQ"]) == (0, 2, 1, 0.0)


def test_merged_objects_match_the_larger_one_only():
    # Touching objects of 100 and 50 pixels predicted as one 150-pixel segment: IoU 2/3 and 1/3.
    gt = scene((1, 1, (5, 15, 2, 12)), (2, 1, (5, 15, 12, 17)))
    pred = scene((7, 1, (5, 15, 2, 17)))
    row = assert_matches_torchmetrics(gt, pred)["per_class"]["object"]
    assert (row["TP"], row["FP"], row["FN"]) == (1, 0, 1)
    assert row["SQ"] == pytest.approx(2 / 3)
    assert row["PQ"] == pytest.approx(2 / 3 * 2 / 3)


def test_missed_object_is_a_false_negative():
    gt = scene((1, 1, (2, 8, 2, 8)), (2, 1, (10, 18, 10, 18)))
    pred = scene((1, 1, (2, 8, 2, 8)))  # the second object is predicted as background
    result = assert_matches_torchmetrics(gt, pred)
    row = result["per_class"]["object"]
    assert (row["TP"], row["FP"], row["FN"]) == (1, 0, 1)
    background = result["per_class"]["background"]
    assert background["SQ"] == pytest.approx((400 - 36 - 64) / (400 - 36))


def test_false_positive_on_background():
    gt = scene((1, 1, (2, 8, 2, 8)))
    pred = scene((1, 1, (2, 8, 2, 8)), (2, 1, (12, 16, 12, 16)))
    row = assert_matches_torchmetrics(gt, pred)["per_class"]["object"]
    assert (row["TP"], row["FP"], row["FN"]) == (1, 1, 0)
    assert row["PQ"] == pytest.approx(1 / 1.5)


def test_void_pixels_leave_the_iou_and_excuse_a_prediction_mostly_on_them():
    gt = scene((1, 1, (2, 8, 2, 8)))
    void = np.zeros((SIZE, SIZE), bool)
    void[10:20, 0:20] = True  # the lower half is not labelled
    # The object's prediction spills 12 pixels onto background, and a second object lies 3/4 on
    # void: it is no false positive.
    pred = scene((1, 1, (2, 10, 2, 8)), (2, 1, (9, 13, 14, 18)))
    result = assert_matches_torchmetrics(gt, pred, void)
    row = result["per_class"]["object"]
    assert (row["TP"], row["FP"], row["FN"]) == (1, 0, 0)
    assert row["SQ"] == pytest.approx(36 / 48)
    # The same prediction, spilling onto void instead: the IoU ignores those pixels.
    void[8:10, 2:8] = True
    row = assert_matches_torchmetrics(gt, pred, void)["per_class"]["object"]
    assert row["SQ"] == pytest.approx(1.0)


def test_void_defaults_to_ground_truth_id_zero():
    gt = scene((1, 1, (2, 8, 2, 8)), background=0)  # only the object is labelled
    pred = scene((1, 1, (2, 8, 2, 8)))
    result = assert_matches_torchmetrics(gt, pred)
    assert result["PQ"] == 1.0
    assert result["per_class"]["background"]["FP"] == 0  # all of it lies on void


def test_stuff_class_and_the_things_and_stuff_means():
    gt = scene((1, 1, (2, 8, 2, 8)), (5, 2, (12, 20, 0, 20)))  # grass: 160 px
    pred = scene((1, 1, (2, 8, 2, 8)), (5, 2, (14, 20, 0, 20)))  # grass: 120 px, IoU 0.75
    result = assert_matches_torchmetrics(gt, pred)
    assert result["per_class"]["grass"]["PQ"] == pytest.approx(0.75)
    background_iou = (400 - 36 - 160) / (400 - 36 - 120)
    assert result["per_class"]["background"]["PQ"] == pytest.approx(background_iou)
    assert result["things"]["PQ"] == 1.0
    assert result["stuff"]["PQ"] == pytest.approx((0.75 + background_iou) / 2)
    assert result["PQ"] == pytest.approx((1 + 0.75 + background_iou) / 3)


def test_crowd_segment_is_never_counted_and_excuses_predictions_on_it():
    # torchmetrics has no crowd: counted by hand. Object 1 is matched (IoU 1); crowd 2 is neither
    # matched nor a false negative; the prediction 3 lies wholly on the crowd: not a false positive.
    gt = scene((1, 1, (2, 8, 2, 8)), (2, 1, (10, 18, 10, 18)))
    pred = scene((1, 1, (2, 8, 2, 8)), (3, 1, (10, 18, 10, 18)))
    row = ours(gt, pred, gt_crowd={2: True})["per_class"]["object"]
    assert (row["TP"], row["FP"], row["FN"], row["PQ"]) == (1, 0, 0, 1.0)
    # A prediction half on the crowd (not more) is a false positive.
    pred = scene((1, 1, (2, 8, 2, 8)), (3, 1, (16, 20, 10, 18)))  # 16 of its 32 px on the crowd
    row = ours(gt, pred, gt_crowd={2: True})["per_class"]["object"]
    assert (row["TP"], row["FP"], row["FN"]) == (1, 1, 0)
    # A crowd of another class excuses nothing.
    gt[1][2] = 2
    pred = scene((1, 1, (2, 8, 2, 8)), (3, 1, (10, 18, 10, 18)))
    row = ours(gt, pred, gt_crowd={2: True})["per_class"]["object"]
    assert (row["TP"], row["FP"], row["FN"]) == (1, 1, 0)


def test_unlabelled_predicted_pixels_count_against_the_ground_truth_segment():
    # panopticapi keeps the prediction's unlabelled pixels (id 0) in the ground-truth segment's
    # area; torchmetrics removes them from the union. Object: 36 px, predicted on 24 of them, the
    # other 12 left unlabelled: IoU 24/36 (torchmetrics: 24/24 = 1).
    gt = scene((1, 1, (2, 8, 2, 8)))
    pred = scene((1, 1, (2, 6, 2, 8)))
    pred[0][6:8, 2:8] = 0
    row = ours(gt, pred)["per_class"]["object"]
    assert (row["TP"], row["SQ"]) == (1, pytest.approx(24 / 36))
    assert torchmetrics_pq(gt, pred)[1][1][1] == pytest.approx(1.0)
    # Unlabelled over more than half of an object: panopticapi counts a false negative.
    pred[0][2:8, 2:8] = 0
    row = ours(gt, pred)["per_class"]["object"]
    assert (row["TP"], row["FN"]) == (0, 1)


def test_counts_add_up_over_images_before_the_ratios():
    metric = PanopticQuality(3, THINGS, NAMES)
    perfect = scene((1, 1, (2, 8, 2, 8)))
    metric.add(*perfect, *perfect)
    missed = scene((1, 1, (2, 8, 2, 8)), (2, 1, (10, 18, 10, 18)))
    metric.add(*missed, *perfect)
    row = metric.summary()["per_class"]["object"]
    assert (row["TP"], row["FN"]) == (2, 1)
    assert row["RQ"] == pytest.approx(2 / 2.5)
    assert metric.summary()["images"] == 2


def test_classes_never_seen_are_left_out_of_the_means():
    metric = PanopticQuality(3, THINGS, NAMES)
    gt = scene()  # background only: object and grass never appear
    metric.add(*gt, *gt)
    result = metric.summary()
    assert result["PQ"] == 1.0
    assert result["things"] == {"PQ": None, "SQ": None, "RQ": None}
    assert result["per_class"]["grass"]["PQ"] is None
    assert PanopticQuality(3, THINGS, NAMES).summary()["PQ"] is None


def test_pq_bad_input_is_one_line_error():
    metric = PanopticQuality(3, THINGS, NAMES)
    gt = scene((1, 1, (2, 8, 2, 8)))
    with pytest.raises(PixelwiseError, match="have no class"):
        metric.add(gt[0], {BG: 0}, *gt)
    with pytest.raises(PixelwiseError, match="20x20"):
        metric.add(*gt, gt[0][:10], gt[1])
    with pytest.raises(PixelwiseError, match="outside"):
        metric.add(*gt, gt[0], {BG: 0, 1: 7})
    with pytest.raises(PixelwiseError, match="names"):
        PanopticQuality(4, THINGS, NAMES)


# ---------------------------------------------------------------- mask AP


def objects(*boxes) -> tuple[np.ndarray, dict[int, int]]:
    """(ids, categories) of class-1 objects (no background segment): boxes (y0, y1, x0, x1)."""
    return scene(*[(k + 1, 1, box) for k, box in enumerate(boxes)], background=0)


def mask_ap(*images) -> dict:
    """MaskAP over images given as (gt, pred, scores[, crowd])."""
    metric = MaskAP([1], NAMES)
    for gt, pred, scores, *crowd in images:
        metric.add(gt[0], gt[1], pred[0], pred[1], scores, crowd=crowd[0] if crowd else None)
    return metric.summary()


def test_ap_perfect_predictions_is_one():
    gt = objects((2, 8, 2, 8), (10, 18, 10, 18))
    result = mask_ap((gt, gt, {1: 0.9, 2: 0.8}))
    assert (result["AP"], result["AP50"], result["AP75"]) == pytest.approx((1.0, 1.0, 1.0))
    assert result["per_class"] == {"object": pytest.approx(1.0)}
    assert (result["objects"], result["detections"]) == (2, 2)


def test_ap_iou_062_counts_at_50_not_at_75():
    gt = objects((0, 10, 0, 10))
    pred = objects((0, 10, 0, 6))
    pred[0][0:2, 6] = 1  # 62 of the 100 pixels: IoU 0.62
    result = mask_ap((gt, pred, {1: 0.9}))
    assert result["AP50"] == pytest.approx(1.0)
    assert result["AP75"] == pytest.approx(0.0)
    assert result["AP"] == pytest.approx(0.3)  # matched at 0.50, 0.55, 0.60 of the ten thresholds


def test_ap_low_score_false_positive_after_the_true_positive_keeps_ap50():
    gt = objects((0, 10, 0, 10))
    pred = objects((0, 10, 0, 10), (12, 18, 12, 18))
    assert mask_ap((gt, pred, {1: 0.9, 2: 0.1}))["AP50"] == pytest.approx(1.0)
    # Ranked first, the false positive halves the precision at full recall.
    assert mask_ap((gt, pred, {1: 0.1, 2: 0.9}))["AP50"] == pytest.approx(0.5, abs=0.01)


def test_ap_no_predictions_is_zero():
    gt = objects((0, 10, 0, 10))
    empty = objects()
    result = mask_ap((gt, empty, {}))
    assert (result["AP"], result["AP50"], result["AP75"]) == (0.0, 0.0, 0.0)
    assert result["detections"] == 0


def test_ap_detection_on_a_crowd_region_is_no_false_positive():
    gt = objects((0, 10, 0, 10))
    crowd = np.zeros((SIZE, SIZE), bool)
    crowd[12:20, 12:20] = True
    pred = objects((0, 10, 0, 10), (12, 18, 12, 18))
    assert mask_ap((gt, pred, {1: 0.1, 2: 0.9}, crowd))["AP50"] == pytest.approx(1.0)
    assert mask_ap((gt, pred, {1: 0.1, 2: 0.9}))["AP50"] < 0.6
    assert mask_ap((gt, pred, {1: 0.1, 2: 0.9}, crowd))["objects"] == 1


def test_ap_empty_images_count_and_a_class_without_ground_truth_is_none():
    gt = objects((0, 10, 0, 10))
    metric = MaskAP([1, 2], NAMES)
    metric.add(*gt, *gt, {1: 1.0})
    metric.add(*objects(), *objects(), {})
    result = metric.summary()
    assert result["images"] == 2
    assert result["AP"] == pytest.approx(1.0)
    assert result["per_class"] == {"object": pytest.approx(1.0), "grass": None}
    assert MaskAP([1], NAMES).summary()["AP"] is None


def test_ap_objects_of_unscored_classes_are_left_out():
    gt = scene((1, 1, (0, 10, 0, 10)), (2, 2, (12, 18, 12, 18)), background=0)
    pred = scene((1, 1, (0, 10, 0, 10)), background=0)  # the class-2 object is not predicted
    metric = MaskAP([1], NAMES)
    metric.add(*gt, *pred, {1: 1.0})
    assert metric.summary()["AP"] == pytest.approx(1.0)
    assert metric.summary()["objects"] == 1


def test_ap_bad_input_is_one_line_error():
    gt = objects((0, 10, 0, 10))
    metric = MaskAP([1], NAMES)
    with pytest.raises(PixelwiseError, match="have no class"):
        metric.add(gt[0], {}, *gt, {})
    with pytest.raises(PixelwiseError, match="crowd"):
        metric.add(*gt, *gt, {}, crowd=np.zeros((3, 3), bool))
    with pytest.raises(PixelwiseError, match="integer"):
        metric.add(gt[0].astype(float), gt[1], *gt, {})


def test_ap_crowd_of_named_classes_only():
    gt = objects((0, 10, 0, 10))
    crowd = np.zeros((SIZE, SIZE), bool)
    crowd[12:20, 12:20] = True
    pred = objects((0, 10, 0, 10), (12, 18, 12, 18))
    for classes, expected in (([1], 1.0), ([2], 0.5)):
        metric = MaskAP([1, 2], NAMES)
        metric.add(*gt, *pred, {1: 0.1, 2: 0.9}, crowd=crowd, crowd_categories=classes)
        assert metric.summary()["AP50"] == pytest.approx(expected, abs=0.01)


def collapse(raw: np.ndarray, classes: dict[int, int]) -> tuple[np.ndarray, dict[int, int]]:
    """(ids, categories) of raw ids 1..8 of the given classes, every stuff class made one segment
    (id 100 + class), as in a panoptic map and as torchmetrics counts stuff."""
    ids = np.where(
        np.isin(raw, [i for i, c in classes.items() if c in STUFF]), 100 + np.vectorize(classes.get)(raw), raw
    )
    present = np.unique(ids).tolist()
    return ids, {i: (i - 100 if i >= 100 else classes[i]) for i in present}


def random_pair(rng: np.random.Generator) -> tuple[tuple, tuple]:
    """A blocky 20x20 ground truth (ids 1..6 on 4x4 blocks) and a prediction: the same shifted by up
    to 2 pixels, a few blocks relabelled, one id's class changed; every pixel has a segment."""
    classes = {i: int(rng.integers(0, 3)) for i in range(1, 9)}
    raw = np.kron(rng.integers(1, 7, size=(5, 5)), np.ones((4, 4), np.int64))
    shifted = np.roll(raw, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
    for _ in range(int(rng.integers(0, 4))):
        y, x = rng.integers(0, 16, size=2)
        shifted[y : y + 4, x : x + 4] = int(rng.integers(1, 9))
    changed = {**classes, int(rng.integers(1, 9)): int(rng.integers(0, 3))}
    return collapse(raw, classes), collapse(shifted, changed)


def test_random_scenes_agree_with_torchmetrics_over_a_data_set():
    # Where both definitions are panopticapi's (no crowd, every predicted pixel labelled), the
    # dataset-level figures of 60 random scenes with void blocks agree class by class.
    rng = np.random.default_rng(0)
    metric = PanopticQuality(3, THINGS, NAMES)
    reference = TorchPQ(things=set(THINGS), stuffs=set(STUFF), return_sq_and_rq=True, return_per_class=True)
    for _ in range(60):
        gt, pred = random_pair(rng)
        void = np.kron(rng.random((5, 5)) < 0.15, np.ones((4, 4), bool))
        metric.add(gt[0], gt[1], pred[0], pred[1], void=void)
        cls = np.vectorize(lambda i, cats: cats[int(i)], excluded={1})
        target = np.stack([np.where(void, 3, cls(gt[0], gt[1])), gt[0]], -1)
        preds = np.stack([cls(pred[0], pred[1]), pred[0]], -1)
        reference.update(torch.from_numpy(preds[None]), torch.from_numpy(target[None]))
    rows = reference.compute().tolist()
    result = metric.summary()
    for k, c in enumerate(sorted(THINGS) + sorted(STUFF)):
        row = result["per_class"][NAMES[c]]
        assert row["TP"] > 0 and row["FP"] + row["FN"] > 0  # the scenes exercise every rule
        assert [row["PQ"], row["SQ"], row["RQ"]] == pytest.approx(rows[k]), NAMES[c]
