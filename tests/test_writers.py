"""The one writer of each kind of file: image PNGs, mask PNGs, .npy arrays (atomic, checked)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pixelwise.fileio import mask_png_bytes, png_bytes, write_mask_png, write_npy, write_png


def test_mask_png_is_8_bit_up_to_255_and_16_bit_past_it(tmp_path):
    small = np.array([[0, 1], [255, 7]], dtype=np.int64)
    write_mask_png(tmp_path / "a" / "small.png", small)
    with Image.open(tmp_path / "a" / "small.png") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), small)
    large = np.array([[0, 256], [300, 65535]], dtype=np.int64)
    write_mask_png(tmp_path / "large.png", large)
    with Image.open(tmp_path / "large.png") as im:
        assert im.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(im).astype(np.int64), large)
    with Image.open(io.BytesIO(mask_png_bytes(large, compress_level=1))) as im:
        np.testing.assert_array_equal(np.asarray(im).astype(np.int64), large)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize(
    "mask", [np.array([[-1, 0]]), np.array([[0, 70000]]), np.zeros((2, 2), np.float32), np.zeros((2, 2, 3), np.int64)]
)
def test_a_bad_mask_is_refused_and_nothing_is_written(tmp_path, mask):
    with pytest.raises(ValueError):
        write_mask_png(tmp_path / "m.png", mask)
    assert list(tmp_path.iterdir()) == []


def test_png_bytes_round_trip_rgb_and_refuse_other_shapes():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(png_bytes(rgb))) as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb)
    with pytest.raises(ValueError):
        png_bytes(np.zeros((4, 4, 4), np.uint8))


def test_npy_round_trip_and_no_pickles(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_npy(tmp_path / "d" / "a.npy", arr)
    np.testing.assert_array_equal(np.load(tmp_path / "d" / "a.npy"), arr)
    with pytest.raises(ValueError):
        write_npy(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "o.npy").exists() and not list(tmp_path.glob(".*.tmp"))
    write_png(tmp_path / "g.png", np.zeros((2, 3), np.uint8))
    assert (tmp_path / "g.png").is_file()
