"""Mask encodings: detected, printed, overridable, and decoded the same way everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import write_pair
from pixelwise.data import DecodeSpec, open_dataset, read_mask, read_sample
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.encodings import map_values, pack
from pixelwise.errors import PixelwiseError

COLOURS = [(0, 0, 0), (220, 20, 60), (0, 0, 142)]  # background, person, car


def _blocks(seed=0, h=32, w=40, k=3):
    """Blocky label maps (large regions, like real masks) with values 0..k-1.

    Blocks of 6 pixels do not line up with JPEG's 8x8 blocks, so JPEG leaves noise at their edges.
    """
    rng = np.random.default_rng(seed)
    small = rng.integers(0, k, (h // 6 + 1, w // 6 + 1))
    return np.kron(small, np.ones((6, 6), np.int64))[:h, :w]


def _write(root, n, mask_fn, ext=".png", mode=None, seed=0):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    labels = {}
    for i in range(n):
        lab = _blocks(seed + i)
        labels[f"s{i}"] = lab
        Image.fromarray(rng.integers(0, 255, lab.shape + (3,), dtype=np.uint8)).save(root / "images" / f"s{i}.png")
        arr = mask_fn(lab)
        im = Image.fromarray(arr) if mode is None else Image.fromarray(arr, mode)
        im.save(root / "masks" / f"s{i}{ext}", **({"quality": 75} if ext == ".jpg" else {}))
    return labels


def _decoded(ds):
    return {s.stem: read_sample(s)[1] for n in ("train", "val", "test") for s in ds.splits[n]}


def test_index_masks_l_and_palette(tmp_path):
    labels = _write(tmp_path, 2, lambda lab: lab.astype(np.uint8), mode="L")
    pal = Image.fromarray(labels["s1"].astype(np.uint8), "P")
    pal.putpalette([9, 9, 9, 200, 0, 0, 0, 200, 0] + [0] * 759)  # colours must not matter
    pal.save(tmp_path / "masks" / "s1.png")
    ds = open_dataset(tmp_path, val_fraction=0)
    assert ds.spec.encoding == "index" and "mask encoding: index" in ds.notes[1]
    for stem, m in _decoded(ds).items():
        assert np.array_equal(m, labels[stem])


def test_binary_0_255_masks_are_mapped_with_a_notice(tmp_path):
    labels = _write(tmp_path, 3, lambda lab: ((lab > 0) * 255).astype(np.uint8), mode="L")
    ds = open_dataset(tmp_path, val_fraction=0)
    assert ds.spec.encoding == "binary" and ds.classes.names == ["background", "foreground"]
    assert any("binary 0/255" in n and "--encoding index" in n for n in ds.notes)
    for stem, m in _decoded(ds).items():
        assert np.array_equal(m, (labels[stem] > 0).astype(np.int64))
    fg = sum(int((lab > 0).sum()) for lab in labels.values())
    assert ds.report.class_pixels.tolist() == [3 * 32 * 40 - fg, fg]
    # The data loader yields the decoded 0/1 masks, not 0/255.
    _, mask = SegmentationDataset(ds.splits["train"])[0]
    assert set(torch.unique(mask).tolist()) <= {0, 1}


def test_binary_detection_can_be_overridden(tmp_path):
    labels = _write(tmp_path, 2, lambda lab: ((lab > 0) * 255).astype(np.uint8), mode="L")
    ds = open_dataset(tmp_path, encoding="index", val_fraction=0, for_training=False)  # 255 means "ignore"
    assert ds.spec.encoding == "index" and ds.classes.num_classes == 1
    assert ds.report.ignored_pixels == sum(int((lab > 0).sum()) for lab in labels.values())
    # Read that way, every labelled pixel is class 0: training refuses it and says what 255 is taken for.
    with pytest.raises(PixelwiseError) as e:
        open_dataset(tmp_path, encoding="index", val_fraction=0)
    msg = str(e.value)
    assert "\n" not in msg and "is class 0" in msg and "cannot learn" in msg and "255 is the ignore index" in msg


def test_rgb_masks_through_the_classes_file_colours(tmp_path):
    labels = _write(tmp_path, 2, lambda lab: np.array(COLOURS, np.uint8)[lab])
    m = np.array(Image.open(tmp_path / "masks" / "s0.png"))
    m[:8, :8] = (255, 255, 255)  # an ignore colour
    Image.fromarray(m).save(tmp_path / "masks" / "s0.png")
    (tmp_path / "classes.yaml").write_text(
        yaml.safe_dump(
            {
                "names": ["background", "person", "car"],
                "colors": [list(c) for c in COLOURS],
                "ignore_color": [255, 255, 255],
            }
        )
    )
    ds = open_dataset(tmp_path, val_fraction=0)
    assert ds.spec.encoding == "rgb" and "rgb colour-coded" in ds.notes[2]
    got = _decoded(ds)
    want = labels["s0"].copy()
    want[:8, :8] = 255
    assert np.array_equal(got["s0"], want) and np.array_equal(got["s1"], labels["s1"])
    assert ds.report.ignored_pixels == 64


def test_rgb_unknown_colour_names_colour_file_and_pixel(tmp_path):
    _write(tmp_path, 2, lambda lab: np.array(COLOURS, np.uint8)[lab])
    m = np.array(Image.open(tmp_path / "masks" / "s1.png"))
    m[9, 17] = (10, 200, 10)
    Image.fromarray(m).save(tmp_path / "masks" / "s1.png")
    (tmp_path / "classes.yaml").write_text(
        yaml.safe_dump({"names": ["bg", "person", "car"], "colors": [list(c) for c in COLOURS]})
    )
    with pytest.raises(PixelwiseError) as e:
        open_dataset(tmp_path, val_fraction=0)
    msg = str(e.value)
    assert "s1.png" in msg and "(10, 200, 10)" in msg and "x=17, y=9" in msg and "\n" not in msg


def test_rgb_masks_without_colours_say_what_to_write(tmp_path):
    _write(tmp_path, 2, lambda lab: np.array(COLOURS, np.uint8)[lab])
    with pytest.raises(PixelwiseError) as e:
        open_dataset(tmp_path, val_fraction=0)
    msg = str(e.value)
    assert "colour-coded (RGB)" in msg and "classes.yaml" in msg and "(220, 20, 60)" in msg


def test_grey_masks_stored_as_rgb_read_as_values(tmp_path):
    labels = _write(tmp_path, 2, lambda lab: np.repeat(lab.astype(np.uint8)[..., None], 3, axis=2))
    ds = open_dataset(tmp_path, val_fraction=0)
    assert ds.spec.encoding == "index" and any("stored as RGB" in n for n in ds.notes)
    for stem, m in _decoded(ds).items():
        assert np.array_equal(m, labels[stem])


def _nearest(arr, palette):
    d = ((arr[..., None, :].astype(np.int64) - np.array(palette)[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


def test_jpeg_colour_masks_are_snapped_and_the_moved_pixels_counted(tmp_path):
    labels = _write(tmp_path, 2, lambda lab: np.array(COLOURS, np.uint8)[lab], ext=".jpg")
    (tmp_path / "classes.yaml").write_text(
        yaml.safe_dump({"names": ["bg", "person", "car"], "colors": [list(c) for c in COLOURS]})
    )
    ds = open_dataset(tmp_path, val_fraction=0)
    assert ds.spec.encoding == "rgb" and ds.spec.snap
    moved = 0
    for stem, m in _decoded(ds).items():
        stored = np.array(Image.open(tmp_path / "masks" / f"{stem}.jpg").convert("RGB"))
        exact = np.zeros(stored.shape[:2], bool)
        for c in COLOURS:
            exact |= (stored == c).all(-1)
        moved += int((~exact).sum())
        assert np.array_equal(m, _nearest(stored, COLOURS))  # brute-force nearest colour
        assert (m == labels[stem]).mean() > 0.97  # and that is almost everywhere the true label
    assert moved > 0
    note = next(n for n in ds.notes if n.startswith("jpeg-snap"))
    assert f"{moved:,} of {2 * 32 * 40:,} pixels" in note
    assert any(w.title.startswith("lossy (JPEG)") for w in ds.warnings)


def test_jpeg_binary_masks_are_thresholded(tmp_path):
    labels = _write(tmp_path, 2, lambda lab: ((lab > 0) * 255).astype(np.uint8), ext=".jpg", mode="L")
    ds = open_dataset(tmp_path, val_fraction=0)
    assert ds.spec.encoding == "binary" and ds.spec.snap
    moved = 0
    for stem, m in _decoded(ds).items():
        stored = np.array(Image.open(tmp_path / "masks" / f"{stem}.jpg"))
        moved += int(((stored != 0) & (stored != 255)).sum())
        assert np.array_equal(m, (stored >= 128).astype(np.int64))
        assert (m == (labels[stem] > 0)).mean() > 0.97
    assert f"{moved:,} of" in next(n for n in ds.notes if n.startswith("jpeg-snap"))


def test_jpeg_index_masks_snap_to_the_nearest_class(tmp_path):
    _write(tmp_path, 1, lambda lab: (lab * 100).astype(np.uint8), ext=".jpg", mode="L")
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump({"names": [f"c{i}" for i in range(201)]}))
    ds = open_dataset(tmp_path, val_fraction=0)
    stored = np.array(Image.open(tmp_path / "masks" / "s0.jpg")).astype(np.int64)
    m = _decoded(ds)["s0"]
    cands = np.array(list(range(201)) + [255])
    assert np.array_equal(m, cands[np.abs(stored[..., None] - cands).argmin(-1)])


def test_16bit_masks(tmp_path):
    labels = {}
    rng = np.random.default_rng(0)
    for i in range(2):
        lab = rng.choice(np.array([0, 7, 299, 65535]), size=(16, 20)).astype(np.uint16)
        write_pair(tmp_path, f"s{i}", np.zeros((16, 20, 3), np.uint8), np.zeros((16, 20)))
        Image.fromarray(lab).save(tmp_path / "masks" / f"s{i}.png")
        labels[f"s{i}"] = lab.astype(np.int64)
    assert Image.open(tmp_path / "masks" / "s0.png").mode.startswith("I;16")
    (tmp_path / "classes.yaml").write_text(
        yaml.safe_dump({"names": [f"c{i}" for i in range(300)], "ignore_index": 65535})
    )
    ds = open_dataset(tmp_path, val_fraction=0)
    assert ds.spec.encoding == "16bit"
    got = _decoded(ds)
    for stem, lab in labels.items():
        assert np.array_equal(got[stem], lab)
    assert ds.report.class_pixels[299] == sum(int((lab == 299).sum()) for lab in labels.values())
    assert ds.report.ignored_pixels == sum(int((lab == 65535).sum()) for lab in labels.values())


def test_exif_rotated_image_is_checked_against_the_mask(tmp_path):
    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))  # stored 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 20 wide, 40 high
    write_pair(tmp_path, "rot", np.zeros((20, 40, 3), np.uint8), np.zeros((20, 40)))  # mask in stored orientation
    (tmp_path / "images" / "rot.png").unlink()
    img.save(tmp_path / "images" / "rot.jpg", exif=exif)
    with pytest.raises(PixelwiseError, match=r"rot\.png is 40x20, image is 20x40"):
        open_dataset(tmp_path, val_fraction=0)


def test_map_values_reference_cases():
    spec = DecodeSpec(encoding="index", num_classes=3, ignore_index=255)
    assert map_values(np.array([0, 2, 3, 255]), "gray", spec).tolist() == [0, 2, -1, 255]
    lut = DecodeSpec(encoding="index", lut=(255, 0, 1), num_classes=2)
    assert map_values(np.array([0, 1, 2, 3]), "gray", lut).tolist() == [255, 0, 1, -1]
    rgb = DecodeSpec(encoding="rgb", colors=((0, 0, 0), (255, 0, 0)), ignore_colors=((9, 9, 9),), num_classes=2)
    keys = np.array([pack((255, 0, 0)), pack((9, 9, 9)), pack((1, 1, 1))])
    assert map_values(keys, "rgb", rgb).tolist() == [1, 255, -1]


def test_read_mask_without_spec_keeps_stored_values(tmp_path):
    Image.fromarray(np.array([[0, 255], [3, 1]], np.uint8), "L").save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[0, 255], [3, 1]]
    spec = DecodeSpec(encoding="index", num_classes=2)
    with pytest.raises(PixelwiseError, match=r"m\.png: value 3 at pixel x=0, y=1 is no class"):
        read_mask(tmp_path / "m.png", spec)
