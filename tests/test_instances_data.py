"""Object ids in the data layer: the four sources, thing classes, bad id maps, the torch data set and inspect."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from format_fixtures import (
    write_cityscapes_instances,
    write_coco_instances,
    write_instance_folder,
    write_labelme_groups,
)
from pixelwise.classes import ClassInfo, read_classes_file
from pixelwise.data import open_dataset, read_instances, read_sample, scan_dataset
from pixelwise.data.dataset import SegmentationDataset, pad_collate
from pixelwise.data.encodings import FileError
from pixelwise.data.transforms import train_transform
from pixelwise.errors import PixelwiseError
from pixelwise.inspection import format_report, inspect_data


def _ids_by_class(mask: np.ndarray, ids: np.ndarray) -> dict[int, set[int]]:
    """Object id -> the classes its pixels have."""
    return {int(i): set(np.unique(mask[ids == i]).tolist()) for i in np.unique(ids) if i}


# --- classes.yaml things ---------------------------------------------------------------------


def test_things_by_name_and_index_round_trip(tmp_path):
    path = tmp_path / "classes.yaml"
    path.write_text("names: [background, road, car, person]\nthings: [person, 2]\n")
    cf = read_classes_file(path)
    assert cf.info.things == (2, 3) and cf.things_given
    d = cf.info.to_dict()
    assert d["things"] == [2, 3]
    assert ClassInfo.from_dict(d).things == (2, 3)
    assert ClassInfo.from_dict({"names": ["a"], "colors": [[0, 0, 0]]}).things == ()


@pytest.mark.parametrize(
    "things, words",
    [
        ("[car, truck]", "'truck', which is not one of the class names"),
        ("[car, car]", "'car' twice"),
        ("[255]", "ignore index 255"),
        ("[7]", "no class index"),
        ("car", "must be a list"),
    ],
)
def test_bad_things_are_one_line_errors_naming_the_file(tmp_path, things, words):
    path = tmp_path / "classes.yaml"
    path.write_text(f"names: [background, road, car]\nthings: {things}\n")
    with pytest.raises(PixelwiseError) as e:
        read_classes_file(path)
    assert str(path) in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


# --- the four sources ------------------------------------------------------------------------


@pytest.mark.parametrize("eight_bit", [False, True])
def test_folder_instances_are_read_back(tmp_path, eight_bit):
    root, expected = write_instance_folder(tmp_path / "d", eight_bit=eight_bit)
    ds = open_dataset(root)
    assert ds.has_instances and ds.classes.things == (2, 3)
    for s in ds.splits["train"] + ds.splits["val"]:
        ids = read_instances(s)
        assert ids.dtype == np.int32
        np.testing.assert_array_equal(ids, expected[s.stem][1])
    assert any("things (countable objects): car, person" in n for n in ds.notes)


def test_folder_without_things_takes_the_classes_carrying_ids_and_says_so(tmp_path):
    root, _ = write_instance_folder(tmp_path / "d", things=None)
    ds = open_dataset(root)
    assert ds.classes.things == (2, 3)
    assert any("classes that carry object ids" in n for n in ds.notes)


def test_folder_without_instances_folder_has_none(tmp_path):
    root, _ = write_instance_folder(tmp_path / "d")
    for p in (root / "instances").iterdir():
        p.unlink()
    (root / "instances").rmdir()
    ds = open_dataset(root)
    assert not ds.has_instances and ds.classes.things == (2, 3)
    assert ds.splits["train"][0].instances is None


def test_coco_objects_one_per_annotation_crowd_has_no_id(tmp_path):
    root = write_coco_instances(tmp_path / "c")
    ds = open_dataset(root, val_fraction=0)
    assert ds.has_instances and ds.classes.things == (1, 2)  # every category by default
    a = next(s for s in ds.splits["train"] if s.stem == "a")
    ids, (_, mask) = read_instances(a), read_sample(a)
    # Two cats (the smaller painted over the larger); the crowd of dogs stays ignored, with no id.
    assert _ids_by_class(mask, ids) == {1: {1}, 2: {1}}
    assert (ids[mask == 255] == 0).all() and (mask == 255).any()
    assert (ids == 2).sum() == 36  # the small cat is whole, on top


def test_coco_things_from_classes_file_clear_the_other_ids(tmp_path):
    root = write_coco_instances(tmp_path / "c")
    (tmp_path / "k.yaml").write_text("names: [background, cat, dog]\nthings: [dog]\n")
    ds = open_dataset(root, val_fraction=0, classes_file=tmp_path / "k.yaml")
    assert ds.classes.things == (2,)
    a = next(s for s in ds.splits["train"] if s.stem == "a")
    assert not read_instances(a).any()  # only cats and a crowd there
    b = next(s for s in ds.splits["train"] if s.stem == "b")
    assert read_instances(b).max() == 1


def test_coco_crowd_only_and_outside_polygons_are_warnings(tmp_path):
    root = write_coco_instances(tmp_path / "c", crowd_only=True, outside=False)
    ds = open_dataset(root, val_fraction=0)
    titles = [w.message() for w in ds.warnings]
    assert any("crowd regions only" in t and "b.jpg" in t for t in titles)
    root = write_coco_instances(tmp_path / "o", outside=True)
    ds = open_dataset(root, val_fraction=0)
    assert any("outside the image (clipped" in w.message() and "b.jpg" in w.message() for w in ds.warnings)
    b = next(s for s in ds.splits["train"] if s.stem == "b")
    assert read_instances(b).shape == (30, 40)


def test_labelme_group_id_joins_shapes_and_ungrouped_things_are_objects(tmp_path):
    root = write_labelme_groups(tmp_path / "l")
    ds = open_dataset(root, val_fraction=0)
    names = ds.classes.names
    assert [names[i] for i in ds.classes.things] == ["car", "person"]  # the labels with a group_id
    s = ds.splits["train"][0]
    ids, (_, mask) = read_instances(s), read_sample(s)
    by = _ids_by_class(mask, ids)
    person, car = names.index("person"), names.index("car")
    assert sorted(by.values(), key=min) == [{car}, {car}, {person}]  # one person of two polygons, two cars
    person_id = next(i for i, c in by.items() if c == {person})
    assert (ids == person_id).sum() == (mask == person).sum()
    assert not ids[mask == names.index("road")].any()  # stuff: no object


def test_labelme_things_from_classes_yaml(tmp_path):
    root = write_labelme_groups(tmp_path / "l", "names: [_background_, road, car, person]\nthings: [car]\n")
    ds = open_dataset(root, val_fraction=0)
    assert ds.classes.things == (2,)
    s = ds.splits["train"][0]
    ids, (_, mask) = read_instances(s), read_sample(s)
    by = _ids_by_class(mask, ids)
    assert len(by) == 2 and all(c == {2} for c in by.values())  # two cars; the person is stuff now


def test_cityscapes_instance_ids_and_default_things(tmp_path):
    root, expected = write_cityscapes_instances(tmp_path / "cs")
    ds = open_dataset(root)
    names = ds.classes.names
    assert [names[i] for i in ds.classes.things] == [
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ]
    s = ds.splits["train"][0]
    assert ds.has_instances and s.instances.name.endswith("_gtFine_instanceIds.png")
    np.testing.assert_array_equal(read_instances(s), expected)  # the caravan (ignored class) has no id


# --- bad id maps -----------------------------------------------------------------------------


def test_a_missing_id_map_is_an_error_and_skip_bad_leaves_the_sample_out(tmp_path):
    root, _ = write_instance_folder(tmp_path / "d")
    (root / "instances" / "s1.png").unlink()
    with pytest.raises(PixelwiseError) as e:
        open_dataset(root)
    assert "no object ids" in str(e.value) and "s1.png" in str(e.value)
    ds = open_dataset(root, skip_bad=True)
    assert ds.has_instances and all(s.stem != "s1" for ss in ds.splits.values() for s in ss)


def test_an_unreadable_id_map_is_named(tmp_path):
    root, _ = write_instance_folder(tmp_path / "d")
    (root / "instances" / "s2.png").write_bytes(b"not a png")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(root)
    assert "object id map cannot be read" in str(e.value) and "s2.png" in str(e.value)
    rgb = np.zeros((32, 32, 3), np.uint8)
    Image.fromarray(rgb).save(root / "instances" / "s2.png")
    with pytest.raises(PixelwiseError, match="not a single-channel PNG"):
        open_dataset(root)


def test_object_ids_are_not_read_when_the_run_uses_the_classes_only(tmp_path):
    root, _ = write_instance_folder(tmp_path / "d")
    (root / "instances" / "s2.png").write_bytes(b"not a png")
    (root / "instances" / "s1.png").unlink()
    ds = open_dataset(root, objects=False)
    assert not ds.has_instances and all(s.instances is None for ss in ds.splits.values() for s in ss)
    assert any(n.startswith("object ids: 3 samples have them; not read") for n in ds.notes), ds.notes
    with pytest.raises(PixelwiseError, match="cannot be read"):
        open_dataset(root)


def test_an_id_map_of_another_size_is_an_error_unless_masks_are_resized(tmp_path):
    root, expected = write_instance_folder(tmp_path / "d")
    Image.fromarray(np.zeros((16, 16), np.uint16)).save(root / "instances" / "s3.png")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(root)
    assert "differs in size from its mask" in str(e.value) and "16x16, mask is 32x32" in str(e.value)
    # Mask and ids both half the image size: with --resize-masks nearest both are resized alike.
    _, ids = expected["s3"]
    mask = np.asarray(Image.open(root / "masks" / "s3.png"))
    Image.fromarray(mask[::2, ::2]).save(root / "masks" / "s3.png")
    Image.fromarray(ids[::2, ::2].astype(np.uint16)).save(root / "instances" / "s3.png")
    ds = open_dataset(root, resize_masks="nearest")
    s = next(s for ss in ds.splits.values() for s in ss if s.stem == "s3")
    ids_back, (_, mask_back) = read_instances(s), read_sample(s)
    assert ids_back.shape == mask_back.shape == (32, 32)
    assert all(len(c) == 1 for c in _ids_by_class(mask_back, ids_back).values())


def test_an_id_map_above_the_pixel_limit_is_refused(tmp_path):
    root, _ = write_instance_folder(tmp_path / "d")
    ds = open_dataset(root)
    from dataclasses import replace

    s = ds.splits["train"][0]
    small = replace(s, spec=replace(s.spec, max_pixels=100))
    with pytest.raises(FileError):
        read_instances(small)


def test_an_id_spanning_two_classes_is_an_error(tmp_path):
    root, expected = write_instance_folder(tmp_path / "d")
    _, ids = expected["s0"]
    ids = ids.copy().astype(np.uint16)
    ids[16:24, 20:26] = 1  # the person gets the id of a car
    Image.fromarray(ids).save(root / "instances" / "s0.png")
    with pytest.raises(PixelwiseError) as e:
        open_dataset(root)
    assert "spans two classes" in str(e.value) and "id 1: car and person" in str(e.value)
    assert "s0.png" in str(e.value)


def test_an_id_with_no_class_is_an_error(tmp_path):
    root, expected = write_instance_folder(tmp_path / "d")
    _, ids = expected["s1"]
    ids = ids.copy().astype(np.uint16)
    ids[30, 0:4] = 9  # on grass (stuff)
    Image.fromarray(ids).save(root / "instances" / "s1.png")
    scanned = scan_dataset(root)
    found = [p for p in scanned.problems if "id with no class" in p.title]
    assert found and found[0].stems == ["s1"] and "id 9" in found[0].items[0]


# --- torch data set, augmentation, collate ----------------------------------------------------


def test_dataset_with_instances_keeps_ids_aligned_with_the_mask_through_augmentation(tmp_path):
    root, expected = write_instance_folder(tmp_path / "d")
    ds = open_dataset(root, val_fraction=0)
    names = {s.stem: s for s in ds.splits["train"]}
    tf = train_transform(40, 255, scale_range=(0.5, 1.7), hflip=True, vflip=True, color_jitter=0.3, class_crops=0.5)
    data = SegmentationDataset(ds.splits["train"], tf, instances=True)
    for seed in range(12):
        random.seed(seed)
        torch.manual_seed(seed)
        i = seed % len(data)
        image, target = data[i]
        assert image.shape[1:] == target.shape[1:] == (40, 40) and target.shape[0] == 2
        assert target.dtype == torch.int64
        mask, ids = target[0].numpy(), target[1].numpy()
        orig_mask, orig_ids = expected[names[data.samples[i].stem].stem]
        orig = _ids_by_class(orig_mask, orig_ids)
        for obj, classes in _ids_by_class(mask, ids).items():
            assert classes == orig[obj]  # every id stays on the pixels of its own class
        assert (ids[np.isin(mask, [2, 3])] > 0).all()  # and every object pixel keeps its id
        assert not ids[mask == 255].any()  # padding: ignore in the mask, no object in the ids


def test_dataset_without_instances_is_unchanged(tmp_path):
    root, _ = write_instance_folder(tmp_path / "d")
    ds = open_dataset(root)
    image, mask = SegmentationDataset(ds.splits["train"])[0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)


def test_pad_collate_pads_masks_with_ignore_and_ids_with_zero():
    a = (torch.zeros(3, 4, 5), torch.ones(2, 4, 5, dtype=torch.long))
    b = (torch.zeros(3, 6, 3), torch.ones(2, 6, 3, dtype=torch.long))
    images, targets = pad_collate(255)([a, b])
    assert images.shape == (2, 3, 6, 5) and targets.shape == (2, 2, 6, 5)
    assert (targets[0, 0, 4:] == 255).all() and (targets[0, 1, 4:] == 0).all()
    assert (targets[1, 0, :, 3:] == 255).all() and (targets[1, 1, :, 3:] == 0).all()
    assert (targets[0, :, :4, :5] == 1).all()
    _, masks = pad_collate(255)([(a[0], a[1][0]), (b[0], b[1][0])])
    assert masks.shape == (2, 6, 5)


# --- inspect ---------------------------------------------------------------------------------


def test_inspect_counts_objects_sizes_and_touching_pairs(tmp_path):
    root, _ = write_instance_folder(tmp_path / "d")
    report = inspect_data(root, chart=False)
    o = report["objects"]
    rows = {r["name"]: r for r in o["per_class"]}
    # 4 images, each: a car of 8x8 and one of 8x6 side by side (touching), a person of 8x6.
    assert rows["car"]["objects"] == 8 and rows["person"]["objects"] == 4
    assert rows["car"]["size"] == {"min": 48, "median": 56.0, "max": 64}
    assert o["total"] == 12 and o["touching_pairs"] == 4 and o["images_with_touching"] == 4
    assert o["overlapping_pairs"] is None
    text = format_report(report)
    assert "12 objects in 4 images" in text and "4 pairs of objects of one class share a border" in text


def test_inspect_counts_overlapping_shapes_and_leaves_out_objects_without_ids(tmp_path):
    root = write_coco_instances(tmp_path / "c")
    o = inspect_data(root, chart=False)["objects"]
    assert o["overlapping_pairs"] == 1 and o["touching_pairs"] == 1  # the small cat on the large one
    assert "overlaps:" in format_report(inspect_data(root, chart=False))
    plain, _ = write_instance_folder(tmp_path / "p")
    for p in (plain / "instances").iterdir():
        p.unlink()
    report = inspect_data(plain, chart=False)
    assert "objects" not in report and "objects:" not in format_report(report)
