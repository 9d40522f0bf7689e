"""The one training step: what it does (clipping, EMA), and that the Trainer and the planner both run it."""

from __future__ import annotations

import pytest
import torch

import pixelwise
from conftest import TINY_MODEL, make_simple_dataset
from pixelwise.data import open_dataset
from pixelwise.devices import amp_dtype_for
from pixelwise.training import planner, step
from pixelwise.training.config import TrainConfig
from pixelwise.training.step import build_train_step


def _tiny_step(**options) -> step.TrainStep:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 1)
    config = TrainConfig(amp=False, lr=0.1, weight_decay=0.0, **options)
    return build_train_step(model, torch.nn.CrossEntropyLoss(), config, torch.device("cpu"), channels_last=False)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return 10 * torch.randn(2, 3, 8, 8, generator=g), torch.randint(0, 4, (2, 8, 8), generator=g)


def _grad_norm(model) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))


def test_step_clips_the_gradient_norm():
    x, y = _batch()
    free = _tiny_step(grad_clip=0.0)
    free(x, y)
    assert _grad_norm(free.model) > 0.05  # what clipping has to cut
    clipped = _tiny_step(grad_clip=0.01)
    before = [p.detach().clone() for p in clipped.model.parameters()]
    loss = clipped(x, y)
    assert _grad_norm(clipped.model) == pytest.approx(0.01, rel=1e-4)
    assert loss.ndim == 0 and not loss.requires_grad
    assert any(not torch.equal(a, p) for a, p in zip(before, clipped.model.parameters()))  # it stepped


def test_step_updates_the_moving_average():
    s = _tiny_step(ema=0.75, grad_clip=0.0)
    s(*_batch(0))
    first = [p.detach().clone() for p in s.model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(s.ema.module.parameters(), first))  # first update copies
    s(*_batch(1))
    for avg, old, new in zip(s.ema.module.parameters(), first, s.model.parameters()):
        assert torch.allclose(avg, 0.75 * old + 0.25 * new, atol=1e-6)
    assert int(s.ema.n_averaged) == 2
    assert s.eval_model is s.ema.module  # the average is what is validated and saved


def test_no_ema_means_the_raw_model_is_validated():
    s = _tiny_step()
    assert s.ema is None and s.eval_model is s.model


def _record_steps(monkeypatch) -> list[dict]:
    """Replace step.train_step with a recorder of how each call was made (then runs the real one)."""
    calls: list[dict] = []
    real = step.train_step

    def recording(model, x, y, criterion, optimizer, scaler, amp_dtype, grad_clip=0.0, ema=None, **kw):
        calls.append(
            {
                "optimizer": type(optimizer).__name__,
                "weight_decay": optimizer.param_groups[0]["weight_decay"],
                "scaler_enabled": scaler.is_enabled(),
                "amp_dtype": amp_dtype,
                "grad_clip": grad_clip,
                "ema": ema is not None,
                "channels_last": kw["channels_last"],
                "loss": type(criterion).__name__,
            }
        )
        return real(model, x, y, criterion, optimizer, scaler, amp_dtype, grad_clip, ema, **kw)

    monkeypatch.setattr(step, "train_step", recording)
    return calls


def test_planner_measures_the_step_the_trainer_trains_with(tmp_path, monkeypatch):
    root = make_simple_dataset(tmp_path / "data", n=10, size=(40, 40))
    config = TrainConfig(
        data=str(root),
        batch_size=2,
        crop_size=32,
        grad_clip=0.5,
        ema=0.9,
        weight_decay=0.01,
        channels_last=True,
        num_workers=0,
        device="cpu",
        **TINY_MODEL,
    )
    calls = _record_steps(monkeypatch)
    given = planner.Candidate("given", config.arch, config.encoder, dict(config.model_kwargs), config.batch_size)
    measured, _ = planner.measure(open_dataset(str(root)), torch.device("cpu"), config, [32], 0.05, [given])
    assert measured and measured[0].images_per_s > 0
    by_planner = list(calls)
    assert len(by_planner) >= 2  # the uncounted first step and at least one timed one

    calls.clear()
    pixelwise.train(config, out=str(tmp_path / "run"), epochs=1, max_steps_per_epoch=2, progress=False)
    by_trainer = list(calls)
    assert len(by_trainer) == 2
    expected = {
        "optimizer": "AdamW",
        "weight_decay": 0.01,
        "scaler_enabled": False,
        "amp_dtype": amp_dtype_for(torch.device("cpu"), True),
        "grad_clip": 0.5,
        "ema": True,
        "channels_last": True,
    }
    for call in by_planner + by_trainer:
        assert {k: call[k] for k in expected} == expected
    assert {c["loss"] for c in by_planner} == {c["loss"] for c in by_trainer}
