"""ONNX and TorchScript export: parity with PyTorch, dynamic sizes, refusing a file of another model."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pixelwise.cli import main
from pixelwise.errors import PixelwiseError
from pixelwise.export import export_model, weights_fingerprint
from pixelwise.predict.predictor import load


@pytest.fixture(scope="module")
def exported_run(trained_run, tmp_path_factory):
    """A copy of the trained run with model.onnx exported (once for this module)."""
    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoint.*"))
    res = export_model(run, "onnx")
    assert res["path"] == str(run / "model.onnx") and 0 <= res["max_abs_diff"] <= 1e-3
    return run


def _other_model(run, dest):
    """The same architecture with slightly different weights (a retrained model, say)."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("model.onnx", "checkpoint.*"))
    state = load_file(str(dest / "model.safetensors"))
    key = next(k for k, v in state.items() if v.dtype == torch.float32 and v.ndim == 4)
    state[key] = state[key] + 0.05
    save_file(state, str(dest / "model.safetensors"))
    return dest


def test_onnx_predicts_like_pytorch_at_any_size(exported_run):
    rng = np.random.default_rng(0)
    torch_seg = load(exported_run, "cpu", backend="torch")
    onnx_seg = load(exported_run, "cpu", backend="onnxruntime")
    for h, w in [(37, 53), (64, 64), (1, 1), (5, 200)]:  # dynamic height and width
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        np.testing.assert_allclose(onnx_seg.predict_proba(img), torch_seg.predict_proba(img), atol=1e-4)
    assert onnx_seg.active_backend == "onnxruntime" and torch_seg.active_backend == "torch"


def test_onnx_batch_runs_image_by_image_in_parallel_with_the_same_result(exported_run):
    seg = load(exported_run, "cpu", backend="onnxruntime")
    member = seg.members()[0]
    member.threads = 2  # the parallel path whatever this machine's thread count
    x = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    together = member.logits(x)
    assert member._single is not None  # the batch went through the single-threaded session
    one_by_one = torch.cat(
        [torch.from_numpy(member.session.run(["logits"], {"image": x[i : i + 1].numpy()})[0]) for i in range(3)]
    )
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=0)
    labels = seg.predict_batch([(255 * x[i].permute(1, 2, 0).numpy()).astype(np.uint8) for i in range(3)])
    assert [m.shape for m in labels] == [(40, 56)] * 3


def test_onnx_sizes_seen_twice_get_fixed_size_sessions_with_the_same_result(exported_run):
    seg = load(exported_run, "cpu", backend="onnxruntime")
    member = seg.members()[0]
    member.threads = 2
    batch = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    first = member.logits(batch)  # first sight of 40x56: the free-shape session
    assert not member._static
    again = member.logits(batch)  # second sight: a session fixed to 1x3x40x56
    fixed = member._static[(1, 40, 56)]
    assert [tuple(i.shape) for i in fixed.get_inputs()] == [(1, 3, 40, 56)]
    torch.testing.assert_close(again, first, atol=1e-5, rtol=0)
    one = member.logits(batch[:1])
    one = member.logits(batch[:1])  # single images: all threads, also fixed on the second sight
    assert (2, 40, 56) in member._static
    torch.testing.assert_close(one, first[:1], atol=1e-5, rtol=0)
    member.STATIC_SIZES = 1  # only the most recent size keeps its sessions
    for _ in range(2):
        member.logits(torch.rand(2, 3, 24, 24))
    assert set(member._static) == {(2, 40, 56), (1, 24, 24)}
    other = torch.rand(1, 3, 33, 17)
    torch.testing.assert_close(member.logits(other), member.logits(other), atol=1e-5, rtol=0)


def test_export_torchscript_cli_prints_parity(trained_run, tmp_path, capsys):
    target = tmp_path / "m.pt"
    assert main(["export", str(trained_run), "--format", "torchscript", "--out", str(target)]) == 0
    out = capsys.readouterr().out
    assert "parity with PyTorch: max |difference| = " in out and str(target) in out
    assert target.is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream; still loads
        reloaded = torch.jit.load(str(target))
    x = torch.rand(1, 3, 41, 29)
    assert reloaded(x).shape == (1, 4 + 1, 41, 29)  # the demo classes: background + 4 shapes


def test_parity_above_tolerance_fails_loudly_and_writes_nothing(trained_run, tmp_path, capsys, monkeypatch):
    import pixelwise.export as ex

    monkeypatch.setattr(ex, "parity", lambda *a, **k: 0.5)  # as a broken exporter would differ
    target = tmp_path / "bad.pt"
    rc = main(["export", str(trained_run), "--format", "torchscript", "--out", str(target), "--tolerance", "1e-3"])
    err = capsys.readouterr().err
    assert rc == 2 and "differs from PyTorch by 0.5" in err and "not written" in err
    assert not target.exists() and not list(tmp_path.iterdir())


def test_onnx_of_another_model_is_refused(exported_run, tmp_path, capsys):
    other = _other_model(exported_run, tmp_path / "other")
    other_torch = load(other, "cpu", "torch")
    assert weights_fingerprint(other_torch.model) != weights_fingerprint(load(exported_run, "cpu", "torch").model)
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(img)
    rc = main(
        [
            "predict",
            str(other),
            str(img),
            "--out",
            str(tmp_path / "p"),
            "--backend",
            "onnxruntime",
            "--onnx",
            str(exported_run / "model.onnx"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "exported from another model" in err and "Traceback" not in err
    # a stale RUN/model.onnx: explicit onnxruntime refuses it, auto re-exports the current weights
    shutil.copy(exported_run / "model.onnx", other / "model.onnx")
    with pytest.raises(PixelwiseError, match="exported from another model"):
        load(other, "cpu", backend="onnxruntime").predict(np.zeros((8, 8, 3), np.uint8))
    auto = load(other, "cpu", backend="auto")
    x = np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    np.testing.assert_allclose(auto.predict_proba(x), other_torch.predict_proba(x), atol=1e-4)
    assert auto.active_backend == "onnxruntime"


def test_onnx_that_is_not_from_pixelwise_or_not_onnx(exported_run, tmp_path):
    import onnx

    proto = onnx.load(str(exported_run / "model.onnx"))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(PixelwiseError, match="not an ONNX file written by"):
        load(exported_run, "cpu", backend="onnxruntime", onnx_path=bare).predict(np.zeros((8, 8, 3), np.uint8))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(PixelwiseError, match="ONNX Runtime cannot load it"):
        load(exported_run, "cpu", backend="onnxruntime", onnx_path=junk).predict(np.zeros((8, 8, 3), np.uint8))


def test_unknown_format_and_mc_dropout_on_onnx(exported_run):
    with pytest.raises(PixelwiseError, match="unknown export format"):
        export_model(exported_run, "tflite")
    from pixelwise.predict.engine import InferenceConfig

    seg = load(exported_run, "cpu", backend="onnxruntime")
    with pytest.raises(PixelwiseError, match="MC dropout needs the PyTorch model"):
        seg.predict(np.zeros((8, 8, 3), np.uint8), InferenceConfig(mc_dropout=2))


def test_cli_export_choices_match_the_library():
    from pixelwise.cli import export as cli_export
    from pixelwise.export import DEFAULT_TOLERANCE, FORMATS

    assert cli_export.EXPORT_FORMATS == tuple(FORMATS) and cli_export.DEFAULT_TOLERANCE == DEFAULT_TOLERANCE


def test_parity_runs_through_the_prediction_backends(trained_run, tmp_path, monkeypatch):
    import pixelwise.export as ex
    from pixelwise.predict.backends import OnnxMember, TorchMember

    seen = []
    real = ex.parity
    monkeypatch.setattr(ex, "parity", lambda ref, got, sizes: seen.append((ref, got)) or real(ref, got, sizes))
    export_model(trained_run, "onnx", out=tmp_path / "m.onnx")
    ((reference, exported),) = seen
    assert isinstance(reference, TorchMember) and isinstance(exported, OnnxMember)


def test_export_and_predict_help(capsys):
    for cmd, words in [
        ("export", ["--format", "--tolerance", "onnx"]),
        ("predict", ["--tile-size", "--hflip", "--mc-dropout", "--crf", "--backend", "--overwrite"]),
    ]:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and f"usage: pixelwise {cmd}" in out
        assert all(w in out for w in words)
