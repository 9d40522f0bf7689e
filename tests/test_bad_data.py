"""Bad input: one clear line naming the file, nothing crashes, and --skip-bad trains on the rest."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import pixelwise
from conftest import TINY_MODEL, make_simple_dataset, write_pair
from format_fixtures import write_camvid_segnet
from pixelwise.cli import main
from pixelwise.data import open_dataset, read_image, read_sample
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.transforms import train_transform
from pixelwise.errors import PixelwiseError


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_truncated_image(simple_data):
    path = simple_data / "images" / "s02.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PixelwiseError) as e:
        open_dataset(simple_data)
    msg = _one_line(e)
    assert "s02.png" in msg and "truncated" in msg


def test_zero_byte_image(simple_data):
    (simple_data / "images" / "s01.png").write_bytes(b"")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(simple_data)
    assert "s01.png (empty file (0 bytes)" in _one_line(e)
    with pytest.raises(PixelwiseError, match=r"s01\.png: empty file"):
        read_image(simple_data / "images" / "s01.png")


def test_non_image_files_among_the_images(simple_data):
    (simple_data / "images" / "notes.txt").write_text("taken on a Tuesday")
    ds = open_dataset(simple_data, val_fraction=0)  # left out by extension, with a warning naming it
    assert len(ds.splits["train"]) == 6
    assert any("notes.txt" in " ".join(w.items) for w in ds.warnings)
    (simple_data / "images" / "s03.png").write_bytes(b"<html>not a picture</html>")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(simple_data)
    assert "1 image cannot be read" in _one_line(e) and "s03.png" in str(e.value)


def test_mask_size_mismatch_is_an_error_unless_resizing_is_asked_for(simple_data):
    small = np.zeros((12, 16), np.uint8)
    small[6:, 8:] = 2
    Image.fromarray(small, "L").save(simple_data / "masks" / "s04.png")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(simple_data)
    assert "s04.png is 16x12, image is 32x24" in _one_line(e) and "--resize-masks nearest" in str(e.value)
    ds = open_dataset(simple_data, resize_masks="nearest", val_fraction=0)
    s04 = next(s for s in ds.splits["train"] if s.stem == "s04")
    image, mask = read_sample(s04)
    assert mask.shape == image.shape[:2] == (24, 32)
    assert (mask[12:, 16:] == 2).all() and (mask[:12, :] == 0).all()  # nearest: every pixel doubled
    assert ds.report.values["s04"] == {0: 24 * 32 - 12 * 16, 2: 12 * 16}
    assert any("resized" in w.title for w in ds.warnings)


def test_duplicate_stems_with_two_extensions(simple_data):
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(simple_data / "images" / "s00.jpg")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(simple_data)
    assert "s00 (s00.jpg, s00.png)" in _one_line(e) and "more than one image" in str(e.value)
    ds = open_dataset(simple_data, skip_bad=True, val_fraction=0)
    assert "s00" not in {s.stem for s in ds.splits["train"]} and len(ds.splits["train"]) == 5
    assert any("s00" in item for item in ds.skipped)


def test_mask_value_outside_the_classes(simple_data):
    (simple_data / "classes.yaml").write_text(yaml.safe_dump({"names": ["a", "b", "c"]}))
    m = np.zeros((24, 32), np.uint8)
    m[3, 4] = 9
    Image.fromarray(m, "L").save(simple_data / "masks" / "s05.png")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(simple_data)
    assert "s05.png (value 9)" in _one_line(e) and "valid values are 0..2 and 255" in str(e.value)


def test_empty_split(tmp_path):
    root = make_simple_dataset(tmp_path / "d")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("")
    (root / "splits" / "val.txt").write_text("s00\n")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(root)
    assert "train.txt: the train split is empty" in _one_line(e)
    cam, _ = write_camvid_segnet(tmp_path / "camvid")
    for p in (cam / "train").iterdir():
        p.unlink()
    with pytest.raises(PixelwiseError, match="masks in .* have no image|train split is empty"):
        open_dataset(cam)


def test_image_smaller_than_the_crop_is_padded_not_an_error(tmp_path):
    write_pair(tmp_path, "tiny", np.full((10, 12, 3), 50, np.uint8), np.ones((10, 12)))
    ds = open_dataset(tmp_path, val_fraction=0, for_training=False)  # one class: not trainable, but readable
    tf = train_transform(32, ignore_index=255, scale_range=(1.0, 1.0), hflip=False, color_jitter=0)
    image, mask = SegmentationDataset(ds.splits["train"], tf)[0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
    assert int((mask == 1).sum()) == 10 * 12 and int((mask == 255).sum()) == 32 * 32 - 10 * 12


def _png_header_only(path, width, height):
    """A PNG that claims width x height but holds one row of data: a decompression-bomb header."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_above_a_configurable_limit(simple_data):
    _png_header_only(simple_data / "images" / "s03.png", 20000, 20000)  # 400 Mpx claimed
    with pytest.raises(PixelwiseError) as e:
        open_dataset(simple_data)
    msg = _one_line(e)
    assert "s03.png" in msg and "refused" in msg and "--max-image-pixels" in msg
    # The limit is configurable: a small one refuses the ordinary 32x24 images too.
    with pytest.raises(PixelwiseError, match=r"refused: 32 x 24 = 768 pixels is above the limit of 700"):
        read_image(simple_data / "images" / "s00.png", max_pixels=700)
    assert read_image(simple_data / "images" / "s00.png", max_pixels=768).shape == (24, 32, 3)


def test_skip_bad_trains_on_the_rest_and_lists_what_was_skipped(tmp_path, capsys):
    root = make_simple_dataset(tmp_path / "d", n=8, size=(32, 32))
    (root / "images" / "s01.png").write_bytes(b"")
    Image.fromarray(np.zeros((5, 5), np.uint8), "L").save(root / "masks" / "s02.png")
    (root / "masks" / "s03.png").unlink()
    with pytest.raises(PixelwiseError):
        open_dataset(root)
    run = tmp_path / "run"
    result = pixelwise.train(
        data=str(root),
        out=str(run),
        epochs=1,
        batch_size=2,
        crop_size=32,
        num_workers=0,
        skip_bad=True,
        val_fraction=0.25,
        progress=False,
        **TINY_MODEL,
    )
    meta = json.loads((run / "model.json").read_text())
    skipped = " ".join(meta["data"]["skipped"])
    assert all(name in skipped for name in ("s01.png", "s02.png", "s03.png"))
    assert meta["data"]["train_images"] + meta["data"]["val_images"] == 5
    log = (run / "train.log").read_text()
    assert "--skip-bad left out 3 files" in log and "skipped:" in log
    assert result.history and np.isfinite(result.history[-1]["train_loss"])
    # The CLI lists them as well, and evaluate with the model's settings skips the same files.
    rc = main(["evaluate", str(run), str(root), "--split", "all"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "skipped:" in err and "s01.png" in err


def test_nothing_crashes_on_a_folder_of_broken_files(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i, content in enumerate([b"", b"GIF89a", b"\x89PNG\r\n\x1a\n\x00\x00", b"\xff\xd8\xff\xe0junk"]):
        (tmp_path / "images" / f"x{i}.png").write_bytes(content)
        (tmp_path / "masks" / f"x{i}.png").write_bytes(content[::-1])
    rc = main(["train", str(tmp_path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("pixelwise: error: 4 images cannot be read") and "Traceback" not in err
    assert torch.get_num_threads() >= 1


def test_a_mask_above_the_pixel_limit_is_an_unusable_sample_in_the_report(simple_data, tmp_path):
    Image.fromarray(np.zeros((40, 40), np.uint8), "L").save(simple_data / "masks" / "s01.png")  # 1600 px
    report = pixelwise.inspect_data(simple_data, max_image_pixels=1000, chart=False)  # images are 768 px
    big = next(p for p in report["problems"] if p["title"].startswith("files are above the pixel limit"))
    assert big["samples"] == ["s01"] and "s01.png" in big["files"][0]
    assert report["images"]["usable"] == 5 and report["images"]["unusable"] == 1


def test_an_annotation_claiming_a_huge_image_is_refused_before_it_is_drawn(tmp_path):
    root = tmp_path / "lm"
    root.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a.png")
    shape = {"label": "thing", "points": [[1, 1], [5, 5]], "shape_type": "rectangle"}
    doc = {"shapes": [shape], "imagePath": "a.png", "imageHeight": 200_000, "imageWidth": 200_000}
    (root / "a.json").write_text(json.dumps(doc))
    with pytest.raises(PixelwiseError) as e:
        open_dataset(root, "labelme", val_fraction=0)
    msg = _one_line(e)
    assert "a.json" in msg and "200000 x 200000" in msg and "above the limit" in msg


@pytest.mark.parametrize(
    "points",
    [["00", "0:"], [":"], [[1, 1], "55"], [[1, True], [5, 5]], [[1, 1], [5, None]], [[1, 1, 1], [5, 5]], "0,0,5,5"],
)
def test_labelme_points_that_are_not_number_pairs_make_the_file_unusable_not_a_traceback(tmp_path, points):
    from pixelwise.data.formats.labelme import read_labelme

    root = tmp_path / "lm"
    root.mkdir()
    for stem in ("good", "bad"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / f"{stem}.png")
    good = {"label": "thing", "points": [[1, 1], [5, 5]], "shape_type": "rectangle"}
    bad = {"label": "thing", "points": points, "shape_type": "polygon" if len(points) != 2 else "rectangle"}
    for stem, shape in (("good", good), ("bad", bad)):
        doc = {"shapes": [shape], "imagePath": f"{stem}.png", "imageHeight": 8, "imageWidth": 8}
        (root / f"{stem}.json").write_text(json.dumps(doc))
    src = read_labelme(root)
    problem = next(p for p in src.problems if "bad" in p.stems)
    assert any("bad.json" in f and "malformed points" in f for f in problem.items)
    assert "good" not in problem.stems
