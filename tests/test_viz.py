import numpy as np
import pytest
from PIL import Image

from pixelwise.classes import default_palette
from pixelwise.fileio import write_png
from pixelwise.viz import (
    class_boundaries,
    colorize,
    heatmap,
    heatmap_with_colorbar,
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
    plain = dict(transparent=(), boundaries=False)

    np.testing.assert_array_equal(overlay(image, mask, COLORS, alpha=0.0), image)
    full = overlay(image, mask, COLORS, alpha=1.0, **plain)
    inside = mask != 255
    np.testing.assert_array_equal(full[inside], colorize(mask, COLORS)[inside])
    np.testing.assert_array_equal(full[~inside], image[~inside])  # the ignore index is never painted
    half = overlay(image, mask, COLORS, alpha=0.5, **plain)
    expected = np.where(inside[..., None], np.rint(0.5 * image + 0.5 * colorize(mask, COLORS).astype(float)), image)
    assert np.abs(half.astype(float) - expected).max() <= 1
    assert half.dtype == np.uint8

    np.testing.assert_array_equal(image, image_copy)
    np.testing.assert_array_equal(mask, mask_copy)
    assert overlay(image, mask, COLORS, alpha=0.0) is not image


def test_overlay_leaves_background_and_ignore_index_transparent():
    """Where nothing was found the photo is untouched, not darkened by the background's black."""
    image = np.full((6, 7, 3), 200, dtype=np.uint8)
    mask = np.zeros((6, 7), dtype=np.uint8)
    mask[:, 5:] = 255
    np.testing.assert_array_equal(overlay(image, mask, COLORS, alpha=0.5), image)
    # Any class can be made transparent, and the background painted when asked.
    mask[1:3, 1:3] = 2
    out = overlay(image, mask, COLORS, alpha=0.5, transparent=(2,), boundaries=False)
    assert tuple(out[1, 1]) == (0, 0, 0) or tuple(out[1, 1]) == (200, 200, 200)
    assert tuple(out[1, 1]) == (200, 200, 200)
    assert tuple(out[0, 0]) == (100, 100, 100)  # class 0 blended with black, since it is not transparent


def test_overlay_outlines_each_region_in_its_colour():
    image = np.full((12, 12, 3), 100, dtype=np.uint8)
    mask = np.zeros((12, 12), dtype=np.uint8)
    mask[3:9, 3:9] = 1  # red square on background
    out = overlay(image, mask, COLORS, alpha=0.3)
    assert tuple(out[3, 5]) == (255 * 0.6 + 100 * 0.4, 40, 40)  # edge: opacity min(1, 2 * alpha)
    assert tuple(out[5, 5]) == (round(0.3 * 255 + 0.7 * 100), 70, 70)  # inside: alpha
    assert tuple(out[2, 5]) == (100, 100, 100)  # the background side stays the photo
    no_lines = overlay(image, mask, COLORS, alpha=0.3, boundaries=False)
    assert tuple(no_lines[3, 5]) == tuple(no_lines[5, 5])


def test_class_boundaries_width():
    mask = np.zeros((10, 10), dtype=np.int64)
    mask[:, 5:] = 3
    edge = class_boundaries(mask)
    assert edge[:, 4:6].all() and edge.sum() == 20
    assert class_boundaries(mask, width=2)[:, 3:7].all() and class_boundaries(mask, width=2).sum() == 40
    assert not class_boundaries(np.zeros((4, 4), np.uint8)).any()


def test_overlay_legend_names_the_classes_present():
    image = np.full((40, 120, 3), 128, dtype=np.uint8)
    mask = np.zeros((40, 120), dtype=np.uint8)
    mask[10:20, 10:30] = 1
    mask[25:35, 60:90] = 3
    names = ["background", "road", "tree", "sky"]
    out = overlay(image, mask, COLORS, alpha=0.5, legend=names)
    assert out.shape[0] > 40 and out.shape[1] >= 120
    np.testing.assert_array_equal(out[:40, :120], overlay(image, mask, COLORS, alpha=0.5))
    strip = out[40:].reshape(-1, 3)
    has = {tuple(c) for c in np.unique(strip, axis=0)}
    assert (255, 0, 0) in has and (10, 20, 30) in has  # swatches of the classes found
    assert (0, 255, 0) not in has  # "tree" is not in the mask: no swatch
    assert (strip < 60).all(axis=1).sum() > 20  # the names are written (dark text)
    with pytest.raises(ValueError):
        overlay(image, mask, COLORS, legend=["one", "two"])


def test_overlay_legend_for_an_empty_mask_and_a_narrow_image():
    image = np.full((16, 16, 3), 90, dtype=np.uint8)
    mask = np.zeros((16, 16), dtype=np.uint8)
    out = overlay(image, mask, COLORS, legend=["background", "a", "b", "c"])
    assert out.shape[0] > 16  # says that no class was found
    mask[4:8, 4:8] = 1
    long_name = "a class with a very long descriptive name"
    out = overlay(image, mask, COLORS, legend=["background", long_name, "b", "c"])
    assert out.shape[1] > 16  # widened so that the name is not clipped


def test_heatmap_with_colorbar():
    values = np.linspace(0.0, 1.0, 60 * 80, dtype=np.float32).reshape(60, 80)
    values[0, 0] = np.nan
    out = heatmap_with_colorbar(values, 0.0, 1.0, "confidence")
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] >= 60 and out.shape[1] > 80 + 20
    np.testing.assert_array_equal(out[:60, :80], heatmap(values, 0.0, 1.0))
    panel = {tuple(c) for c in np.unique(out[:, 80:].reshape(-1, 3), axis=0)}
    lut = heatmap(np.array([[0.0, 1.0]]), 0.0, 1.0)[0]
    assert tuple(lut[0]) in panel and tuple(lut[1]) in panel  # both ends of the colour bar
    assert (0, 0, 0) in panel  # tick labels and the label text
    tiny = heatmap_with_colorbar(np.zeros((5, 5)), 0.0, 1.6, "entropy (nats)")
    assert tiny.shape[0] > 5  # the bar and its labels fit even beside a tiny map
    for bad in [(1.0, 1.0), (0.0, float("nan")), (2.0, 1.0)]:
        with pytest.raises(ValueError):
            heatmap_with_colorbar(values, *bad, "x")
    with pytest.raises(ValueError):
        heatmap_with_colorbar(np.zeros(5), 0.0, 1.0, "x")


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
        assert im.size[0] > 2 * im.size[1] > 200  # three panels side by side


C0 = np.array([31, 119, 180])  # matplotlib's first line colour


def _blue_pixels(path, third):
    """Pixels of the first line colour in one third (0, 1, 2) of a curves.png."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    w = rgb.shape[1] // 3
    part = rgb[:, third * w : (third + 1) * w]
    return int((np.abs(part - C0).sum(axis=2) < 30).sum())


def test_plot_training_curves_learning_rate_and_per_class_iou(tmp_path):
    head = "epoch,train_loss,val_loss,val_miou,lr"
    rows = ["1,1.0,0.9,0.30,0.003", "2,0.8,0.7,0.45,0.002", "3,0.6,0.6,0.55,0.0005"]
    bare = tmp_path / "bare.csv"
    bare.write_text("epoch,train_loss,val_loss,val_miou\n" + "\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n")
    full = tmp_path / "full.csv"
    per_class = ["0.5,0.1,", "0.6,0.3,", "0.7,0.4,0.2"]
    full.write_text(
        head + ",val_iou_0,val_iou_1,val_iou_2\n" + "\n".join(f"{r},{c}" for r, c in zip(rows, per_class)) + "\n"
    )
    plot_training_curves(bare, tmp_path / "bare.png")
    plot_training_curves(full, tmp_path / "full.png", class_names=["background", "road", "sky"])
    _png_ok(tmp_path / "full.png")
    # No lr column, no per-class columns: those panels stay empty ("no data yet" / mIoU in black).
    assert _blue_pixels(tmp_path / "bare.png", 2) == 0
    assert _blue_pixels(tmp_path / "bare.png", 1) == 0
    # With them: a learning-rate curve and per-class IoU curves (the first class in C0).
    assert _blue_pixels(tmp_path / "full.png", 2) > 50
    assert _blue_pixels(tmp_path / "full.png", 1) > 50
    # Names beyond the list given, or none at all, fall back to "class <index>".
    plot_training_curves(full, tmp_path / "few.png", class_names=["background"])
    _png_ok(tmp_path / "few.png")


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
