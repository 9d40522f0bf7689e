"""The folder layout: pairing, classes file, splits, and validation before training."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import make_simple_dataset, write_pair
from pixelwise.data import find_samples, load_classes, open_folder, read_image, split_samples
from pixelwise.errors import PixelwiseError


def test_valid_folder_pairs_splits_and_counts(simple_data):
    ds = open_folder(simple_data, val_fraction=0.34, seed=1)
    assert [s.stem for s in find_samples(simple_data)] == [f"s{i:02d}" for i in range(6)]
    assert ds.classes.names == ["class_0", "class_1", "class_2"]  # inferred from the masks
    assert len(ds.splits["val"]) == 2 and len(ds.splits["train"]) == 4
    train_stems = {s.stem for s in ds.splits["train"]}
    assert train_stems.isdisjoint({s.stem for s in ds.splits["val"]})
    # Class pixel counts of the training split equal a direct count of those masks.
    expected = np.zeros(3, dtype=np.int64)
    for s in ds.splits["train"]:
        expected += np.bincount(np.asarray(Image.open(s.mask)).ravel(), minlength=3)
    assert ds.report.class_pixels.tolist() == expected.tolist()


def test_seeded_split_is_repeatable_and_seed_dependent(tmp_path):
    root = make_simple_dataset(tmp_path / "d", n=20)
    samples = find_samples(root)
    a = split_samples(root, samples, 0.25, seed=7)
    b = split_samples(root, samples, 0.25, seed=7)
    c = split_samples(root, samples, 0.25, seed=8)
    assert [s.stem for s in a["val"]] == [s.stem for s in b["val"]]
    assert [s.stem for s in a["val"]] != [s.stem for s in c["val"]]
    assert len(a["val"]) == 5 and len(a["train"]) == 15


def test_split_files_are_used(simple_data):
    (simple_data / "splits").mkdir()
    (simple_data / "splits" / "train.txt").write_text("s00\ns01\ns02.png\n")
    (simple_data / "splits" / "val.txt").write_text("s03\n")
    ds = open_folder(simple_data)
    assert [s.stem for s in ds.splits["train"]] == ["s00", "s01", "s02"]
    assert [s.stem for s in ds.splits["val"]] == ["s03"]


def test_split_file_with_unknown_stem(simple_data):
    (simple_data / "splits").mkdir()
    (simple_data / "splits" / "train.txt").write_text("s00\nnope\n")
    with pytest.raises(PixelwiseError, match=r"train\.txt.*nope"):
        open_folder(simple_data)


def test_empty_data_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(PixelwiseError, match="no images found"):
        find_samples(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(PixelwiseError, match="not found"):
        find_samples(tmp_path / "absent")


def test_images_without_masks_names_first_few_and_count(simple_data):
    for i in range(6):
        (simple_data / "masks" / f"s{i:02d}.png").unlink()
    with pytest.raises(PixelwiseError) as e:
        find_samples(simple_data)
    msg = str(e.value)
    assert "6 images have no mask" in msg and "s00.png" in msg and "and 3 more" in msg
    assert "\n" not in msg


def test_mask_without_image(simple_data):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(simple_data / "masks" / "lonely.png")
    with pytest.raises(PixelwiseError, match="lonely.png"):
        find_samples(simple_data)


def test_mask_value_outside_classes(simple_data):
    (simple_data / "classes.yaml").write_text(yaml.safe_dump({"names": ["a", "b", "c"]}))
    m = np.zeros((24, 32), np.uint8)
    m[3, 4] = 7
    Image.fromarray(m, "L").save(simple_data / "masks" / "s02.png")
    with pytest.raises(PixelwiseError) as e:
        open_folder(simple_data)
    assert "s02.png" in str(e.value) and "7" in str(e.value) and "classes.yaml" in str(e.value)


def test_ignore_index_values_are_allowed(simple_data):
    (simple_data / "classes.yaml").write_text(yaml.safe_dump({"names": ["a", "b", "c"], "ignore_index": 255}))
    m = np.full((24, 32), 255, np.uint8)
    m[:5] = 1
    Image.fromarray(m, "L").save(simple_data / "masks" / "s00.png")
    ds = open_folder(simple_data, val_fraction=0)
    assert ds.report.ignored_pixels == 24 * 32 - 5 * 32


def test_jpeg_mask_needs_the_classes_to_be_snapped(simple_data):
    # A JPEG mask is paired (find_samples) but its noisy values can only be snapped to known classes.
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(simple_data / "masks" / "s01.jpg")
    (simple_data / "masks" / "s01.png").unlink()
    assert [s.mask.name for s in find_samples(simple_data)][1] == "s01.jpg"
    with pytest.raises(PixelwiseError, match=r"lossy \(JPEG\).*classes\.yaml"):
        open_folder(simple_data)
    (simple_data / "classes.yaml").write_text(yaml.safe_dump({"names": ["a", "b", "c"]}))
    ds = open_folder(simple_data, val_fraction=0)
    assert ds.spec.snap and ds.spec.encoding == "index"


def test_size_mismatch(simple_data):
    Image.fromarray(np.zeros((10, 10), np.uint8), "L").save(simple_data / "masks" / "s04.png")
    with pytest.raises(PixelwiseError, match=r"s04\.png is 10x10, image is 32x24"):
        open_folder(simple_data)


def test_image_that_is_not_an_image(simple_data):
    (simple_data / "images" / "s05.png").write_bytes(b"this is not a png")
    with pytest.raises(PixelwiseError, match=r"1 image cannot be read.*s05\.png"):
        open_folder(simple_data)


def test_rgb_mask_is_explained(simple_data):
    # A colour mask among index masks (an all-grey RGB mask would be read as its grey values).
    colour = np.zeros((24, 32, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(simple_data / "masks" / "s03.png")
    with pytest.raises(PixelwiseError, match=r"s03\.png: mask is RGB"):
        open_folder(simple_data)


def test_duplicate_stems_with_two_extensions(simple_data):
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(simple_data / "images" / "s00.jpg")
    with pytest.raises(PixelwiseError, match="more than one image"):
        find_samples(simple_data)


def test_palette_mask_values_are_indices(tmp_path):
    mask = np.array([[0, 1], [2, 1]], np.uint8)
    pal = Image.fromarray(mask, "P")
    pal.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * 759)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    pal.save(tmp_path / "masks" / "a.png")
    ds = open_folder(tmp_path, val_fraction=0)
    assert ds.report.class_pixels.tolist() == [1, 2, 1]


def test_classes_yaml_checks(tmp_path):
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump({"names": ["a", "b"], "ignore_index": 1}))
    with pytest.raises(PixelwiseError, match="also a class index"):
        load_classes(tmp_path)
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump({"names": ["a", "b"], "colors": [[1, 2, 3]]}))
    with pytest.raises(PixelwiseError, match="colors"):
        load_classes(tmp_path)
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump({"names": ["a", "b"]}))
    info = load_classes(tmp_path)
    assert info.ignore_index == 255 and len(info.colors) == 2


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high, EXIF says rotate 90 degrees: the image is 20 wide x 40 high.
    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    write_pair(tmp_path, "rot", np.zeros((40, 20, 3), np.uint8), np.arange(40 * 20).reshape(40, 20) % 2)
    (tmp_path / "images" / "rot.png").unlink()
    img.save(tmp_path / "images" / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "images" / "rot.jpg").shape == (40, 20, 3)
    open_folder(tmp_path, val_fraction=0)  # mask 20x40 (W x H) matches the oriented image


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_image_modes_become_rgb(tmp_path, mode):
    arr = np.full((5, 6, 3), 120, np.uint8)
    im = Image.fromarray(arr)
    if mode == "I;16":
        im = Image.fromarray(np.full((5, 6), 40000, np.uint16))
    else:
        im = im.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    im.save(path)
    out = read_image(path)
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8
    if mode == "I;16":
        assert out[0, 0, 0] == round(40000 / 65535 * 255)


def test_a_name_listed_twice_in_a_split_file_counts_once(simple_data):
    (simple_data / "splits").mkdir()
    (simple_data / "splits" / "train.txt").write_text("s00\ns01\ns00.png\n")
    (simple_data / "splits" / "val.txt").write_text("s02\ns02\n")
    ds = open_folder(simple_data)
    assert [s.stem for s in ds.splits["train"]] == ["s00", "s01"]
    assert [s.stem for s in ds.splits["val"]] == ["s02"]


def test_a_split_file_that_is_not_text_is_named(simple_data):
    (simple_data / "splits").mkdir()
    (simple_data / "splits" / "train.txt").write_bytes(b"s00\n\xff\xfe\x00s01\n")
    with pytest.raises(PixelwiseError, match=r"train\.txt: not a UTF-8 text file"):
        open_folder(simple_data)
