"""The run directory: what train refuses before any work, what it never touches, resume and restart."""

from __future__ import annotations

import csv
import errno
import json
import shutil

import pytest
import yaml

import pixelwise
import pixelwise.training.trainer as trainer
from conftest import TINY_MODEL, make_simple_dataset
from pixelwise.cli import main
from pixelwise.errors import PixelwiseError
from pixelwise.training import rundir
from pixelwise.training.config import TrainConfig

TINY_FLAGS = [
    "--arch",
    "unet",
    "--encoder",
    "resnet18",
    "--model-kwargs",
    "decoder_channels=[32,16,16,8,8]",
    "--pretrained",
    "none",
]
QUICK_FLAGS = [
    *TINY_FLAGS,
    "--epochs",
    "1",
    "--batch-size",
    "2",
    "--crop-size",
    "16",
    "--num-workers",
    "0",
    "--max-steps-per-epoch",
    "1",
]


QUICK = dict(epochs=1, batch_size=2, crop_size=16, num_workers=0, max_steps_per_epoch=1, progress=False, **TINY_MODEL)


def _one_line_error(capsys, argv, *expected) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("pixelwise: error: ") and "\n" not in err and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def _listing(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _fake_run(folder, with_checkpoint=True):
    """A folder pixelwise would recognise as a run (config.yaml with its header, a checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    rundir.write_config(folder, TrainConfig(data=str(folder / "nowhere"), out=str(folder)))
    if with_checkpoint:
        (folder / "checkpoint.json").write_text(json.dumps({"epoch": 1, "history": [], "token": "1-1"}))
    return folder


# ----------------------------------------------------------------- folders that are not a run (17.6)


@pytest.mark.parametrize(
    "files",
    [
        {"model.safetensors": b"another tool's weights"},
        {"notes.txt": b"mine"},
        {"train.log": b"my own log\n"},
        # Another tool's config.yaml is not a pixelwise run: --overwrite must not treat it as one.
        {"config.yaml": b"lr: 0.1\nepochs: 3\n", "model.safetensors": b"weights"},
    ],
)
def test_a_folder_that_is_not_a_run_is_refused_and_left_alone(simple_data, tmp_path, capsys, files):
    out = tmp_path / "theirs"
    out.mkdir()
    for name, content in files.items():
        (out / name).write_bytes(content)
    _one_line_error(
        capsys, ["train", str(simple_data), "--out", str(out), *QUICK_FLAGS], str(out), "not a pixelwise run"
    )
    assert _listing(out) == files


@pytest.mark.parametrize(
    "files, clash",
    [
        ({"model.safetensors": b"another tool's weights"}, "model.safetensors"),
        ({"config.yaml": b"lr: 0.1\n", "train.log": b"mine\n", "a.txt": b"x"}, "config.yaml, train.log"),
        ({"plan.json": b"{}"}, "plan.json"),
    ],
)
def test_overwrite_never_replaces_a_file_pixelwise_did_not_write(simple_data, tmp_path, capsys, files, clash):
    out = tmp_path / "theirs"
    out.mkdir()
    for name, content in files.items():
        (out / name).write_bytes(content)
    argv = ["train", str(simple_data), "--out", str(out), "--overwrite", *QUICK_FLAGS]
    _one_line_error(capsys, argv, str(out), clash, "not written by pixelwise")
    assert _listing(out) == files


def test_resume_in_a_folder_that_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights")
    _one_line_error(capsys, ["train", "--resume", "--out", str(out)], "not a pixelwise run", "without --resume")
    _one_line_error(capsys, ["train", "--resume", "--out", str(tmp_path / "none")], "no such run directory")
    assert _listing(out) == {"model.safetensors": b"weights"}


def test_overwrite_removes_only_the_files_a_run_writes(tmp_path):
    run = _fake_run(tmp_path / "run")
    for name in ("model.json", "plan.json", "metrics.csv", "train.log", "notes.txt"):
        (run / name).write_text("{}")
    (run / "eval-val").mkdir()
    assert rundir.check_run_dir(str(run), resume=False, overwrite=True) == (run, rundir.NEW)
    assert rundir.make_run_dir(run, rundir.NEW, overwrite=True) is False
    assert sorted(p.name for p in run.iterdir()) == ["eval-val", "notes.txt"]


def test_a_run_is_known_by_its_own_files_only(tmp_path):
    assert not rundir.is_run(tmp_path)
    (tmp_path / "config.yaml").write_text("lr: 1\n")
    (tmp_path / "checkpoint.json").write_text('{"epoch": 1}')
    (tmp_path / "model.json").write_text("[1, 2]")
    assert not rundir.is_run(tmp_path)
    (tmp_path / "model.json").write_text('{"model": {}, "classes": {}, "versions": {"pixelwise": "0"}}')
    assert rundir.is_run(tmp_path)
    assert rundir.is_run(_fake_run(tmp_path / "run", with_checkpoint=False))


def test_overwrite_writes_the_run_beside_files_of_other_names(simple_data, tmp_path, monkeypatch):
    import pixelwise.viz as viz

    real_plot, names = viz.plot_training_curves, []

    def plot(csv_path, out_png, class_names=None):
        names.append(class_names)
        return real_plot(csv_path, out_png, class_names=class_names)

    monkeypatch.setattr(viz, "plot_training_curves", plot)
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    pixelwise.train(
        data=str(simple_data),
        out=str(out),
        overwrite=True,
        epochs=1,
        batch_size=2,
        crop_size=16,
        num_workers=0,
        max_steps_per_epoch=1,
        progress=False,
        **TINY_MODEL,
    )
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "model.safetensors").is_file() and rundir.is_run(out)
    assert (
        names == [["class_0", "class_1", "class_2"]] and (out / "curves.png").stat().st_size > 0
    )  # curves with class names


# ----------------------------------------------------------------- output paths (17.9)


def test_out_that_is_a_file_or_under_one(simple_data, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("mine")
    _one_line_error(capsys, ["train", str(simple_data), "--out", str(target), *QUICK_FLAGS], str(target), "is a file")
    below = target / "run"
    _one_line_error(capsys, ["train", str(simple_data), "--out", str(below), *QUICK_FLAGS], "a-file, which is a file")
    assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "data"]


def test_read_only_out_is_one_line_before_any_work(simple_data, tmp_path, capsys, monkeypatch):
    import pixelwise.fileio as fileio

    def read_only(directory):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(fileio, "_probe_write", read_only)
    opened = []
    monkeypatch.setattr(trainer, "open_dataset", lambda *a, **k: opened.append(1))
    out = tmp_path / "ro" / "run"
    _one_line_error(capsys, ["train", str(simple_data), "--out", str(out), *QUICK_FLAGS], str(out), "read-only")
    assert not opened and not (tmp_path / "ro").exists()


def test_no_half_written_files_when_the_disk_fills(simple_data, tmp_path, capsys, monkeypatch):
    def full_disk(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(rundir, "write_text", lambda path, text: full_disk(path))
    out = tmp_path / "run"
    _one_line_error(capsys, ["train", str(simple_data), "--out", str(out), *QUICK_FLAGS], "config.yaml", "space")
    assert not out.exists()  # made by this call, still empty: removed again


# ----------------------------------------------------------------- refused starts leave no folder (16.4)


def test_bad_data_leaves_no_run_folder(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    rc = main(["train", str(data), "--out", str(out), *QUICK_FLAGS])
    assert rc == 2 and "Traceback" not in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--lr", "-0.01"],
        ["--lr", "nan"],
        ["--weight-decay", "-1"],
        ["--dropout", "2"],
        ["--color-jitter", "-4"],
        ["--lr", "inf"],
        ["--ema", "nan"],
        ["--time-limit", "nan"],
        ["--warmup-epochs", "inf"],
    ],
)
def test_numeric_options_checked_before_any_work(simple_data, tmp_path, capsys, argv):
    out = tmp_path / "run"
    _one_line_error(capsys, ["train", str(simple_data), "--out", str(out), *QUICK_FLAGS, *argv], argv[0])
    assert not out.exists()


def test_a_model_that_cannot_be_built_leaves_no_run_folder(simple_data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(PixelwiseError, match="unknown architecture"):
        pixelwise.train(**{**QUICK, "data": str(simple_data), "out": str(out), "arch": "nope"})
    assert not out.exists()


@pytest.mark.parametrize(
    "values, expected",
    [
        (dict(lr="fast"), "--lr: must be a number"),
        (dict(epochs=None), "--epochs: must have a value"),
        (dict(epochs=2.5), "--epochs: must be a whole number"),
        (dict(hflip="no"), "--hflip: must be true or false"),
        (dict(model_kwargs="decoder_channels=[8]"), "--model-kwargs: must be a mapping"),
    ],
)
def test_python_values_of_the_wrong_type_are_one_line(simple_data, tmp_path, values, expected):
    with pytest.raises(PixelwiseError, match=expected):
        pixelwise.train(**{**QUICK, "data": str(simple_data), "out": str(tmp_path / "run"), **values})
    assert not (tmp_path / "run").exists()


def test_paths_may_be_pathlib_paths(tmp_path):
    config = TrainConfig(data=tmp_path / "d", out=tmp_path / "o", classes_file=tmp_path / "c.yaml")
    config.validate()
    assert yaml.safe_load(yaml.safe_dump(config.to_dict()))["data"] == str(tmp_path / "d")


# ----------------------------------------------------------------- damaged config.yaml on --resume (17.10)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("lr: [1\n", "cannot read the config file"),
        ("epochs: many\n", "epochs must be a whole number"),
        ("epochs: 3\nwat: 1\n", "unknown training options: wat"),
        ("- epochs\n- lr\n", "a mapping"),
        ("", "holds no options"),
        ("# only a comment\n", "holds no options"),
        ("lr: -1\n", "--lr -1"),
        (b"\xff\xfe\x00bad", "cannot read the config file"),
        ("data: {}\n", "data must be text"),
    ],
)
def test_resume_with_a_damaged_config_names_it_and_says_what_to_do(tmp_path, capsys, text, expected):
    run = _fake_run(tmp_path / "run")
    path = run / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    err = _one_line_error(capsys, ["train", "--resume", "--out", str(run)], str(path), expected)
    assert "--overwrite" in err


def test_resume_without_config_yaml(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    (run / "config.yaml").unlink()
    _one_line_error(capsys, ["train", "--resume", "--out", str(run)], "config.yaml: missing", "--overwrite")


def test_resume_whose_data_is_gone_says_how_to_give_it(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    _one_line_error(
        capsys, ["train", "--resume", "--out", str(run)], "config.yaml", "nowhere not found", "DATA --resume"
    )


# ----------------------------------------------------------------- killed before the first checkpoint (17.7)


def test_run_killed_before_its_first_checkpoint_starts_again_with_resume(simple_data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["train", str(simple_data), "--out", str(out), *QUICK_FLAGS]

    def killed(self, epoch):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(trainer.Trainer, "_train_epoch", killed)
        assert main(argv) == 130
    assert (out / "config.yaml").is_file() and not rundir.has_checkpoint(out)
    capsys.readouterr()
    _one_line_error(capsys, argv, "stopped before its first checkpoint", "pass --resume")
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 1
    assert "starting again from epoch 1" in (out / "train.log").read_text()


# ----------------------------------------------------------------- absolute paths, moved runs, units (16.4)


def test_moved_run_and_data_resume_and_files_hold_absolute_paths(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_simple_dataset(tmp_path / "data")
    argv = ["train", "data", "--out", "runs/a", *QUICK_FLAGS, "--epochs", "3", "--val-every", "2"]
    real = trainer.run_validation

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(trainer, "run_validation", interrupt)  # the first validation is after epoch 2
        assert main(argv) == 130
    assert trainer.run_validation is real
    saved = yaml.safe_load((tmp_path / "runs" / "a" / "config.yaml").read_text())
    assert saved["data"] == str(tmp_path / "data") and saved["out"] == str(tmp_path / "runs" / "a")

    shutil.move(tmp_path / "runs" / "a", tmp_path / "moved")
    shutil.move(tmp_path / "data", tmp_path / "data2")
    capsys.readouterr()
    _one_line_error(capsys, ["train", "--resume", "--out", "moved"], "not found", "DATA --resume --out")
    assert main(["train", "data2", "--resume", "--out", "moved"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "moved"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"] == str(tmp_path / "data2") and saved["out"] == str(run)

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert list(rows[0])[:9] == list(rundir.METRICS_COLUMNS)
    assert list(rows[0])[9:] == ["val_iou_0", "val_iou_1", "val_iou_2"] and "lr" in rows[0]
    assert [r["val_iou_0"] == "" for r in rows] == [True, False, False]
    for r in rows[1:]:
        ious = [float(r[f"val_iou_{i}"]) for i in range(3)]
        assert all(0.0 <= v <= 1.0 for v in ious)
        assert float(r["val_miou"]) == pytest.approx(sum(ious) / 3)
    log = (run / "train.log").read_text()
    miou = 100 * float(rows[-1]["val_miou"])
    assert f"val mIoU {miou:.2f} %" in log
    assert f"val mIoU {100 * max(float(r['val_miou']) for r in rows[1:]):.2f} %" in out


# ----------------------------------------------------------------- what the weights started from (16.3)


def test_pretrained_source_is_recorded_and_survives_resume(simple_data, tmp_path, monkeypatch):
    real_build = trainer.build_model

    def build(config, pretrained=None):
        model = real_build(config, None)  # offline: pretend the cache held the weights
        if pretrained is not None:
            model.pretrained_source, model.pretrained_note = "imagenet (cache)", "a note for the user"
        return model

    monkeypatch.setattr(trainer, "build_model", build)
    common = {**QUICK, "data": str(simple_data), "out": str(tmp_path / "r"), "epochs": 2, "pretrained": "auto"}
    real_validation = trainer.run_validation
    calls = []

    def interrupt_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_validation(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(trainer, "run_validation", interrupt_on_second)
        with pytest.raises(KeyboardInterrupt):
            pixelwise.train(**common)
    pixelwise.train(out=str(tmp_path / "r"), resume=True, progress=False)  # built without weights
    run = tmp_path / "r"
    assert json.loads((run / "model.json").read_text())["training"]["pretrained"] == "imagenet (cache)"
    assert json.loads((run / "checkpoint.json").read_text())["pretrained"] == "imagenet (cache)"
    assert "# the weights started from: imagenet (cache)" in (run / "config.yaml").read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["pretrained"] == "auto"  # the option as given
    log = (run / "train.log").read_text()
    assert log.count("a note for the user") == 1 and log.count("weights imagenet (cache)") == 2
