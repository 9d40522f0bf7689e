import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pixelwise.data.synthetic import (
    DEMO_CLASSES,
    DEMO_COLORS,
    generate_sample,
    make_demo_dataset,
)
from pixelwise.errors import PixelwiseError


def _samples(seed: int, n: int, size: int = 128):
    return [generate_sample(np.random.default_rng([seed, i]), size) for i in range(n)]


def test_class_list_and_colours():
    assert DEMO_CLASSES[0] == "background"
    assert len(DEMO_CLASSES) >= 4
    assert len(DEMO_COLORS) == len(DEMO_CLASSES)
    assert len(set(DEMO_COLORS)) == len(DEMO_COLORS)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in DEMO_COLORS)


@pytest.mark.parametrize("size", [64, 256])
def test_shapes_dtypes_and_value_range(size):
    image, mask = generate_sample(np.random.default_rng(3), size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert mask.shape == (size, size) and mask.dtype == np.uint8
    assert mask.max() < len(DEMO_CLASSES)


def test_same_seed_same_sample_and_different_seed_differs():
    a_img, a_mask = generate_sample(np.random.default_rng(7), 128)
    b_img, b_mask = generate_sample(np.random.default_rng(7), 128)
    c_img, c_mask = generate_sample(np.random.default_rng(8), 128)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_mask, c_mask)


def test_every_class_appears_and_objects_are_not_rare():
    masks = np.stack([m for _, m in _samples(0, 40)])
    counts = np.bincount(masks.ravel(), minlength=len(DEMO_CLASSES))
    assert len(counts) == len(DEMO_CLASSES)
    assert (counts > 0).all()
    # Every shape class should cover a real share of the pixels, not a handful.
    assert (counts[1:] / masks.size > 0.01).all()
    # Most images hold more than one object class, so there is context to learn from.
    assert np.mean([len(np.unique(m)) >= 3 for m in masks]) > 0.5


def test_mask_follows_geometry_not_noise():
    # The mask is exact geometry, not noisy: pixels with no 4-neighbour of their own class
    # (a polygon tip, a diagonal gap between two touching shapes) are rare.
    for _, mask in _samples(5, 10):
        padded = np.pad(mask, 1, mode="edge")
        neighbours = [
            padded[1 + dy : 1 + dy + mask.shape[0], 1 + dx : 1 + dx + mask.shape[1]]
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
        ]
        same = sum((n == mask).astype(int) for n in neighbours)
        assert (same == 0).sum() <= mask.size * 1e-3


def test_objects_stand_out_from_background():
    # On average an object's pixels differ clearly in colour from the nearby background.
    diffs = []
    for image, mask in _samples(11, 30):
        img = image.astype(np.float64)
        obj, bg = mask > 0, mask == 0
        if obj.any() and bg.any():
            diffs.append(np.linalg.norm(img[obj].mean(0) - img[bg].mean(0)))
    assert np.mean(diffs) > 40


def _pixels(samples):
    """All pixels (N, 3) float and their labels (N,)."""
    return (
        np.concatenate([image.reshape(-1, 3).astype(np.float64) for image, _ in samples]),
        np.concatenate([mask.reshape(-1) for _, mask in samples]),
    )


def _colour_bins(x):
    q = (x // 32).astype(np.int64)  # 8 levels per channel
    return q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2]


def test_colour_alone_does_not_find_the_shapes():
    # The best per-pixel colour rule for "shape or background" (a colour histogram fitted on
    # other images) finds the shapes poorly: backgrounds take every colour, the shapes' included.
    train_x, train_y = _pixels(_samples(100, 60))
    test_x, test_y = _pixels(_samples(200, 60))
    shape_count = np.zeros(512)
    total = np.zeros(512)
    np.add.at(shape_count, _colour_bins(train_x), (train_y > 0).astype(np.float64))
    np.add.at(total, _colour_bins(train_x), 1.0)
    predicted = (shape_count / total.clip(min=1))[_colour_bins(test_x)] > 0.5
    truth = test_y > 0
    iou = (predicted & truth).sum() / (predicted | truth).sum()
    assert iou < 0.5, iou


def test_each_shape_class_paints_with_its_own_hues():
    from PIL import Image

    hues = {}
    for image, mask in _samples(300, 40):
        hsv = np.asarray(Image.fromarray(image).convert("HSV"), dtype=np.float64)
        for c in range(1, len(DEMO_CLASSES)):
            if (mask == c).any():
                hues.setdefault(c, []).append(hsv[..., 0][mask == c])
    # Circular mean hue per class, in degrees: four distinct families.
    means = []
    for c in sorted(hues):
        a = np.concatenate(hues[c]) / 255.0 * 2 * np.pi
        means.append(np.degrees(np.arctan2(np.sin(a).mean(), np.cos(a).mean())) % 360)
    gaps = [min(abs(a - b), 360 - abs(a - b)) for i, a in enumerate(means) for b in means[i + 1 :]]
    assert len(means) == len(DEMO_CLASSES) - 1 and min(gaps) > 30, means


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_make_demo_dataset_layout(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", num_images=12, size=64, seed=1, val_fraction=0.25)
    assert root == tmp_path / "demo"
    images = sorted(p.stem for p in (root / "images").glob("*.png"))
    masks = sorted(p.stem for p in (root / "masks").glob("*.png"))
    assert len(images) == 12
    assert images == masks
    assert images[0] == "demo_0000"

    train = (root / "splits" / "train.txt").read_text().split()
    val = (root / "splits" / "val.txt").read_text().split()
    assert len(val) == 3 and len(train) == 9
    assert not set(train) & set(val)
    assert sorted(train + val) == images

    meta = yaml.safe_load((root / "classes.yaml").read_text())
    assert meta["names"] == DEMO_CLASSES
    assert [tuple(c) for c in meta["colors"]] == DEMO_COLORS
    assert meta["ignore_index"] == 255

    with Image.open(root / "images" / "demo_0003.png") as im:
        assert im.mode == "RGB" and im.size == (64, 64)
    with Image.open(root / "masks" / "demo_0003.png") as m:
        assert m.mode == "L" and m.size == (64, 64)
        assert np.asarray(m).max() < len(DEMO_CLASSES)

    # Nothing but the data set is left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_make_demo_dataset_is_deterministic(tmp_path):
    a = make_demo_dataset(tmp_path / "a", num_images=6, size=48, seed=4)
    b = make_demo_dataset(tmp_path / "b", num_images=6, size=48, seed=4)
    c = make_demo_dataset(tmp_path / "c", num_images=6, size=48, seed=5)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_make_demo_dataset_matches_generate_sample(tmp_path):
    root = make_demo_dataset(tmp_path / "d", num_images=3, size=64, seed=9)
    image, mask = generate_sample(np.random.default_rng([9, 2]), 64)
    np.testing.assert_array_equal(np.asarray(Image.open(root / "images" / "demo_0002.png")), image)
    np.testing.assert_array_equal(np.asarray(Image.open(root / "masks" / "demo_0002.png")), mask)


def test_make_demo_dataset_refuses_non_empty_root(tmp_path):
    root = tmp_path / "busy"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    with pytest.raises(PixelwiseError):
        make_demo_dataset(root, num_images=2, size=32)
    assert [p.name for p in root.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["busy"]


def test_make_demo_dataset_accepts_empty_root(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    make_demo_dataset(root, num_images=2, size=32)
    assert (root / "classes.yaml").is_file()


def test_make_demo_dataset_cleans_up_after_failure(tmp_path, monkeypatch):
    import pixelwise.data.synthetic as synthetic

    calls = {"n": 0}
    real = synthetic.generate_sample

    def failing(rng, size=256):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(rng, size)

    monkeypatch.setattr(synthetic, "generate_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        make_demo_dataset(tmp_path / "demo", num_images=5, size=32)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_images=0),
        dict(val_fraction=1.0),
        dict(val_fraction=-0.1),
        dict(size=16),
        dict(num_images=1, val_fraction=0.2),
        dict(seed=-1),
    ],
)
def test_make_demo_dataset_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(PixelwiseError):
        make_demo_dataset(tmp_path / "x", **{"size": 32, **kwargs})
    assert not (tmp_path / "x").exists()


def test_no_validation_split_when_fraction_is_zero(tmp_path):
    root = make_demo_dataset(tmp_path / "d", num_images=3, size=32, val_fraction=0.0)
    assert (root / "splits" / "val.txt").read_text() == ""
    assert len((root / "splits" / "train.txt").read_text().split()) == 3
