"""Working resolution: the network sees each image with its longer side at most ``max_side`` px;
masks, probabilities and scores stay at the image's own size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from conftest import TINY_MODEL, make_simple_dataset
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


def test_a_working_resolution_is_written_as_schema_3_so_older_readers_refuse_it():
    bundle = Bundle.from_dict(json.loads(FIXTURE.read_text()), "model.json")
    assert bundle.to_dict()["schema_version"] == 2  # native size: readable by every pixelwise since schema 2
    bundle.input = InputSpec(max_side=512)
    written = bundle.to_dict()
    assert written["schema_version"] == 3
    assert Bundle.from_dict(written, "model.json").input.max_side == 512


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


# --- End to end: train with --max-side, then predict, evaluate and export at the image's size -----------

H, W, MAX_SIDE = 48, 64, 32  # working size 24 x 32


@pytest.fixture(scope="module")
def working_run(tmp_path_factory):
    """A run trained with max_side 32 on 48 x 64 images: stopped in its second validation, then resumed."""
    import pixelwise.training.trainer as trainer
    from pixelwise import train

    root = tmp_path_factory.mktemp("working")
    data = make_simple_dataset(root / "data", n=8, size=(H, W))
    common = dict(data=str(data), out=str(root / "run"), epochs=2, batch_size=2, crop_size=16, num_workers=0)
    # On the CPU, as the evaluate it is compared with (a GPU's rounding differs from the CPU's).
    common.update(val_fraction=0.25, max_side=MAX_SIDE, progress=False, device="cpu", **TINY_MODEL)
    real, calls = trainer.run_validation, []

    def interrupt_on_second(*a, **k):
        calls.append(k.get("max_side"))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    trainer.run_validation = interrupt_on_second
    try:
        with pytest.raises(KeyboardInterrupt):
            train(**common)
    finally:
        trainer.run_validation = real
    assert calls == [MAX_SIDE, MAX_SIDE]
    train(out=str(root / "run"), resume=True, progress=False)
    return root / "run", data


def test_the_bundle_records_the_working_resolution_and_resume_keeps_it(working_run):
    run, _ = working_run
    meta = json.loads((run / "model.json").read_text())
    assert meta["input"] == {"max_side": MAX_SIDE} and meta["training"]["config"]["max_side"] == MAX_SIDE
    assert meta["training"]["epoch"] == 2 or meta["training"]["best_epoch"] in (1, 2)


def test_predictions_come_back_at_the_image_size_on_both_backends(working_run):
    from pixelwise.predict import load_predictor

    run, data = working_run
    image = np.asarray(Image.open(sorted((data / "images").iterdir())[0]).convert("RGB"))
    results = {}
    for backend in ("torch", "onnxruntime"):
        predictor = load_predictor(run, device="cpu", backend=backend)
        assert predictor.members()[0].max_side == MAX_SIDE
        full = predictor.predict_full(image)
        assert full.probs.shape == (3, H, W) and full.stats["working_size"] == [24, 32]
        results[backend] = predictor.predict(image)
        assert results[backend].shape == (H, W)
        assert [m.shape for m in predictor.predict_batch([image, image[:40, :50].copy()])] == [(H, W), (40, 50)]
        assert predictor.describe()["members"][0]["max_side"] == MAX_SIDE
        assert f"max_side={MAX_SIDE}" in repr(predictor)
    assert (results["torch"] == results["onnxruntime"]).mean() > 0.99


def test_validation_in_training_scores_what_evaluate_scores(working_run, tmp_path):
    import pixelwise

    run, data = working_run
    val = json.loads((run / "model.json").read_text())["metrics"]["val"]
    metrics = pixelwise.evaluate(
        run, data, split="val", out=tmp_path / "eval", device="cpu", backend="torch", progress=False
    )
    assert metrics["num_pixels"] == val["num_pixels"] == 2 * H * W  # scored at the masks' own size
    for mine, theirs in zip(val["per_class"], metrics["per_class"]):
        assert (mine["gt_pixels"], mine["pred_pixels"], mine["iou"]) == (
            theirs["gt_pixels"],
            theirs["pred_pixels"],
            theirs["iou"],
        )
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["members"][0]["max_side"] == MAX_SIDE


def test_predict_files_writes_masks_at_the_image_size_and_records_max_side(working_run, tmp_path):
    from pixelwise.predict import load_predictor
    from pixelwise.predict.batch import predict_files

    run, data = working_run
    inputs = sorted((data / "images").iterdir())[:2]
    predict_files(load_predictor(run, device="cpu", backend="torch"), inputs, out=tmp_path / "out", progress=False)
    for path in inputs:
        assert Image.open(tmp_path / "out" / "masks" / f"{path.stem}.png").size == (W, H)
    assert json.loads((tmp_path / "out" / "predict.json").read_text())["max_side"] == MAX_SIDE


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_says_inputs_are_resized_and_checks_the_resize_path(working_run, tmp_path, fmt, capsys):
    from pixelwise.cli import main

    run, _ = working_run
    out = tmp_path / f"model.{fmt}"
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"inputs are resized to max side {MAX_SIDE} px first" in printed
    assert f"1x37x{MAX_SIDE + 9}" in printed  # the parity image checked through the resize path
    if fmt == "onnx":
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        assert json.loads(meta["pixelwise.meta"])["input"] == {"max_side": MAX_SIDE}


def test_an_ensemble_of_models_at_different_working_resolutions_is_refused(working_run):
    import copy

    from pixelwise.predict.predictor import Ensemble, load

    run, _ = working_run
    a, b = load(run, "cpu", "torch"), load(run, "cpu", "torch")
    b.bundle = copy.copy(b.bundle)
    b.bundle.input = InputSpec(max_side=0)
    with pytest.raises(PixelwiseError, match="same --max-side") as caught:
        Ensemble([a, b], ["a", "b"])
    assert "\n" not in str(caught.value)


def test_an_instance_model_trains_at_the_working_size_and_finds_objects_at_the_image_size(tmp_path):
    from pixelwise import train
    from pixelwise.predict import load_predictor
    from test_instance_training import TRAIN_QUICK, make_instance_folder

    data = make_instance_folder(tmp_path / "data", n=6)
    options = {**TRAIN_QUICK, "crop_size": 24}
    result = train(data=str(data), out=str(tmp_path / "run"), task="instance", max_side=32, **options, **TINY_MODEL)
    assert json.loads((result.run_dir / "model.json").read_text())["input"] == {"max_side": 32}
    assert np.isfinite(result.history[-1]["train_loss"]) and 0.0 <= result.history[-1]["val_loss"] < float("inf")
    predictor = load_predictor(result.run_dir, device="cpu", backend="torch")
    image = np.asarray(Image.open(sorted((data / "images").iterdir())[0]).convert("RGB"))
    found = predictor.run_objects(image)
    assert found.labels.shape == (64, 64) and found.prediction.dense.shape == (3, 64, 64)
    assert found.prediction.stats["working_size"] == [32, 32]
    assert found.instances.ids.shape == (64, 64)
