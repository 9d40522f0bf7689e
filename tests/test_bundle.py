"""The typed Bundle: model.json written by pixelwise 0.1 still loads, round trips, bad files give one line."""

import json
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelwise.bundle import SCHEMA_VERSION, Bundle, load_bundle, read_bundle, save_bundle
from pixelwise.errors import PixelwiseError
from pixelwise.models import ALLOWED_KWARGS, MODELS, TIMM_ENCODER_KWARGS, ModelConfig, build_model

FIXTURE = Path(__file__).parent / "fixtures" / "bundle_v1" / "model.json"


def _bundle_dir(tmp_path, meta: dict) -> Path:
    """A run folder with ``meta`` as model.json and weights of the network it describes."""
    from safetensors.torch import save_file

    from pixelwise.bundle import state_dict_for_saving

    model = build_model(ModelConfig.from_dict(meta["model"]))
    run = tmp_path / "run"
    run.mkdir()
    save_file(state_dict_for_saving(model), str(run / "model.safetensors"))
    (run / "model.json").write_text(json.dumps(meta))
    return run


def test_a_schema_1_bundle_from_pixelwise_0_1_still_loads(tmp_path):
    old = json.loads(FIXTURE.read_text())
    assert old["format_version"] == 1 and "schema_version" not in old
    model, bundle = load_bundle(_bundle_dir(tmp_path, old))
    assert bundle.classes.names == old["classes"]["names"]
    assert bundle.model.kwargs == {"decoder_channels": [32, 16, 16, 8, 8]}
    assert list(bundle.normalization.mean) == old["normalization"]["mean"]
    assert bundle.training.best_epoch == old["training"]["best_epoch"]
    assert bundle.train_config["seed"] == old["training"]["config"]["seed"]
    assert bundle.metrics["val"]["miou"] == old["metrics"]["val"]["miou"]
    assert not model.training


def test_saving_writes_the_current_schema_and_reads_back_equal(tmp_path):
    old = json.loads(FIXTURE.read_text())
    model, bundle = load_bundle(_bundle_dir(tmp_path, old))
    save_bundle(tmp_path / "again", model, bundle)
    written = json.loads((tmp_path / "again" / "model.json").read_text())
    assert written["schema_version"] == SCHEMA_VERSION
    assert read_bundle(tmp_path / "again") == bundle


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m.update(schema_version=99), "schema version 99"),
        (lambda m: m.pop("classes"), "'classes'"),
        (lambda m: m["classes"].update(colors=[["red"]] * 5), "'classes'"),
        (lambda m: m["classes"].update(ignore_index="x"), "'classes'"),
        (lambda m: m["model"].update(kwargs="decoder"), "'model'"),
        (lambda m: m["model"].update(num_classes=0), "'model'"),
        (lambda m: m["model"].update(checkpoint_path="/x.pth"), "unknown model keys"),
        (lambda m: m["normalization"].update(std=[0, 1, 1]), "'normalization'"),
        (lambda m: m.update(training=[]), "'training'"),
    ],
)
def test_a_damaged_model_json_is_one_clear_error(tmp_path, change, words):
    meta = json.loads(FIXTURE.read_text())
    run = _bundle_dir(tmp_path, meta)
    change(meta)
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(PixelwiseError, match="model.json") as info:
        read_bundle(run)
    assert words in str(info.value) and "\n" not in str(info.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(["model", "classes", "normalization", "training", "data", "metrics", "versions", "input"]),
    sub=st.one_of(st.none(), st.text(max_size=12)),
    value=json_values,
)
def test_any_json_in_any_field_loads_or_fails_with_a_pixelwise_error(key, sub, value):
    meta = json.loads(FIXTURE.read_text())
    if sub is not None and isinstance(meta.get(key), dict):
        meta[key][sub] = value
    else:
        meta[key] = value
    try:
        bundle = Bundle.from_dict(meta, "model.json")
    except PixelwiseError as e:
        assert "model.json" in str(e)
        return
    assert bundle.classes.num_classes == bundle.model.num_classes
    assert Bundle.from_dict(bundle.to_dict()) == bundle


# --- Hostile model.json: nothing in it may make loading unpickle, read or download a file -----------------


class _Payload:
    """Unpickling this creates ``marker`` (what a malicious checkpoint would do with os.system)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_run(tmp_path, change) -> Path:
    """A run whose weights fit the fixture's network and whose model.json was then edited by ``change``."""
    meta = json.loads(FIXTURE.read_text())
    run = _bundle_dir(tmp_path, meta)
    change(meta)
    (run / "model.json").write_text(json.dumps(meta))
    return run


@pytest.fixture
def no_io(monkeypatch):
    """Every way to unpickle or reach the network records the call and raises AssertionError."""
    return refuse_io(monkeypatch)


def refuse_io(monkeypatch) -> list[str]:
    """Make torch.load, urllib, sockets and Hub downloads record their call and raise; returns the record."""
    import socket
    import urllib.request

    import huggingface_hub
    import torch

    calls = []

    def refuse(name):
        def call(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} called while loading a bundle")

        return call

    monkeypatch.setattr(torch, "load", refuse("torch.load"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urlopen"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse("hf_hub_download"))
    monkeypatch.setattr(huggingface_hub.file_download, "hf_hub_download", refuse("hf_hub_download"))
    return calls


def test_a_checkpoint_path_in_model_json_is_refused_without_unpickling(tmp_path, no_io):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": _Payload(marker)}, f)
    pickle.loads(evil.read_bytes())  # the payload works: unpickling it creates the marker
    assert marker.exists()
    marker.unlink()

    def hostile(m):
        m["model"]["encoder"] = "tu-resnet18"  # timm.create_model takes checkpoint_path
        m["model"]["kwargs"] = {"checkpoint_path": str(evil)}

    run = _hostile_run(tmp_path, hostile)
    with pytest.raises(PixelwiseError, match="model.json") as info:
        load_bundle(run)
    message = str(info.value)
    assert "checkpoint_path is not an option" in message and "\n" not in message
    assert not marker.exists() and no_io == []


HOSTILE_MODELS = {
    "encoder_weights": (lambda m: m["model"]["kwargs"].update(encoder_weights="imagenet"), "kwargs.encoder_weights"),
    "timm pretrained": (
        lambda m: m["model"].update(encoder="tu-resnet18", kwargs={"pretrained": True}),
        "kwargs.pretrained",
    ),
    "timm pretrained_cfg_overlay": (
        lambda m: m["model"].update(encoder="tu-resnet18", kwargs={"pretrained_cfg_overlay": {"file": "/x.pth"}}),
        "kwargs.pretrained_cfg_overlay",
    ),
    "timm pretrained_cfg": (
        lambda m: m["model"].update(encoder="tu-resnet18", kwargs={"pretrained_cfg": {"url": "http://x/y.pth"}}),
        "kwargs.pretrained_cfg",
    ),
    "URL encoder": (lambda m: m["model"].update(encoder="https://evil.example/enc.pth"), "model.encoder"),
    "tu- URL encoder": (lambda m: m["model"].update(encoder="tu-https://evil.example/enc.pth"), "model.encoder"),
    "hf-hub encoder": (lambda m: m["model"].update(encoder="tu-hf-hub:timm/resnet18.a1_in1k"), "model.encoder"),
    "hf-hub encoder, no prefix": (lambda m: m["model"].update(encoder="hf-hub:evil/model"), "model.encoder"),
    "local-dir encoder": (lambda m: m["model"].update(encoder="tu-local-dir:/tmp/model"), "model.encoder"),
    "path encoder": (lambda m: m["model"].update(encoder="/tmp/encoder.pth"), "model.encoder"),
    "unknown timm model": (lambda m: m["model"].update(encoder="tu-not_a_model_timm_lists"), "model.encoder"),
    "aux_params": (lambda m: m["model"]["kwargs"].update(aux_params={"classes": 2}), "kwargs.aux_params"),
    "activation": (lambda m: m["model"]["kwargs"].update(activation="sigmoid"), "kwargs.activation"),
    "upsampling": (lambda m: m["model"]["kwargs"].update(upsampling=2), "kwargs.upsampling"),
    "in_channels as kwarg": (lambda m: m["model"]["kwargs"].update(in_channels=4), "kwargs.in_channels"),
    "timm keyword on an smp encoder": (lambda m: m["model"]["kwargs"].update(norm_layer="groupnorm"), "norm_layer"),
    "kwargs on torchvision": (
        lambda m: m["model"].update(arch="fcn", kwargs={"weights_backbone": "IMAGENET1K_V1"}),
        "kwargs.weights_backbone",
    ),
    "decoder_channels of text": (lambda m: m["model"]["kwargs"].update(decoder_channels="big"), "decoder_channels"),
    "decoder_channels too wide": (
        lambda m: m["model"]["kwargs"].update(decoder_channels=[10**6] * 5),
        "decoder_channels",
    ),
    "decoder_channels for another depth": (
        lambda m: m["model"]["kwargs"].update(encoder_depth=3),
        "one entry per encoder stage",
    ),
    "encoder_depth 9": (lambda m: m["model"]["kwargs"].update(encoder_depth=9), "encoder_depth"),
    "in_channels 10**6": (lambda m: m["model"].update(in_channels=10**6), "model.in_channels"),
    "num_classes 10**7": (lambda m: m["model"].update(num_classes=10**7), "model.num_classes"),
    "empty key": (lambda m: m["model"]["kwargs"].update({"": 1}), "is not an option"),
    "key with a line break": (lambda m: m["model"]["kwargs"].update({"a\nb": 1}), "kwargs.'a\\nb' is not an option"),
}


@pytest.mark.parametrize("case", list(HOSTILE_MODELS))
def test_a_hostile_model_section_is_refused_before_anything_is_built(tmp_path, no_io, case):
    change, words = HOSTILE_MODELS[case]
    run = _hostile_run(tmp_path, change)
    with pytest.raises(PixelwiseError, match="model.json") as info:
        load_bundle(run)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert no_io == []


# keywords a library might take: every one that shapes the network, and some that load or fetch
KWARG_NAMES = sorted(
    {k for rules in ALLOWED_KWARGS.values() for k in rules}
    | set(TIMM_ENCODER_KWARGS)
    | {"checkpoint_path", "encoder_weights", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "aux_params"}
    | {"activation", "upsampling", "features_only", "cache_dir", "weights", "weights_backbone", "file", "url"}
)
ENCODERS = ["resnet18", "tu-resnet10t", "mobilenet_v2", "tu-hf-hub:timm/resnet18", "../x.pth", "http://x/y", ""]
small_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats(-1, 2) | st.sampled_from(["nearest", "scse", "add"]),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory) -> Path:
    """A run folder holding the fixture bundle's weights; each example writes its own model.json."""
    return _bundle_dir(tmp_path_factory.mktemp("property"), json.loads(FIXTURE.read_text()))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arch=st.sampled_from(list(MODELS)),
    encoder=st.sampled_from(ENCODERS) | st.text(max_size=12),
    kwargs=st.dictionaries(st.sampled_from(KWARG_NAMES) | st.text(max_size=10), small_values, max_size=3),
)
def test_any_model_section_loads_or_fails_with_a_pixelwise_error_and_no_io(fixture_run, arch, encoder, kwargs):
    meta = json.loads(FIXTURE.read_text())
    meta["model"].update(arch=arch, encoder=encoder, kwargs=kwargs)
    (fixture_run / "model.json").write_text(json.dumps(meta))
    with pytest.MonkeyPatch.context() as mp:
        calls = refuse_io(mp)
        try:
            load_bundle(fixture_run)
        except PixelwiseError as e:
            assert "\n" not in str(e) and "model" in str(e)
        assert calls == []


# --- model.json of the wrong shape: refused at load with one line, by the API and by `pixelwise predict` ---

DAMAGED = {
    "colors of text": (lambda m: m["classes"].update(colors=["red"] * 5), "'classes'"),
    "ignore_index of text": (lambda m: m["classes"].update(ignore_index="x"), "'classes'"),
    "kwargs a string": (lambda m: m["model"].update(kwargs="decoder_channels"), "'model'"),
    "model null": (lambda m: m.update(model=None), "'model'"),
    "fewer classes than outputs": (
        lambda m: m["classes"].update(names=m["classes"]["names"][:3], colors=m["classes"]["colors"][:3]),
        "3 class names for a model with 5 outputs",
    ),
    "std 0": (lambda m: m["normalization"].update(std=[0.229, 0.0, 0.225]), "std > 0"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_model_json_is_refused_by_load(tmp_path, case):
    import pixelwise

    change, words = DAMAGED[case]
    run = _hostile_run(tmp_path, change)
    with pytest.raises(PixelwiseError, match="model.json") as info:
        pixelwise.load(run)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_model_json_is_one_line_from_predict(tmp_path, capsys, case):
    import numpy as np
    from PIL import Image

    from pixelwise.cli import main

    change, words = DAMAGED[case]
    run = _hostile_run(tmp_path, change)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image)
    rc = main(["predict", str(run), str(image), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("pixelwise: error: ") and "\n" not in err
    assert "model.json" in err and words in err
    assert not (tmp_path / "out" / "masks").exists()


# A description far larger than its weights, and the size it must be reported at. mit_b5: Mix
# Transformer encoders read their drop-path schedule while they are built, which a shapes-only
# tensor cannot give; the check keeps such schedules real and still measures the network.
HUGE_MODELS = {
    "800 million parameters": ({"encoder": "resnext101_32x48d"}, "3190 MiB"),
    "SegFormer on mit_b5": ({"arch": "segformer", "encoder": "mit_b5"}, "313 MiB"),
}


@pytest.mark.parametrize("case", list(HUGE_MODELS))
def test_a_model_json_describing_a_huge_network_is_refused_before_memory_is_allocated(tmp_path, monkeypatch, case):
    import torch

    import pixelwise.bundle as bundle_module

    devices = []
    real = bundle_module.build_model

    def build(config, *args, **kwargs):
        devices.append(torch.get_default_device().type)
        return real(config, *args, **kwargs)

    monkeypatch.setattr(bundle_module, "build_model", build)
    change, size = HUGE_MODELS[case]
    run = _hostile_run(tmp_path, lambda m: m["model"].update(**change, kwargs={}))  # next to 10 MB of weights
    with pytest.raises(PixelwiseError, match="model.json") as info:
        load_bundle(run)
    assert f"describes a network of {size}" in str(info.value) and "\n" not in str(info.value)
    assert devices == ["meta"]


def test_a_mix_transformer_bundle_that_fits_its_weights_loads(tmp_path):
    meta = json.loads(FIXTURE.read_text())
    meta["model"].update(arch="segformer", encoder="mit_b0", kwargs={})
    model, _ = load_bundle(_bundle_dir(tmp_path, meta))
    assert sum(p.numel() for p in model.parameters()) > 3_000_000


@pytest.mark.parametrize(
    "text, words",
    [
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),  # json gives up with RecursionError
        ('{"model": ' * 200 + "1" + "}" * 200, "nested more than 32 levels"),
        (" " * (17 * 2**20) + "{}", "MiB, far more than a model.json holds"),
    ],
)
def test_a_model_json_too_deep_or_too_large_is_one_line(tmp_path, text, words):
    run = _hostile_run(tmp_path, lambda m: None)
    (run / "model.json").write_text(text)
    with pytest.raises(PixelwiseError, match="model.json") as info:
        read_bundle(run)
    assert words in str(info.value) and "\n" not in str(info.value)
