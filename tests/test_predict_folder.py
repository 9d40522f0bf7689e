"""Folder-scale prediction: bad files, resume, parallel decoding, extra outputs, ensembles."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import pixelwise.predict.batch as batch_mod
from pixelwise.cli import main
from pixelwise.errors import PixelwiseError
from pixelwise.predict import Ensemble, load, predict_files
from pixelwise.predict.engine import InferenceConfig


@pytest.fixture
def folder(tmp_path):
    """Good images of several kinds, plus one corrupt file."""
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)).save(d / f"rgb{i}.png")
    Image.fromarray(rng.integers(0, 256, (25, 33, 4), dtype=np.uint8), "RGBA").save(d / "alpha.png")
    Image.fromarray(rng.integers(0, 65535, (21, 19), dtype=np.uint16)).save(d / "deep16.png")
    Image.fromarray(np.array([[[9, 200, 30]]], dtype=np.uint8)).save(d / "one.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return d


@pytest.fixture(scope="module")
def seg(trained_run):
    return load(trained_run, "cpu", backend="torch")


def test_folder_with_a_corrupt_file_alpha_16bit_and_1x1(seg, folder, tmp_path):
    out = tmp_path / "out"
    res = predict_files(seg, [folder], out, progress=False, uncertainty=True, uncertainty_npy=True, probs=True)
    assert res["written"] == 7 and res["skipped"] == 0
    assert [p for p, _ in res["failed"]] == [str(folder / "broken.jpg")]
    assert "cannot read this image" in res["failed"][0][1]
    for stem, size in [("alpha", (33, 25)), ("deep16", (19, 21)), ("one", (1, 1)), ("rgb3", (40, 33))]:
        assert Image.open(out / "masks" / f"{stem}.png").size == size
        # the overlay and the heat maps are the picture at its own size, with a legend strip below
        # or a colour bar to the right
        ow, oh = Image.open(out / "overlays" / f"{stem}.png").size
        assert ow >= size[0] and oh > size[1]
        hw, hh = Image.open(out / "uncertainty" / f"{stem}_entropy.png").size
        assert hw > size[0] and hh >= size[1]
    probs = np.load(out / "probs" / "rgb0.npy")
    conf = np.load(out / "uncertainty" / "rgb0_confidence.npy")
    ent = np.load(out / "uncertainty" / "rgb0_entropy.npy")
    mask = np.asarray(Image.open(out / "masks" / "rgb0.png"))
    assert probs.shape == (seg.num_classes, 30, 40) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(conf, probs.max(0), atol=1e-6)
    np.testing.assert_allclose(ent, -(probs * np.log(np.clip(probs, 1e-30, None))).sum(0), atol=1e-4)
    np.testing.assert_array_equal(mask, probs.argmax(0))
    assert not list(out.rglob("*.tmp"))


def test_resume_skips_finished_outputs_and_refuses_other_settings(seg, folder, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = predict_files(seg, [folder], out, progress=False)
    assert first["written"] == 7
    (out / "masks" / "rgb1.png").unlink()  # as if interrupted before this one finished
    calls = []
    real = batch_mod._label
    monkeypatch.setattr(batch_mod, "_label", lambda p, img, full: calls.append(img.shape) or real(p, img, full))
    again = predict_files(seg, [folder], out, progress=False)
    assert again["written"] == 1 and again["skipped"] == 6 and calls == [(31, 40, 3)]
    assert (out / "masks" / "rgb1.png").is_file()
    assert len(again["failed"]) == 1  # the corrupt file is tried again and listed again
    with pytest.raises(PixelwiseError, match="other settings"):
        predict_files(seg, [folder], out, progress=False, inference=InferenceConfig(hflip=True))
    calls.clear()
    redo = predict_files(seg, [folder], out, progress=False, inference=InferenceConfig(hflip=True), overwrite=True)
    assert redo["written"] == 7 and len(calls) == 7
    assert json.loads((out / "predict.json").read_text())["inference"]["hflip"] is True


def test_images_are_decoded_in_worker_threads(seg, folder, tmp_path, monkeypatch):
    threads = set()
    real = batch_mod.read_image

    def spy(path, max_pixels):
        threads.add(threading.current_thread().name)
        return real(path, max_pixels)

    monkeypatch.setattr(batch_mod, "read_image", spy)
    res = predict_files(seg, [folder], tmp_path / "out", progress=False, decode_threads=3)
    assert res["written"] == 7
    assert threads and all(t.startswith("decode") for t in threads)
    assert threading.current_thread().name not in threads


def test_cli_lists_unreadable_files_at_the_end(trained_run, folder, tmp_path, capsys):
    rc = main(
        [
            "predict",
            str(trained_run),
            str(folder),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            "--backend",
            "torch",
            "--min-size",
            "4",
            "--fill-holes",
            "4",
            "--tile",
            "always",
            "--tile-size",
            "32",
            "--tile-batch",
            "4",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 1
    assert "7 images predicted with 1 model" in captured.out
    assert "1 input skipped (unreadable or refused):" in captured.err and "broken.jpg" in captured.err
    assert "Traceback" not in captured.err


def _perturbed_copy(run, dest, delta=0.05, names=None):
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoint.*", "model.onnx"))
    state = load_file(str(dest / "model.safetensors"))
    key = next(k for k, v in state.items() if v.dtype == torch.float32 and v.ndim == 4 and "segmentation_head" in k)
    noise = torch.randn(state[key].shape, generator=torch.Generator().manual_seed(0))
    state[key] = state[key] + delta * noise  # random per class: a uniform shift would cancel in the softmax
    save_file(state, str(dest / "model.safetensors"))
    if names is not None:
        meta = json.loads((dest / "model.json").read_text())
        meta["classes"]["names"] = names
        (dest / "model.json").write_text(json.dumps(meta))
    return dest


def test_ensemble_averages_probabilities(trained_run, tmp_path, capsys):
    second = _perturbed_copy(trained_run, tmp_path / "second", delta=0.3)
    img_dir = tmp_path / "in"
    img_dir.mkdir()
    img = np.random.default_rng(3).integers(0, 256, (28, 36, 3), dtype=np.uint8)
    Image.fromarray(img).save(img_dir / "a.png")
    rc = main(
        [
            "predict",
            str(trained_run),
            str(second),
            str(img_dir),
            "--out",
            str(tmp_path / "o"),
            "--probs",
            "--backend",
            "torch",
            "--quiet",
        ]
    )
    assert rc == 0 and "an ensemble of 2 models" in capsys.readouterr().out
    a = load(trained_run, "cpu", "torch").predict_proba(img)
    b = load(second, "cpu", "torch").predict_proba(img)
    assert np.abs(a - b).max() > 1e-3  # the two models really differ
    np.testing.assert_allclose(np.load(tmp_path / "o" / "probs" / "a.npy"), (a + b) / 2, atol=1e-5)


def test_ensemble_with_different_classes_is_a_clear_error(trained_run, tmp_path, capsys):
    meta = json.loads((trained_run / "model.json").read_text())
    renamed = list(meta["classes"]["names"])
    renamed[1] = "something-else"
    other = _perturbed_copy(trained_run, tmp_path / "other", names=renamed)
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    rc = main(["predict", str(trained_run), str(other), str(img), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "same class list" in err and str(other) in err and "\n" not in err.strip()
    with pytest.raises(PixelwiseError, match="same class list"):
        Ensemble([load(trained_run, "cpu", "torch"), load(other, "cpu", "torch")])


def test_mc_dropout_on_a_model_without_dropout_is_a_clear_cli_error(trained_run, folder, tmp_path, capsys):
    rc = main(["predict", str(trained_run), str(folder), "--out", str(tmp_path / "o"), "--mc-dropout", "4", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "MC dropout needs a model with dropout" in err and "--dropout" in err
    assert not (tmp_path / "o" / "masks").exists()
