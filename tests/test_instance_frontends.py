"""Objects in the front ends: the object flags, predict's instances/ and panoptic/ files (resumable),
evaluate's mask AP and PQ sections, and serve's object formats."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from PIL import Image
from scipy import ndimage
from torch import nn

from pixelwise.bundle import InputSpec
from pixelwise.classes import ClassInfo
from pixelwise.cli import main
from pixelwise.data.synthetic import DEMO_CLASSES
from pixelwise.errors import PixelwiseError
from pixelwise.instances import GroupingConfig, ground_truth_instances, ground_truth_panoptic, panoptic_ids
from pixelwise.predict import InstanceOptions, Predictor, predict_files
from pixelwise.predict.backends import TorchMember
from pixelwise.predict.predictor import BaseSegmenter, ObjectResult

# Three separate discs (centre y, centre x, radius) on a 48x48 scene.
DISCS = ((12, 14, 6), (30, 34, 8), (38, 10, 5))


def _scene(size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size, 3), np.uint8)
    for cy, cx, r in DISCS:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 255
    return image


class DiscNet(nn.Module):
    """Exact outputs of an instance model on :func:`_scene` images: class 1 where the image is bright,
    a centre logit peaking at each disc's centre of mass, offsets to it."""

    num_classes = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.stack([self._one(im) for im in x.mean(1).cpu().numpy()]))

    @staticmethod
    def _one(gray: np.ndarray) -> np.ndarray:
        h, w = gray.shape
        disc = gray > 0.5
        yy, xx = np.mgrid[:h, :w].astype(np.float32)
        heat, dy, dx = (np.zeros((h, w), np.float32) for _ in range(3))
        lab, n = ndimage.label(disc)
        for k in range(1, n + 1):
            obj = lab == k
            cy, cx = ndimage.center_of_mass(obj)
            dy[obj], dx[obj] = cy - yy[obj], cx - xx[obj]
            heat = np.maximum(heat, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0))
        sign = np.where(disc, 1.0, -1.0).astype(np.float32)
        p = np.clip(heat, 1e-4, 1 - 1e-4)
        return np.stack([-4 * sign, 4 * sign, np.log(p / (1 - p)), dy, dx]).astype(np.float32)


class StandIn(BaseSegmenter):
    """A model without a run folder: one network and the classes it predicts."""

    def __init__(self, net: nn.Module, task: str = "instance"):
        self.classes = ClassInfo(names=["background", "disc"], colors=[(0, 0, 0), (230, 25, 75)])
        self.classes.things = (1,)
        self.device = torch.device("cpu")
        self.backend, self.precision = "torch", "fp32"
        self.bundle = type(
            "B", (), {"model": type("M", (), {"task": task, "num_classes": 2})(), "input": InputSpec()}
        )()
        extra = 0 if task == "semantic" else 3
        self.member = TorchMember(net.eval(), (0, 0, 0), (1, 1, 1), self.device, 2, extra_channels=extra)

    @property
    def fingerprint(self) -> str:
        return "stand-in"

    def members(self, config=None) -> list:
        return [self.member]

    def describe_members(self) -> list[dict]:
        return [{"run": None, "arch": "stand-in", "encoder": None, "weights": "stand-in", "backend": "torch"}]


def _disc_predictor(task: str = "instance") -> Predictor:
    return Predictor(StandIn(DiscNet(), task), instances=InstanceOptions(grouping=GroupingConfig(min_area=4)))


def _rle_mask(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


# --- flags ----------------------------------------------------------------------------------------------


def _parse(argv: list[str]):
    import argparse

    from pixelwise.cli.inference_flags import add_inference_flags

    parser = argparse.ArgumentParser(prog="t")
    add_inference_flags(parser)
    return parser.parse_args(argv)


def test_object_flags_build_instance_options(tmp_path):
    from pixelwise.cli.inference_flags import instance_options, object_options

    assert instance_options(_parse([])) is None and object_options(_parse([])) == {}
    argv = ["--instances", "components", "--things", "disc, square", "--centre-threshold", "0.3"]
    options = instance_options(_parse([*argv, "--min-object-area", "5"]))
    assert options.method == "components" and options.things == ("disc", "square")
    assert options.grouping.centre_threshold == 0.3 and options.grouping.min_area == 5
    assert options.grouping.top_k == GroupingConfig().top_k
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text("{}")
    (run / "model.safetensors").write_bytes(b"")
    assert object_options(_parse(["--stuff-run", str(run)]))["stuff_run"] == str(run)


def test_object_flag_choices_and_defaults_match_the_library():
    from pixelwise.cli import inference_flags as flags
    from pixelwise.predict.predictor import OBJECT_METHODS

    assert flags.INSTANCE_METHODS == OBJECT_METHODS
    for name, value in flags.GROUPING_DEFAULTS.items():
        assert getattr(GroupingConfig(), name) == value


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--instances", "boxes"], "invalid choice"),
        (["--things", ""], "expected class names"),
        (["--things", "disc,,square"], "expected class names"),
        (["--things", "disc,disc"], "named twice"),
        (["--things", "a\x07b"], "not a class name"),
        (["--centre-threshold", "1.5"], "at most 1"),
        (["--centre-threshold", "nan"], "finite"),
        (["--centre-threshold", "-0.1"], "at least 0"),
        (["--min-object-area", "0"], "at least 1"),
        (["--min-object-area", "4294967296"], "at most"),
        (["--min-object-area", "2.5"], "whole number"),
        (["--stuff-run", "no/such/run"], "no such folder"),
    ],
)
def test_object_flags_refuse_bad_values_in_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "run", "image.png", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1] and "Traceback" not in "\n".join(err)


def test_a_folder_without_a_model_is_no_stuff_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["predict", "run", "image.png", "--stuff-run", str(tmp_path)])
    assert "no model.json here" in capsys.readouterr().err


# --- predict --------------------------------------------------------------------------------------------


def test_predict_writes_object_files_and_resumes(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for stem in ("a", "b"):
        Image.fromarray(_scene()).save(inputs / f"{stem}.png")
    predictor, out = _disc_predictor(), tmp_path / "out"
    res = predict_files(predictor, [inputs], out, progress=False, panoptic=True)
    assert res["written"] == 2 and not res["failed"]
    found = predictor.run_objects(_scene())
    assert len(found.instances.segments) == len(DISCS)

    png = Image.open(out / "instances" / "a.png")
    assert png.mode.startswith("I;16") or png.mode == "I"
    ids = np.asarray(png).astype(np.int64)
    np.testing.assert_array_equal(ids, found.instances.ids)
    entries = json.loads((out / "instances" / "a.json").read_text())
    assert [e["id"] for e in entries] == [s.id for s in found.instances.segments]
    for e in entries:
        np.testing.assert_array_equal(_rle_mask(e["rle"]), ids == e["id"])
        assert e["class_name"] == "disc" and e["area"] == int((ids == e["id"]).sum())

    pan_ids = panoptic_ids(np.asarray(Image.open(out / "panoptic" / "a.png").convert("RGB")))
    segments = json.loads((out / "panoptic" / "a.json").read_text())["segments_info"]
    assert sorted(s["id"] for s in segments) == sorted(int(v) for v in np.unique(pan_ids) if v)
    overlay = np.asarray(Image.open(out / "overlays" / "a.png"))
    assert overlay.shape == (48, 48, 3) and len({tuple(overlay[cy, cx]) for cy, cx, _ in DISCS}) == len(DISCS)
    manifest = json.loads((out / "predict.json").read_text())
    assert manifest["outputs"]["instances"] and manifest["objects"]["method_used"] == "centres"

    again = predict_files(_disc_predictor(), [inputs], out, progress=False, panoptic=True)
    assert again["written"] == 0 and again["skipped"] == 2
    (out / "panoptic" / "b.json").unlink()
    redo = predict_files(_disc_predictor(), [inputs], out, progress=False, panoptic=True)
    assert redo["written"] == 1 and (out / "panoptic" / "b.json").is_file()


def test_predict_of_an_instance_model_without_panoptic_writes_no_panoptic_files(tmp_path):
    Image.fromarray(_scene()).save(tmp_path / "a.png")
    predict_files(_disc_predictor(), [tmp_path / "a.png"], tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "instances" / "a.png").is_file()
    assert not (tmp_path / "out" / "panoptic").exists()


def test_panoptic_output_needs_objects(tmp_path):
    Image.fromarray(_scene()).save(tmp_path / "a.png")
    semantic = Predictor(StandIn(DiscNet(), "semantic"))
    with pytest.raises(PixelwiseError, match="--panoptic needs objects"):
        predict_files(semantic, [tmp_path / "a.png"], tmp_path / "out", progress=False, panoptic=True)
    res = predict_files(semantic, [tmp_path / "a.png"], tmp_path / "out", progress=False)
    assert res["written"] == 1 and not (tmp_path / "out" / "instances").exists()
    assert "objects" not in json.loads((tmp_path / "out" / "predict.json").read_text())


def test_cli_predict_splits_a_semantic_model_into_components(trained_run, tmp_path, capsys):
    Image.fromarray(_scene(64)).save(tmp_path / "a.png")
    argv = ["predict", str(trained_run), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*argv, "--instances", "components", "--things", "disc,square", "--min-object-area", "1"]) == 0
    out = tmp_path / "o"
    assert (out / "instances" / "a.png").is_file() and (out / "instances" / "a.json").is_file()
    assert json.loads((out / "predict.json").read_text())["objects"]["thing_classes"] == ["disc", "square"]
    assert not (out / "panoptic").exists()
    assert main([*argv, "--things", "disc"]) == 2
    assert "add --instances components" in capsys.readouterr().err
    stuff = [*argv[:-3], "--out", str(tmp_path / "p"), "--quiet", "--stuff-run", str(trained_run)]
    assert main([*stuff, "--instances", "components", "--things", "disc"]) == 0
    manifest = json.loads((tmp_path / "p" / "predict.json").read_text())
    assert manifest["outputs"]["panoptic"] and manifest["objects"]["stuff_from"] == [str(trained_run)]
    assert (tmp_path / "p" / "panoptic" / "a.png").is_file() and (tmp_path / "p" / "panoptic" / "a.json").is_file()


def test_cli_serve_passes_the_object_options(tmp_path, monkeypatch):
    import pixelwise.serve

    seen = {}
    monkeypatch.setattr(pixelwise.serve, "serve", lambda model, config, **kw: seen.update(kw))
    assert main(["serve", str(tmp_path), "--instances", "components", "--things", "car", "--min-object-area", "9"]) == 0
    assert seen["instances"].method == "components" and seen["instances"].things == ("car",)
    assert seen["instances"].grouping.min_area == 9 and "stuff_run" not in seen
    seen.clear()
    assert main(["serve", str(tmp_path)]) == 0
    assert "instances" not in seen


# --- evaluate -------------------------------------------------------------------------------------------

THINGS = (1, 2)  # disc, square


def _object_scene(seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A mask with a stuff band (ring, class 4) and a few discs/squares, and its instance ids."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    ids = np.zeros((size, size), np.uint16)
    mask[-6:] = 4
    for k in range(1, 4):
        y, x = rng.integers(0, size - 10, 2)
        mask[y : y + 7, x : x + 7] = THINGS[k % 2]
        ids[y : y + 7, x : x + 7] = k * 7  # any distinct ids
    return mask, ids


def _encode(mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """An image that carries its own ground truth: red = class x 40, green = id."""
    return np.stack([mask.astype(np.uint8) * 40, ids.astype(np.uint8), np.full_like(mask, 7)], -1)


def _object_data(root, with_ids: bool = True):
    for sub in ("images", "masks", "instances", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stems = [f"s{i}" for i in range(4)]
    for i, stem in enumerate(stems):
        mask, ids = _object_scene(i)
        Image.fromarray(_encode(mask, ids)).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask, "L").save(root / "masks" / f"{stem}.png")
        if with_ids:
            Image.fromarray(ids).save(root / "instances" / f"{stem}.png")
    (root / "splits" / "train.txt").write_text("\n".join(stems[:2]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(stems[2:]) + "\n")
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": list(DEMO_CLASSES), "things": ["disc", "square"]}))
    return root


class PerfectPredictor(Predictor):
    """The trained run's classes, with labels and objects read back from images made by :func:`_encode`."""

    def with_options(self, inference=None, postprocess=None, instances=None):
        return self

    def _truth(self, image):
        image = np.asarray(image)
        return (image[..., 0] // 40).astype(np.int64), image[..., 1].astype(np.int64)

    def predict(self, image):
        return self._truth(image)[0]

    def run_objects(self, image) -> ObjectResult:
        labels, ids = self._truth(image)
        inst = ground_truth_instances(labels, ids, self.things)
        return ObjectResult(labels, None, inst, ground_truth_panoptic(labels, ids, self.things)[0])


def _perfect(trained_run) -> PerfectPredictor:
    from pixelwise import load

    options = InstanceOptions(method="components", things=("disc", "square"))
    return PerfectPredictor(load(trained_run, "cpu"), instances=options)


def test_evaluate_scores_perfect_objects_as_one(trained_run, tmp_path):
    from pixelwise.evaluation import evaluate, object_lines

    data = _object_data(tmp_path / "data")
    m = evaluate([trained_run], data, out=tmp_path / "ev", predictor=_perfect(trained_run), progress=False)
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    ap, pq = saved["instances"], saved["panoptic"]
    assert ap["AP"] == pytest.approx(1.0) and ap["AP50"] == pytest.approx(1.0) and ap["AP75"] == pytest.approx(1.0)
    assert pq["PQ"] == pytest.approx(1.0) and pq["things"]["PQ"] == pytest.approx(1.0)
    assert pq["stuff"]["SQ"] == pytest.approx(1.0)
    assert m["miou"] == pytest.approx(1.0)
    for value in (ap["AP"], pq["PQ"], pq["SQ"], pq["RQ"]):
        assert 0.0 <= value <= 1.0
    lines = object_lines(saved)
    assert lines[0].startswith("instances: AP 100.00 %") and lines[1].startswith("panoptic: PQ 100.00 %")


def test_cli_evaluate_prints_and_stores_object_scores(trained_run, tmp_path, capsys):
    data = _object_data(tmp_path / "data")
    argv = ["evaluate", str(trained_run), str(data), "--out", str(tmp_path / "ev"), "--quiet", "--examples", "0"]
    assert main([*argv, "--instances", "components", "--things", "disc,square"]) == 0
    out = capsys.readouterr().out
    assert "instances: AP " in out and "panoptic: PQ " in out and "things PQ" in out
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["objects"]["method_used"] == "components"
    for value in (saved["instances"]["AP50"], saved["panoptic"]["PQ"], saved["panoptic"]["RQ"]):
        assert value is None or 0.0 <= value <= 1.0
    assert saved["instances"]["objects"] == 6


def test_evaluate_of_objects_needs_instance_ids(trained_run, tmp_path):
    from pixelwise.evaluation import evaluate

    data = _object_data(tmp_path / "data", with_ids=False)
    with pytest.raises(PixelwiseError, match="no instance ids"):
        evaluate([trained_run], data, out=tmp_path / "ev", predictor=_perfect(trained_run), progress=False)
    assert not (tmp_path / "ev" / "metrics.json").exists()


def test_semantic_evaluation_has_no_object_sections(trained_run, tmp_path):
    from pixelwise import load
    from pixelwise.evaluation import evaluate

    data = _object_data(tmp_path / "data", with_ids=False)
    m = evaluate([trained_run], data, out=tmp_path / "ev", predictor=load(trained_run, "cpu"), progress=False)
    assert "instances" not in m and "panoptic" not in m


# --- serve ----------------------------------------------------------------------------------------------


def _upload(image: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return {"file": ("x.png", buf.getvalue(), "image/png")}


def test_serve_answers_objects(trained_run):
    from pixelwise import load
    from pixelwise.serve import create_app

    options = InstanceOptions(method="components", things=("disc", "square"), grouping=GroupingConfig(min_area=1))
    predictor = Predictor(load(trained_run, "cpu"), instances=options)
    client = TestClient(create_app(predictor))
    image = _scene(64)
    r = client.post("/predict?format=instances", files=_upload(image))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["width"] == 64 and body["height"] == 64 and isinstance(body["instances"], list)
    expected = predictor.run_objects(image).instances
    assert [e["id"] for e in body["instances"]] == [s.id for s in expected.segments]
    for e in body["instances"]:
        np.testing.assert_array_equal(_rle_mask(e["rle"]), expected.ids == e["id"])
    r = client.post("/predict?format=panoptic", files=_upload(image))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    pan = panoptic_ids(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")))
    r = client.post("/predict?format=panoptic_json", files=_upload(image))
    body = r.json()
    again = panoptic_ids(np.asarray(Image.open(io.BytesIO(base64.b64decode(body["png"]))).convert("RGB")))
    np.testing.assert_array_equal(pan, again)
    assert sorted(s["id"] for s in body["segments_info"]) == sorted(int(v) for v in np.unique(pan) if v)
    info = client.get("/model").json()
    assert info["objects"] and info["things"] == ["disc", "square"]


def test_serve_refuses_objects_of_a_semantic_model(trained_run):
    from pixelwise import load
    from pixelwise.serve import create_app

    client = TestClient(create_app(load(trained_run, "cpu")))
    for fmt in ("instances", "panoptic", "panoptic_json"):
        r = client.post(f"/predict?format={fmt}", files=_upload(_scene(64)))
        assert r.status_code == 400
        detail = r.json()["detail"]
        assert "gives no objects" in detail and "--things" in detail and "\n" not in detail
    assert client.post("/predict?format=json", files=_upload(_scene(64))).status_code == 200
    assert client.post("/predict?format=boxes", files=_upload(_scene(64))).status_code == 422
    assert client.get("/model").json()["objects"] is False


def test_panoptic_overlay_tints_stuff_in_its_class_colour_and_leaves_class_zero_clear(tmp_path):
    from pixelwise.instances import InstanceMap, PanopticMap, Segment
    from pixelwise.predict.batch import Outputs, OutputWriter

    predictor = _disc_predictor()
    image = np.full((8, 8, 3), 100, np.uint8)
    pan_ids = np.zeros((8, 8), np.int32)
    pan_ids[:4] = 1  # a stuff region of class 1
    pan_ids[4:] = 2  # a stuff region of class 0 (background)
    panoptic = PanopticMap(pan_ids, [Segment(1, 1, isthing=False, area=32), Segment(2, 0, isthing=False, area=32)])
    empty = InstanceMap(np.zeros((8, 8), np.int32), [])
    writer = OutputWriter(tmp_path, predictor, Outputs(instances=True, panoptic=True), 0.5)
    found = ObjectResult(np.zeros((8, 8), np.int64), None, empty, panoptic)
    writer("a", image, found.labels, None, found)
    overlay = np.asarray(Image.open(tmp_path / "overlays" / "a.png"))
    colour = np.array(predictor.classes.colors[1], np.float32)
    np.testing.assert_allclose(overlay[1, 3], np.round(0.5 * 100 + 0.5 * colour), atol=1)  # inside, off the outline
    assert (overlay[6] == 100).all()  # class 0 stuff: the image itself
