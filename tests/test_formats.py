"""Each data set format, written by the test in its shipped layout, reads into the same samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import TINY_MODEL, make_simple_dataset
from format_fixtures import (
    CAMVID_COLOURS,
    H,
    W,
    write_ade20k,
    write_camvid_color,
    write_camvid_segnet,
    write_cityscapes,
    write_coco,
    write_labelme,
    write_voc,
)
from pixelwise.cli import main
from pixelwise.data import FORMATS, detect_format, open_dataset, read_sample
from pixelwise.data.formats.ade20k import ADE20K_CLASSES
from pixelwise.data.formats.camvid import CAMVID_32
from pixelwise.data.formats.voc import VOC_CLASSES
from pixelwise.errors import PixelwiseError


def _masks(ds):
    return {s.stem: read_sample(s)[1] for n in ("train", "val", "test") for s in ds.splits[n]}


def _train_counts(ds, expected, ncls):
    counts = np.zeros(ncls, np.int64)
    for s in ds.splits["train"]:
        m = expected[s.stem]
        counts += np.bincount(m[m < ncls].ravel(), minlength=ncls)
    return counts.tolist()


def test_every_format_has_a_reader():
    assert set(FORMATS) == {"folder", "voc", "cityscapes", "camvid", "camvid-color", "ade20k", "coco", "labelme"}


def test_folder_layout_is_detected(tmp_path):
    root = make_simple_dataset(tmp_path / "d")
    assert detect_format(root)[0] == "folder"
    ds = open_dataset(root, val_fraction=0)
    assert ds.format == "folder" and any("format: folder (detected" in n for n in ds.notes)


def test_pascal_voc(tmp_path):
    root, expected = write_voc(tmp_path / "voc")
    assert detect_format(root)[0] == "voc"
    ds = open_dataset(root)
    assert ds.format == "voc" and ds.classes.names == VOC_CLASSES and ds.classes.ignore_index == 255
    assert ds.classes.colors[1] == (128, 0, 0) and ds.classes.colors[15] == (192, 128, 128)  # VOC palette
    assert [s.stem for s in ds.splits["train"]] == ["2007_000032", "2007_000039"]
    assert [s.stem for s in ds.splits["val"]] == ["2007_000063", "2007_000068"]
    got = _masks(ds)
    assert set(got) == set(expected)  # the image without a mask is not a sample
    for stem, m in expected.items():
        assert np.array_equal(got[stem], m)  # palette indices, 255 kept as the ignore index
    assert ds.report.class_pixels.tolist() == _train_counts(ds, expected, 21)
    assert ds.report.ignored_pixels == 2 * 8


def test_pascal_voc_masks_saved_as_rgb_are_decoded_with_the_voc_colours(tmp_path):
    root, expected = write_voc(tmp_path / "voc")
    seg = root / "VOCdevkit" / "VOC2012" / "SegmentationClass"
    for p in seg.glob("*.png"):
        Image.open(p).convert("RGB").save(p)  # what many conversion scripts do
    ds = open_dataset(root)
    assert ds.spec.encoding == "rgb"
    got = _masks(ds)
    for stem, m in expected.items():
        assert np.array_equal(got[stem], m)  # boundary colour (224, 224, 192) -> 255


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    root, expected = write_cityscapes(tmp_path / "cs")
    assert detect_format(root)[0] == "cityscapes"
    ds = open_dataset(root)
    assert ds.classes.num_classes == 19 and ds.classes.names[13] == "car" and ds.classes.colors[0] == (128, 64, 128)
    assert len(ds.splits["train"]) == 2 and len(ds.splits["val"]) == 1
    assert "Cityscapes labelId -> trainId" in ds.spec.describe()
    got = _masks(ds)
    for stem, m in expected.items():
        assert np.array_equal(got[stem], m)
    assert ds.report.class_pixels.tolist() == _train_counts(ds, expected, 19)


def test_cityscapes_unknown_label_id_is_an_error(tmp_path):
    root, _ = write_cityscapes(tmp_path / "cs")
    path = next((root / "gtFine" / "train").rglob("*_labelIds.png"))
    m = np.array(Image.open(path))
    m[0, 0] = 99
    Image.fromarray(m, "L").save(path)
    with pytest.raises(PixelwiseError, match=r"labelIds\.png \(value 99\)"):
        open_dataset(root)


def test_camvid_segnet_layout(tmp_path):
    root, expected = write_camvid_segnet(tmp_path / "camvid")
    assert detect_format(root)[0] == "camvid"
    ds = open_dataset(root)
    assert ds.classes.num_classes == 11 and ds.classes.ignore_index == 11 and ds.classes.names[3] == "road"
    assert [len(ds.splits[n]) for n in ("train", "val", "test")] == [3, 2, 1]
    got = _masks(ds)
    for stem, m in expected.items():
        assert np.array_equal(got[stem], m)
    assert ds.report.class_pixels.tolist() == _train_counts(ds, expected, 11)
    assert ds.report.ignored_pixels == sum(int((expected[s.stem] == 11).sum()) for s in ds.splits["train"])


def test_camvid_colour_coded_labels(tmp_path):
    root, names = write_camvid_color(tmp_path / "cv")
    assert detect_format(root)[0] == "camvid-color"
    ds = open_dataset(root)
    assert ds.spec.encoding == "rgb" and ds.classes.num_classes == 31  # 32 colours, Void ignored
    assert "Void" not in ds.classes.names and len(CAMVID_32) == 32
    assert [len(ds.splits[n]) for n in ("train", "val")] == [2, 1]  # from the folder names
    got = _masks(ds)
    for stem, n in names.items():
        want = np.vectorize(lambda x: 255 if x == "Void" else ds.classes.names.index(x))(n)
        assert np.array_equal(got[stem], want)
        assert ds.classes.colors[ds.classes.names.index("Road")] == CAMVID_COLOURS["Road"]


def test_camvid_colour_unknown_colour_names_colour_file_and_pixel(tmp_path):
    root, _ = write_camvid_color(tmp_path / "cv")
    path = root / "val_labels" / "0016E5_val00_L.png"
    rgb = np.array(Image.open(path))
    rgb[5, 7] = (1, 2, 3)
    Image.fromarray(rgb).save(path)
    with pytest.raises(PixelwiseError) as e:
        open_dataset(root)
    msg = str(e.value)
    assert "0016E5_val00_L.png" in msg and "(1, 2, 3)" in msg and "x=7, y=5" in msg


def test_ade20k_reduces_by_one_and_ignores_other(tmp_path):
    root, expected = write_ade20k(tmp_path / "ade")
    assert detect_format(root)[0] == "ade20k"
    ds = open_dataset(root)
    assert ds.classes.num_classes == 150 and ds.classes.names == ADE20K_CLASSES
    assert [len(ds.splits[n]) for n in ("train", "val")] == [2, 1]
    got = _masks(ds)
    for stem, m in expected.items():
        assert np.array_equal(got[stem], m)
    assert got and all(m.max() <= 255 for m in got.values())
    assert ds.report.class_pixels[149] == sum(int((expected[s.stem] == 149).sum()) for s in ds.splits["train"])


def test_coco_polygons_rle_crowd_and_overlap_rule(tmp_path):
    root, kite, crowd = write_coco(tmp_path / "coco")
    assert detect_format(root)[0] == "coco"
    ds = open_dataset(root)
    # Background first, then categories in id order: cat (3), dog (7), kite (9).
    assert ds.classes.names == ["background", "cat", "dog", "kite"]
    assert [s.stem for s in ds.splits["train"]] == ["a", "b"] and [s.stem for s in ds.splits["val"]] == ["c"]
    m = _masks(ds)
    a = m["a"]
    assert a.shape == (40, 50)
    assert (a[11:18, 11:18] == 1).all()  # the small cat lies on the large dog and stays visible
    assert (a[6:9, 6:28] == 2).all() and (a[20:23, 21:28] == 2).all()  # dog, also over the crowd region
    assert np.array_equal(a == 3, kite)  # compressed RLE decoded exactly
    crowd_only = crowd.copy()
    crowd_only[:25, :30] = False  # where the dog covers it, the dog wins
    assert (a[crowd_only] == 255).all()
    assert (a[0:4, :] == 0).all() and (a[37:, 40:] == 0).all()  # background
    assert (m["b"] == 0).all()  # an image without annotations is all background
    assert (m["c"][1:8, 41:48] == 3).all()


def test_coco_missing_image_is_named(tmp_path):
    root, _, _ = write_coco(tmp_path / "coco")
    (root / "train" / "b.jpg").unlink()
    with pytest.raises(PixelwiseError, match=r"b\.jpg"):
        open_dataset(root)


def test_labelme_shapes_in_file_order(tmp_path):
    root = write_labelme(tmp_path / "lm")
    assert detect_format(root)[0] == "labelme"
    ds = open_dataset(root, val_fraction=0)
    assert ds.classes.names == ["_background_", "car", "person", "road"]  # inferred, sorted
    assert any("1 line/point shapes" in n for n in ds.notes)
    m = _masks(ds)
    s1 = m["street1"]
    assert (s1[10:20, :] != 0).all() and (s1[:10, :20] == 0).all()
    assert (s1[12:17, 4:10] == 1).all()  # the later rectangle covers the road polygon
    assert (s1[0:4, 20:24] == 255).all()  # __ignore__
    assert ((s1 == 3).sum()) == 10 * 24 - 5 * 6
    s2 = m["street2"]
    assert s2[12, 12] == 1 and s2[10, 16] == 1 and s2[12, 17] == 0  # circle of radius 4 about (12, 12)
    assert (s2[2:9, 2:7] == 2).all()


def test_labelme_labels_file_and_unknown_label(tmp_path):
    root = write_labelme(tmp_path / "lm", with_labels_file=True)
    ds = open_dataset(root, val_fraction=0)
    assert ds.classes.names == ["_background_", "person", "car", "road", "bicycle"]
    doc = json.loads((root / "street2.json").read_text())
    doc["shapes"][0]["label"] = "tram"
    (root / "street2.json").write_text(json.dumps(doc))
    with pytest.raises(PixelwiseError, match=r"street2\.json \(label 'tram'\)"):
        open_dataset(root, val_fraction=0)
    ds = open_dataset(root, val_fraction=0, skip_bad=True)
    assert [s.stem for s in ds.splits["train"]] == ["street1"] and "tram" in ds.skipped[0]


def test_format_can_be_forced_and_a_wrong_one_is_explained(tmp_path):
    root, _ = write_camvid_segnet(tmp_path / "camvid")
    with pytest.raises(PixelwiseError, match="not a Pascal VOC folder"):
        open_dataset(root, "voc")
    with pytest.raises(PixelwiseError, match="format not recognised"):
        detect_format(tmp_path)
    with pytest.raises(PixelwiseError, match="unknown format"):
        open_dataset(root, "kitti")


def test_classes_file_option_overrides_the_data_set(tmp_path):
    root = make_simple_dataset(tmp_path / "d")
    other = tmp_path / "mine.yaml"
    other.write_text(yaml.safe_dump({"names": ["sky", "sea"], "ignore_index": 2}))
    ds = open_dataset(root, classes_file=other, val_fraction=0)
    assert ds.classes.names == ["sky", "sea"] and ds.classes.ignore_index == 2
    assert ds.report.ignored_pixels == sum(int((read_sample(s)[1] == 2).sum()) for s in ds.splits["train"])


def test_train_and_evaluate_a_detected_format_from_the_cli(tmp_path, capsys):
    root, expected = write_cityscapes(tmp_path / "cs")
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            str(root),
            "--out",
            str(run),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--crop-size",
            "16",
            "--workers",
            "0",
            "--quiet",
            "--model-arg",
            "decoder_channels=[32,16,16,8,8]",
        ]
    )
    assert rc == 0
    log = (run / "train.log").read_text()
    assert "format: cityscapes (detected" in log and "Cityscapes labelId -> trainId" in log
    meta = json.loads((run / "model.json").read_text())
    assert meta["data"]["format"] == "cityscapes" and meta["classes"]["names"][0] == "road"
    assert yaml.safe_load((run / "config.yaml").read_text())["format"] == "auto"
    rc = main(["evaluate", str(run), str(root), "--split", "val", "--quiet"])
    assert rc == 0
    metrics = json.loads((run / "eval-val" / "metrics.json").read_text())
    assert metrics["format"] == "cityscapes"
    # Every labelled pixel of the val image is scored: the confusion matrix sums to them.
    cm = json.loads((run / "eval-val" / "confusion_matrix.json").read_text())["matrix"]
    val_stem = "frankfurt_000000_000019"
    assert sum(map(sum, cm)) == int((expected[val_stem] != 255).sum())
    assert TINY_MODEL["arch"] == meta["model"]["arch"]


def test_labelme_mask_shape(tmp_path):
    import base64
    import io

    root = tmp_path / "lm"
    root.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "m.png")
    bits = np.zeros((5, 6), np.uint8)
    bits[1:4, 2:5] = 255
    buf = io.BytesIO()
    Image.fromarray(bits, "L").save(buf, format="PNG")
    shape = {
        "label": "blob",
        "points": [[10, 7], [15, 11]],
        "shape_type": "mask",
        "mask": base64.b64encode(buf.getvalue()).decode("ascii"),
    }
    (root / "m.json").write_text(
        json.dumps({"shapes": [shape], "imagePath": "m.png", "imageHeight": H, "imageWidth": W})
    )
    ds = open_dataset(root, "labelme", val_fraction=0)
    m = _masks(ds)["m"]
    want = np.zeros((H, W), np.int64)
    want[8:11, 12:15] = 1  # the bitmap's set pixels, placed at its top-left corner (10, 7)
    assert np.array_equal(m, want)
