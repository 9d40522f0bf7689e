"""Boundary IoU (Cheng et al. 2021): hand-made masks with known values, and a scipy erosion reference."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from pixelwise.metrics import BoundaryIoU, boundary_distance, format_metrics_table

IGNORE = 255


def _square(shape=(30, 30), top=10, left=10, side=10, value=1, background=0) -> np.ndarray:
    m = np.full(shape, background, dtype=np.int64)
    m[top : top + side, left : left + side] = value
    return m


def _scores(pred, target, distance=1, classes=2) -> BoundaryIoU:
    b = BoundaryIoU(classes, IGNORE, distance=distance)
    b.update(pred, target)
    return b


def test_identical_masks_score_one():
    m = _square()
    result = _scores(m, m).compute(["background", "square"])
    assert result["per_class"] == {"background": 1.0, "square": 1.0}
    assert result["mean"] == 1.0 and result["distance_px"] == 1


def test_square_shifted_by_one_pixel():
    # d = 1: each 10x10 square's boundary is its 1-px ring (100 - 64 = 36 pixels). Shifted one
    # column right, the rings share the top and bottom rows over columns 11..19: 2 x 9 = 18 pixels.
    # Boundary IoU = 18 / (36 + 36 - 18) = 1/3 (mask IoU would be 90 / 110).
    truth, pred = _square(left=10), _square(left=11)
    b = _scores(pred, truth)
    assert int(b.intersection[1]) == 18 and int(b.union[1]) == 54
    assert b.per_class()[1] == pytest.approx(1 / 3)


def test_disjoint_masks_score_zero():
    b = _scores(_square(top=2, left=2, side=5), _square(top=20, left=20, side=5))
    assert b.per_class()[1] == 0.0


def test_thin_line_is_all_boundary():
    # A 1-px line erodes to nothing: all 20 pixels are boundary. Against a 3-px band whose top row
    # is that line, the band's boundary is 60 - 18 = 42 pixels and holds the whole line: 20 / 42.
    truth = np.zeros((30, 30), dtype=np.int64)
    truth[15, 5:25] = 1
    band = np.zeros_like(truth)
    band[15:18, 5:25] = 1
    b = _scores(band, truth)
    assert int(b.intersection[1]) == 20 and int(b.union[1]) == 42
    assert b.per_class()[1] == pytest.approx(20 / 42)
    assert _scores(truth, truth).per_class()[1] == 1.0


def test_ignored_pixels_are_left_out_of_both_regions():
    # The target's column 10 is ignored and takes the prediction's label while its boundary is
    # drawn, so both rings are the full 36-pixel ring of the square; column 10 (10 pixels) is left
    # out of both: 26 / 26. Without that, the ignored column would move the target's edge to
    # column 11 and a prediction right on every scored pixel would score 26 / 34.
    pred = _square()
    truth = _square()
    truth[5:25, 10] = IGNORE
    b = _scores(pred, truth)
    assert int(b.intersection[1]) == 26 and int(b.union[1]) == 26
    everything_ignored = np.full((8, 8), IGNORE)
    assert _scores(pred[:8, :8], everything_ignored).compute()["mean"] is None


def test_an_ignore_band_around_objects_does_not_lower_a_perfect_prediction():
    # Pascal VOC style: a 2-px ignore band around the square; the prediction is right on every
    # scored pixel (its edge lies inside the band), so every class scores 1 at any distance that
    # reaches past the band.
    truth = _square(side=12, top=9, left=9)
    truth[(truth == 0) & (_square(side=16, top=7, left=7) == 1)] = IGNORE
    pred = _square(side=14, top=8, left=8)
    scored = truth != IGNORE
    assert (pred[scored] == truth[scored]).all()
    for d in (2, 3, 4):
        assert _scores(pred, truth, distance=d).per_class() == [1.0, 1.0]
    # At d = 1 the square's boundary (its outer 1-px ring, either mask's) lies wholly in the band: not scored.
    assert _scores(pred, truth, distance=1).per_class() == [1.0, None]


def test_pixels_near_the_image_border_are_boundary():
    # As the reference implementation (one zero pixel of padding, d erosions): a class filling a
    # 10x10 image has a boundary of width d along the border: 36 pixels at d = 1, 100 - 36 at d = 2.
    full = np.zeros((10, 10), dtype=np.int64)
    assert int(_scores(full, full, distance=1, classes=1).union[0]) == 36
    assert int(_scores(full, full, distance=2, classes=1).union[0]) == 64
    # A square touching the left border: its boundary runs along the border too.
    b = _scores(_square(left=0), _square(left=0))
    assert int(b.union[1]) == 36


def test_distance_follows_the_image_diagonal():
    assert boundary_distance(360, 480) == 12  # 0.02 x 600
    assert boundary_distance(10, 10) == 1  # never below one pixel
    assert boundary_distance(3000, 4000, ratio=0.01) == 50
    b = BoundaryIoU(3, IGNORE)
    assert b.distance_for(360, 480) == 12 and b.compute()["ratio"] == 0.02
    assert BoundaryIoU(3, distance=4).distance_for(360, 480) == 4


def _reference(preds, targets, num_classes, ratio):
    """Boundary IoU class by class with scipy's binary erosion (3x3 square, zero border, d times); ignored
    target pixels take the predicted label while the target's boundary is drawn, and are not scored."""
    inter = np.zeros(num_classes, dtype=np.int64)
    union = np.zeros(num_classes, dtype=np.int64)
    for pred, truth in zip(preds, targets):
        d = max(1, int(round(ratio * np.hypot(*truth.shape))))
        valid = truth != IGNORE
        for c in range(num_classes):
            regions = []
            for labels in (np.where(valid, truth, pred), pred):
                mask = labels == c
                eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3)), border_value=0, iterations=d)
                regions.append(mask & ~eroded & valid)
            gb, pb = regions
            inter[c] += int((gb & pb).sum())
            union[c] += int((gb | pb).sum())
    return inter, union


def _blobs(rng, shape, num_classes, cell):
    """A random label map of blocks of about ``cell`` pixels, so classes have areas and edges."""
    small = rng.integers(0, num_classes, size=(shape[0] // cell + 1, shape[1] // cell + 1))
    return np.kron(small, np.ones((cell, cell), dtype=np.int64))[: shape[0], : shape[1]]


@pytest.mark.parametrize("ratio", [0.02, 0.05])
def test_agrees_with_scipy_erosion_class_by_class(ratio):
    rng = np.random.default_rng(7)
    num_classes = 5
    preds, targets = [], []
    for shape in [(64, 80), (97, 51), (120, 120), (33, 200)]:
        truth = _blobs(rng, shape, num_classes, int(rng.integers(3, 12)))
        truth[rng.random(shape) < 0.03] = IGNORE
        pred = np.where(rng.random(shape) < 0.1, rng.integers(0, num_classes, size=shape), np.roll(truth, 2, axis=0))
        pred[pred == IGNORE] = 0  # a prediction always names a class
        preds.append(pred)
        targets.append(truth)
    b = BoundaryIoU(num_classes, IGNORE, ratio=ratio)
    for pred, truth in zip(preds, targets):
        b.update(torch.as_tensor(pred), truth)
    inter, union = _reference(preds, targets, num_classes, ratio)
    assert b.intersection.tolist() == inter.tolist()
    assert b.union.tolist() == union.tolist()
    expected = [i / u for i, u in zip(inter, union) if u > 0]
    assert b.compute()["mean"] == pytest.approx(float(np.mean(expected)))


def test_a_batch_scores_as_its_images_one_by_one():
    rng = np.random.default_rng(3)
    truth = np.stack([_blobs(rng, (40, 50), 4, 6) for _ in range(3)])
    pred = np.stack([np.roll(t, 1, axis=1) for t in truth])
    batched, single = BoundaryIoU(4, distance=2), BoundaryIoU(4, distance=2)
    batched.update(pred, truth)
    for p, t in zip(pred, truth):
        single.update(p, t)
    assert batched.intersection.tolist() == single.intersection.tolist()
    assert batched.union.tolist() == single.union.tolist()


def test_bad_values_and_options_are_refused():
    m = _square()
    with pytest.raises(ValueError, match="prediction value 7"):
        _scores(np.where(m == 1, 7, 0), m)
    with pytest.raises(ValueError, match="target value 9"):
        _scores(m, np.where(m == 1, 9, 0))
    with pytest.raises(ValueError, match="integer"):
        _scores(m.astype(np.float32), m)
    with pytest.raises(ValueError, match="ratio"):
        BoundaryIoU(2, ratio=0.0)
    with pytest.raises(ValueError, match="distance"):
        BoundaryIoU(2, distance=0)


def test_table_shows_boundary_iou_per_class_and_mean():
    m = _square()
    metrics = {
        "num_pixels": m.size,
        "miou": 1.0,
        "per_class": [
            {"name": "background", "iou": 1.0, "dice": 1.0, "accuracy": 1.0, "gt_pixels": 800},
            {"name": "square", "iou": 1.0, "dice": 1.0, "accuracy": 1.0, "gt_pixels": 100},
        ],
        "boundary_iou": _scores(_square(left=11), m).compute(["background", "square"]),
    }
    table = format_metrics_table(metrics)
    assert "Boundary IoU %" in table.splitlines()[0]
    assert "33.33" in table  # the square's boundary IoU, in %
    assert "(d = 1 px)" in [row for row in table.splitlines() if row.startswith("boundary IoU")][0]
