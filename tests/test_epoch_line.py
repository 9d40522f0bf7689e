"""The per-epoch line of train.log and its metrics.csv row when the clock ends an epoch before its first step."""

from __future__ import annotations

import csv
from types import SimpleNamespace

from pixelwise.training.rundir import write_metrics_csv
from pixelwise.training.trainer import Trainer


def _line(row: dict) -> str:
    fake = SimpleNamespace(config=SimpleNamespace(epochs=69), loaders=SimpleNamespace(val=[object()]))
    return Trainer._epoch_line(fake, 24, row, improved=True)


def test_an_epoch_that_trained_states_its_loss_and_speed():
    row = {"train_loss": 0.93821, "images_per_s": 7.99, "seconds": 49.6, "val_loss": 0.9119, "val_miou": 0.5659}
    line = _line(row)
    assert line.startswith("epoch 25/69  loss 0.9382  val loss 0.9119  val mIoU 56.59 %  7.99 img/s  49.6s")
    assert line.endswith("*best*")


def test_an_epoch_with_no_training_step_shows_no_loss_or_speed(tmp_path):
    row = {
        "epoch": 25,
        "train_loss": None,
        "images_per_s": None,
        "seconds": 4.5,
        "val_loss": 0.8818,
        "val_miou": 0.5665,
    }
    line = _line(row)
    assert "no training step (out of time)" in line
    assert "0.0000" not in line and "img/s" not in line
    assert "val mIoU 56.65 %" in line
    path = tmp_path / "metrics.csv"
    write_metrics_csv(path, [row], num_classes=0)
    (written,) = list(csv.DictReader(path.open()))
    assert written["epoch"] == "25"
    assert written["train_loss"] == "" and written["images_per_s"] == ""
    assert float(written["val_miou"]) == 0.5665
