"""The command line: help on every command, one-line errors without tracebacks, the full flow."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pixelwise.cli import main
from pixelwise.errors import PixelwiseError


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
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    _one_line_error(
        capsys, ["predict", str(tmp_path / "nope"), str(image), "--out", str(tmp_path / "o")], "no such run"
    )


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
    # The overlay holds the image and, below it, a legend of the classes shown, which may be wider.
    width, height = Image.open(tmp_path / "pred" / "overlays" / "odd.png").size
    assert width >= 47 and height > 33

    bad = tmp_path / "notimage.png"
    bad.write_text("hello")
    assert main(["predict", str(run), str(bad), "--out", str(tmp_path / "pred2"), "--quiet"]) == 1
    assert "notimage.png" in capsys.readouterr().err


# Every command with the positional arguments it needs, so that only the unknown flag is wrong.
COMMAND_LINES = {
    "train": ["train", "DATA"],
    "evaluate": ["evaluate", "RUN", "DATA"],
    "inspect": ["inspect", "DATA"],
    "predict": ["predict", "RUN", "x.png", "--out", "OUT"],
    "export": ["export", "RUN"],
    "demo": ["demo"],
    "serve": ["serve", "RUN"],
}


@pytest.mark.parametrize("cmd", list(COMMAND_LINES))
@pytest.mark.parametrize("unknown", [["--bogus"], ["--bogus=3", "-z"]])
def test_unknown_flag_shows_the_subcommands_usage(cmd, unknown, capsys):
    with pytest.raises(SystemExit) as e:
        main(COMMAND_LINES[cmd] + unknown)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: pixelwise {cmd}")
    assert err.strip().endswith(f"pixelwise {cmd}: error: unrecognized arguments: {' '.join(unknown)}")


def test_every_command_is_tested_for_unknown_flags():
    from pixelwise.cli import COMMANDS

    assert set(COMMANDS) == set(COMMAND_LINES)


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--images", "1"], "--images: must be at least 2, got 1"),
        (["--images", "0"], "--images: must be at least 2"),
        (["--images", "-5"], "--images: must be at least 2"),
        (["--images", "100001"], "--images: must be at most 100000"),
        (["--images", "3.5"], "--images: expected a whole number"),
        (["--epochs", "0"], "--epochs: must be at least 1"),
        (["--epochs", "nan"], "--epochs: expected a whole number"),
        (["--epochs", "10001"], "--epochs: must be at most 10000"),
        (["--seed", "-1"], "--seed: must be at least 0"),
        (["--seed", str(2**32)], "--seed: must be at most 4294967295"),
        (["--seed", "1e3"], "--seed: expected a whole number"),
    ],
)
def test_demo_numbers_checked_before_any_work(flags, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(tmp_path / "d"), *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: pixelwise demo") and expected in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"num_images": 1}, "--images 1: expected a whole number from 2 to 100000"),
        ({"num_images": 2.5}, "--images 2.5"),
        ({"epochs": 0}, "--epochs 0"),
        ({"seed": -3}, "--seed -3"),
        ({"device": "gpu7"}, "unknown device 'gpu7'"),
    ],
)
def test_run_demo_refuses_bad_arguments_before_any_work(kwargs, expected, tmp_path):
    from pixelwise.demo import run_demo
    from pixelwise.errors import PixelwiseError

    with pytest.raises(PixelwiseError, match=expected.replace(".", r"\.")):
        run_demo(out=str(tmp_path / "d"), progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_an_out_that_is_a_file_or_not_empty(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    _one_line_error(capsys, ["demo", "--out", str(taken)], "not empty")
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    afile = tmp_path / "file"
    afile.write_text("x")
    _one_line_error(capsys, ["demo", "--out", str(afile)], "is a file, not a folder")
    _one_line_error(capsys, ["demo", "--out", str(afile / "run")], "which is a file")


def test_demo_prints_percentages_and_writes_fractions(tmp_path, capsys):
    """One unit: the printout shows mIoU in percent with the unit, the files hold fractions."""
    run = tmp_path / "d"
    old = os.umask(0o022)
    try:
        assert main(["demo", "--out", str(run), "--images", "4", "--epochs", "1", "--device", "cpu", "--quiet"]) == 0
    finally:
        os.umask(old)
    out = capsys.readouterr().out
    saved = json.loads((run / "eval-val" / "metrics.json").read_text())
    assert 0.0 <= saved["miou"] <= 1.0
    assert f"held-out mIoU {100 * saved['miou']:.2f} %" in out
    table_miou = next(line for line in out.splitlines() if line.startswith("mIoU "))
    assert table_miou.split()[1:] == [f"{100 * saved['miou']:.2f}", "%"]
    assert "IoU %" in out and "training unet/tu-resnet10t for 1 epoch\n" in out
    for line in out.splitlines():
        if line.lstrip().startswith(("metrics:", "examples:", "curves:")):
            assert all((run / p).exists() for p in line.split()[1:] if p.startswith(str(run))), line
    # Offline and reproducible: the demo starts from random weights, whatever the cache holds.
    assert "\npretrained: none\n" in (run / "config.yaml").read_text()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.iterdir() if p.is_file()}
    assert {"model.safetensors", "model.json", "config.yaml", "metrics.csv"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes


def test_broken_pipe_exits_quietly(tmp_path):
    """`pixelwise ... | head -1`: the reader goes away; no traceback, no 'Exception ignored'."""
    code = (
        "import sys\n"
        "from pixelwise.cli import demo, main\n"
        "def run(args):\n"
        "    for i in range(100000):\n"
        "        print('line', i)\n"
        "    return 0\n"
        "demo.run = run\n"
        "sys.exit(main(['demo']))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141
    assert err == ""


def test_inspect_json_into_a_closed_pipe(tmp_path):
    from conftest import make_simple_dataset

    data = make_simple_dataset(tmp_path / "data", n=4)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes a byte
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pixelwise", "inspect", str(data), "--json", "--quiet"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=tmp_path,  # inspect's default --out is inspect-<name> in the working folder
        )
    finally:
        os.close(write)
    assert proc.stderr == "" and proc.returncode == 141


def test_a_user_error_while_parsing_is_one_line(monkeypatch, capsys):
    """A value type that reads a file may raise PixelwiseError or OSError while parsing."""
    from pixelwise.cli import demo

    def refuses(text):
        raise PixelwiseError(f"{text}: not a config file; give a config.yaml")

    def unreadable(text):
        raise PermissionError(errno.EACCES, "Permission denied", text)

    for convert, expected in (
        (refuses, "pixelwise: error: a.yaml: not a config file; give a config.yaml\n"),
        (unreadable, "pixelwise: error: a.yaml: Permission denied; check its permissions or use another path\n"),
    ):
        monkeypatch.setattr(demo, "whole_number", lambda *a, convert=convert, **k: convert)
        assert main(["demo", "--images", "a.yaml"]) == 2
        assert capsys.readouterr().err == expected


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["predict", "RUN", "x.png", "--alpah", "0.3"], " (did you mean --alpha?)"),
        (["serve", "RUN", "--prot", "80"], " (did you mean --port?)"),
        (["demo", "--seeds=3"], " (did you mean --seed?)"),
        (["demo", "--bogus"], ""),
    ],
)
def test_a_near_miss_names_the_option_meant(argv, hint, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unrecognized arguments: " in last and last.endswith(hint or argv[-1])
    assert ("did you mean" in last) == bool(hint)


def test_an_abbreviated_flag_is_unknown_not_guessed(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--image", "3"])
    assert e.value.code == 2
    assert "unrecognized arguments: --image 3" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--seed", "-1"], "--seed: must be at least 0"),
        (["--val-fraction", "-1"], "--val-fraction -1.0: must be at least 0"),
        (["--val-fraction", "nan"], "--val-fraction nan: must be a finite number"),
        (["--test-fraction", "1.5"], "--test-fraction 1.5: must be at least 0 and below 1"),
    ],
)
def test_inspect_checks_its_split_options_before_reading_anything(tmp_path, capsys, flags, words):
    # A data folder that does not exist: the option is refused before the folder is looked at.
    code = None
    try:
        code = main(["inspect", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), *flags])
    except SystemExit as e:  # argparse's own range check
        code = e.code
    assert code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
