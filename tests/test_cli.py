"""The command line: help on every command, one-line errors without tracebacks, the full flow."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pixelwise.cli import main


@pytest.mark.parametrize("cmd", ["train", "evaluate", "inspect", "predict", "export", "demo", "serve"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: pixelwise " + cmd in capsys.readouterr().out


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "data", "--epochs", "zero"])
    assert e.value.code == 2
    assert "expected a whole number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "data", "--arch", "segnet"])


def _one_line_error(capsys, argv, expected):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("pixelwise: error: ") and "\n" not in err and "Traceback" not in err
    assert expected in err
    return err


def test_predict_missing_run(capsys, tmp_path):
    _one_line_error(capsys, ["predict", str(tmp_path / "nope"), "x.png", "--out", str(tmp_path / "o")], "no such run")


def test_train_empty_folder(capsys, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    _one_line_error(capsys, ["train", str(tmp_path), "--out", str(tmp_path / "run")], "no images found")


def test_train_without_data(capsys):
    _one_line_error(capsys, ["train"], "give DATA")


def test_no_traceback_in_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pixelwise", "train", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "data folder not found" in proc.stderr


def test_cli_flow_train_evaluate_predict(demo_data, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            str(demo_data),
            "--out",
            str(run),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--crop-size",
            "48",
            "--num-workers",
            "0",
            "--max-steps-per-epoch",
            "2",
            "--model-kwargs",
            "decoder_channels=[16,16,8,8,8]",
            "--quiet",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and str(run) in out
    assert json.loads((run / "model.json").read_text())["model"]["kwargs"]["decoder_channels"] == [16, 16, 8, 8, 8]
    # A second train into the same folder is refused.
    _one_line_error(capsys, ["train", str(demo_data), "--out", str(run), "--quiet"], "already holds a run")

    assert main(["evaluate", str(run), str(demo_data), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "background" in out
    assert (run / "eval-val" / "metrics.json").is_file()

    img = tmp_path / "odd.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (33, 47, 3), dtype=np.uint8)).save(img)
    assert main(["predict", str(run), str(img), "--out", str(tmp_path / "pred"), "--quiet"]) == 0
    assert Image.open(tmp_path / "pred" / "masks" / "odd.png").size == (47, 33)
    assert Image.open(tmp_path / "pred" / "overlays" / "odd.png").size == (47, 33)

    bad = tmp_path / "notimage.png"
    bad.write_text("hello")
    assert main(["predict", str(run), str(bad), "--out", str(tmp_path / "pred2"), "--quiet"]) == 1
    assert "notimage.png" in capsys.readouterr().err
