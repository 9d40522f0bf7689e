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
    with pytest.warns(UserWarning, match="exported from another model.*exporting the run's weights in memory"):
        got = auto.predict_proba(x)
    np.testing.assert_allclose(got, other_torch.predict_proba(x), atol=1e-4)
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


def _altered_onnx(src, dest, rewrite_hash: bool = False):
    """``src`` with one weight tensor of its graph scaled, the pixelwise metadata kept as exported
    (or, with ``rewrite_hash``, the graph hash recomputed as a careful forger would)."""
    import onnx
    from onnx import numpy_helper

    from pixelwise.predict.backends import GRAPH_KEY, graph_fingerprint

    proto = onnx.load(str(src))
    init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(init).copy()
    init.CopyFrom(numpy_helper.from_array(arr * 1.5 + 0.1, init.name))
    if rewrite_hash:
        for p in proto.metadata_props:
            if p.key == GRAPH_KEY:
                p.value = graph_fingerprint(proto)
    onnx.save(proto, str(dest))
    return dest


def test_onnx_with_altered_weights_is_refused_or_ignored(exported_run, tmp_path, capsys):
    # Before, the check compared only the fingerprint in the metadata, so this file was used and
    # a fifth of the pixels came out different.
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    _altered_onnx(exported_run / "model.onnx", run / "model.onnx")
    x = np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    with pytest.raises(PixelwiseError, match="weights were changed after the export") as e:
        load(run, "cpu", backend="onnxruntime").predict(x)
    assert "\n" not in str(e.value) and "pixelwise export" in str(e.value)
    with pytest.warns(UserWarning, match="weights were changed after the export.*exporting the run's weights"):
        auto = load(run, "cpu", backend="auto")
        got = auto.predict_proba(x)
    np.testing.assert_allclose(got, load(run, "cpu", backend="torch").predict_proba(x), atol=1e-4)
    # the same file named with --onnx: one line, no traceback
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(x).save(img)
    rc = main(["predict", str(run), str(img), "--out", str(tmp_path / "p"), "--onnx", str(run / "model.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "weights were changed after the export" in err and "Traceback" not in err
    assert not (tmp_path / "p" / "predict.json").exists()


def test_onnx_with_altered_weights_and_rewritten_hash_fails_the_parity_check(exported_run, tmp_path):
    forged = _altered_onnx(exported_run / "model.onnx", tmp_path / "forged.onnx", rewrite_hash=True)
    with pytest.raises(PixelwiseError, match="logits differ from the run's model.safetensors"):
        load(exported_run, "cpu", backend="onnxruntime", onnx_path=forged).predict(np.zeros((8, 8, 3), np.uint8))


def test_export_numbers_and_out_checked_before_any_work(trained_run, tmp_path, capsys, monkeypatch):
    import pixelwise.export as ex

    monkeypatch.setattr(ex, "load_bundle", lambda *a, **k: pytest.fail("the model was loaded"))
    for flags, words in (
        (["--opset", "3"], "--opset: must be at least 11"),
        (["--opset", "99"], "--opset: must be at most 23"),
        (["--tolerance", "-1"], "--tolerance: must be above 0"),
        (["--tolerance", "nan"], "--tolerance: expected a finite number"),
        (["--tolerance", "5"], "--tolerance: must be at most 1"),
    ):
        with pytest.raises(SystemExit) as e:
            main(["export", str(trained_run), *flags])
        err = capsys.readouterr().err
        assert e.value.code == 2 and words.split(": ", 1)[1] in err.strip().splitlines()[-1], err
        assert words.split(":")[0] in err and "Traceback" not in err
    with pytest.raises(PixelwiseError, match="ONNX opset must be 11 to"):
        export_model(trained_run, "onnx", opset=3)
    with pytest.raises(PixelwiseError, match="tolerance must be above 0 and at most 1"):
        export_model(trained_run, "onnx", tolerance=2.0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out, words in (
        (blocker / "m.onnx", "file is a file, not a folder"),
        (tmp_path, "is a folder; give a file name"),
    ):
        rc = main(["export", str(trained_run), "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_export_constants_repeated_for_the_parser_match():
    import pixelwise.cli.export as cli_export
    import pixelwise.export as ex

    assert (cli_export.OPSET_MIN, cli_export.OPSET_MAX) == (ex.OPSET_MIN, ex.OPSET_MAX)
    assert cli_export.EXPORT_FORMATS == tuple(ex.FORMATS) and cli_export.DEFAULT_TOLERANCE == ex.DEFAULT_TOLERANCE
    assert cli_export.MAX_TOLERANCE == ex.MAX_TOLERANCE


def test_a_failed_onnx_export_prints_one_line_not_the_graph(trained_run, tmp_path, capfd, monkeypatch):
    import pixelwise.export as ex

    monkeypatch.setattr(ex, "OPSET_MIN", 9)  # opset 9 cannot pad by a computed amount
    rc = main(["export", str(trained_run), "--out", str(tmp_path / "m.onnx"), "--opset", "11"])
    assert rc == 0
    from pixelwise.bundle import load_bundle
    from pixelwise.predict.backends import onnx_bytes

    model, bundle = load_bundle(trained_run, "cpu")
    capfd.readouterr()
    with pytest.raises(PixelwiseError, match="cannot export"):
        onnx_bytes(model, bundle, opset=9)
    captured = capfd.readouterr()
    assert "Torch IR graph" not in captured.err and "graph(" not in captured.err
