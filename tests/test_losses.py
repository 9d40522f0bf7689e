"""Tests for pixelwise.losses against torch references, numpy loops and hand-computed values."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelwise.errors import PixelwiseError
from pixelwise.losses import (
    LOSSES,
    ComboLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    build_loss,
    class_weights_from_counts,
)

IGNORE = 255
LN3 = math.log(3.0)


def _batch(seed=0, n=2, c=3, h=4, w=5, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g)
    target = torch.randint(0, c, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < ignore_frac] = IGNORE
    return logits, target


def _all_losses(c=3):
    weights = torch.tensor([0.5, 2.0, 1.0])[:c]
    out = {name: factory(IGNORE, None) for name, factory in LOSSES.items()}
    out.update({f"{name}[w]": factory(IGNORE, weights) for name, factory in LOSSES.items()})
    return out


def test_cross_entropy_matches_torch():
    logits, target = _batch(0)
    assert (target == IGNORE).any()
    ref = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert CrossEntropyLoss(IGNORE)(logits, target).item() == pytest.approx(ref.item(), rel=1e-6)

    weight = torch.tensor([0.2, 1.0, 3.0])
    ref_w = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
    got_w = CrossEntropyLoss(IGNORE, weight=weight)(logits, target)
    assert got_w.item() == pytest.approx(ref_w.item(), rel=1e-6)


def test_dice_perfect_and_completely_wrong():
    target = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
    right = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 100.0
    wrong = F.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 100.0
    dice = DiceLoss(IGNORE, smooth=0.0)
    assert dice(right, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice(wrong, target).item() == pytest.approx(1.0, abs=1e-6)
    # With the default smoothing the ends are only approached; still close on a few pixels.
    assert DiceLoss(IGNORE)(right, target).item() < 1e-5
    assert DiceLoss(IGNORE)(wrong, target).item() > 0.7


def test_dice_hand_computed():
    # Two counted pixels, both with probabilities (1/4, 3/4); targets 0 and 1. Third pixel ignored.
    logits = torch.tensor([[[[0.0, 0.0, 7.0]], [[LN3, LN3, -5.0]]]])  # (1, 2, 1, 3)
    target = torch.tensor([[[0, 1, IGNORE]]])
    # class 0: I = 1/4, sum p = 1/2, sum g = 1; class 1: I = 3/4, sum p = 3/2, sum g = 1.
    # smooth 1: dice0 = (1/2 + 1) / (3/2 + 1) = 3/5, dice1 = (3/2 + 1) / (5/2 + 1) = 5/7
    expected = 1.0 - (3 / 5 + 5 / 7) / 2  # = 12/35
    assert DiceLoss(IGNORE, smooth=1.0)(logits, target).item() == pytest.approx(expected, rel=1e-5)
    # smooth 0: dice0 = (1/2) / (3/2) = 1/3, dice1 = (3/2) / (5/2) = 3/5
    expected0 = 1.0 - (1 / 3 + 3 / 5) / 2  # = 8/15
    assert DiceLoss(IGNORE, smooth=0.0)(logits, target).item() == pytest.approx(expected0, rel=1e-5)


def _numpy_dice_loss(logits, target, smooth):
    """Reference: explicit softmax and per-class loops, averaging over classes present in target."""
    x = logits.double().numpy()
    t = target.numpy()
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    valid = t != IGNORE
    dices = []
    for c in range(x.shape[1]):
        g = (t == c) & valid
        if not g.any():
            continue
        pc = p[:, c][valid]
        gc = g[valid].astype(np.float64)
        dices.append((2 * np.sum(pc * gc) + smooth) / (np.sum(pc) + np.sum(gc) + smooth))
    return 1.0 - np.mean(dices)


def test_dice_matches_loop_reference_and_skips_classes_absent_from_target():
    logits, target = _batch(1, c=4)
    target[target == 3] = 2  # class 3 absent from the target, though it has probability mass
    for smooth in (0.0, 1.0):
        got = DiceLoss(IGNORE, smooth=smooth)(logits, target).item()
        assert got == pytest.approx(_numpy_dice_loss(logits, target, smooth), rel=1e-5)


def test_focal_gamma_zero_equals_cross_entropy():
    logits, target = _batch(2)
    weight = torch.tensor([0.2, 1.0, 3.0])
    ref = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert FocalLoss(IGNORE, gamma=0.0)(logits, target).item() == pytest.approx(ref.item(), rel=1e-5)
    ref_w = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
    got_w = FocalLoss(IGNORE, gamma=0.0, weight=weight)(logits, target)
    assert got_w.item() == pytest.approx(ref_w.item(), rel=1e-5)


def test_focal_hand_computed():
    # Both pixels have probabilities (1/4, 3/4); targets 1 (p_t = 3/4) and 0 (p_t = 1/4).
    logits = torch.tensor([[[[0.0, 0.0, 1.0]], [[LN3, LN3, 1.0]]]])
    target = torch.tensor([[[1, 0, IGNORE]]])
    l1 = -((1 - 0.75) ** 2) * math.log(0.75)
    l2 = -((1 - 0.25) ** 2) * math.log(0.25)
    assert FocalLoss(IGNORE, gamma=2.0)(logits, target).item() == pytest.approx((l1 + l2) / 2, rel=1e-5)
    # Class weights [2, 1]: pixel 1 (class 1) weight 1, pixel 2 (class 0) weight 2.
    weighted = FocalLoss(IGNORE, gamma=2.0, weight=torch.tensor([2.0, 1.0]))(logits, target)
    assert weighted.item() == pytest.approx((1 * l1 + 2 * l2) / 3, rel=1e-5)
    l1_g1 = -(1 - 0.75) * math.log(0.75)
    l2_g1 = -(1 - 0.25) * math.log(0.25)
    assert FocalLoss(IGNORE, gamma=1.0)(logits, target).item() == pytest.approx((l1_g1 + l2_g1) / 2, rel=1e-5)


@pytest.mark.parametrize("name", sorted(_all_losses()))
def test_ignored_pixels_do_not_affect_loss(name):
    loss_fn = _all_losses()[name]
    logits, target = _batch(3, ignore_frac=0.4)
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    assert ignored.any()

    a = logits.clone().requires_grad_(True)
    loss_a = loss_fn(a, target)
    loss_a.backward()
    b = torch.where(ignored, torch.randn_like(logits) * 50.0, logits).requires_grad_(True)
    loss_b = loss_fn(b, target)

    assert loss_b.item() == pytest.approx(loss_a.item(), rel=1e-6, abs=1e-7)
    assert torch.all(a.grad[ignored] == 0)
    assert a.grad[~ignored].abs().sum() > 0


@pytest.mark.parametrize("name", sorted(_all_losses()))
def test_all_ignored_batch_gives_zero_with_grad(name):
    loss_fn = _all_losses()[name]
    logits = torch.randn(2, 3, 2, 2, requires_grad=True)
    target = torch.full((2, 2, 2), IGNORE, dtype=torch.int64)
    loss = loss_fn(logits, target)
    assert loss.grad_fn is not None
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad == 0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registered_loss_is_finite_and_differentiable(name):
    loss_fn = build_loss(name, ignore_index=IGNORE, class_weights=torch.tensor([1.0, 2.0, 0.5]))
    logits, target = _batch(4)
    logits.requires_grad_(True)
    loss = loss_fn(logits, target)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_combo_is_weighted_sum():
    logits, target = _batch(5)
    ce, dice = CrossEntropyLoss(IGNORE), DiceLoss(IGNORE)
    combo = ComboLoss([ce, dice], [0.3, 2.0])
    expected = 0.3 * ce(logits, target).item() + 2.0 * dice(logits, target).item()
    assert combo(logits, target).item() == pytest.approx(expected, rel=1e-6)
    ce_dice = build_loss("ce+dice")(logits, target).item()
    assert ce_dice == pytest.approx(ce(logits, target).item() + dice(logits, target).item(), rel=1e-6)
    with pytest.raises(PixelwiseError):
        ComboLoss([ce, dice], [1.0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_computed_in_float32(dtype):
    logits, target = _batch(6)
    half = logits.to(dtype)
    for name, loss_fn in _all_losses().items():
        got = loss_fn(half, target)
        assert got.dtype == torch.float32, name
        ref = loss_fn(half.float(), target)  # same rounded inputs, float32 all the way
        assert got.item() == pytest.approx(ref.item(), rel=1e-6), name


def test_build_loss_unknown_name():
    with pytest.raises(PixelwiseError) as exc:
        build_loss("hinge")
    for name in LOSSES:
        assert name in str(exc.value)


def test_build_loss_keys_and_ignore_index():
    assert set(LOSSES) == {"ce", "dice", "focal", "ce+dice", "focal+dice", "ohem", "ohem+dice", "lovasz", "ce+lovasz"}
    logits, target = _batch(7, ignore_frac=0.0)
    target[0, 0, 0] = -100
    ref = F.cross_entropy(logits, target, ignore_index=-100)
    assert build_loss("ce", ignore_index=-100)(logits, target).item() == pytest.approx(ref.item(), rel=1e-6)


def test_class_weights_median_and_inverse():
    counts = np.array([10, 30, 60])
    median = class_weights_from_counts(counts, "median")
    assert median.dtype == np.float32 and median.shape == (3,)
    np.testing.assert_allclose(median, [3.0, 1.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(class_weights_from_counts(counts), [3.0, 1.0, 0.5], rtol=1e-6)
    # inverse: 100 / (3 * count)
    np.testing.assert_allclose(class_weights_from_counts(counts, "inverse"), [10 / 3, 10 / 9, 5 / 9], rtol=1e-6)


def test_class_weights_sqrt_is_the_root_of_median():
    counts = np.array([10, 30, 60, 0])
    np.testing.assert_allclose(class_weights_from_counts(counts, "sqrt"), [3**0.5, 1.0, 0.5**0.5, 0.0], rtol=1e-6)


def test_class_weights_zero_count_gets_zero():
    # Present frequencies 0.1, 0.3, 0.6 as before: the empty class changes nothing else.
    np.testing.assert_allclose(class_weights_from_counts(np.array([10, 0, 30, 60])), [3.0, 0.0, 1.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(class_weights_from_counts(np.array([0, 50, 50]), "inverse"), [0.0, 1.0, 1.0])
    # Even number of present classes: median is the mean of the middle two frequencies (0.2, 0.3).
    np.testing.assert_allclose(
        class_weights_from_counts(np.array([10, 20, 40, 30])), [2.5, 1.25, 0.625, 5 / 6], rtol=1e-6
    )


def test_class_weights_errors():
    with pytest.raises(PixelwiseError):
        class_weights_from_counts(np.array([1, 2]), "log")
    with pytest.raises(PixelwiseError):
        class_weights_from_counts(np.array([0, 0]))
    with pytest.raises(PixelwiseError):
        class_weights_from_counts(np.array([3, -1]))
