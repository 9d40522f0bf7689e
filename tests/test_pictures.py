"""Pictures people look at: palette mask PNGs, the evaluation's example grids and per-class chart."""

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pixelwise.classes import default_palette
from pixelwise.evaluation import ExampleKeeper, image_miou
from pixelwise.fileio import IGNORE_PALETTE_COLOR, mask_png_bytes, write_mask_png
from pixelwise.viz import ERROR_COLOR, Example, error_picture, example_grid, plot_per_class_iou, shrink_example

COLORS = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200)]
NAMES = ["background", "disc", "square", "triangle"]

# --- masks as palette PNGs ----------------------------------------------------------------------------


def test_mask_png_with_colours_is_a_palette_png_of_unchanged_values(tmp_path):
    mask = np.array([[0, 1, 2], [3, 255, 1]], dtype=np.int64)
    write_mask_png(tmp_path / "m.png", mask, COLORS)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), mask)
        palette = np.array(im.getpalette()[:768]).reshape(-1, 3)
    np.testing.assert_array_equal(palette[:4], COLORS)
    assert tuple(palette[255]) == IGNORE_PALETTE_COLOR  # the ignore index shows, not black
    # A viewer shows the class colours.
    with Image.open(tmp_path / "m.png") as im:
        rgb = np.asarray(im.convert("RGB"))
    assert tuple(rgb[0, 1]) == COLORS[1] and tuple(rgb[1, 0]) == COLORS[3]


def test_mask_png_without_colours_stays_grey_and_wide_masks_stay_16_bit(tmp_path):
    mask = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    with Image.open(io.BytesIO(mask_png_bytes(mask))) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), mask)
    # The former positional compression level still works.
    with Image.open(io.BytesIO(mask_png_bytes(mask, 1))) as im:
        assert im.mode == "L"
    # More than 256 classes, or values past 255: no palette can hold them, values kept in 16 bits.
    wide = np.array([[0, 300], [1, 299]], dtype=np.int64)
    write_mask_png(tmp_path / "w.png", wide, default_palette(301))
    with Image.open(tmp_path / "w.png") as im:
        assert im.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(im), wide)
    write_mask_png(tmp_path / "many.png", mask, default_palette(300))
    with Image.open(tmp_path / "many.png") as im:
        assert im.mode == "L"


def test_the_data_readers_read_a_palette_mask_as_indices(tmp_path):
    from pixelwise.data import read_mask

    mask = np.array([[0, 1, 2], [3, 255, 1]], dtype=np.uint8)
    write_mask_png(tmp_path / "m.png", mask, COLORS)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 256),
    st.randoms(use_true_random=False),
)
def test_palette_mask_round_trip(h, w, num_classes, rnd):
    rng = np.random.default_rng(rnd.randint(0, 2**32 - 1))
    mask = rng.integers(0, num_classes, (h, w))
    mask[rng.random((h, w)) < 0.1] = 255
    data = mask_png_bytes(mask, default_palette(num_classes))
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), mask)


# --- per-image scores and the examples kept -------------------------------------------------------------


def test_image_miou_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 3]])
    # class 0: tp 3, union 4 -> 0.75; class 1: tp 2, gt 3, pred 3 -> 2/4; class 2: predicted once -> 0;
    # class 3 only predicted at an ignored pixel: not counted, absent.
    assert image_miou(truth, pred, 4, 255) == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert image_miou(np.full((2, 2), 255), pred[:2, :2], 4, 255) is None


def _example(value: float, size=(30, 40)):
    """An image whose prediction is right on a fraction ``value`` of the pixels (two classes)."""
    truth = np.zeros(size, dtype=np.int64)
    pred = np.zeros(size, dtype=np.int64)
    wrong = int(round((1 - value) * truth.size))
    pred.reshape(-1)[:wrong] = 1
    image = np.full((*size, 3), 90, dtype=np.uint8)
    return image, truth, pred


def test_example_keeper_keeps_only_the_k_worst_and_best():
    keeper = ExampleKeeper(2, num_classes=2, ignore_index=255)
    scores = {}
    rng = np.random.default_rng(0)
    for i, v in enumerate(rng.permutation(np.linspace(0.05, 0.95, 12))):
        image, truth, pred = _example(float(v), size=(300, 400))
        scores[f"im{i}"] = keeper.add(f"im{i}", image, truth, pred)
    ranked = sorted(scores, key=scores.get)
    assert [e.name for e in keeper.worst()] == ranked[:2]
    assert [e.name for e in keeper.best()] == ranked[::-1][:2]
    assert keeper.scored == 12
    # Only 2k pictures are held, and each one shrunk to panel size, not the full image.
    held = keeper._worst + keeper._best
    assert len(held) == 4
    assert all(e.image.shape[0] <= 200 and e.truth.shape == e.image.shape[:2] for _, _, e in held)
    assert ExampleKeeper(0, 2, 255).worst() == []


def test_shrink_example_keeps_masks_aligned_and_enlarges_tiny_images():
    image, truth, pred = _example(0.5, size=(16, 24))
    small = shrink_example(image, truth, pred, height=64)
    assert small[0].shape == (64, 96, 3) and small[1].shape == small[2].shape == (64, 96)
    assert set(np.unique(small[2])) <= {0, 1}  # nearest neighbour: no new class values
    wide = shrink_example(*_example(0.5, size=(10, 1000)), height=200, max_width=360)
    assert wide[0].shape[1] == 360


def test_error_picture_marks_wrong_pixels_red_and_ignored_pixels_apart():
    image = np.full((2, 3, 3), 200, dtype=np.uint8)
    truth = np.array([[0, 1, 255], [1, 1, 0]])
    pred = np.array([[0, 0, 1], [1, 1, 0]])
    out = error_picture(image, truth, pred, 255)
    assert tuple(out[0, 1]) == ERROR_COLOR
    assert tuple(out[0, 2]) != ERROR_COLOR  # not scored, so not an error
    assert tuple(out[0, 0]) != ERROR_COLOR and tuple(out[1, 1]) != ERROR_COLOR


def test_example_grid_rows_and_legend():
    examples = []
    for i, v in enumerate([0.2, 0.9]):
        image, truth, pred = _example(v, size=(40, 60))
        truth[:5] = 255
        examples.append(Example(f"im{i}.png", v, *shrink_example(image, truth, pred, height=80)))
    picture = example_grid(examples, COLORS, NAMES, 255, "lowest")
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    assert picture.shape[1] >= 4 * 120  # four panels side by side
    assert picture.shape[0] > 2 * 80  # two rows, captions and a legend
    colours = {tuple(c) for c in np.unique(picture.reshape(-1, 3), axis=0)}
    assert ERROR_COLOR in colours and COLORS[1] in colours
    empty = example_grid([], COLORS, NAMES, 255, "nothing")
    assert empty.shape[0] > 20


def test_per_class_iou_chart(tmp_path):
    per_class = [
        {"name": "background", "iou": 0.93, "gt_pixels": 100},
        {"name": "disc", "iou": 0.4, "gt_pixels": 10},
        {"name": "square", "iou": None, "gt_pixels": 0},
        {"name": "triangle", "iou": 0.0, "gt_pixels": 0},
    ]
    out = tmp_path / "per_class_iou.png"
    plot_per_class_iou(per_class, COLORS, out, "val: mIoU 44.3 %")
    with Image.open(out) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert (np.abs(rgb - np.array(COLORS[1])).sum(axis=2) < 10).sum() > 100  # the disc bar in its colour
