"""One pipeline: the Predictor that predict, evaluate and serve share, and the CLI flags that build it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from pixelwise.cli import main
from pixelwise.errors import PixelwiseError
from pixelwise.postprocess import PostprocessConfig
from pixelwise.predict import InferenceConfig, Predictor, load, load_predictor

MIN_SIZE = 40  # large enough to change the masks of the tiny, briefly trained model


def _val_stems(data) -> list[str]:
    return (data / "splits" / "val.txt").read_text().split()


def _confusion(pred_dir, data, stems, num_classes: int, ignore_index: int) -> np.ndarray:
    """The dataset-level confusion matrix of the PNG masks in ``pred_dir`` against the ground truth."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for s in stems:
        pred = np.asarray(Image.open(pred_dir / f"{s}.png")).astype(np.int64)
        gt = np.asarray(Image.open(data / "masks" / f"{s}.png")).astype(np.int64)
        keep = (gt != ignore_index) & (gt < num_classes)
        cm += np.bincount(gt[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(cm.shape)
    return cm


def _perturbed_copy(run, dest, delta=0.3):
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoint.*", "model.onnx", "eval-*"))
    state = load_file(str(dest / "model.safetensors"))
    key = next(k for k, v in state.items() if v.dtype == torch.float32 and v.ndim == 4 and "segmentation_head" in k)
    state[key] = state[key] + delta * torch.randn(state[key].shape, generator=torch.Generator().manual_seed(0))
    save_file(state, str(dest / "model.safetensors"))
    return dest


# --- the required property: evaluate scores exactly what predict writes --------------------------------


def test_evaluate_scores_exactly_the_masks_predict_writes(trained_run, demo_data, tmp_path, capsys):
    stems = _val_stems(demo_data)
    images = [str(demo_data / "images" / f"{s}.png") for s in stems]
    options = ["--hflip", "--min-size", str(MIN_SIZE), "--backend", "torch", "--device", "cpu", "--quiet"]
    assert main(["predict", str(trained_run), *images, "--out", str(tmp_path / "pred"), *options]) == 0
    assert main(["evaluate", str(trained_run), str(demo_data), "--out", str(tmp_path / "ev"), *options]) == 0
    capsys.readouterr()

    seg = load(trained_run, "cpu", "torch")
    classes = seg.classes
    written = _confusion(tmp_path / "pred" / "masks", demo_data, stems, classes.num_classes, classes.ignore_index)
    scored = np.array(json.loads((tmp_path / "ev" / "confusion_matrix.json").read_text())["matrix"])
    np.testing.assert_array_equal(scored, written)

    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["images"] == len(stems)
    assert metrics["inference"]["hflip"] is True and metrics["inference"]["vflip"] is False
    assert metrics["postprocess"]["min_size"] == MIN_SIZE
    assert metrics["backend"] == "torch" and metrics["precision"] == "fp32"
    assert metrics["runs"] == [str(trained_run)]
    assert [m["backend"] for m in metrics["members"]] == ["torch"]
    assert metrics["members"][0]["weights"] == seg.fingerprint

    # The options change the masks, so scoring without them would not have matched.
    plain = [seg.predict(im) for im in images]
    with_options = [np.asarray(Image.open(tmp_path / "pred" / "masks" / f"{s}.png")) for s in stems]
    assert any((p != w).any() for p, w in zip(plain, with_options))


def test_evaluate_an_ensemble_records_its_runs(trained_run, demo_data, tmp_path):
    from pixelwise.evaluation import evaluate

    second = _perturbed_copy(trained_run, tmp_path / "second")
    m = evaluate([trained_run, second], demo_data, device="cpu", backend="torch", progress=False)
    assert m["out"] == str(trained_run / "eval-val-ensemble")
    assert m["runs"] == [str(trained_run), str(second)] and len(m["members"]) == 2
    predictor = load_predictor([trained_run, second], "cpu", "torch")
    stems = _val_stems(demo_data)
    correct = total = 0
    for s in stems:
        gt = np.asarray(Image.open(demo_data / "masks" / f"{s}.png"))
        pred = predictor.predict(demo_data / "images" / f"{s}.png")
        keep = gt != predictor.classes.ignore_index
        correct += int((pred == gt)[keep].sum())
        total += int(keep.sum())
    assert m["pixel_accuracy"] == pytest.approx(correct / total)
    shutil.rmtree(trained_run / "eval-val-ensemble")


# --- the Predictor ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inference, postprocess",
    [
        (InferenceConfig(), PostprocessConfig()),
        (InferenceConfig(hflip=True), PostprocessConfig(min_size=MIN_SIZE, fill_holes=8)),
        (InferenceConfig(tile="always", tile_size=32, tile_batch=3), PostprocessConfig()),
        (InferenceConfig(scales=(0.75, 1.0)), PostprocessConfig(crf=True, crf_iterations=2, crf_backend="torch")),
    ],
)
def test_every_path_of_the_predictor_gives_the_same_labels(trained_run, demo_data, inference, postprocess):
    predictor = load_predictor(trained_run, "cpu", "torch", inference=inference, postprocess=postprocess)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((demo_data / "images").iterdir())[:3]]
    for image in images:
        labels, pred = predictor.run(image)
        assert labels.dtype == np.int64 and labels.shape == image.shape[:2]
        np.testing.assert_array_equal(predictor.predict(image), labels)
        np.testing.assert_array_equal(predictor.finish(pred, image), labels)
    for got, image in zip(predictor.predict_batch(images), images):
        np.testing.assert_array_equal(got, predictor.predict(image))


def test_plain_prediction_labels_are_the_argmax_of_the_logits(trained_run):
    seg = load(trained_run, "cpu", "torch")
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    pred = seg.predict_full(image)
    assert pred.logit_labels is not None
    np.testing.assert_array_equal(pred.labels, seg.predict(image))
    assert (pred.labels == pred.probs.argmax(0)).mean() > 0.999


def test_predictor_with_options_shares_the_model_and_fails_early(trained_run):
    predictor = load_predictor(trained_run, "cpu", "torch")
    hflip = predictor.with_options(inference=InferenceConfig(hflip=True))
    assert hflip.model is predictor.model and hflip.inference.hflip and not predictor.inference.hflip
    assert hflip.postprocess == predictor.postprocess
    described = hflip.describe()
    assert described["inference"]["hflip"] is True and described["members"][0]["run"] == str(trained_run)
    with pytest.raises(PixelwiseError, match="MC dropout needs a model with dropout"):
        load_predictor(trained_run, "cpu", "torch", inference=InferenceConfig(mc_dropout=2))
    with pytest.raises(PixelwiseError, match="one run"):
        load_predictor([trained_run, trained_run], "cpu", onnx_path="x.onnx")
    with pytest.raises(PixelwiseError, match="Segmenter or an Ensemble"):
        Predictor(predictor)


# --- the command line -------------------------------------------------------------------------------


def test_inference_flag_choices_and_defaults_match_the_library():
    from pixelwise.cli import inference_flags as flags
    from pixelwise.postprocess import CRF_BACKENDS, MAX_CRF_ITERATIONS
    from pixelwise.predict import engine
    from pixelwise.predict.backends import BACKENDS, PRECISIONS
    from pixelwise.predict.engine import BLENDS, TILE_MODES

    assert flags.TILE_MODES == TILE_MODES and flags.BLENDS == tuple(BLENDS)
    assert flags.BACKENDS == BACKENDS and flags.PRECISIONS == PRECISIONS and flags.CRF_BACKENDS == CRF_BACKENDS
    inference, postprocess = InferenceConfig(), PostprocessConfig()
    for name, value in flags.INFERENCE_DEFAULTS.items():
        assert getattr(inference, name) == value, name
    for name, value in flags.POSTPROCESS_DEFAULTS.items():
        assert getattr(postprocess, name) == value, name
    assert set(flags.INFERENCE_FIELDS) == set(inference.to_dict())
    assert (flags.MAX_TILE_SIZE, flags.MAX_TILE_BATCH, flags.MAX_MC_DROPOUT) == (
        engine.MAX_TILE_SIZE,
        engine.MAX_TILE_BATCH,
        engine.MAX_MC_DROPOUT,
    )
    assert flags.MAX_CRF_ITERATIONS == MAX_CRF_ITERATIONS
    assert set(flags.POSTPROCESS_FIELDS) < set(postprocess.to_dict())


@pytest.mark.parametrize("command", ["predict", "evaluate", "serve"])
def test_predict_evaluate_and_serve_take_the_same_inference_flags(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--tile ",
        "--tile-size",
        "--tile-overlap",
        "--blend",
        "--tile-batch",
        "--tile-above",
        "--hflip",
        "--vflip",
        "--scales",
        "--mc-dropout",
        "--min-size",
        "--fill-holes",
        "--crf ",
        "--crf-iterations",
        "--crf-backend",
        "--backend",
        "--onnx",
        "--precision",
        "--device",
    ):
        assert flag in out, (command, flag)


def test_cli_serve_passes_runs_and_options(trained_run, tmp_path, monkeypatch):
    import pixelwise.serve

    seen = {}
    monkeypatch.setattr(
        pixelwise.serve, "serve", lambda model, config, **kw: seen.update(model=model, config=config, **kw)
    )
    argv = ["serve", str(trained_run), str(tmp_path), "--hflip", "--min-size", "9", "--tile-above", "1000"]
    assert main([*argv, "--model-threads", "3", "--max-upload-pixels", "5000", "--backend", "torch"]) == 0
    assert seen["model"] == [str(trained_run), str(tmp_path)]
    assert seen["inference"].hflip and seen["inference"].tile_above == 1000
    assert seen["postprocess"].min_size == 9 and seen["backend"] == "torch"
    assert seen["config"].model_threads == 3 and seen["config"].max_upload_pixels == 5000


def test_old_flag_spellings_still_work(trained_run, tmp_path, monkeypatch, capsys):
    import pixelwise.serve

    seen = {}
    monkeypatch.setattr(pixelwise.serve, "serve", lambda model, config, **kw: seen.update(config=config))
    assert main(["serve", str(trained_run), "--workers", "2", "--max-pixels", "777"]) == 0
    assert seen["config"].model_threads == 2 and seen["config"].max_upload_pixels == 777
    err = capsys.readouterr().err
    assert "--workers is now called --model-threads" in err and "--max-pixels is now called --max-upload-pixels" in err

    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    argv = ["predict", str(trained_run), str(img), "--out", str(tmp_path / "o"), "--backend", "torch", "--quiet"]
    assert main([*argv, "--workers", "1", "--max-pixels", "10"]) == 0
    assert "--max-pixels is now called --tile-above" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "o" / "predict.json").read_text())
    assert manifest["inference"]["tile_above"] == 10


def test_evaluate_needs_a_run_and_data(capsys):
    assert main(["evaluate", "only-one-path"]) == 2
    assert "give a run directory and then the data folder" in capsys.readouterr().err
