"""The synthetic instance scenes and `pixelwise demo --task instance|panoptic`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from pixelwise.cli import main
from pixelwise.data.synthetic_instances import INSTANCE_CLASSES, generate_instance_sample, make_instance_dataset
from pixelwise.errors import PixelwiseError
from pixelwise.evaluation import object_lines


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make_instance_dataset(tmp_path_factory.mktemp("inst") / "data", num_images=8, size=64, seed=5)


def _read(root, stem):
    ids_image = Image.open(root / "instances" / f"{stem}.png")
    mask = np.asarray(Image.open(root / "masks" / f"{stem}.png"))
    return mask, np.asarray(ids_image).astype(np.int64), ids_image.mode


def _stems(root):
    return sorted(p.stem for p in (root / "images").glob("*.png"))


def _touching_pairs(mask, ids):
    """(id, id) pairs of same-class objects that share a 4-neighbour border."""
    pairs = set()
    for a, b, ma, mb in (
        (ids[:, :-1], ids[:, 1:], mask[:, :-1], mask[:, 1:]),
        (ids[:-1], ids[1:], mask[:-1], mask[1:]),
    ):
        seam = (a > 0) & (b > 0) & (a != b) & (ma == mb)
        pairs |= {tuple(sorted(p)) for p in zip(a[seam].tolist(), b[seam].tolist())}
    return pairs


def test_layout_and_classes_yaml(scenes):
    meta = yaml.safe_load((scenes / "classes.yaml").read_text())
    assert meta["names"] == INSTANCE_CLASSES and meta["things"] == ["disc", "square"]
    assert len(meta["colors"]) == len(meta["names"])
    train = (scenes / "splits" / "train.txt").read_text().split()
    val = (scenes / "splits" / "val.txt").read_text().split()
    assert len(val) == 2 and sorted(train + val) == _stems(scenes)
    for sub in ("masks", "instances"):
        assert sorted(p.stem for p in (scenes / sub).glob("*.png")) == _stems(scenes)


def test_ids_are_16_bit_and_each_object_has_one_thing_class(scenes):
    things = {INSTANCE_CLASSES.index(n) for n in ("disc", "square")}
    for stem in _stems(scenes):
        mask, ids, mode = _read(scenes, stem)
        assert mode == "I;16" and ids.shape == mask.shape
        present = sorted(set(np.unique(ids).tolist()) - {0})
        assert present == list(range(1, len(present) + 1)), stem
        for k in present:
            classes = set(np.unique(mask[ids == k]).tolist())
            assert len(classes) == 1 and classes <= things, (stem, k, classes)
        # every thing pixel belongs to an object, and stuff pixels to none
        assert np.array_equal(np.isin(mask, list(things)), ids > 0), stem


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(32, 96), touching=st.booleans())
def test_every_scene_keeps_its_invariants(seed, size, touching):
    image, mask, ids = generate_instance_sample(np.random.default_rng(seed), size, touching)
    assert image.shape == (size, size, 3) and mask.shape == ids.shape == (size, size) and ids.dtype == np.uint16
    present = sorted(set(np.unique(ids).tolist()) - {0})
    assert present == list(range(1, len(present) + 1))
    assert np.array_equal(np.isin(mask, [2, 3]), ids > 0)
    for k in present:
        assert len(np.unique(mask[ids == k])) == 1
        assert (ids == k).sum() >= 12  # hidden objects were removed, not left as slivers


def test_same_class_objects_touch_so_components_merge_them(scenes):
    merged = 0
    for stem in _stems(scenes):
        mask, ids, _ = _read(scenes, stem)
        assert _touching_pairs(mask, ids), f"{stem}: no same-class objects share a border"
        for cls in (2, 3):
            objects = len(set(np.unique(ids[mask == cls]).tolist()))
            merged += objects - ndimage.label(mask == cls)[1]
    assert merged >= len(_stems(scenes))


def test_touching_false_keeps_every_object_apart(tmp_path):
    root = make_instance_dataset(tmp_path / "apart", num_images=4, size=64, seed=1, touching=False)
    for stem in _stems(root):
        mask, ids, _ = _read(root, stem)
        assert not _touching_pairs(mask, ids), stem
        assert ndimage.label(ids > 0)[1] == ids.max(), stem


def test_same_arguments_same_bytes_other_seed_other_scenes(tmp_path):
    a = make_instance_dataset(tmp_path / "a", num_images=3, size=48, seed=2)
    b = make_instance_dataset(tmp_path / "b", num_images=3, size=48, seed=2)
    c = make_instance_dataset(tmp_path / "c", num_images=3, size=48, seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "images" / "scene_0000.png").read_bytes() != (c / "images" / "scene_0000.png").read_bytes()


def test_refuses_a_folder_it_did_not_write(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(PixelwiseError, match="already exists and is not an empty folder"):
        make_instance_dataset(taken, num_images=2, size=32)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no half-written sibling left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (make_instance_dataset(empty, num_images=2, size=32) / "classes.yaml").is_file()


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"num_images": 0}, "num_images must be a whole number of at least 1, got 0"),
        ({"num_images": 2.5}, "num_images must be a whole number"),
        ({"size": 16}, "size must be a whole number of at least 32"),
        ({"seed": -1}, "seed must be a whole number from 0"),
        ({"val_fraction": 1.0}, "val_fraction must be a number in [0, 1), got 1.0"),
        ({"num_images": 1}, "a validation split needs num_images >= 2"),
        ({"touching": "yes"}, "touching must be True or False"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, expected):
    with pytest.raises(PixelwiseError) as e:
        make_instance_dataset(tmp_path / "d", **kwargs)
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_demo_task_choices_are_checked(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(tmp_path / "d"), "--task", "detection"])
    assert e.value.code == 2
    assert "--task: invalid choice: 'detection'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("task", ["instance", "panoptic"])
def test_demo_task_end_to_end(task, tmp_path, capsys):
    run = tmp_path / "d"
    argv = ["demo", "--task", task, "--out", str(run), "--images", "5", "--epochs", "1", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"\ntask: {task}\n" in (run / "config.yaml").read_text()
    saved = json.loads((run / "eval-val" / "metrics.json").read_text())
    assert set(saved["instances"]) >= {"AP", "AP50", "AP75"} and "\ninstances: AP " in out
    assert set(saved["panoptic"]) >= {"PQ", "SQ", "RQ"} and "\npanoptic: PQ " in out
    assert all(f"\n{line}\n" in out for line in object_lines(saved))  # as `pixelwise evaluate` prints them
    val = (run / "data" / "splits" / "val.txt").read_text().split()
    assert val and all((run / "predictions" / "overlays" / f"{s}.png").is_file() for s in val)
    for stem in val:
        ids = Image.open(run / "predictions" / "instances" / f"{stem}.png")
        assert ids.mode == "I;16" and ids.size == (128, 128)
        assert isinstance(json.loads((run / "predictions" / "instances" / f"{stem}.json").read_text()), list)
    panoptic = sorted(p.name for p in (run / "predictions" / "panoptic").glob("*"))
    assert panoptic == (sorted([f"{s}.json" for s in val] + [f"{s}.png" for s in val]) if task == "panoptic" else [])
    printed = [line.split()[1] for line in out.splitlines() if line.startswith(("  objects:", "  panoptic:"))]
    assert printed == [str(run / "predictions" / "overlays")] + (
        [str(run / "predictions" / "panoptic")] if panoptic else []
    )
    assert all(Path(p).is_dir() for p in printed)


def test_run_demo_refuses_an_unknown_task_before_any_work(tmp_path):
    from pixelwise.demo import run_demo

    with pytest.raises(PixelwiseError, match="--task 'detection': expected one of semantic, instance, panoptic"):
        run_demo(out=str(tmp_path / "d"), task="detection", progress=False)
    assert list(tmp_path.iterdir()) == []
