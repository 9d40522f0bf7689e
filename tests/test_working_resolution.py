"""Working resolution: the network sees each image with its longer side at most ``max_side`` px;
masks, probabilities and scores stay at the image's own size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from pixelwise.bundle import Bundle, InputSpec
from pixelwise.data.transforms import InstanceIds, WorkingResize, resize_image, train_transform, working_size
from pixelwise.errors import PixelwiseError
from pixelwise.predict.engine import InferenceConfig, predict_image, predict_images, predict_labels, resize_outputs


@pytest.mark.parametrize(
    ("h", "w", "max_side", "expected"),
    [
        (360, 480, 0, (360, 480)),  # 0 = native
        (360, 480, 480, (360, 480)),  # fits exactly
        (360, 480, 1000, (360, 480)),  # never upscaled
        (360, 480, 240, (180, 240)),
        (480, 360, 240, (240, 180)),  # portrait: the longer side is the height
        (1072, 1920, 512, (286, 512)),  # 1072 * 512 / 1920 = 285.87
        (3, 1000, 16, (1, 16)),  # a thin strip keeps at least 1 px
        (100, 100, 16, (16, 16)),
    ],
)
def test_working_size(h, w, max_side, expected):
    assert working_size(h, w, max_side) == expected


# --- The bundle records it: model.json "input": {"max_side": N} ----------------------------------------

FIXTURE = Path(__file__).parent / "fixtures" / "bundle_v1" / "model.json"


def test_a_bundle_without_input_is_native_size_and_max_side_round_trips():
    old = json.loads(FIXTURE.read_text())
    assert "input" not in old
    bundle = Bundle.from_dict(old, "model.json")
    assert bundle.input == InputSpec(max_side=0)
    bundle.input = InputSpec(max_side=256)
    written = bundle.to_dict()
    assert written["input"] == {"max_side": 256}
    assert Bundle.from_dict(json.loads(json.dumps(written)), "model.json").input.max_side == 256


@pytest.mark.parametrize(
    "value",
    [
        [],
        "256",
        256.0,
        True,
        -1,
        1,
        15,
        16385,
        {"max_side": "big"},
        {"max_side": 8},
        {"max_sides": 256},
        {"max_side": None},
    ],
)
def test_a_damaged_input_section_is_one_line_naming_model_json(value):
    meta = json.loads(FIXTURE.read_text())
    meta["input"] = value if isinstance(value, (dict, list)) else {"max_side": value}
    with pytest.raises(PixelwiseError, match=r"model\.json: 'input") as caught:
        Bundle.from_dict(meta, "model.json")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("max_side", [0, 16, 512, 16384])
def test_every_allowed_max_side_loads(max_side):
    meta = json.loads(FIXTURE.read_text())
    meta["input"] = {"max_side": max_side}
    assert Bundle.from_dict(meta, "model.json").input.max_side == max_side


# --- Training transforms: resized to the working size first -------------------------------------------


def _sample(h=48, w=64):
    g = torch.Generator().manual_seed(0)
    image = tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g))
    mask = tv_tensors.Mask(torch.randint(0, 3, (h, w), generator=g))
    ids = InstanceIds(torch.randint(0, 5, (h, w), generator=g))
    return image, mask, ids


def test_working_resize_brings_image_masks_and_ids_to_the_working_size():
    image, mask, ids = _sample()
    img, msk, obj = WorkingResize(32)(image, mask, ids)
    assert img.shape == (3, 24, 32) and img.dtype == torch.uint8
    assert msk.shape == obj.shape == (24, 32) and isinstance(obj, InstanceIds)
    assert set(msk.unique().tolist()) <= {0, 1, 2} and set(obj.unique().tolist()) <= set(range(5))  # nearest
    assert torch.equal(img.as_subclass(torch.Tensor), resize_image(image.as_subclass(torch.Tensor), (24, 32)))
    img, msk = WorkingResize(32, masks=False)(image, mask)  # validation: the mask keeps its size
    assert img.shape == (3, 24, 32) and msk.shape == (48, 64)
    img, msk = WorkingResize(100)(image, mask)  # never upscaled
    assert img.shape == (3, 48, 64) and msk.shape == (48, 64)


def test_the_train_transform_scales_and_crops_at_the_working_size():
    image, mask, ids = _sample()
    tf = train_transform(40, ignore_index=255, scale_range=(1.0, 1.0), hflip=False, color_jitter=0, max_side=32)
    img, msk, obj = tf(image, mask, ids)
    assert img.shape == (3, 40, 40) and img.dtype == torch.float32 and msk.shape == obj.shape == (40, 40)
    # The 24 x 32 working image sits in the padded 40 x 40 crop: the rest is padding.
    assert (msk != 255).sum() == 24 * 32 and int((obj != 0).sum()) <= 24 * 32
    img, msk, obj = train_transform(16, scale_range=(0.5, 2.0), max_side=32)(image, mask, ids)
    assert img.shape == (3, 16, 16) and msk.shape == obj.shape == (16, 16)


# --- The engine: the network sees the working size, the outputs come back at the image's size -----------


class ColourMember:
    """Logits = 10 x the colour channels of what the network is given (class k wins where channel k is
    brightest); records every input size. ``extra``: 3 more channels, centre logit 0, dy = 1, dx = 2."""

    num_classes = 3

    def __init__(self, max_side: int, extra: int = 0):
        self.max_side, self.extra_channels, self.seen = max_side, extra, []

    def logits(self, x01, stochastic=False):
        self.seen.append(tuple(x01.shape[-2:]))
        out = 10 * x01
        if self.extra_channels:
            n, _, h, w = x01.shape
            dense = torch.stack([torch.zeros(n, h, w), torch.ones(n, h, w), torch.full((n, h, w), 2.0)], 1)
            out = torch.cat([out, dense], 1)
        return out


def _blocks(h=60, w=90):
    """Red left third, green middle third, blue right third: labels 0, 1, 2."""
    image = np.zeros((h, w, 3), np.uint8)
    for k in range(3):
        image[:, k * w // 3 : (k + 1) * w // 3, k] = 255
    return image


def _inside(labels, w=90, margin=6):
    """The labels away from the block edges, which must be exact."""
    return [labels[:, k * w // 3 + margin : (k + 1) * w // 3 - margin] for k in range(3)]


@pytest.mark.parametrize(
    "config",
    [
        InferenceConfig(),
        InferenceConfig(hflip=True, scales=(1.0, 0.5)),
        InferenceConfig(mc_dropout=2),
        InferenceConfig(tile="always", tile_size=12, tile_overlap=0.25),
    ],
    ids=["plain", "tta", "mc", "tiled"],
)
def test_the_network_sees_the_working_size_and_the_outputs_have_the_image_size(config):
    member = ColourMember(max_side=30)
    image = _blocks()
    pred = predict_image(image, [member], config)
    assert pred.probs.shape == (3, 60, 90) and np.allclose(pred.probs.sum(0), 1.0, atol=1e-5)
    assert max(h for h, _ in member.seen) <= 20 and max(w for _, w in member.seen) <= 30
    assert (20, 30) in member.seen or config.tile == "always"
    assert pred.stats["working_size"] == [20, 30]
    assert pred.labels.shape == (60, 90)
    for k, part in enumerate(_inside(pred.labels)):
        assert (part == k).all()
    if config.mc_dropout:
        assert pred.variance.shape == (60, 90)


def test_plain_labels_batches_and_probabilities_agree_at_the_image_size():
    member = ColourMember(max_side=30)
    images = [_blocks(), _blocks()[::-1].copy()]
    fast = predict_labels(images, [member])
    batched = predict_images(images, [member])
    one = predict_image(images[0], [member])
    assert all(m.shape == (60, 90) for m in fast) and set(member.seen) == {(20, 30)}
    assert np.array_equal(fast[0], batched[0].labels) and np.array_equal(fast[0], one.labels)
    assert np.array_equal(one.labels, one.probs.argmax(0))
    # Native members are untouched: the network sees the image itself.
    native = ColourMember(max_side=0)
    assert predict_labels(images, [native])[0].shape == (60, 90) and native.seen == [(60, 90)]


@pytest.mark.parametrize(
    "config",
    [InferenceConfig(), InferenceConfig(mc_dropout=2), InferenceConfig(tile="always", tile_size=16)],
    ids=["plain", "mc", "tiled"],
)
def test_dense_offsets_are_scaled_from_working_to_image_pixels(config):
    member = ColourMember(max_side=40, extra=3)
    image = np.zeros((33, 100, 3), np.uint8)  # working size 13 x 40: 33/13 down, 100/40 across
    pred = predict_image(image, [member], config)
    assert pred.dense.shape == (3, 33, 100) and pred.stats["working_size"] == [13, 40]
    assert np.allclose(pred.dense[0], 0.5, atol=1e-5)  # sigmoid(0)
    assert np.allclose(pred.dense[1], 1.0 * 33 / 13, atol=1e-4)
    assert np.allclose(pred.dense[2], 2.0 * 100 / 40, atol=1e-4)


def test_resize_outputs_scales_only_the_offsets():
    out = torch.ones(1, 5, 10, 20)  # 2 classes + centre, dy, dx
    back = resize_outputs(out, (30, 40), num_classes=2)
    assert back.shape == (1, 5, 30, 40)
    assert torch.allclose(back[:, :3], torch.ones(1, 3, 30, 40))
    assert torch.allclose(back[:, 3], torch.full((1, 30, 40), 3.0)) and torch.allclose(
        back[:, 4], torch.full((1, 30, 40), 2.0)
    )
    assert resize_outputs(out, (10, 20), 2) is out


def test_members_with_different_working_resolutions_cannot_be_averaged():
    with pytest.raises(PixelwiseError, match="different working resolutions") as caught:
        predict_image(_blocks(), [ColourMember(30), ColourMember(0)])
    assert "\n" not in str(caught.value) and "--max-side" in str(caught.value)
    with pytest.raises(PixelwiseError, match="different working resolutions"):
        predict_labels([_blocks()], [ColourMember(30), ColourMember(64)])
