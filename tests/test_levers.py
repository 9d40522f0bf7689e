"""Levers for thin classes: the boundary weight map, OHEM cross-entropy, Lovasz-softmax, and how the
training step builds them (hand-made masks, hand-computed values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pixelwise.errors import PixelwiseError
from pixelwise.losses import (
    LOSSES,
    ComboLoss,
    CrossEntropyLoss,
    FocalLoss,
    InstanceLoss,
    LovaszSoftmaxLoss,
    OhemCrossEntropyLoss,
    boundary_weight_map,
    build_loss,
)
from pixelwise.training.config import TrainConfig
from pixelwise.training.step import build_criterion

IGNORE = 255

# --------------------------------------------------------------------------- boundary weight map


def _map(rows, weight=2.0) -> np.ndarray:
    target = torch.tensor([rows], dtype=torch.int64)
    return boundary_weight_map(target, IGNORE, weight)[0].numpy()


def test_a_straight_edge_weights_three_pixels_on_each_side():
    rows = [[0] * 5 + [1] * 5] * 2
    expected = np.array([[1, 1, 3, 3, 3, 3, 3, 3, 1, 1]] * 2, dtype=np.float32)
    np.testing.assert_array_equal(_map(rows), expected)


def test_a_single_pixel_marks_a_seven_by_seven_square_chebyshev():
    rows = np.zeros((9, 9), dtype=np.int64)
    rows[4, 4] = 2
    expected = np.ones((9, 9), dtype=np.float32)
    expected[1:8, 1:8] = 1.5  # (4, 4) +- 3 in both directions, diagonals included
    np.testing.assert_array_equal(_map(rows.tolist(), 0.5), expected)


def test_ignored_pixels_make_no_boundary_and_get_no_weight():
    far = [0, 0, 0, IGNORE, IGNORE, IGNORE, IGNORE, 1, 1, 1]  # classes 5 px apart: no boundary
    near = [0, 0, 0, IGNORE, IGNORE, 1, 1, 1, 1, 1]  # 3 px apart: a boundary across the gap
    np.testing.assert_array_equal(_map([far]), [[1, 1, 1, 0, 0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(_map([near]), [[1, 1, 3, 0, 0, 3, 1, 1, 1, 1]])  # columns 2 and 5 only
    only_ignore = [[0, 0, IGNORE, IGNORE, 0, 0]]  # ignore inside one class is no edge
    np.testing.assert_array_equal(_map(only_ignore), [[1, 1, 0, 0, 1, 1]])


def test_images_of_a_batch_are_independent_and_autocast_changes_nothing():
    target = torch.zeros(2, 6, 6, dtype=torch.int64)
    target[0, :, 3:] = 1  # an edge in the first image only
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = boundary_weight_map(target, IGNORE, 4.0)
    assert got.dtype == torch.float32 and got.shape == (2, 6, 6)
    np.testing.assert_array_equal(got[0].numpy(), np.full((6, 6), 5.0))  # every column within 3 px
    np.testing.assert_array_equal(got[1].numpy(), np.ones((6, 6)))


# --------------------------------------------------------------------------- weighted cross-entropy


def _row_batch():
    """One 1x10 image: 7 pixels of class 0 predicted 1/2, 3 of class 1 predicted 3/4."""
    target = torch.tensor([[[0] * 7 + [1] * 3]])
    logits = torch.zeros(1, 2, 1, 10)
    logits[0, 1, 0, 7:] = math.log(3.0)
    return logits, target


def test_boundary_weighted_cross_entropy_by_hand():
    logits, target = _row_batch()
    a, b = math.log(2.0), math.log(4.0 / 3.0)  # the CE of a class-0 and a class-1 pixel
    # weights with boundary_weight 2: class 0 columns 0-3 -> 1, 4-6 -> 3; class 1 columns 7-9 -> 3
    got = CrossEntropyLoss(IGNORE, boundary_weight=2.0)(logits, target).item()
    assert got == pytest.approx((4 * a + 9 * a + 9 * b) / 22, rel=1e-6)
    weighted = CrossEntropyLoss(IGNORE, weight=torch.tensor([1.0, 2.0]), boundary_weight=2.0)
    assert weighted(logits, target).item() == pytest.approx((13 * a + 18 * b) / 31, rel=1e-6)
    plain = CrossEntropyLoss(IGNORE)(logits, target).item()
    assert plain == pytest.approx((7 * a + 3 * b) / 10, rel=1e-6)  # boundary weight 0: as before


def test_focal_takes_the_boundary_weight_too():
    logits, target = _row_batch()
    focal0 = FocalLoss(IGNORE, gamma=0.0, boundary_weight=2.0)
    assert focal0(logits, target).item() == pytest.approx(
        CrossEntropyLoss(IGNORE, boundary_weight=2.0)(logits, target).item()
    )


def test_boundary_weighted_loss_ignores_ignored_pixels():
    logits, target = _row_batch()
    target[0, 0, 0] = IGNORE
    a, b = math.log(2.0), math.log(4.0 / 3.0)
    got = CrossEntropyLoss(IGNORE, boundary_weight=2.0)(logits, target).item()
    assert got == pytest.approx((3 * a + 9 * a + 9 * b) / 21, rel=1e-6)


# --------------------------------------------------------------------------- OHEM


def _probabilities_batch(p_true, labels=None):
    """Two-class logits whose true-class probability is ``p_true`` per pixel (one row)."""
    p = torch.tensor(p_true, dtype=torch.float64)
    labels = torch.zeros(len(p_true), dtype=torch.int64) if labels is None else torch.tensor(labels)
    margin = torch.log(p / (1 - p))
    logits = torch.zeros(1, 2, 1, len(p_true), dtype=torch.float64)
    logits[0, 0, 0] = torch.where(labels == 0, margin, -margin)
    return logits.float(), labels.view(1, 1, -1)


def test_ohem_keeps_pixels_below_the_probability_threshold():
    logits, target = _probabilities_batch([0.9] * 12 + [0.5, 0.6, 0.2, 0.95])
    expected = -(math.log(0.5) + math.log(0.6) + math.log(0.2)) / 3
    assert OhemCrossEntropyLoss(IGNORE)(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_ohem_keeps_at_least_a_sixteenth_of_the_pixels_the_hardest():
    logits, target = _probabilities_batch([0.9] * 14 + [0.8, 0.85])  # none below 0.7; 16 // 16 = 1 kept
    assert OhemCrossEntropyLoss(IGNORE)(logits, target).item() == pytest.approx(-math.log(0.8), rel=1e-5)
    logits, target = _probabilities_batch([0.9] * 30 + [0.8, 0.85])  # 32 // 16 = 2 kept
    expected = -(math.log(0.8) + math.log(0.85)) / 2
    assert OhemCrossEntropyLoss(IGNORE)(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_ohem_never_keeps_ignored_pixels_and_counts_only_valid_ones():
    logits, target = _probabilities_batch([0.9] * 15 + [0.8] + [0.01] * 4)
    target[0, 0, 16:] = IGNORE  # the worst-predicted pixels are ignored; 16 valid -> 1 kept
    x = logits.clone().requires_grad_(True)
    loss = OhemCrossEntropyLoss(IGNORE)(x, target)
    assert loss.item() == pytest.approx(-math.log(0.8), rel=1e-5)
    loss.backward()
    touched = x.grad.abs().sum(dim=1)[0, 0] > 0
    assert touched.tolist() == [False] * 15 + [True] + [False] * 4  # only the kept pixel learns


def test_ohem_with_class_and_boundary_weights_by_hand():
    # labels 0 0 0 0 1 1 1 1: columns 1-6 lie within 3 px of the edge, 0 and 7 do not; 8 // 16 = 0
    # pixels kept by the floor, so the kept ones are column 0 (p 0.5, weight 1 x 1) and 4 (p 0.6, 3 x 2)
    logits, target = _probabilities_batch([0.5, 0.9, 0.9, 0.9, 0.6, 0.9, 0.9, 0.9], labels=[0] * 4 + [1] * 4)
    loss = OhemCrossEntropyLoss(IGNORE, weight=torch.tensor([1.0, 3.0]), boundary_weight=1.0)
    expected = (1 * -math.log(0.5) + 6 * -math.log(0.6)) / 7
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_ohem_with_a_threshold_above_one_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 7, generator=g)
    target = torch.randint(0, 4, (2, 6, 7), generator=g)
    target[0, :2] = IGNORE
    w = torch.tensor([0.5, 1.0, 2.0, 1.5])
    assert OhemCrossEntropyLoss(IGNORE, w, thresh=1.5)(logits, target).item() == pytest.approx(
        CrossEntropyLoss(IGNORE, w)(logits, target).item(), rel=1e-6
    )


# --------------------------------------------------------------------------- Lovasz


def test_lovasz_of_a_confident_perfect_prediction_is_about_zero():
    target = torch.tensor([[[0, 1, 2], [2, 1, IGNORE]]])
    logits = 30.0 * torch.nn.functional.one_hot(target.clamp_max(2), 3).movedim(-1, 1).float()
    assert LovaszSoftmaxLoss(IGNORE)(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_lovasz_two_class_hand_computed_and_ignore_respected():
    # pixel 0 is class 0, p = (0.8, 0.2); pixel 1 is class 1, p = (0.3, 0.7); pixel 2 ignored.
    # class 0: errors sorted 0.3 (a false positive: IoU 1/2) then 0.2 (a miss: IoU 0): 0.3*0.5 + 0.2*0.5
    # class 1: 0.3 (its only pixel missed: IoU 0) then 0.2 (no change): 0.3*1 + 0.2*0 -> mean 0.275
    probs = torch.tensor([[0.8, 0.3, 0.5], [0.2, 0.7, 0.5]]).view(1, 2, 1, 3)
    target = torch.tensor([[[0, 1, IGNORE]]])
    loss = LovaszSoftmaxLoss(IGNORE)
    assert loss(probs.log(), target).item() == pytest.approx(0.275, rel=1e-5)
    other = probs.log().clone()
    other[0, :, 0, 2] = torch.tensor([9.0, -9.0])
    assert loss(other, target).item() == pytest.approx(0.275, rel=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        loss(probs.log(), target[:, :, :2])


def test_lovasz_is_registered_alone_and_with_cross_entropy():
    probs = torch.tensor([[0.8, 0.3], [0.2, 0.7]]).view(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    ce = -(math.log(0.8) + math.log(0.7)) / 2
    assert build_loss("lovasz")(probs.log(), target).item() == pytest.approx(0.275, rel=1e-5)
    assert build_loss("ce+lovasz")(probs.log(), target).item() == pytest.approx(0.275 + ce, rel=1e-5)


# --------------------------------------------------------------------------- building the criterion


def test_build_loss_passes_the_boundary_weight_to_the_cross_entropy_terms():
    ohem_dice = build_loss("ohem+dice", IGNORE, boundary_weight=2.5)
    assert isinstance(ohem_dice, ComboLoss) and ohem_dice.losses[0].boundary_weight == 2.5
    assert build_loss("ce", IGNORE, boundary_weight=1.0).boundary_weight == 1.0
    assert build_loss("ce+lovasz", IGNORE, boundary_weight=1.0).losses[0].boundary_weight == 1.0


@pytest.mark.parametrize("name", ["dice", "lovasz"])
def test_a_loss_without_cross_entropy_refuses_a_boundary_weight_in_one_line(name):
    with pytest.raises(PixelwiseError) as info:
        build_loss(name, IGNORE, boundary_weight=2.0)
    assert "--boundary-weight" in str(info.value) and "\n" not in str(info.value)


def test_a_factory_with_the_old_two_argument_signature_still_works(monkeypatch):
    monkeypatch.setitem(LOSSES, "mine", lambda ignore_index, class_weights: CrossEntropyLoss(ignore_index))
    assert isinstance(build_loss("mine", IGNORE, torch.ones(3)), CrossEntropyLoss)
    with pytest.raises(PixelwiseError, match="loss 'mine' has no cross-entropy term"):
        build_loss("mine", IGNORE, boundary_weight=1.0)


def test_build_criterion_weights_boundaries_for_semantic_and_instance_tasks():
    logits, target = _row_batch()
    semantic = build_criterion(TrainConfig(loss="ce", boundary_weight=2.0), [7, 3], IGNORE, torch.device("cpu"))
    expected = CrossEntropyLoss(IGNORE, boundary_weight=2.0)(logits, target).item()
    assert semantic(logits, target).item() == pytest.approx(expected, rel=1e-6)

    config = TrainConfig(loss="ohem", boundary_weight=2.0, task="instance")
    instance = build_criterion(config, [7, 3], IGNORE, torch.device("cpu"), num_classes=2)
    assert isinstance(instance, InstanceLoss) and instance.semantic.boundary_weight == 2.0
    outputs = torch.cat([logits, torch.zeros(1, 3, 1, 10)], dim=1).requires_grad_(True)
    ids = torch.zeros_like(target)
    loss = instance(outputs, torch.stack([target, ids], dim=1))
    loss.backward()
    assert torch.isfinite(loss) and outputs.grad[:, :2].abs().sum() > 0
