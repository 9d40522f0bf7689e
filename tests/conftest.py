"""Shared fixtures: tiny synthetic data sets and one short trained run, made by the tests."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import settings
from PIL import Image

torch.set_num_threads(2)
# Property tests draw new examples on every run here; under CI (CI=true) they draw a fixed set, so
# that a CI run can be repeated exactly.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
# Tests never reach for pretrained weights over the network (--pretrained auto then trains from
# scratch at once); tests of the download path clear this themselves.
os.environ.setdefault("PIXELWISE_OFFLINE", "1")

# A small, fast network for tests: U-Net, resnet18 encoder, narrow decoder.
# Random initial weights: tests stay offline and do not depend on what a weights cache holds.
TINY_MODEL = dict(
    arch="unet", encoder="resnet18", model_kwargs={"decoder_channels": [32, 16, 16, 8, 8]}, pretrained="none"
)


def write_pair(root, stem, image, mask, image_ext=".png"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{stem}{image_ext}")
    Image.fromarray(mask.astype(np.uint8), "L").save(root / "masks" / f"{stem}.png")


def make_simple_dataset(root, n=6, size=(24, 32), num_classes=3, seed=0):
    """Images whose colour follows the mask; classes 0..num_classes-1; no classes.yaml."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        mask = rng.integers(0, num_classes, size=size)
        image = np.stack([mask * 80, 255 - mask * 80, rng.integers(0, 255, size=size)], -1).astype(np.uint8)
        write_pair(root, f"s{i:02d}", image, mask)
    return root


@pytest.fixture
def simple_data(tmp_path):
    return make_simple_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    from pixelwise.data.synthetic import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", num_images=12, size=64, seed=3)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, demo_data):
    """Two short epochs on the tiny demo set; shared by the predict/evaluate/bundle tests."""
    from pixelwise import train

    out = tmp_path_factory.mktemp("runs") / "run"
    train(
        data=str(demo_data),
        out=str(out),
        epochs=2,
        batch_size=4,
        crop_size=64,
        num_workers=0,
        lr=3e-3,
        progress=False,
        **TINY_MODEL,
    )
    return out
