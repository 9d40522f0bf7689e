"""Objects at prediction time: dense maps (centre heatmap, offsets) under TTA and tiling, grouping through
the Predictor, the components route for semantic models, the stuff model, and the exported network."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from pixelwise.classes import ClassInfo
from pixelwise.errors import PixelwiseError
from pixelwise.instances import GroupingConfig
from pixelwise.predict import InferenceConfig, InstanceOptions, Predictor
from pixelwise.predict.backends import TorchMember
from pixelwise.predict.engine import predict_image
from pixelwise.predict.predictor import BaseSegmenter

SIGMA = 3.0
# Three separate discs (centre y, centre x, radius) on a 64x64 scene.
DISCS = ((16, 18, 7), (40, 44, 9), (48, 14, 6))


def _scene(discs=DISCS, size=64, grass_rows: int = 0) -> np.ndarray:
    """(size, size, 3) uint8: white discs on black; the bottom ``grass_rows`` rows green (a stuff class)."""
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size, 3), np.uint8)
    for cy, cx, r in discs:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 255
    if grass_rows:
        image[-grass_rows:, :, 1] = np.where(image[-grass_rows:, :, 0] == 0, 200, 255)
    return image


class SceneNet(nn.Module):
    """Exact outputs for :func:`_scene` images, whatever their flip or scale: class 1 ("disc") where the
    image is bright, a Gaussian centre heatmap at each disc's centre of mass, offsets to it. Mirroring
    the image mirrors the outputs, so flip TTA must give back the plain dense maps."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.num_classes = num_classes  # classes past the first two never win

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.stack([self._one(im) for im in x.mean(1).cpu().numpy()]))

    def _one(self, gray: np.ndarray) -> np.ndarray:
        h, w = gray.shape
        disc = gray > 0.5
        yy, xx = np.mgrid[:h, :w].astype(np.float32)
        heat, dy, dx = (np.zeros((h, w), np.float32) for _ in range(3))
        lab, n = ndimage.label(disc)
        for k in range(1, n + 1):
            obj = lab == k
            cy, cx = ndimage.center_of_mass(obj)
            dy[obj], dx[obj] = cy - yy[obj], cx - xx[obj]
            heat = np.maximum(heat, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * SIGMA**2)))
        sign = np.where(disc, 1.0, -1.0).astype(np.float32)
        p = np.clip(heat, 1e-4, 1 - 1e-4)
        rest = [np.full((h, w), -10.0, np.float32)] * (self.num_classes - 2)
        return np.stack([-4 * sign, 4 * sign, *rest, np.log(p / (1 - p)), dy, dx]).astype(np.float32)


class ConstantOffsets(nn.Module):
    """Every pixel: class 0, centre logit 0, offsets (dy, dx) = (3, -5) pixels of whatever it is shown."""

    num_classes = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        values = torch.tensor([1.0, 0.0, 3.0, -5.0]).view(1, 4, 1, 1)
        return values.expand(n, 4, h, w).clone()


class StandIn(BaseSegmenter):
    """A model without a run folder: one network wrapped as a TorchMember, and the classes it predicts."""

    def __init__(self, net: nn.Module, names, things=(), task: str = "instance"):
        self.classes = ClassInfo(names=list(names), colors=[(i * 40 % 256, 80, 160) for i in range(len(names))])
        self.classes.things = tuple(things)
        self.device = torch.device("cpu")
        self.backend, self.precision = "torch", "fp32"
        self.bundle = type("B", (), {"model": type("M", (), {"task": task, "num_classes": len(names)})()})()
        extra = 0 if task == "semantic" else 3
        self.member = TorchMember(net.eval(), (0, 0, 0), (1, 1, 1), self.device, len(names), extra_channels=extra)

    @property
    def fingerprint(self) -> str:
        return "stand-in"

    def members(self, config=None) -> list:
        return [self.member]

    def describe_members(self) -> list[dict]:
        return [{"run": None, "arch": "stand-in", "encoder": None, "weights": "stand-in", "backend": "torch"}]


def _member(net: nn.Module, extra: int = 3) -> TorchMember:
    return TorchMember(net.eval(), (0, 0, 0), (1, 1, 1), torch.device("cpu"), net.num_classes, extra_channels=extra)


@pytest.mark.parametrize("flips", [dict(hflip=True), dict(vflip=True), dict(hflip=True, vflip=True)])
def test_flip_tta_gives_the_plain_dense_maps_for_a_mirror_symmetric_network(flips):
    image, member = _scene(), _member(SceneNet())
    plain = predict_image(image, [member])
    flipped = predict_image(image, [member], InferenceConfig(**flips))
    assert plain.dense is not None and plain.dense.shape == (3, 64, 64) and plain.dense.dtype == np.float32
    assert plain.probs.shape == (2, 64, 64)
    np.testing.assert_allclose(flipped.dense, plain.dense, atol=1e-4)
    np.testing.assert_array_equal(flipped.labels, plain.labels)


def test_a_flipped_view_negates_the_offset_along_the_flip():
    member = _member(ConstantOffsets())
    image = np.zeros((32, 48, 3), np.uint8)
    h = predict_image(image, [member], InferenceConfig(hflip=True)).dense
    v = predict_image(image, [member], InferenceConfig(vflip=True)).dense
    # Mean of the plain view (3, -5) and the mirrored one: dx (hflip) or dy (vflip) cancels.
    np.testing.assert_allclose(h[1:, 5, 5], [3.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(v[1:, 5, 5], [0.0, -5.0], atol=1e-6)
    np.testing.assert_allclose(h[0], 0.5, atol=1e-6)  # sigmoid(0)


def test_scale_tta_multiplies_offsets_by_original_over_scaled_size():
    member = _member(ConstantOffsets())
    image = np.zeros((64, 48, 3), np.uint8)
    half = predict_image(image, [member], InferenceConfig(scales=(0.5,))).dense
    np.testing.assert_allclose(half[1:, 10, 10], [6.0, -10.0], atol=1e-5)
    both = predict_image(image, [member], InferenceConfig(scales=(0.5, 1.0))).dense
    np.testing.assert_allclose(both[1:, 10, 10], [4.5, -7.5], atol=1e-5)


def test_scale_tta_keeps_offsets_pointing_at_the_objects():
    image, member = _scene(), _member(SceneNet())
    plain = predict_image(image, [member])
    scaled = predict_image(image, [member], InferenceConfig(scales=(0.5, 1.0, 1.5)))
    inside = ndimage.binary_erosion(plain.labels == 1, iterations=2)
    assert inside.sum() > 200
    err = np.abs(scaled.dense[1:] - plain.dense[1:])[:, inside]
    assert err.mean() < 0.5 and err.max() < 2.0


def test_tiled_dense_maps_agree_with_the_whole_image():
    torch.manual_seed(0)
    net = nn.Conv2d(3, 5, 1)  # pixel-wise: every tile sees what the whole image shows
    net.num_classes = 2
    member = _member(net)
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    whole = predict_image(image, [member])
    for blend in ("gaussian", "linear", "constant"):
        cfg = InferenceConfig(tile="always", tile_size=32, tile_overlap=0.25, blend=blend)
        tiled = predict_image(image, [member], cfg)
        assert tiled.stats["tiles"] > 4
        np.testing.assert_allclose(tiled.dense, whole.dense, atol=1e-5)
        np.testing.assert_allclose(tiled.probs, whole.probs, atol=1e-5)


def test_mc_dropout_averages_the_dense_maps():
    net = nn.Sequential(nn.Dropout2d(0.5), nn.Conv2d(3, 5, 1))
    net.num_classes = 2
    member = _member(net)
    image = np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    pred = predict_image(image, [member], InferenceConfig(mc_dropout=4))
    assert pred.variance is not None and pred.dense is not None and pred.dense.shape == (3, 24, 24)
    assert np.isfinite(pred.dense).all() and (0 <= pred.dense[0]).all() and (pred.dense[0] <= 1).all()


def test_semantic_members_give_no_dense_maps_and_cannot_join_instance_members():
    semantic = TorchMember(nn.Conv2d(3, 2, 1).eval(), (0, 0, 0), (1, 1, 1), torch.device("cpu"), 2)
    image = _scene()
    assert predict_image(image, [semantic]).dense is None
    net = nn.Conv2d(3, 5, 1)
    net.num_classes = 2
    with pytest.raises(PixelwiseError, match="semantic and instance/panoptic models cannot be averaged"):
        predict_image(image, [semantic, _member(net)])


def _instance_predictor(**options) -> Predictor:
    return Predictor(StandIn(SceneNet(), ["background", "disc"], things=(1,)), instances=InstanceOptions(**options))


def _same_objects(ids: np.ndarray, reference: np.ndarray) -> bool:
    """Every object of ``reference`` is one object of ``ids`` with the same pixels (ids may differ)."""
    pairs = {(int(a), int(b)) for a, b in zip(ids.ravel(), reference.ravel())}
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_run_objects_with_perfect_outputs_finds_every_disc():
    predictor = _instance_predictor()
    assert predictor.task == "instance" and predictor.objects_enabled and predictor.things == (1,)
    image = _scene()
    result = predictor.run_objects(image)
    truth, n = ndimage.label(image[..., 0] > 0)
    assert n == 3 and len(result.instances.segments) == 3
    assert _same_objects(result.instances.ids, truth)
    assert {s.category for s in result.instances.segments} == {1}
    np.testing.assert_array_equal(result.labels, (image[..., 0] > 0).astype(np.int64))
    things = [s for s in result.panoptic.segments if s.isthing]
    assert len(things) == 3
    # The same objects under flip TTA.
    flipped = predictor.with_options(InferenceConfig(hflip=True, vflip=True)).run_objects(image)
    assert _same_objects(flipped.instances.ids, truth)


def _semantic_predictor(names=("background", "disc"), model_things=(), **options) -> Predictor:
    net = nn.Conv2d(3, len(names), 1)
    with torch.no_grad():  # class 1 where the red channel is bright, class 0 elsewhere
        net.weight.zero_()
        net.bias.zero_()
        net.weight[1, 0] = 8.0
        net.bias[1] = -4.0
    return Predictor(StandIn(net, list(names), model_things, task="semantic"), instances=InstanceOptions(**options))


def test_components_route_on_a_semantic_model():
    off = _semantic_predictor()
    assert off.task == "semantic" and not off.objects_enabled
    with pytest.raises(PixelwiseError, match="objects are off"):
        off.run_objects(_scene())
    touching = ((20, 20, 8), (20, 36, 8), (48, 40, 7))  # two discs that touch, one apart
    image = _scene(touching)
    predictor = _semantic_predictor(method="components", things=("disc",))
    assert predictor.objects_enabled and predictor.things == (1,)
    result = predictor.run_objects(image)
    assert len(result.instances.segments) >= 2
    assert result.instances.ids[48, 40] > 0 and result.instances.ids[0, 0] == 0
    # The model's own thing classes serve when none are named.
    assert _semantic_predictor(model_things=(1,), method="components").things == (1,)


def test_impossible_object_options_are_one_line_errors():
    with pytest.raises(PixelwiseError, match="needs an instance or panoptic model"):
        _semantic_predictor(method="centres", things=("disc",))
    with pytest.raises(PixelwiseError, match="no thing classes"):
        _semantic_predictor(method="components")
    with pytest.raises(PixelwiseError, match=r"unknown thing class 'car'.*background, disc"):
        _semantic_predictor(method="components", things=("car",))
    with pytest.raises(PixelwiseError, match="unknown object method"):
        InstanceOptions(method="watershed")
    with pytest.raises(PixelwiseError, match="named twice"):
        InstanceOptions(things=("disc", "disc"))
    with pytest.raises(PixelwiseError, match="GroupingConfig"):
        InstanceOptions(grouping={"min_area": 3})
    assert InstanceOptions(things="disc, cell").things == ("disc", "cell")
    for err in (
        lambda: _semantic_predictor(method="centres", things=("disc",)),
        lambda: _semantic_predictor(method="components", things=("car",)),
    ):
        with pytest.raises(PixelwiseError) as info:
            err()
        assert "\n" not in str(info.value)


def test_stuff_from_a_semantic_model_gives_the_panoptic_stuff():
    names = ("background", "disc", "grass")
    predictor = Predictor(
        StandIn(SceneNet(3), names, things=(1,)),
        instances=InstanceOptions(grouping=GroupingConfig(min_stuff_area=16)),
    )
    grass_net = nn.Conv2d(3, 2, 1)  # stuff model: background / grass (green channel bright, red dark)
    with torch.no_grad():
        grass_net.weight.zero_()
        grass_net.bias.zero_()
        grass_net.weight[1, 1], grass_net.weight[1, 0], grass_net.bias[1] = 8.0, -8.0, -3.0
    stuff = Predictor(StandIn(grass_net, ["background", "grass"], task="semantic"))
    image = _scene(grass_rows=8)
    alone = predictor.run_objects(image)
    assert 2 not in {s.category for s in alone.panoptic.segments}
    assert predictor.stuff_from(stuff) is predictor
    merged = predictor.run_objects(image)
    cats = {s.category for s in merged.panoptic.segments}
    assert 2 in cats and 1 in cats
    grass_id = next(s.id for s in merged.panoptic.segments if s.category == 2)
    assert (merged.panoptic.ids[-8:] == grass_id).mean() > 0.8
    assert len([s for s in merged.panoptic.segments if s.isthing]) == 3
    assert predictor.describe()["instances"]["stuff_from"] == []
    other = Predictor(StandIn(grass_net, ["background", "sky"], task="semantic"))
    with pytest.raises(PixelwiseError, match="sky.*matched by name"):
        predictor.stuff_from(other)
    assert predictor.stuff_from(None).run_objects(image).panoptic.categories() == alone.panoptic.categories()


def test_describe_and_repr_record_the_object_options():
    predictor = _semantic_predictor(method="components", things=("disc",), grouping=GroupingConfig(min_area=5))
    described = predictor.describe()["instances"]
    assert described["method"] == "components" and described["method_used"] == "components"
    assert described["things"] == ["disc"] and described["thing_classes"] == ["disc"]
    assert described["grouping"]["min_area"] == 5 and described["task"] == "semantic"
    json.dumps(predictor.describe())
    assert "instances(" in repr(predictor)
    kept = predictor.with_options(InferenceConfig(hflip=True))
    assert kept.instances == predictor.instances and kept.method == "components"


@pytest.fixture(scope="module")
def instance_run(tmp_path_factory):
    """A saved instance model (the tests' tiny network, random weights) with one thing class."""
    from conftest import TINY_MODEL
    from pixelwise.bundle import Bundle, Normalization, save_bundle
    from pixelwise.models import ModelConfig, build_model

    if "task" not in ModelConfig.__dataclass_fields__:
        pytest.skip("models without a task field build semantic networks only")
    torch.manual_seed(0)
    config = ModelConfig(
        TINY_MODEL["arch"], TINY_MODEL["encoder"], num_classes=3, kwargs=TINY_MODEL["model_kwargs"], task="instance"
    )
    classes = ClassInfo(["background", "disc", "grass"], [(0, 0, 0), (255, 255, 255), (0, 200, 0)], things=(1,))
    bundle = Bundle(model=config, classes=classes, normalization=Normalization((0.5,) * 3, (0.25,) * 3))
    return save_bundle(tmp_path_factory.mktemp("instance") / "run", build_model(config), bundle)


@pytest.fixture(scope="module")
def instance_onnx(instance_run):
    """The instance run with RUN/model.onnx exported."""
    from pixelwise.export import export_model

    res = export_model(instance_run, "onnx")
    assert res["channels"] == 3 + 3 and res["task"] == "instance" and res["max_abs_diff"] <= 1e-3
    return instance_run


def test_onnx_export_of_an_instance_model_finds_the_objects_torch_finds(instance_onnx):
    from pixelwise.predict import load_predictor

    options = InstanceOptions(things=("disc", "grass"), grouping=GroupingConfig(centre_threshold=0.0, min_area=1))
    runs = {
        name: load_predictor(instance_onnx, "cpu", backend=name, instances=options) for name in ("torch", "onnxruntime")
    }
    onnx, ref = runs["onnxruntime"], runs["torch"]
    assert onnx.model.active_backend == "onnxruntime" and onnx.model.members()[0].extra_channels == 3
    assert onnx.task == "instance" and onnx.method == "centres"
    image = np.random.default_rng(3).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    a, b = onnx.run_objects(image), ref.run_objects(image)
    np.testing.assert_allclose(a.prediction.dense, b.prediction.dense, atol=1e-3)
    np.testing.assert_allclose(a.prediction.probs, b.prediction.probs, atol=1e-4)
    assert len(b.instances.segments) >= 1
    assert (a.labels == b.labels).mean() > 0.999
    assert len(a.instances.segments) == len(b.instances.segments)
    assert (a.instances.ids == b.instances.ids).mean() > 0.99


def test_torchscript_export_of_an_instance_model_keeps_every_channel_and_says_where_grouping_runs(
    instance_run, tmp_path, capsys
):
    from pixelwise.cli import main

    target = tmp_path / "m.pt"
    assert main(["export", str(instance_run), "--format", "torchscript", "--out", str(target)]) == 0
    out = capsys.readouterr().out
    assert "grouping into objects runs after it, in Python" in out and "not in the exported file" in out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream; still loads
        module = torch.jit.load(str(target))
    assert module(torch.rand(2, 3, 37, 29)).shape == (2, 6, 37, 29)


def test_onnx_output_channels_are_checked_against_the_run(instance_onnx):
    """An instance run needs C + 3 output channels; the task is in the file's metadata."""
    import onnx

    from pixelwise.predict.backends import FINGERPRINT_KEY, META_KEY, check_onnx_matches, onnx_session

    path = instance_onnx / "model.onnx"
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props[META_KEY])["model"]["task"] == "instance"
    session = onnx_session(path)
    check_onnx_matches(session, path, props[FINGERPRINT_KEY], 3, 3)
    with pytest.raises(PixelwiseError, match="gives 6 output channels, the run's model 3"):
        check_onnx_matches(session, path, props[FINGERPRINT_KEY], 3, 0)
