"""Prediction against hostile or careless use: bad numbers, output folders, huge images, killed runs,
and what the Python objects show."""

from __future__ import annotations

import json
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

import pixelwise.predict.batch as batch_mod
import pixelwise.predict.predictor as predictor_mod
from pixelwise.cli import main
from pixelwise.errors import PixelwiseError
from pixelwise.predict import Ensemble, InferenceConfig, load, predict_files
from pixelwise.predict.predictor import Predictor


@pytest.fixture(scope="module")
def seg(trained_run):
    return load(trained_run, "cpu", backend="torch")


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (30, 40 + i, 3), dtype=np.uint8)).save(d / f"im{i}.png")
    return d


def _no_model(monkeypatch):
    """Fail the test if a command loads the model."""
    monkeypatch.setattr(predictor_mod, "load_bundle", lambda *a, **k: pytest.fail("the model was loaded"))


def png_claiming_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height pixels, CRC fixed."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --- numbers and folders checked before any work ---------------------------------------------------


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--alpha", "3"], "--alpha: must be at most 1"),
        (["--alpha", "nan"], "--alpha: expected a finite number"),
        (["--tile-overlap", "1"], "--tile-overlap: must be below 1"),
        (["--mc-dropout", "-1"], "--mc-dropout: must be at least 0"),
        (["--mc-dropout", "100000"], "--mc-dropout: must be at most 1000"),
        (["--crf-iterations", "0"], "--crf-iterations: must be at least 1"),
        (["--crf-iterations", "5000"], "--crf-iterations: must be at most 100"),
        (["--tile-size", "100000"], "--tile-size: must be at most 16384"),
        (["--tile-batch", "5000"], "--tile-batch: must be at most 1024"),
        (["--min-size", "-3"], "--min-size: must be at least 0"),
        (["--fill-holes", "-3"], "--fill-holes: must be at least 0"),
        (["--max-image-pixels", "0"], "--max-image-pixels: must be at least 1"),
    ],
)
def test_bad_numbers_are_refused_before_the_model_loads(
    trained_run, images, tmp_path, capsys, monkeypatch, flags, words
):
    _no_model(monkeypatch)
    with pytest.raises(SystemExit) as e:
        main(["predict", str(trained_run), str(images), "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_alpha_out_of_range_leaves_nothing_and_the_next_call_works(seg, images, tmp_path):
    # Before, alpha 3 ran the model, died in the writer with a traceback and left a predict.json
    # that made the next, correct call refuse the folder.
    out = tmp_path / "o"
    with pytest.raises(PixelwiseError, match=r"alpha .* must be in \[0, 1\], got 3"):
        predict_files(seg, [images], out, alpha=3, progress=False)
    assert not out.exists() or not any(out.rglob("*"))
    assert predict_files(seg, [images], out, alpha=0.4, progress=False)["written"] == 3


def test_a_run_that_fails_before_its_first_image_blocks_nothing(seg, images, tmp_path, monkeypatch):
    out = tmp_path / "o"

    def broken(*args):
        raise PixelwiseError("the model failed")

    monkeypatch.setattr(batch_mod, "_label", broken)
    with pytest.raises(PixelwiseError, match="the model failed"):
        predict_files(seg, [images], out, progress=False, inference=InferenceConfig(hflip=True))
    assert not (out / batch_mod.MANIFEST).exists()
    monkeypatch.undo()
    assert predict_files(seg, [images], out, progress=False)["written"] == 3  # other settings, same folder


def test_out_that_is_a_file_is_one_line_before_the_model_loads(trained_run, images, tmp_path, capsys, monkeypatch):
    _no_model(monkeypatch)
    blocker = tmp_path / "taken"
    blocker.write_text("mine")
    for out in (blocker, blocker / "sub"):
        rc = main(["predict", str(trained_run), str(images), "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and "--out" in err and "is a file" in err and len(err.strip().splitlines()) == 1, err
    assert blocker.read_text() == "mine"


def test_files_pixelwise_did_not_write_are_never_overwritten(seg, images, tmp_path):
    out = tmp_path / "o"
    (out / "overlays").mkdir(parents=True)
    (out / "overlays" / "im0.png").write_bytes(b"the user's own picture")
    with pytest.raises(PixelwiseError, match="overlays already holds files of unknown origin"):
        predict_files(seg, [images], out, progress=False)
    assert (out / "overlays" / "im0.png").read_bytes() == b"the user's own picture"


def test_default_out_is_predictions_here_and_never_a_foreign_folder(trained_run, images, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(trained_run), str(images), "--quiet", "--backend", "torch"]) == 0
    assert "into predictions" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "predictions" / "masks").iterdir()) == ["im0.png", "im1.png", "im2.png"]
    # the same settings again: resumed in place
    assert main(["predict", str(trained_run), str(images), "--quiet", "--backend", "torch"]) == 0
    assert "3 already done" in capsys.readouterr().out
    # other settings: a new folder, the first one untouched
    assert main(["predict", str(trained_run), str(images), "--quiet", "--backend", "torch", "--hflip"]) == 0
    assert "into predictions-2" in capsys.readouterr().out
    # a folder of the user's named predictions-3 is skipped
    (tmp_path / "predictions-3").mkdir()
    (tmp_path / "predictions-3" / "notes.txt").write_text("mine")
    assert main(["predict", str(trained_run), str(images), "--quiet", "--backend", "torch", "--vflip"]) == 0
    assert "into predictions-4" in capsys.readouterr().out
    assert (tmp_path / "predictions-3" / "notes.txt").read_text() == "mine"


# --- huge images and killed runs --------------------------------------------------------------------


def test_max_image_pixels_is_a_predict_flag_and_no_raw_bomb_warning(trained_run, images, tmp_path, capsys):
    # 12000 x 10000 = 120 Mpx: over the default limit of 100 Mpx, under Pillow's error threshold,
    # so Pillow warned (DecompressionBombWarning) before our own message.
    (images / "huge.png").write_bytes(png_claiming_size(12000, 10000))
    argv = ["predict", str(trained_run), str(images), "--out", str(tmp_path / "o"), "--quiet", "--backend", "torch"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(argv)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    err = capsys.readouterr().err
    assert rc == 1 and "120,000,000 pixels" in err and "--max-image-pixels N" in err
    assert "DecompressionBomb" not in err
    # the flag named in the hint works in predict: a lower limit refuses the ordinary images too
    rc = main([*argv[:4], str(tmp_path / "o2"), "--quiet", "--backend", "torch", "--max-image-pixels", "1000"])
    err = capsys.readouterr().err
    assert (
        rc == 1
        and "4 inputs skipped" in err
        and err.count("\nskipped:") == 4
        and "above the limit of 1,000 pixels" in err
    )


def test_max_image_pixels_default_matches_the_readers():
    from pixelwise.cli import build_parser
    from pixelwise.data.types import DEFAULT_MAX_PIXELS

    args = build_parser().parse_args(["predict", "run", "x.png"])
    assert args.max_image_pixels == DEFAULT_MAX_PIXELS


def test_temporary_files_of_a_killed_run_are_removed_on_the_next(seg, images, tmp_path):
    out = tmp_path / "o"
    predict_files(seg, [images], out, progress=False)
    (out / "masks" / "im1.png").unlink()  # killed while writing im1
    left = [
        out / "overlays" / ".im1.png.0a1b2c3d.tmp",
        out / "masks" / ".im1.png.deadbeef.tmp",
        out / ".predict.json.12345678.tmp",
    ]
    for f in left:
        f.write_bytes(b"half")
    kept = out / "overlays" / ".keep"
    kept.write_text("")
    res = predict_files(seg, [images], out, progress=False)
    assert res["written"] == 1 and res["skipped"] == 2
    assert not any(f.exists() for f in left) and kept.exists()
    assert not list(out.rglob("*.tmp"))


# --- what the outputs and the objects show ----------------------------------------------------------


def test_masks_are_palette_pngs_in_the_class_colours(seg, images, tmp_path):
    out = tmp_path / "o"
    predict_files(seg, [images], out, progress=False)
    got = Image.open(out / "masks" / "im0.png")
    assert got.mode == "P"
    np.testing.assert_array_equal(np.asarray(got), seg.predict(images / "im0.png"))
    palette = np.array(got.getpalette()[: 3 * seg.num_classes]).reshape(-1, 3)
    np.testing.assert_array_equal(palette, np.array(seg.classes.colors))


def test_predict_of_a_list_returns_a_list(seg, trained_run, images):
    paths = sorted(images.iterdir())
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    expected = [seg.predict(a) for a in arrays]
    for model in (seg, Predictor(seg), Ensemble([seg, load(trained_run, "cpu", backend="torch")])):
        for given in (paths, arrays, tuple(str(p) for p in paths)):
            got = model.predict(given)
            assert isinstance(got, list) and len(got) == 3
            for g, e in zip(got, expected):
                np.testing.assert_array_equal(g, e)
    assert seg.predict(arrays[0]).shape == (30, 40)  # one image: one mask, as before


def test_reprs_say_what_is_loaded(seg, trained_run):
    text = repr(seg)
    cfg = seg.bundle.model
    assert text.startswith(f"Segmenter({cfg.arch}/{cfg.encoder}, {seg.num_classes} classes: {seg.classes.names[0]}")
    assert "device=cpu" in text and "backend=torch" in text and "precision=fp32" in text and str(trained_run) in text
    ens = Ensemble([seg, seg])
    assert repr(ens).startswith(f"Ensemble(2 models: {cfg.arch}/{cfg.encoder}, {cfg.arch}/{cfg.encoder}")
    pred = Predictor(seg, InferenceConfig(hflip=True, scales=(0.5, 1.0)))
    assert repr(pred).startswith("Predictor(Segmenter(") and "inference(hflip=True, scales=[0.5, 1.0])" in repr(pred)
    assert repr(Predictor(seg)).endswith("default options)")


def test_manifest_records_the_options_of_the_written_outputs(seg, images, tmp_path):
    out = tmp_path / "o"
    predict_files(seg, [images], out, alpha=0.25, progress=False)
    assert json.loads((out / "predict.json").read_text())["alpha"] == 0.25
