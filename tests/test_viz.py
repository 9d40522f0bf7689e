import numpy as np
import pytest
from PIL import Image

from pixelwise.classes import default_palette
from pixelwise.fileio import write_png
from pixelwise.viz import (
    colorize,
    overlay,
    plot_confusion_matrix,
    plot_training_curves,
)

COLORS = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (10, 20, 30)]


def _png_ok(path):
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    # No temporary files are left beside the output.
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_default_palette_is_distinct_and_deterministic():
    pal = default_palette(256)
    assert len(pal) == 256
    assert len(set(pal)) == 256
    assert all(isinstance(v, int) and 0 <= v <= 255 for c in pal for v in c)
    assert default_palette(256) == pal
    assert default_palette(5) == pal[:5]
    # The familiar VOC colours for the first classes.
    assert pal[:4] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert default_palette(0) == []
    assert len(set(default_palette(1000))) == 1000


def test_colorize_maps_known_values_and_out_of_range_to_black():
    mask = np.array([[0, 1, 2], [3, 255, 4]], dtype=np.uint8)
    out = colorize(mask, COLORS)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    assert tuple(out[0, 1]) == (255, 0, 0)
    assert tuple(out[0, 2]) == (0, 255, 0)
    assert tuple(out[1, 0]) == (10, 20, 30)
    assert tuple(out[1, 1]) == (0, 0, 0)  # ignore index
    assert tuple(out[1, 2]) == (0, 0, 0)  # one past the last class


def test_colorize_accepts_signed_and_wide_integers():
    mask = np.array([[-1, 1], [2, 70000]], dtype=np.int64)
    out = colorize(mask, COLORS)
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert tuple(out[0, 1]) == (255, 0, 0)
    assert tuple(out[1, 1]) == (0, 0, 0)


def test_colorize_rejects_wrong_shape():
    with pytest.raises(ValueError):
        colorize(np.zeros((2, 2, 1), dtype=np.uint8), COLORS)


def test_overlay_endpoints_and_inputs_untouched():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (8, 9)).astype(np.uint8)
    mask[0, 0] = 255
    image_copy, mask_copy = image.copy(), mask.copy()

    np.testing.assert_array_equal(overlay(image, mask, COLORS, alpha=0.0), image)
    np.testing.assert_array_equal(overlay(image, mask, COLORS, alpha=1.0), colorize(mask, COLORS))
    half = overlay(image, mask, COLORS, alpha=0.5)
    expected = np.rint(0.5 * image + 0.5 * colorize(mask, COLORS).astype(float))
    assert np.abs(half.astype(float) - expected).max() <= 1
    assert half.dtype == np.uint8

    np.testing.assert_array_equal(image, image_copy)
    np.testing.assert_array_equal(mask, mask_copy)
    assert overlay(image, mask, COLORS, alpha=0.0) is not image


def test_overlay_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8), COLORS)
    with pytest.raises(ValueError):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), COLORS, alpha=1.5)


def test_plot_training_curves_with_gaps(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(
        "epoch,train_loss,val_loss,val_miou,lr\n"
        "1,1.20,,,0.003\n"
        "2,0.80,0.90,0.41,0.0029\n"
        "3,0.60,,,0.0025\n"
        "4,0.50,0.55,0.66,\n"
    )
    out = tmp_path / "plots" / "curves.png"
    plot_training_curves(csv_path, out)
    _png_ok(out)
    with Image.open(out) as im:
        assert im.size[0] > im.size[1] > 100  # two panels side by side


def test_plot_training_curves_header_only(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,train_loss,val_loss,val_miou,lr\n")
    out = tmp_path / "curves.png"
    plot_training_curves(csv_path, out)
    _png_ok(out)


def test_plot_training_curves_replaces_existing_file(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,train_loss,val_loss,val_miou,lr\n1,1.0,0.9,0.5,0.001\n")
    out = tmp_path / "curves.png"
    out.write_bytes(b"old")
    plot_training_curves(csv_path, out)
    _png_ok(out)


@pytest.mark.parametrize("normalize", [True, False])
def test_plot_confusion_matrix(tmp_path, normalize):
    cm = np.array([[50, 2, 0], [3, 40, 7], [0, 0, 0]])  # last class never occurs
    out = tmp_path / f"cm_{normalize}.png"
    plot_confusion_matrix(cm, ["background", "cat", "dog"], out, normalize=normalize)
    _png_ok(out)


def test_plot_confusion_matrix_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.zeros((2, 3)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.zeros((2, 2)), ["a"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_save_png_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    write_png(tmp_path / "sub" / "rgb.png", rgb)
    write_png(tmp_path / "grey.png", grey)
    with Image.open(tmp_path / "sub" / "rgb.png") as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb)
    with Image.open(tmp_path / "grey.png") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), grey)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.png", "sub"]


@pytest.mark.parametrize("array", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros(4, np.uint8)])
def test_save_png_rejects_bad_arrays(tmp_path, array):
    with pytest.raises(ValueError):
        write_png(tmp_path / "bad.png", array)
    assert list(tmp_path.iterdir()) == []
