"""pixelwise evaluate: the pictures it writes, class checks before any prediction, output folders."""

import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import make_simple_dataset
from pixelwise.cli import main
from pixelwise.evaluation import evaluate

FAST = ["--device", "cpu", "--backend", "torch", "--quiet"]


def _no_prediction(monkeypatch):
    """Make any prediction fail loudly, to show that a refusal comes before the work."""
    from pixelwise.predict import predictor

    def boom(*args, **kwargs):
        raise AssertionError("predicted although the evaluation should have been refused")

    monkeypatch.setattr(predictor.Predictor, "predict", boom)


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_evaluate_writes_examples_and_per_class_chart(trained_run, demo_data, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", str(trained_run), str(demo_data), "--split", "all", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "%" in printed and "worst.png" in printed
    for name in ("worst.png", "best.png", "per_class_iou.png", "confusion.png", "metrics.json"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    worst, best = m["examples"]["worst"], m["examples"]["best"]
    assert len(worst) == len(best) == 4
    assert [e["miou"] for e in worst] == sorted(e["miou"] for e in worst)
    assert [e["miou"] for e in best] == sorted((e["miou"] for e in best), reverse=True)
    assert worst[0]["miou"] <= best[0]["miou"] and 0.0 <= worst[0]["miou"] <= 1.0  # fractions in files
    assert all(e["image"].endswith(".png") for e in worst + best)
    with Image.open(out / "worst.png") as im:
        assert im.mode == "RGB" and im.size[0] > 4 * 150 and im.size[1] > 4 * 150
    assert m["data"] == str(demo_data.resolve()) and m["class_map"] == "strict"

    # --examples 0: no example pictures, and none left from the evaluation before.
    assert (
        main(
            [
                "evaluate",
                str(trained_run),
                str(demo_data),
                "--split",
                "all",
                "--out",
                str(out),
                "--examples",
                "0",
                *FAST,
            ]
        )
        == 0
    )
    assert not (out / "worst.png").exists() and not (out / "best.png").exists()
    assert (out / "per_class_iou.png").is_file()


@pytest.mark.parametrize("bad", ["-1", "1000"])
def test_examples_out_of_range_is_refused(trained_run, demo_data, tmp_path, capsys, bad):
    rc = main(["evaluate", str(trained_run), str(demo_data), "--out", str(tmp_path / "ev"), "--examples", bad, *FAST])
    assert rc == 2
    _one_line_error(capsys, "--examples")
    assert not (tmp_path / "ev").exists()


def test_a_model_on_data_with_fewer_classes_is_refused_before_prediction(trained_run, tmp_path, capsys, monkeypatch):
    """A 5-class model on a 3-class folder without class names used to print mIoU 5.35."""
    three = make_simple_dataset(tmp_path / "three", n=6, num_classes=3)
    _no_prediction(monkeypatch)
    assert main(["evaluate", str(trained_run), str(three), "--out", str(tmp_path / "ev"), *FAST]) == 2
    _one_line_error(capsys, "3 classes", "has 5", "--classes-file")
    assert not (tmp_path / "ev").exists()


def test_data_with_other_class_names_is_refused(trained_run, demo_data, tmp_path, capsys, monkeypatch):
    other = tmp_path / "other"
    shutil.copytree(demo_data, other)
    meta = yaml.safe_load((other / "classes.yaml").read_text())
    meta["names"] = ["background", "cat", "dog", "bird", "fish"]
    (other / "classes.yaml").write_text(yaml.safe_dump(meta))
    _no_prediction(monkeypatch)
    for extra in ([], ["--class-map", "auto"]):
        assert main(["evaluate", str(trained_run), str(other), "--out", str(tmp_path / "ev"), *extra, *FAST]) == 2
        _one_line_error(capsys, "cat", "disc")
    assert not (tmp_path / "ev").exists()


def _permuted_copy(demo_data, dest):
    """The demo data with its classes listed in another order and its masks renumbered to match."""
    shutil.copytree(demo_data, dest)
    meta = yaml.safe_load((dest / "classes.yaml").read_text())
    order = [0, 3, 1, 4, 2]  # new index k holds the old class order[k]
    new_of_old = {old: new for new, old in enumerate(order)}
    meta["names"] = [meta["names"][o] for o in order]
    meta["colors"] = [meta["colors"][o] for o in order]
    (dest / "classes.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    lut = np.arange(256, dtype=np.uint8)
    for old, new in new_of_old.items():
        lut[old] = new
    for p in (dest / "masks").glob("*.png"):
        Image.fromarray(lut[np.asarray(Image.open(p))], "L").save(p)
    return dest


def test_class_map_auto_matches_classes_by_name(trained_run, demo_data, tmp_path, capsys):
    permuted = _permuted_copy(demo_data, tmp_path / "permuted")
    assert main(["evaluate", str(trained_run), str(permuted), "--out", str(tmp_path / "p"), *FAST]) == 2
    _one_line_error(capsys, "--class-map auto")
    base = ["--split", "all", "--examples", "1", *FAST]
    assert main(["evaluate", str(trained_run), str(demo_data), "--out", str(tmp_path / "a"), *base]) == 0
    rc = main(["evaluate", str(trained_run), str(permuted), "--out", str(tmp_path / "b"), "--class-map", "auto", *base])
    assert rc == 0
    a = json.loads((tmp_path / "a" / "confusion_matrix.json").read_text())
    b = json.loads((tmp_path / "b" / "confusion_matrix.json").read_text())
    assert a == b  # the same pixels scored under the model's class indices
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["class_map"] == "auto"


def test_auto_needs_class_names(trained_run, tmp_path, capsys):
    five = make_simple_dataset(tmp_path / "five", n=6, num_classes=5)
    rc = main(["evaluate", str(trained_run), str(five), "--out", str(tmp_path / "ev"), "--class-map", "auto", *FAST])
    assert rc == 2
    _one_line_error(capsys, "names none")


def test_unnamed_data_with_the_models_class_count_is_scored(trained_run, tmp_path):
    five = make_simple_dataset(tmp_path / "five", n=6, num_classes=5)
    m = evaluate(trained_run, five, "all", tmp_path / "ev", "cpu", progress=False, backend="torch", examples=2)
    assert m["num_classes"] == 5 and len(m["examples"]["worst"]) == 2


def test_another_data_set_never_replaces_an_earlier_evaluation(trained_run, demo_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["evaluate", str(run), str(demo_data), *FAST]) == 0
    # The same data and options again: replaced (the same figures; the latency measured anew).
    assert main(["evaluate", str(run), str(demo_data), *FAST]) == 0
    first = (run / "eval-val" / "metrics.json").read_text()
    capsys.readouterr()

    copy = tmp_path / "copy"
    shutil.copytree(demo_data, copy)
    with monkeypatch.context() as m:
        _no_prediction(m)
        assert main(["evaluate", str(run), str(copy), *FAST]) == 2
        _one_line_error(capsys, "eval-val", "another data", "--overwrite", "--out")
        assert main(["evaluate", str(run), str(demo_data), "--hflip", *FAST]) == 2
        _one_line_error(capsys, "another inference")
    assert (run / "eval-val" / "metrics.json").read_text() == first
    assert main(["evaluate", str(run), str(copy), "--overwrite", *FAST]) == 0
    assert json.loads((run / "eval-val" / "metrics.json").read_text())["data"] == str(copy.resolve())


def test_a_folder_of_other_files_is_not_overwritten(trained_run, demo_data, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "confusion.png").write_bytes(b"the user's own picture")
    assert main(["evaluate", str(trained_run), str(demo_data), "--out", str(out), *FAST]) == 2
    _one_line_error(capsys, "confusion.png")
    assert (out / "confusion.png").read_bytes() == b"the user's own picture"
    (out / "notes.txt").write_text("unrelated")
    (out / "confusion.png").unlink()
    assert main(["evaluate", str(trained_run), str(demo_data), "--out", str(out), *FAST]) == 0
    assert (out / "notes.txt").read_text() == "unrelated"


def test_out_that_is_a_file_is_refused_before_any_work(trained_run, demo_data, tmp_path, capsys, monkeypatch):
    target = tmp_path / "a-file"
    target.write_text("x")
    _no_prediction(monkeypatch)
    assert main(["evaluate", str(trained_run), str(demo_data), "--out", str(target), *FAST]) == 2
    _one_line_error(capsys, "a-file")
    assert target.read_text() == "x"


def test_a_full_disk_mid_way_gives_one_line_and_does_not_block_the_next_run(trained_run, demo_data, tmp_path, capsys):
    import errno

    from pixelwise import viz

    out = tmp_path / "ev"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "per_class_iou.png"))

    original = viz.plot_per_class_iou
    viz.plot_per_class_iou = full
    try:
        assert main(["evaluate", str(trained_run), str(demo_data), "--out", str(out), *FAST]) == 2
    finally:
        viz.plot_per_class_iou = original
    _one_line_error(capsys, "per_class_iou.png")
    assert not list(out.glob(".*.tmp"))
    assert main(["evaluate", str(trained_run), str(demo_data), "--out", str(out), *FAST]) == 0
    assert (out / "per_class_iou.png").is_file() and (out / "worst.png").is_file()


def test_unreadable_masks_are_named_not_counted_as_classes(trained_run, tmp_path, capsys):
    bad = make_simple_dataset(tmp_path / "bad", n=4, num_classes=5)
    for p in (bad / "masks").glob("*.png"):
        p.write_bytes(b"not a png")
    assert main(["evaluate", str(trained_run), str(bad), "--out", str(tmp_path / "ev"), *FAST]) == 2
    err = _one_line_error(capsys, "masks/")
    assert "classes" not in err


def test_boundary_iou_and_latency_in_metrics_and_report(trained_run, demo_data, tmp_path, capsys):
    from pixelwise.data import read_image, read_sample_mask
    from pixelwise.evaluation import DataOptions, open_split
    from pixelwise.metrics import BoundaryIoU
    from pixelwise.predict import load_predictor

    out = tmp_path / "ev"
    args = ["evaluate", str(trained_run), str(demo_data), "--split", "all", "--out", str(out), "--examples", "0"]
    assert main([*args, *FAST]) == 0
    printed = capsys.readouterr().out
    assert "Boundary IoU %" in printed and "(d = 2 % of the diagonal)" in printed
    assert "latency: median" in printed and "per image" in printed
    m = json.loads((out / "metrics.json").read_text())
    names = [pc["name"] for pc in m["per_class"]]
    edges = m["boundary_iou"]
    assert edges["ratio"] == 0.02 and list(edges["per_class"]) == names
    kept = [v for v in edges["per_class"].values() if v is not None]
    assert kept and all(0.0 <= v <= 1.0 for v in kept) and edges["mean"] == pytest.approx(np.mean(kept))

    # The same figure from the Predictor's labels, image by image.
    predictor = load_predictor(trained_run, device="cpu", backend="torch")
    expected = BoundaryIoU(predictor.classes.num_classes, predictor.classes.ignore_index)
    sizes = []
    for s in open_split(demo_data, "all", predictor.bundle, DataOptions())[1]:
        image = read_image(s.image)
        expected.update(predictor.predict(image), read_sample_mask(s, image.shape[:2]))
        sizes.append(image.shape[:2])
    assert edges["mean"] == pytest.approx(expected.compute()["mean"])

    lat = m["latency"]
    assert lat["images"] == m["images"] == len(sizes) and lat["batch_size"] == 1
    assert 0 < lat["median_ms_per_image"] <= lat["p90_ms_per_image"] and lat["first_ms"] > 0
    assert (lat["median_image_size"]["height"], lat["median_image_size"]["width"]) in sizes
    assert lat["backend"] == "torch" and lat["device"] == "cpu" and lat["threads"] >= 1
    assert "one at a time" in lat["measure"] and "excluded" in lat["measure"]


def test_boundary_ratio_is_checked_and_recorded(trained_run, demo_data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ev"
    args = ["evaluate", str(trained_run), str(demo_data), "--out", str(out), "--examples", "0", *FAST]
    assert main([*args, "--boundary-ratio", "0.1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["boundary_iou"]["ratio"] == 0.1 and m["boundary_ratio"] == 0.1
    capsys.readouterr()
    # Another width gives other figures: the earlier evaluation is kept unless --overwrite.
    assert main(args) == 2
    _one_line_error(capsys, "boundary ratio", "--overwrite")
    for bad in ("0", "0.6", "x"):
        with pytest.raises(SystemExit) as e:
            main([*args, "--boundary-ratio", bad])
        assert e.value.code == 2
        assert "--boundary-ratio" in capsys.readouterr().err
    _no_prediction(monkeypatch)
    with pytest.raises(Exception, match="--boundary-ratio 0: .* at most 0.5"):
        evaluate(trained_run, demo_data, out=tmp_path / "other", device="cpu", progress=False, boundary_ratio=0)
