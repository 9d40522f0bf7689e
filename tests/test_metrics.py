"""Tests for pixelwise.metrics, checked against counts made independently of the confusion matrix."""

import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from pixelwise.metrics import ConfusionMatrix, compute_metrics, format_metrics_table

IGNORE = 255


def _random_pair(rng, shape, num_classes, ignore_frac=0.1):
    target = rng.integers(0, num_classes, size=shape)
    pred = rng.integers(0, num_classes, size=shape)
    target[rng.random(shape) < ignore_frac] = IGNORE
    return pred, target


def _reference_iou(pred, target, num_classes):
    """IoU per class from boolean masks, None for a class absent from both."""
    valid = target != IGNORE
    out = []
    for c in range(num_classes):
        p = (pred == c) & valid
        t = (target == c) & valid
        union = np.logical_or(p, t).sum()
        out.append(None if union == 0 else np.logical_and(p, t).sum() / union)
    return out


def test_matrix_matches_pairwise_counts():
    rng = np.random.default_rng(0)
    c = 4
    pred, target = _random_pair(rng, (3, 5, 6), c)
    cm = ConfusionMatrix(c, ignore_index=IGNORE)
    cm.update(pred, target)

    expected = np.zeros((c, c), dtype=np.int64)
    for i in range(c):
        for j in range(c):
            expected[i, j] = np.sum((target == i) & (pred == j))
    assert cm.matrix.dtype == torch.int64
    np.testing.assert_array_equal(cm.matrix.numpy(), expected)
    assert cm.compute()["num_pixels"] == int(np.sum(target != IGNORE))


def test_iou_matches_boolean_mask_reference():
    rng = np.random.default_rng(1)
    c = 5
    pred, target = _random_pair(rng, (2, 7, 9), c)
    cm = ConfusionMatrix(c)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    m = cm.compute()

    ref = _reference_iou(pred, target, c)
    for c_idx, r in enumerate(ref):
        assert m["per_class"][c_idx]["iou"] == pytest.approx(r)
    assert m["miou"] == pytest.approx(np.mean([r for r in ref if r is not None]))
    valid = target != IGNORE
    assert m["pixel_accuracy"] == pytest.approx(np.sum((pred == target) & valid) / valid.sum())
    share = [np.sum(target == k) / valid.sum() for k in range(c)]
    assert m["fwiou"] == pytest.approx(sum(s * r for s, r in zip(share, ref) if r is not None))


def test_hand_worked_example():
    # target      pred
    # 0 0 1       0 1 1
    # 1 2 2       1 2 0
    target = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    m = cm.compute(["sky", "road", "car"])

    # class 0: TP 1, FP 1, FN 1; class 1: TP 2, FP 1, FN 0; class 2: TP 1, FP 0, FN 1.
    iou = [Fraction(1, 3), Fraction(2, 3), Fraction(1, 2)]
    dice = [Fraction(1, 2), Fraction(4, 5), Fraction(2, 3)]
    acc = [Fraction(1, 2), Fraction(1, 1), Fraction(1, 2)]
    for k in range(3):
        pc = m["per_class"][k]
        assert pc["iou"] == pytest.approx(float(iou[k]))
        assert pc["dice"] == pytest.approx(float(dice[k]))
        assert pc["accuracy"] == pytest.approx(float(acc[k]))
        assert pc["gt_pixels"] == 2
    assert [pc["pred_pixels"] for pc in m["per_class"]] == [2, 3, 1]
    assert [pc["name"] for pc in m["per_class"]] == ["sky", "road", "car"]
    assert m["pixel_accuracy"] == pytest.approx(4 / 6)
    assert m["mean_accuracy"] == pytest.approx(2 / 3)
    assert m["miou"] == pytest.approx(1 / 2)
    assert m["mean_dice"] == pytest.approx(59 / 90)
    assert m["fwiou"] == pytest.approx(1 / 2)  # each class holds 1/3 of the gt pixels
    assert m["num_pixels"] == 6
    assert m["num_classes"] == 3
    assert m["present_classes"] == 3
    assert "ignore" in m["aggregation"]


def test_ignored_pixels_not_counted():
    rng = np.random.default_rng(2)
    c = 3
    pred, target = _random_pair(rng, (4, 6), c, ignore_frac=0.3)
    ignored = target == IGNORE
    assert ignored.any()

    cm_a = ConfusionMatrix(c)
    cm_a.update(pred, target)
    pred_b = pred.copy()
    pred_b[ignored] = (pred_b[ignored] + 1) % c
    cm_b = ConfusionMatrix(c)
    cm_b.update(pred_b, target)

    assert torch.equal(cm_a.matrix, cm_b.matrix)
    assert int(cm_a.matrix.sum()) == int((~ignored).sum())


def test_custom_ignore_index_inside_class_range_is_not_counted():
    target = np.array([0, 1, 2, 2])
    pred = np.array([0, 0, 1, 1])
    cm = ConfusionMatrix(3, ignore_index=2)
    cm.update(pred, target)
    assert int(cm.matrix.sum()) == 2


def test_absent_class_excluded_from_means():
    # Class 3 appears in neither target nor prediction; class 2 appears only in the prediction.
    target = np.array([[0, 0, 1, 1], [0, 1, 1, 1]])
    pred = np.array([[0, 2, 1, 1], [0, 0, 1, 1]])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    m = cm.compute()

    absent = m["per_class"][3]
    assert absent["iou"] is None and absent["dice"] is None and absent["accuracy"] is None
    pred_only = m["per_class"][2]
    assert pred_only["iou"] == 0.0 and pred_only["dice"] == 0.0 and pred_only["accuracy"] is None

    iou0 = 2 / 4  # gt {a,b,e}, pred {a,e,f}: TP 2, union 4
    iou1 = 4 / 5  # gt {c,d,f,g,h}, pred {c,d,g,h}: TP 4, union 5
    assert m["per_class"][0]["iou"] == pytest.approx(iou0)
    assert m["per_class"][1]["iou"] == pytest.approx(iou1)
    assert m["miou"] == pytest.approx((iou0 + iou1 + 0.0) / 3)
    assert m["mean_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m["fwiou"] == pytest.approx(3 / 8 * iou0 + 5 / 8 * iou1)
    assert m["present_classes"] == 3


def test_several_updates_equal_one_update_on_concatenation():
    rng = np.random.default_rng(3)
    c = 3
    batches = [_random_pair(rng, (2, 4, 5), c) for _ in range(3)]
    split = ConfusionMatrix(c)
    for p, t in batches:
        split.update(p, t)
    whole = ConfusionMatrix(c)
    whole.update(np.concatenate([p for p, _ in batches]), np.concatenate([t for _, t in batches]))
    assert torch.equal(split.matrix, whole.matrix)
    assert split.compute() == whole.compute()


def test_dataset_level_not_mean_of_images():
    # Image 1: a single class-0 pixel wrongly predicted as 1; image 2: 9 class-1 pixels all right.
    cm = ConfusionMatrix(2)
    cm.update(np.array([1]), np.array([0]))
    cm.update(np.ones(9, dtype=np.int64), np.ones(9, dtype=np.int64))
    m = cm.compute()
    # Dataset level: class 0 IoU 0/1, class 1 IoU 9/10 -> mIoU 0.45.
    assert m["miou"] == pytest.approx(0.45)
    # Mean of per-image mIoU would be (0 + 1) / 2 = 0.5 (image 1: IoU 0 for both present classes).
    assert m["miou"] != pytest.approx(0.5)


def test_merge_and_reset():
    rng = np.random.default_rng(4)
    c = 3
    (p1, t1), (p2, t2) = _random_pair(rng, (5, 5), c), _random_pair(rng, (5, 5), c)
    a, b, both = ConfusionMatrix(c), ConfusionMatrix(c), ConfusionMatrix(c)
    a.update(p1, t1)
    b.update(p2, t2)
    both.update(p1, t1)
    both.update(p2, t2)
    a.merge(b)
    assert torch.equal(a.matrix, both.matrix)

    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(c + 1))

    a.reset()
    assert int(a.matrix.sum()) == 0


def test_all_reduce_without_distributed_is_noop():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 1, 1]), np.array([0, 1, 0]))
    before = cm.matrix.clone()
    cm.all_reduce()
    assert torch.equal(cm.matrix, before)


def test_all_reduce_single_process_group(tmp_path):
    dist = torch.distributed
    if not (dist.is_available() and dist.is_gloo_available()) or dist.is_initialized():
        pytest.skip("needs torch.distributed with gloo and no group already running")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        cm = ConfusionMatrix(2)
        cm.update(np.array([0, 1, 1]), np.array([0, 1, 0]))
        cm.all_reduce()  # a sum over one rank leaves the counts unchanged
        np.testing.assert_array_equal(cm.matrix.numpy(), [[1, 1], [0, 1]])
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    "pred, target",
    [
        ([0, 1], [0, 3]),  # target out of range
        ([0, 1], [-1, 0]),  # negative target
        ([0, 3], [0, 1]),  # prediction out of range
        ([-1, 0], [0, 1]),  # negative prediction
    ],
)
def test_out_of_range_values_raise(pred, target):
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(np.array(pred), np.array(target))
    assert int(cm.matrix.sum()) == 0


def test_bad_inputs_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(np.zeros((2, 2), dtype=np.int64), np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError):
        cm.update(np.zeros(4, dtype=np.float32), np.zeros(4, dtype=np.int64))


def test_empty_matrix_gives_none_means():
    fresh = ConfusionMatrix(3)
    all_ignored = ConfusionMatrix(3)
    all_ignored.update(np.array([0, 2]), np.array([IGNORE, IGNORE]))
    for cm in (fresh, all_ignored):
        m = cm.compute()
        for key in ("pixel_accuracy", "mean_accuracy", "miou", "mean_dice", "fwiou"):
            assert m[key] is None
        assert m["num_pixels"] == 0
        assert m["present_classes"] == 0
        assert all(pc["iou"] is None for pc in m["per_class"])
        format_metrics_table(m)  # must not divide by zero either


def test_result_is_plain_json():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]))
    m = compute_metrics(cm.matrix.numpy())

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        else:
            assert x is None or type(x) in (int, float, str), type(x)

    walk(m)
    assert json.loads(json.dumps(m)) == m
    assert [pc["name"] for pc in m["per_class"]] == ["class_0", "class_1", "class_2"]


def test_format_metrics_table():
    target = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    table = format_metrics_table(cm.compute(["sky", "road", "car", "boat"]))
    for name in ("sky", "road", "car", "boat"):
        assert name in table
    miou_line = next(line for line in table.splitlines() if line.startswith("mIoU"))
    assert miou_line.split()[-2:] == ["50.00", "%"]
    assert table.splitlines()[0].split() == ["class", "IoU", "%", "Dice", "%", "Acc", "%", "GT", "share", "%"]
    assert "33.33" in table  # class 0 IoU and its 1/3 share of gt pixels
    boat_line = next(line for line in table.splitlines() if line.startswith("boat"))
    assert boat_line.split()[1:4] == ["-", "-", "-"]
