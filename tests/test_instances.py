"""Objects from dense maps: targets, grouping, component splitting, panoptic merge, file formats."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pixelwise.errors import PixelwiseError
from pixelwise.instances import (
    EXTRA_CHANNELS,
    OUTLINE_SHADE,
    GroupingConfig,
    InstanceMap,
    Segment,
    centre_targets,
    dense_maps,
    ground_truth_instances,
    ground_truth_panoptic,
    group_by_centres,
    instance_colors,
    instance_overlay,
    instances_json,
    merge_panoptic,
    object_outlines,
    panoptic_ids,
    panoptic_json,
    panoptic_png,
    split_components,
)


def disc(size, cy, cx, r):
    y, x = np.mgrid[: size[0], : size[1]]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def touching_discs(size=(64, 64), r=10):
    """Two discs of radius r side by side, their borders 4-adjacent: (ids (H, W) int64, disc a, disc b)."""
    a = disc(size, 32, 20, r)
    b = disc(size, 32, 20 + 2 * r + 1, r) & ~a
    ids = np.zeros(size, np.int64)
    ids[a], ids[b] = 1, 2
    assert (a[:, :-1] & b[:, 1:]).any(), "the discs must touch"
    return ids, a, b


def perfect_maps(ids):
    """(3, H, W) dense maps as a perfect network would give them for ``ids``."""
    heat, offsets, _ = centre_targets(torch.from_numpy(ids)[None])
    return torch.cat([heat[0], offsets[0]])


def one_hot_probs(labels, num_classes):
    return np.eye(num_classes, dtype=np.float32)[labels].transpose(2, 0, 1).copy()


# --- centre_targets ------------------------------------------------------------------------


def test_centre_targets_one_square():
    ids = torch.zeros(1, 64, 64, dtype=torch.int64)
    ids[0, 10:21, 10:21] = 4  # 11 x 11: centre of mass exactly on pixel (15, 15)
    heat, offsets, on = centre_targets(ids, sigma=8.0)
    assert heat.shape == (1, 1, 64, 64) and offsets.shape == (1, 2, 64, 64) and on.shape == (1, 1, 64, 64)
    assert heat.dtype == torch.float32 and offsets.dtype == torch.float32 and on.dtype == torch.bool
    assert heat.max().item() == 1.0 and heat[0, 0, 15, 15].item() == 1.0
    assert heat[0, 0, 15, 23].item() == pytest.approx(math.exp(-0.5), rel=1e-6)  # one sigma away
    assert heat[0, 0, 15 + 8, 15 + 8].item() == pytest.approx(math.exp(-1.0), rel=1e-6)
    assert offsets[0, :, 10, 10].tolist() == [5.0, 5.0]  # (dy, dx) from the top-left corner
    assert offsets[0, :, 10, 20].tolist() == [5.0, -5.0]
    assert offsets[0, :, 20, 10].tolist() == [-5.0, 5.0]
    assert offsets[0, :, 20, 20].tolist() == [-5.0, -5.0]
    assert offsets[0, :, 15, 15].tolist() == [0.0, 0.0]
    assert torch.equal(on[0, 0], ids[0] > 0)
    assert offsets[0, :, ~on[0, 0]].abs().max().item() == 0.0  # no offset off the object


def test_centre_targets_sub_pixel_centre():
    ids = torch.zeros(1, 32, 32, dtype=torch.int64)
    ids[0, 4:14, 4:14] = 1  # 10 x 10: centre (8.5, 8.5), between four pixels
    heat, offsets, _ = centre_targets(ids, sigma=4.0)
    assert offsets[0, :, 4, 4].tolist() == [4.5, 4.5]
    peak = math.exp(-(0.25 + 0.25) / (2 * 16))
    assert heat[0, 0, 8:10, 8:10].flatten().tolist() == pytest.approx([peak] * 4)
    assert heat.max().item() == pytest.approx(peak)


def test_centre_targets_two_objects():
    ids = torch.zeros(1, 64, 64, dtype=torch.int64)
    ids[0, 5:10, 5:10] = 26001  # Cityscapes-style id, centre (7, 7)
    ids[0, 40:51, 30:41] = 3  # centre (45, 35)
    heat, offsets, on = centre_targets(ids, sigma=6.0)
    assert heat[0, 0, 7, 7].item() == 1.0 and heat[0, 0, 45, 35].item() == 1.0
    assert offsets[0, :, 5, 9].tolist() == [2.0, -2.0]
    assert offsets[0, :, 50, 30].tolist() == [-5.0, 5.0]
    # Between the objects the heat is the larger of the two Gaussians.
    y, x = 26, 20
    expected = max(math.exp(-((y - 7) ** 2 + (x - 7) ** 2) / 72), math.exp(-((y - 45) ** 2 + (x - 35) ** 2) / 72))
    assert heat[0, 0, y, x].item() == pytest.approx(expected, rel=1e-5)
    assert int(on.sum()) == 25 + 121


def test_centre_targets_large_ids_match_small_ones():
    small = torch.zeros(2, 48, 40, dtype=torch.int64)
    small[0, 3:20, 5:9] = 1
    small[0, 30:44, 10:38] = 2
    small[1, 0:10, 0:10] = 1
    large = small.clone()
    large[small == 1] = 2**40  # far beyond any lookup table: numbered by sorting
    large[small == 2] = 7
    for got, want in zip(centre_targets(large), centre_targets(small)):
        assert torch.equal(got, want)


def test_centre_targets_in_chunks_match_one_pass(monkeypatch):
    import pixelwise.instances as instances

    ids = torch.zeros(2, 60, 60, dtype=torch.int64)
    for i in range(1, 25):
        ids[i % 2, (i * 7) % 50 : (i * 7) % 50 + 8, (i * 13) % 50 : (i * 13) % 50 + 8] = i
    whole = centre_targets(ids, sigma=12.0)
    monkeypatch.setattr(instances, "GROUPING_CHUNK", 20_000)  # a few objects per chunk
    for got, want in zip(centre_targets(ids, sigma=12.0), whole):
        assert torch.equal(got, want)


def test_centre_targets_empty_image():
    heat, offsets, on = centre_targets(torch.zeros(2, 16, 24, dtype=torch.int64))
    assert heat.shape == (2, 1, 16, 24) and not heat.any() and not offsets.any() and not on.any()


def test_centre_targets_batch_keeps_images_apart():
    ids = torch.zeros(3, 40, 40, dtype=torch.int64)
    ids[0, 0:9, 0:9] = 1  # the same id in two images: two different objects
    ids[1, 30:39, 30:39] = 1
    ids[2, 10:15, 20:35] = 5
    heat, offsets, on = centre_targets(ids, sigma=3.0)
    for i in range(3):
        h1, o1, n1 = centre_targets(ids[i : i + 1], sigma=3.0)
        assert (
            torch.equal(heat[i : i + 1], h1) and torch.equal(offsets[i : i + 1], o1) and torch.equal(on[i : i + 1], n1)
        )
    assert heat[0, 0, 4, 4].item() == 1.0 and heat[1, 0, 34, 34].item() == 1.0
    assert heat[0, 0, 34, 34].item() < 1e-6  # image 0 has no object there


def test_centre_targets_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        centre_targets(torch.zeros(16, 16, dtype=torch.int64))
    with pytest.raises(PixelwiseError, match="sigma"):
        centre_targets(torch.zeros(1, 16, 16, dtype=torch.int64), sigma=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_centre_targets_cuda_matches_cpu():
    ids, _, _ = touching_discs()
    batch = torch.from_numpy(np.stack([ids, ids[::-1].copy() * 3]))
    torch.use_deterministic_algorithms(True)  # training may ask for it: nothing here may refuse
    try:
        on_gpu = centre_targets(batch.cuda())
        labels = (batch[0] > 0).long()
        dense = torch.cat([on_gpu[0][0], on_gpu[1][0]])
        probs = torch.stack([1 - labels.float(), labels.float()])
        gpu_objects = group_by_centres(labels.cuda(), probs.cuda(), dense, [1])
    finally:
        torch.use_deterministic_algorithms(False)
    for got, want in zip(on_gpu, centre_targets(batch)):
        assert got.is_cuda
        torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=1e-6)
    cpu_objects = group_by_centres(labels, probs, dense.cpu(), [1])
    assert np.array_equal(gpu_objects.ids, cpu_objects.ids) and len(gpu_objects.segments) == 2


def test_dense_maps_sigmoid_on_centre_only():
    extra = torch.tensor([0.0, 2.5, -1.5]).view(1, EXTRA_CHANNELS, 1, 1).repeat(2, 1, 3, 4)
    out = dense_maps(extra)
    assert out.shape == (2, 3, 3, 4)
    assert torch.allclose(out[:, 0], torch.full((2, 3, 4), 0.5))
    assert torch.equal(out[:, 1:], extra[:, 1:])
    with pytest.raises(ValueError):
        dense_maps(torch.zeros(1, 2, 4, 4))


# --- group_by_centres ----------------------------------------------------------------------


def test_group_by_centres_two_touching_discs_of_two_classes():
    ids, a, b = touching_discs()
    labels = np.where(a, 1, np.where(b, 2, 0)).astype(np.int64)
    probs = one_hot_probs(labels, 3) * 0.9 + 0.1 / 3
    inst = group_by_centres(labels, probs, perfect_maps(ids), things=[1, 2])
    assert len(inst.segments) == 2
    by_class = {s.category: s for s in inst.segments}
    assert set(by_class) == {1, 2}
    assert np.array_equal(inst.ids == by_class[1].id, a)
    assert np.array_equal(inst.ids == by_class[2].id, b)
    assert by_class[1].area == a.sum() and by_class[1].bbox == (10, 22, 21, 21)
    assert by_class[1].score == pytest.approx(0.9 + 0.1 / 3, rel=1e-5)  # centre value 1 x mean prob
    assert inst.categories() == {s.id: s.category for s in inst.segments}
    assert inst.ids.dtype == np.int32


def test_group_by_centres_one_class_touching_discs_and_torch_input():
    ids, a, b = touching_discs()
    labels = torch.from_numpy((ids > 0).astype(np.int64))
    inst = group_by_centres(labels, None, perfect_maps(ids), things=[1])
    assert sorted(s.area for s in inst.segments) == sorted([a.sum(), b.sum()])
    assert np.array_equal(inst.ids == inst.ids[32, 20], a) and np.array_equal(inst.ids == inst.ids[32, 41], b)


def test_group_by_centres_even_sized_object_gets_one_centre():
    ids = np.zeros((40, 40), np.int64)
    ids[10:20, 10:20] = 1  # centre between four pixels: four equal heat values
    inst = group_by_centres((ids > 0).astype(np.int64), None, perfect_maps(ids), things=[1])
    assert len(inst.segments) == 1 and inst.segments[0].area == 100


def test_group_by_centres_orders_by_score_and_drops_small_and_stuff():
    ids = np.zeros((64, 64), np.int64)
    ids[5:16, 5:16] = 1
    ids[40:51, 40:51] = 2
    ids[30:33, 5:8] = 3  # 9 pixels: below min_area
    labels = (ids > 0).astype(np.int64)
    labels[0:3, :] = 2  # a stuff class, never grouped
    probs = one_hot_probs(labels, 3)
    probs[:, 5:16, 5:16] = np.array([0.4, 0.6, 0.0])[:, None, None]  # the first square is less sure
    inst = group_by_centres(labels, probs, perfect_maps(ids), things=[1], config=GroupingConfig(min_area=10))
    assert [s.id for s in inst.segments] == [1, 2]
    assert inst.ids[45, 45] == 1 and inst.ids[10, 10] == 2  # the surer square comes first
    assert inst.scores()[2] == pytest.approx(0.6, rel=1e-5)
    assert inst.ids[31, 6] == 0 and not inst.ids[0:3].any()


def test_group_by_centres_without_centres_gives_no_objects():
    labels = np.ones((16, 16), np.int64)
    dense = np.zeros((3, 16, 16), np.float32)
    dense[0] = 0.05  # below the default threshold 0.1
    inst = group_by_centres(labels, None, dense, things=[1])
    assert inst.segments == [] and not inst.ids.any() and inst.ids.shape == (16, 16)


def test_group_by_centres_is_deterministic():
    ids, a, b = touching_discs()
    labels = (ids > 0).astype(np.int64)
    dense = perfect_maps(ids)
    first = group_by_centres(labels, None, dense, [1])
    second = group_by_centres(labels, None, dense, [1])
    assert np.array_equal(first.ids, second.ids) and first.segments == second.segments


def test_group_by_centres_read_only_arrays_and_bad_probs(recwarn):
    ids, a, b = touching_discs()
    labels = (ids > 0).astype(np.int64)
    dense = perfect_maps(ids).numpy()
    labels.flags.writeable = False  # as an image decoded by PIL arrives
    dense.flags.writeable = False
    inst = group_by_centres(labels, None, dense, [1])
    assert len(inst.segments) == 2 and not [w for w in recwarn if issubclass(w.category, UserWarning)]
    with pytest.raises(ValueError, match="probabilities"):
        group_by_centres(labels, np.ones((1, 64, 64), np.float32), dense, [1])


# --- split_components ----------------------------------------------------------------------


def test_split_components_separates_two_touching_discs():
    ids, a, b = touching_discs()
    labels = (ids > 0).astype(np.int64)
    inst = split_components(labels, one_hot_probs(labels, 2), things=[1])
    assert len(inst.segments) == 2
    for true in (a, b):
        found = inst.ids == np.bincount(inst.ids[true]).argmax()
        iou = (found & true).sum() / (found | true).sum()
        assert iou > 0.95
    assert all(s.score == pytest.approx(1.0) and s.category == 1 for s in inst.segments)


def test_split_components_keeps_a_lone_disc_whole():
    labels = disc((64, 64), 30, 33, 14).astype(np.int64)
    inst = split_components(labels, None, things=[1])
    assert len(inst.segments) == 1 and np.array_equal(inst.ids > 0, labels > 0)


@pytest.mark.parametrize("shape", ["rectangle", "ellipse", "thin bar"])
def test_split_components_does_not_cut_elongated_shapes(shape):
    labels = np.zeros((64, 96), np.int64)
    if shape == "rectangle":
        labels[20:30, 3:93] = 1
    elif shape == "ellipse":
        y, x = np.mgrid[:64, :96]
        labels[((y - 32) / 9) ** 2 + ((x - 48) / 40) ** 2 <= 1] = 1
    else:
        labels[30:33, 2:90] = 1
    inst = split_components(labels, None, things=[1])
    assert len(inst.segments) == 1 and inst.segments[0].area == labels.sum()


def ragged(mask, seed):
    """``mask`` with a ragged border: border pixels removed and outside neighbours added at random."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    border = mask & ~ndimage.binary_erosion(mask)
    outside = ndimage.binary_dilation(mask) & ~mask
    return (mask & ~(border & (rng.random(mask.shape) < 0.4))) | (outside & (rng.random(mask.shape) < 0.3))


@pytest.mark.parametrize("seed", range(6))
def test_split_components_does_not_cut_ragged_bars(seed):
    from scipy import ndimage

    bar = np.zeros((80, 80), bool)
    bar[36 : 36 + 5 + 3 * seed, 4:76] = True
    bar = ndimage.rotate(bar.astype(float), 25 * seed, reshape=False, order=0) > 0.5
    labels = ragged(bar, seed)
    labels = (ndimage.label(labels)[0] == 1).astype(np.int64)  # the bar, should a corner pixel part
    inst = split_components(labels, None, things=[1], config=GroupingConfig(min_area=1))
    assert len(inst.segments) == 1


@pytest.mark.parametrize("distance, objects", [(1.4, 2), (1.15, 2), (0.6, 1)])
def test_split_components_overlapping_discs(distance, objects):
    """Two discs of radius 12 whose centres are ``distance`` radii apart: a clear neck splits them."""
    labels = (disc((64, 80), 32, 25, 12) | disc((64, 80), 32, 25 + distance * 12, 12)).astype(np.int64)
    assert len(split_components(labels, None, things=[1]).segments) == objects


def test_split_components_small_disc_touching_a_large_one():
    big, small = disc((80, 80), 40, 30, 20), disc((80, 80), 40, 56, 6)
    labels = (big | small).astype(np.int64)
    inst = split_components(labels, None, things=[1])
    assert len(inst.segments) == 2
    assert sorted(s.area for s in inst.segments)[0] == pytest.approx((small & ~big).sum(), abs=6)


def test_split_components_classes_and_small_pieces():
    labels = np.zeros((48, 48), np.int64)
    labels[5:20, 5:20] = 1
    labels[5:20, 20:35] = 2  # touches the first square but is another class
    labels[40:43, 40:43] = 1  # 9 pixels, below min_area
    labels[30:45, 5:20] = 3  # stuff
    inst = split_components(labels, None, things=[1, 2])
    assert sorted(s.category for s in inst.segments) == [1, 2]
    assert sorted(s.area for s in inst.segments) == [225, 225]
    assert not inst.ids[40:43, 40:43].any() and not inst.ids[30:45, 5:20].any()


# --- merge_panoptic and ground truth -------------------------------------------------------


def test_merge_panoptic_overlap_by_score_small_stuff_and_void():
    labels = np.zeros((32, 32), np.int64)  # class 0 stuff (large), 3 stuff (small), 1 thing, 255 ignore
    labels[0:10, 0:10] = 1
    labels[20:30, 20:30] = 1
    labels[12:16, 0:4] = 1  # thing pixels that no object covers
    labels[28:32, 0:3] = 3  # 12 pixels of stuff
    labels[31, 31] = 255
    ids = np.zeros((32, 32), np.int32)
    ids[0:10, 0:10] = 5
    ids[20:30, 20:30] = 6
    segs = [Segment(5, 1, 0.9, 100), Segment(6, 1, 0.3, 300)]  # object 6 lost 2/3 of its pixels
    inst = InstanceMap(ids, segs)
    pan = merge_panoptic(labels, inst, things=[1], config=GroupingConfig(min_stuff_area=20, overlap=0.5))
    assert [(s.category, s.isthing, s.area) for s in pan.segments] == [
        (1, True, 100),
        (0, False, 1024 - 100 - 100 - 16 - 12 - 1),
    ]
    assert pan.ids[5, 5] == 1 and pan.ids[0, 20] == 2
    assert pan.ids[25, 25] == 0  # dropped object: thing pixels, void
    assert pan.ids[13, 1] == 0 and pan.ids[30, 1] == 0 and pan.ids[31, 31] == 0
    assert pan.segments[0].bbox == (0, 0, 10, 10) and pan.categories() == {1: 1, 2: 0}
    kept = merge_panoptic(labels, inst, things=[1], config=GroupingConfig(min_stuff_area=0, overlap=0.3))
    assert [s.category for s in kept.segments] == [1, 1, 0, 3]
    assert kept.ids[25, 25] == 2 and kept.ids[30, 1] == 4


def test_merge_panoptic_orders_things_by_score():
    labels = np.ones((8, 8), np.int64)
    ids = np.zeros((8, 8), np.int32)
    ids[:, :4], ids[:, 4:] = 1, 2
    pan = merge_panoptic(labels, InstanceMap(ids, [Segment(1, 1, 0.2, 32), Segment(2, 1, 0.8, 32)]), things=[1])
    assert pan.ids[0, 7] == 1 and pan.ids[0, 0] == 2 and [s.score for s in pan.segments] == [0.8, 0.2]


def test_ground_truth_instances_and_panoptic():
    mask = np.zeros((20, 20), np.int64)
    mask[0:5, 0:5] = 1
    mask[0:5, 5:7] = 2  # object 9 spans two thing classes: majority class 1
    mask[10:15, 10:15] = 1  # thing pixels without an id
    mask[18:20, :] = 255
    ids = np.zeros((20, 20), np.int64)
    ids[0:5, 0:7] = 9
    ids[16, 0:4] = 4  # an id on background stuff: not an object
    inst = ground_truth_instances(mask, ids, things=[1, 2])
    assert inst.categories() == {9: 1} and inst.segments[0].area == 35 and inst.segments[0].bbox == (0, 0, 7, 5)
    assert not inst.ids[16].any()
    pan, void = ground_truth_panoptic(mask, ids, things=[1, 2])
    assert [(s.category, s.isthing) for s in pan.segments] == [(1, True), (0, False)]
    assert void[10:15, 10:15].all() and void[18:20].all() and not void[0:5, 0:7].any() and not void[16].any()
    assert void.sum() == 25 + 40 and (pan.ids[void] == 0).all()


# --- files ---------------------------------------------------------------------------------


def test_panoptic_png_and_json_round_trip():
    ids = np.zeros((6, 7), np.int32)
    ids[0, :3] = 1
    ids[1, :] = 300  # needs the G channel
    ids[2, 2] = 70000  # needs the B channel
    segs = [
        Segment(1, 2, 0.5, 3, (0, 0, 3, 1)),
        Segment(300, 0, 1.0, 7, (0, 1, 7, 1), False),
        Segment(70000, 2, 0.7, 1),
    ]
    from pixelwise.instances import PanopticMap

    pan = PanopticMap(ids, segs)
    rgb = panoptic_png(pan)
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 7, 3)
    assert rgb[1, 0].tolist() == [300 % 256, 1, 0] and rgb[2, 2].tolist() == [70000 % 256, (70000 // 256) % 256, 1]
    assert np.array_equal(panoptic_ids(rgb), ids)
    record = json.loads(json.dumps(panoptic_json(pan, "a.png", ["road", "sky", "car"])))
    assert record["file_name"] == "a.png"
    info = record["segments_info"]
    assert [s["id"] for s in info] == [1, 300, 70000]
    assert info[0] == {
        "id": 1,
        "category_id": 2,
        "iscrowd": 0,
        "area": 3,
        "bbox": [0, 0, 3, 1],
        "isthing": 1,
        "score": 0.5,
        "category_name": "car",
    }
    assert info[1]["isthing"] == 0 and info[1]["category_name"] == "road"
    assert set(np.unique(panoptic_ids(rgb))) == {0} | {s["id"] for s in info}


def test_instances_json_rle_decodes_to_the_mask():
    from pycocotools import mask as mask_utils

    ids, a, b = touching_discs(size=(40, 70), r=8)
    ids = ids.astype(np.int32)
    inst = ground_truth_instances(np.where(ids > 0, 1, 0), ids, things=[1])
    records = json.loads(json.dumps(instances_json(inst, ["background", "cell"])))
    assert [r["id"] for r in records] == [1, 2]
    for record, true in zip(records, (a, b)):
        assert record["class"] == 1 and record["class_name"] == "cell" and record["area"] == true.sum()
        assert isinstance(record["rle"]["counts"], str) and record["rle"]["size"] == [40, 70]
        rle = {"size": record["rle"]["size"], "counts": record["rle"]["counts"].encode("ascii")}
        assert np.array_equal(mask_utils.decode(rle).astype(bool), true)
        x, y, w, h = record["box"]
        assert true[y : y + h, x : x + w].sum() == true.sum() and true[y, :].any() and true[:, x].any()


# --- GroupingConfig ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("centre_threshold", 1.5),
        ("centre_threshold", -0.1),
        ("nms_kernel", 4),
        ("nms_kernel", 0),
        ("nms_kernel", 3.0),
        ("top_k", 0),
        ("top_k", True),
        ("min_area", -1),
        ("min_stuff_area", -5),
        ("overlap", 1.01),
        ("overlap", "half"),
    ],
)
def test_grouping_config_rejects_bad_values(field, value):
    with pytest.raises(PixelwiseError) as info:
        GroupingConfig(**{field: value})
    message = str(info.value)
    assert message.startswith(field) and "\n" not in message and repr(value) in message


def test_grouping_config_defaults_are_valid():
    config = GroupingConfig(centre_threshold=0.0, nms_kernel=1, min_area=0, overlap=1.0)
    assert config.top_k == 200 and GroupingConfig().nms_kernel == 7


# --- pictures ------------------------------------------------------------------------------


def test_instance_colors_distinct_and_deterministic():
    colours = instance_colors(50)
    assert colours.shape == (50, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours.tolist()}) == 50
    assert np.array_equal(colours, instance_colors(50)) and np.array_equal(instance_colors(5), colours[:5])
    assert instance_colors(0).shape == (0, 3)


def test_instance_overlay_colours_outlines_and_background():
    ids, a, b = touching_discs()
    inst = InstanceMap(ids.astype(np.int32), [Segment(1, 1), Segment(2, 1)])
    image = np.full((64, 64, 3), 100, np.uint8)
    out = instance_overlay(image, inst, alpha=0.5)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[ids == 0], image[ids == 0])  # background is the image
    colours = instance_colors(2).astype(int)
    assert out[32, 20].tolist() == np.round((100 + colours[0]) / 2).astype(int).tolist()  # blended inside
    edge = object_outlines(ids)
    assert edge[32, 30] and edge[32, 31]  # both sides of the border between the two discs
    shade = np.round(colours * OUTLINE_SHADE).astype(int)  # opaque: no trace of the image
    assert out[32, 30].tolist() == shade[0].tolist() and out[32, 31].tolist() == shade[1].tolist()
    assert out[22, 20].tolist() == shade[0].tolist()  # top of disc a, next to background
    assert instance_overlay(np.zeros_like(image), inst)[22, 20].tolist() == shade[0].tolist()
    assert not edge[32, 20] and not edge[ids == 0].any()
    gray = instance_overlay(image[:, :, 0], inst)
    assert np.array_equal(gray, out)
    with pytest.raises(PixelwiseError, match="alpha"):
        instance_overlay(image, inst, alpha=2.0)
