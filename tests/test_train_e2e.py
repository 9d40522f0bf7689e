"""End to end: train for a few steps, save, reload, predict, evaluate, resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import pixelwise
from conftest import TINY_MODEL
from pixelwise.errors import PixelwiseError
from pixelwise.training.schedule import lr_factor


def test_run_directory_contents(trained_run):
    for name in [
        "config.yaml",
        "checkpoint.json",
        "checkpoint.safetensors",
        "model.json",
        "model.safetensors",
        "metrics.csv",
        "curves.png",
        "train.log",
    ]:
        assert (trained_run / name).is_file(), name
    rows = list(csv.DictReader(open(trained_run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0.0 <= float(r["val_miou"]) <= 1.0 for r in rows)
    meta = json.loads((trained_run / "model.json").read_text())
    assert meta["classes"]["names"] == ["background", "disc", "square", "triangle", "ring"]
    assert meta["classes"]["ignore_index"] == 255
    assert meta["model"]["arch"] == "unet" and meta["model"]["num_classes"] == 5
    assert set(meta["normalization"]) == {"mean", "std"}
    assert "torch" in meta["versions"] and "config" in meta["training"]
    assert meta["metrics"]["val"]["miou"] == max(float(r["val_miou"]) for r in rows)
    assert Image.open(trained_run / "curves.png").size[0] > 100


def test_load_predict_full_size(trained_run, tmp_path):
    seg = pixelwise.load(trained_run)
    for h, w in [(64, 64), (37, 91), (1, 1)]:
        img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
        mask = seg.predict(img)
        assert mask.shape == (h, w) and mask.dtype == np.int64
        assert mask.min() >= 0 and mask.max() < 5
    probs = seg.predict_proba(np.zeros((20, 30, 3), np.uint8))
    assert probs.shape == (5, 20, 30)
    assert np.allclose(probs.sum(0), 1.0, atol=1e-5)


def test_bundle_loads_without_pickle(trained_run, monkeypatch):
    def no_pickle(*a, **k):
        raise AssertionError("torch.load (pickle) must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    import pickle

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    seg = pixelwise.load(trained_run)
    state = load_file(str(trained_run / "model.safetensors"))
    assert torch.equal(seg.model.state_dict()["net.encoder.conv1.weight"], state["net.encoder.conv1.weight"])


def test_predict_files_writes_masks_and_overlays(trained_run, demo_data, tmp_path):
    (tmp_path / "in").mkdir()
    src = sorted((demo_data / "images").iterdir())[:2]
    for p in src:
        (tmp_path / "in" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    res = pixelwise.predict_files(pixelwise.load(trained_run), [tmp_path / "in"], tmp_path / "out", progress=False)
    assert res["written"] == 2 and len(res["failed"]) == 1 and "broken.png" in res["failed"][0][0]
    for p in src:
        m = Image.open(tmp_path / "out" / "masks" / p.name)
        assert m.mode == "P" and m.size == (64, 64)  # a palette PNG: class indices, shown in colour
        assert np.asarray(m).max() < 5
        assert Image.open(tmp_path / "out" / "overlays" / p.name).mode == "RGB"


def test_evaluate_matches_independent_count(trained_run, demo_data, tmp_path):
    m = pixelwise.evaluate(trained_run, demo_data, split="val", out=tmp_path / "ev", progress=False)
    assert (tmp_path / "ev" / "metrics.json").is_file() and (tmp_path / "ev" / "confusion.png").is_file()
    seg = pixelwise.load(trained_run)
    stems = (demo_data / "splits" / "val.txt").read_text().split()
    correct = total = 0
    for s in stems:
        pred = seg.predict(demo_data / "images" / f"{s}.png")
        gt = np.asarray(Image.open(demo_data / "masks" / f"{s}.png"))
        correct += int((pred == gt).sum())
        total += gt.size
    assert m["images"] == len(stems)
    assert m["pixel_accuracy"] == pytest.approx(correct / total)


def test_evaluate_missing_split(trained_run, demo_data):
    with pytest.raises(PixelwiseError, match="test split is empty"):
        pixelwise.evaluate(trained_run, demo_data, split="test", progress=False)


def test_refuses_existing_run_then_overwrite(trained_run, demo_data, tmp_path):
    with pytest.raises(PixelwiseError, match="already holds a run"):
        pixelwise.train(data=str(demo_data), out=str(trained_run), epochs=1, progress=False)


def _uninterrupted_and_resumed(common: dict, tmp_path, monkeypatch) -> tuple[dict, dict]:
    """Train run a straight through; run b is stopped by Ctrl-C in its second validation, then resumed.

    Returns the final checkpoint tensors of both.
    """
    pixelwise.train(out=str(tmp_path / "a"), **common)

    import pixelwise.training.trainer as trainer

    real = trainer.run_validation
    calls = {"n": 0}

    def interrupt_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(trainer, "run_validation", interrupt_on_second)
    with pytest.raises(KeyboardInterrupt):
        pixelwise.train(out=str(tmp_path / "b"), **common)
    monkeypatch.setattr(trainer, "run_validation", real)
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["epoch"] == 1
    pixelwise.train(out=str(tmp_path / "b"), resume=True, progress=False)
    a = load_file(str(tmp_path / "a" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    return a, b


def test_resume_after_interrupt_equals_uninterrupted(demo_data, tmp_path, monkeypatch):
    common = dict(
        data=str(demo_data),
        epochs=3,
        batch_size=4,
        crop_size=48,
        num_workers=0,
        max_steps_per_epoch=2,
        progress=False,
        **TINY_MODEL,
    )
    _uninterrupted_and_resumed(common, tmp_path, monkeypatch)
    rows_a = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    rows_b = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]


def test_class_weights_loss_and_early_stopping(demo_data, tmp_path, monkeypatch):
    import pixelwise.training.trainer as trainer
    from pixelwise.metrics import ConfusionMatrix

    scores = iter([0.5, 0.7, 0.6, 0.6, 0.9, 0.9])

    def fake_validation(model, loader, criterion, num_classes, *a, **k):
        # A 2-class matrix whose mIoU is the next score (TP only on class 0, rest on class 1).
        p = next(scores)
        cm = ConfusionMatrix(num_classes)
        cm.update(torch.tensor([0] * 100), torch.tensor([0] * 100))
        miss = round(100 * (1 - p) / p)
        cm.update(torch.tensor([0] * miss), torch.tensor([1] * miss))
        return 1.0, cm

    monkeypatch.setattr(trainer, "run_validation", fake_validation)
    res = pixelwise.train(
        data=str(demo_data),
        out=str(tmp_path / "r"),
        epochs=6,
        batch_size=4,
        crop_size=48,
        num_workers=0,
        max_steps_per_epoch=1,
        patience=2,
        class_weights="auto",
        loss="focal",
        progress=False,
        **TINY_MODEL,
    )
    # Best at epoch 2; epochs 3 and 4 do not improve, so patience 2 stops after epoch 4.
    assert res.stopped_early and len(res.history) == 4 and res.best_epoch == 2
    meta = json.loads((tmp_path / "r" / "model.json").read_text())
    assert meta["training"]["best_epoch"] == 2


def test_lr_schedule_shape():
    total, warm = 100, 10
    f = [lr_factor(s, total, warm, "cosine") for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # monotone decay after warm-up
    assert f[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 89 / 90)))
    assert lr_factor(total, total, warm, "poly") == 0.0
    with pytest.raises(PixelwiseError):
        lr_factor(50, total, warm, "bogus")


def test_ema_weights_are_validated_and_saved(demo_data, tmp_path, monkeypatch):
    """The bundle holds the moving average of the raw weights, computed here independently step by step."""
    from torch.optim.swa_utils import AveragedModel

    seen = []
    real_update = AveragedModel.update_parameters

    def record(self, model):
        seen.append(model.state_dict()["net.segmentation_head.0.weight"].detach().clone())
        return real_update(self, model)

    monkeypatch.setattr(AveragedModel, "update_parameters", record)
    decay = 0.6
    pixelwise.train(
        data=str(demo_data),
        out=str(tmp_path / "e"),
        epochs=2,
        batch_size=4,
        crop_size=48,
        num_workers=0,
        max_steps_per_epoch=2,
        ema=decay,
        progress=False,
        **TINY_MODEL,
    )
    assert len(seen) == 4  # one update per optimizer step
    expected = seen[0]
    for w in seen[1:]:
        expected = decay * expected + (1 - decay) * w
    bundle = load_file(str(tmp_path / "e" / "model.safetensors"))
    check = load_file(str(tmp_path / "e" / "checkpoint.safetensors"))
    key = "net.segmentation_head.0.weight"
    best_epoch = json.loads((tmp_path / "e" / "model.json").read_text())["training"]["best_epoch"]
    if best_epoch == 2:  # the bundle is the last epoch's average
        assert torch.allclose(bundle[key], expected, atol=1e-6)
    assert torch.allclose(check[f"ema/module.{key}"], expected, atol=1e-6)
    assert torch.allclose(check[f"model/{key}"], seen[-1], atol=0)
    assert not torch.allclose(check[f"model/{key}"], expected)  # raw and averaged weights differ
    assert int(check["ema/n_averaged"]) == 4


def test_ema_resume_equals_uninterrupted(demo_data, tmp_path, monkeypatch):
    common = dict(
        data=str(demo_data),
        epochs=2,
        batch_size=4,
        crop_size=48,
        num_workers=0,
        max_steps_per_epoch=2,
        ema=0.9,
        progress=False,
        **TINY_MODEL,
    )
    a, _ = _uninterrupted_and_resumed(common, tmp_path, monkeypatch)
    assert any(k.startswith("ema/") for k in a)


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_ema_decay_out_of_range(demo_data, tmp_path, decay):
    with pytest.raises(PixelwiseError, match="--ema"):
        pixelwise.train(
            data=str(demo_data),
            out=str(tmp_path / "x"),
            epochs=1,
            ema=decay,
            num_workers=0,
            progress=False,
            **TINY_MODEL,
        )


@pytest.mark.parametrize("share", [1.5, -0.1])
def test_class_crops_out_of_range(demo_data, tmp_path, share):
    with pytest.raises(PixelwiseError, match="--class-crops"):
        pixelwise.train(
            data=str(demo_data),
            out=str(tmp_path / "x"),
            epochs=1,
            class_crops=share,
            num_workers=0,
            progress=False,
            **TINY_MODEL,
        )


def test_class_crops_train(demo_data, tmp_path):
    res = pixelwise.train(
        data=str(demo_data),
        out=str(tmp_path / "c"),
        epochs=1,
        batch_size=4,
        crop_size=48,
        num_workers=0,
        max_steps_per_epoch=2,
        class_crops=0.5,
        progress=False,
        **TINY_MODEL,
    )
    assert len(res.history) == 1 and (tmp_path / "c" / "model.safetensors").is_file()


def test_time_limit_with_epochs_ending_first_still_decays(demo_data, tmp_path):
    """On the clock but faster than the clock: the schedule follows the steps and ends on the last one."""
    res = pixelwise.train(
        data=str(demo_data),
        out=str(tmp_path / "t"),
        epochs=3,
        batch_size=4,
        crop_size=48,
        num_workers=0,
        max_steps_per_epoch=2,
        time_limit=3600.0,
        progress=False,
        **TINY_MODEL,
    )
    assert len(res.history) == 3
    # The last of 6 steps: 5/6 of the schedule (time is far below 5/6 of an hour), 3% warm-up.
    assert res.history[-1]["lr"] == pytest.approx(1e-3 * lr_factor(int(5 / 6 * 10000), 10000, 300, "cosine"))
    assert all("val_miou" in r for r in res.history)  # validations: every epoch when none are planned


def test_time_limit_stops_before_the_epochs(demo_data, tmp_path):
    res = pixelwise.train(
        data=str(demo_data),
        out=str(tmp_path / "t"),
        epochs=500,
        batch_size=4,
        crop_size=48,
        num_workers=0,
        time_limit=3.0,
        progress=False,
        **TINY_MODEL,
    )
    assert res.stopped_early and len(res.history) < 500
    assert "val_miou" in res.history[-1]  # validated when the time was up
    assert "time limit reached" in (tmp_path / "t" / "train.log").read_text()


def test_demo_end_to_end_on_the_clock(tmp_path, monkeypatch, capsys):
    """`pixelwise demo` with a tiny data set; its clock stops the 20 epochs."""
    import pixelwise.demo as demo

    monkeypatch.setitem(demo.DEMO_TRAIN, "time_limit", 4.0)
    monkeypatch.setitem(demo.DEMO_TRAIN, "model_kwargs", TINY_MODEL["model_kwargs"])
    out = demo.run_demo(out=str(tmp_path / "d"), num_images=10, device="cpu", progress=False)
    run = tmp_path / "d"
    text = capsys.readouterr().out
    assert "or 4 s, whichever comes first" in text and f"run directory: {run}" in text
    assert 0.0 <= out["metrics"]["miou"] <= 1.0
    assert (run / "eval-val" / "metrics.json").is_file() and (run / "model.safetensors").is_file()
    val = (run / "data" / "splits" / "val.txt").read_text().split()
    assert sorted(p.stem for p in (run / "predictions" / "masks").iterdir()) == sorted(val)
    assert len(list(csv.DictReader(open(run / "metrics.csv")))) < 20
