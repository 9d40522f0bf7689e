"""Instance and panoptic models: C+3 output channels, their loss, their bundle, training them end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_MODEL, write_pair
from pixelwise.bundle import Bundle, load_bundle, read_bundle, save_bundle
from pixelwise.classes import ClassInfo
from pixelwise.errors import PixelwiseError
from pixelwise.instances import EXTRA_CHANNELS, centre_targets
from pixelwise.losses import CrossEntropyLoss, InstanceLoss
from pixelwise.models import MODELS, ModelConfig, build_model, check_model_config

# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_the_network_gives_the_class_logits_and_for_objects_three_more_channels(task):
    config = ModelConfig("unet", "resnet18", num_classes=4, kwargs={"decoder_channels": [16, 8, 8, 8, 8]}, task=task)
    extra = 0 if task == "semantic" else EXTRA_CHANNELS
    assert config.out_channels == 4 + extra
    model = build_model(config).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 40, 52))  # not a multiple of the stride: cropped back
    assert out.shape == (1, 4 + extra, 40, 52)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_every_architecture_builds_the_instance_head(arch):
    config = ModelConfig(arch, "resnet18", num_classes=3, task="instance")
    with torch.device("meta"):  # shapes only: fcn's ResNet-50 would take a while on CPU
        model = build_model(config).eval()
    out = model(torch.zeros(1, 3, 64, 64, device="meta"))
    assert out.shape[1] == 3 + EXTRA_CHANNELS


def test_an_unknown_task_is_a_one_line_error():
    with pytest.raises(PixelwiseError, match="--task must be one of semantic, instance, panoptic"):
        check_model_config(ModelConfig(task="objects"))


# --------------------------------------------------------------------------- bundle


def _instance_bundle(tmp_path, task="instance"):
    config = ModelConfig("unet", "resnet18", num_classes=3, kwargs={"decoder_channels": [16, 8, 8, 8, 8]}, task=task)
    model = build_model(config)
    classes = ClassInfo(["background", "car", "road"], [(0, 0, 0), (255, 0, 0), (0, 0, 255)], things=(1,))
    bundle = Bundle(model=config, classes=classes, normalization=_NORM)
    return save_bundle(tmp_path / "run", model, bundle), model


_NORM = __import__("pixelwise.bundle", fromlist=["Normalization"]).Normalization((0.5,) * 3, (0.25,) * 3)


@pytest.mark.parametrize("task", ["instance", "panoptic"])
def test_a_bundle_records_the_task_and_the_things_and_loads_them_back(tmp_path, task):
    run, model = _instance_bundle(tmp_path, task)
    meta = json.loads((run / "model.json").read_text())
    assert meta["model"]["task"] == task and meta["classes"]["things"] == [1]
    loaded, bundle = load_bundle(run)
    assert bundle.model.task == task and bundle.model.out_channels == 6
    assert tuple(bundle.classes.things) == (1,)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_a_bundle_without_task_or_things_loads_as_a_semantic_model(tmp_path):
    config = ModelConfig("unet", "resnet18", num_classes=3, kwargs={"decoder_channels": [16, 8, 8, 8, 8]})
    classes = ClassInfo(["background", "car", "road"], [(0, 0, 0), (255, 0, 0), (0, 0, 255)])
    run = save_bundle(tmp_path / "run", build_model(config), Bundle(model=config, classes=classes, normalization=_NORM))
    meta = json.loads((run / "model.json").read_text())
    del meta["model"]["task"], meta["classes"]["things"]  # as bundles before instance models
    (run / "model.json").write_text(json.dumps(meta))
    model, bundle = load_bundle(run)
    assert bundle.model.task == "semantic" and tuple(bundle.classes.things) == ()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m["model"].update(task="objects"), "model.task must be one of semantic, instance, panoptic"),
        (lambda m: m["model"].update(task=3), "model.task must be one of"),
        (lambda m: m["classes"].update(things=[7]), "'classes.things' must be a list of distinct class indices 0..2"),
        (lambda m: m["classes"].update(things=[1, 1]), "'classes.things'"),
        (lambda m: m["classes"].update(things="car"), "'classes.things'"),
        (lambda m: m["classes"].update(things=[True]), "'classes.things'"),
    ],
)
def test_a_bad_task_or_things_in_model_json_is_a_one_line_error(tmp_path, change, words):
    run, _ = _instance_bundle(tmp_path)
    meta = json.loads((run / "model.json").read_text())
    change(meta)
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(PixelwiseError, match=words) as info:
        read_bundle(run)
    assert "\n" not in str(info.value) and "model.json" in str(info.value)


def test_an_instance_bundle_with_semantic_weights_is_refused(tmp_path):
    run, _ = _instance_bundle(tmp_path)
    meta = json.loads((run / "model.json").read_text())
    meta["model"]["task"] = "semantic"  # the weights have the 3 extra channels
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(PixelwiseError, match="weights do not match"):
        load_bundle(run)


# --------------------------------------------------------------------------- loss


def _two_squares() -> torch.Tensor:
    """(1, 2, 32, 32) target: class 1 in two 8x8 squares, instance ids 1 and 2."""
    target = torch.zeros(1, 2, 32, 32, dtype=torch.int64)
    target[0, :, 4:12, 4:12] = torch.tensor([1, 1]).view(2, 1, 1)
    target[0, :, 18:26, 14:22] = torch.tensor([1, 2]).view(2, 1, 1)
    return target


def _perfect_outputs(target: torch.Tensor, num_classes: int, sigma: float) -> torch.Tensor:
    heat, offsets, _ = centre_targets(target[:, 1], sigma)
    logits = torch.nn.functional.one_hot(target[:, 0], num_classes).movedim(-1, 1).float() * 20 - 10
    centre = torch.logit(heat.clamp(1e-6, 1 - 1e-6))
    return torch.cat([logits, centre, offsets], dim=1)


def test_a_perfect_prediction_costs_only_what_the_semantic_loss_leaves():
    target = _two_squares()
    loss = InstanceLoss(CrossEntropyLoss(), num_classes=2, sigma=4.0, centre_weight=200, offset_weight=0.01)
    outputs = _perfect_outputs(target, 2, 4.0).requires_grad_()
    total = loss(outputs, target)
    semantic = CrossEntropyLoss()(outputs[:, :2], target[:, 0])
    assert total.dtype == torch.float32 and float((total - semantic).detach()) == pytest.approx(0.0, abs=1e-4)
    total.backward()
    assert torch.isfinite(outputs.grad).all()


def test_the_centre_and_offset_terms_are_weighted_as_documented():
    target = _two_squares()
    outputs = _perfect_outputs(target, 2, 4.0)
    outputs[:, 3:] += 2.0  # every offset 2 px off in y and x: L1 of 4 per object pixel
    only_offsets = InstanceLoss(CrossEntropyLoss(), 2, 4.0, centre_weight=0, offset_weight=1.0)
    base = float(CrossEntropyLoss()(outputs[:, :2], target[:, 0]))
    assert float(only_offsets(outputs, target)) - base == pytest.approx(4.0, abs=1e-4)
    outputs = _perfect_outputs(target, 2, 4.0)
    outputs[:, 2] = 0.0  # sigmoid 0.5 everywhere
    heat, _, _ = centre_targets(target[:, 1], 4.0)
    only_centre = InstanceLoss(CrossEntropyLoss(), 2, 4.0, centre_weight=3.0, offset_weight=0)
    expected = 3.0 * float(((0.5 - heat) ** 2).mean())
    assert float(only_centre(outputs, target)) - base == pytest.approx(expected, rel=1e-4)


def test_a_batch_without_objects_has_a_finite_loss_and_no_offset_term():
    target = torch.zeros(2, 2, 16, 16, dtype=torch.int64)
    outputs = torch.randn(2, 5, 16, 16, requires_grad=True)
    loss = InstanceLoss(CrossEntropyLoss(), 2, 8.0, centre_weight=0, offset_weight=1.0)
    value = loss(outputs, target)
    assert float(value.detach()) == pytest.approx(float(CrossEntropyLoss()(outputs[:, :2], target[:, 0]).detach()))
    value.backward()
    assert torch.isfinite(outputs.grad).all()
    full = InstanceLoss(CrossEntropyLoss(), 2)(outputs, target)
    assert torch.isfinite(full)


def test_the_loss_runs_under_bfloat16_autocast_in_float32():
    target = _two_squares()
    outputs = _perfect_outputs(target, 2, 4.0).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = InstanceLoss(CrossEntropyLoss(), 2, 4.0)(outputs, target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(outputs.grad.float()).all()


def test_the_loss_refuses_outputs_without_the_extra_channels():
    with pytest.raises(ValueError, match=r"expected outputs \(N, 5, H, W\)"):
        InstanceLoss(CrossEntropyLoss(), 2)(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8, dtype=torch.int64))


# --------------------------------------------------------------------------- training


def make_instance_folder(root, n=8, size=64, seed=0, with_ids=True):
    """Images with a stuff class (2, a band at the bottom) and two or three squares of a thing class
    (1), some touching; instances/<stem>.png holds one id per square; classes.yaml names the thing."""
    rng = np.random.default_rng(seed)
    if with_ids:
        (root / "instances").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        ids = np.zeros((size, size), np.uint16)
        mask[size - 12 :] = 2
        x = 4
        for k in range(int(rng.integers(2, 4))):
            y, side = int(rng.integers(4, 30)), int(rng.integers(10, 16))
            mask[y : y + side, x : x + side] = 1
            ids[y : y + side, x : x + side] = k + 1
            x += side + (0 if k == 0 else 3)  # the first two touch
        image = np.stack([mask * 100, 255 - mask * 90, rng.integers(0, 60, mask.shape)], -1).astype(np.uint8)
        write_pair(root, f"s{i:02d}", image, mask)
        if with_ids:
            Image.fromarray(ids).save(root / "instances" / f"s{i:02d}.png")
    (root / "classes.yaml").write_text(
        "names: [background, box, floor]\ncolors: [[0, 0, 0], [200, 0, 0], [0, 0, 200]]\nthings: [box]\n"
    )
    return root


TRAIN_QUICK = dict(epochs=1, batch_size=4, crop_size=64, num_workers=0, max_steps_per_epoch=2, progress=False)


def test_training_an_instance_model_end_to_end(tmp_path):
    from pixelwise import train

    data = make_instance_folder(tmp_path / "data")
    # With an EMA of the weights and class-drawn crops: both see (2, H, W) targets.
    options = dict(task="instance", ema=0.5, class_crops=0.5)
    result = train(data=str(data), out=str(tmp_path / "run"), **options, **TRAIN_QUICK, **TINY_MODEL)
    meta = json.loads((result.run_dir / "model.json").read_text())
    assert meta["model"]["task"] == "instance" and meta["classes"]["things"] == [1]
    assert meta["training"]["config"]["task"] == "instance"
    model, bundle = load_bundle(result.run_dir)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3 + EXTRA_CHANNELS, 64, 64)
    row = result.history[-1]
    assert np.isfinite(row["train_loss"]) and 0.0 <= row["val_miou"] <= 1.0
    assert "(task instance, things: box)" in (result.run_dir / "train.log").read_text()
    # Resuming a finished run has nothing left to do, and keeps the task.
    again = train(resume=True, out=str(result.run_dir), progress=False)
    assert len(again.history) == 1


def test_training_for_objects_on_data_without_ids_is_a_one_line_error(tmp_path, capsys):
    from pixelwise.cli import main

    data = make_instance_folder(tmp_path / "data", n=4, with_ids=False)
    rc = main(["train", str(data), "--out", str(tmp_path / "run"), "--task", "instance", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1
    assert "has no object ids: add instances/<stem>.png" in err and "--task semantic" in err
    assert not (tmp_path / "run").exists()


def test_a_damaged_instances_folder_does_not_stop_a_semantic_run(tmp_path, capsys):
    from pixelwise import train

    data = make_instance_folder(tmp_path / "data", n=4)
    broken = sorted((data / "instances").iterdir())[0]
    broken.write_bytes(b"not a png")
    quick = {**TRAIN_QUICK, **TINY_MODEL}
    result = train(data=str(data), out=str(tmp_path / "semantic"), task="semantic", **quick)
    meta = json.loads((result.run_dir / "model.json").read_text())
    assert meta["model"]["task"] == "semantic"
    assert "object ids: 4 samples have them; not read" in (result.run_dir / "train.log").read_text()
    with pytest.raises(PixelwiseError, match="object id map cannot be read") as e:
        train(data=str(data), out=str(tmp_path / "instance"), task="instance", **quick)
    assert broken.name in str(e.value)


@pytest.mark.parametrize(
    "has_instances, things, words",
    [(False, (1,), "DATA has no object ids"), (True, (), "has no thing class"), (True, (1,), None)],
)
def test_the_task_is_checked_against_the_data(has_instances, things, words):
    from types import SimpleNamespace

    from pixelwise.training.config import TrainConfig, check_task_data

    data = SimpleNamespace(has_instances=has_instances, classes=SimpleNamespace(things=things))
    check_task_data(TrainConfig(task="semantic"), data)  # semantic runs need neither
    if words is None:
        check_task_data(TrainConfig(task="panoptic"), data)
        return
    with pytest.raises(PixelwiseError, match=words):
        check_task_data(TrainConfig(task="panoptic"), data)


def test_the_task_names_of_the_flags_are_those_of_the_models():
    from pixelwise.instances import TASKS
    from pixelwise.training.config import TASK_NAMES

    assert TASK_NAMES == TASKS


def test_the_planner_measures_and_plans_an_instance_run(tmp_path):
    from pixelwise import train

    data = make_instance_folder(tmp_path / "data", n=10)
    # A budget long enough for a busy machine's measurements; the epochs and steps given keep the run short.
    result = train(
        data=str(data), out=str(tmp_path / "run"), budget="10m", task="instance", epochs=1, max_steps_per_epoch=1,
        num_workers=0, device="cpu", progress=False, **TINY_MODEL,
    )  # fmt: skip
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["measurements"] and all(m["images_per_s"] > 0 for m in plan["measurements"])
    assert "task" not in plan["overridden"] or plan["choices"]["task"] == "instance"
    assert json.loads((result.run_dir / "model.json").read_text())["model"]["task"] == "instance"
    assert np.isfinite(result.history[-1]["train_loss"])
