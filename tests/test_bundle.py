"""The typed Bundle: model.json written by pixelwise 0.1 still loads, round trips, bad files give one line."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelwise.bundle import SCHEMA_VERSION, Bundle, load_bundle, read_bundle, save_bundle
from pixelwise.errors import PixelwiseError
from pixelwise.models import ModelConfig, build_model

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
    key=st.sampled_from(["model", "classes", "normalization", "training", "data", "metrics", "versions"]),
    sub=st.one_of(st.none(), st.text(max_size=12)),
    value=json_values,
)
def test_any_json_in_any_field_loads_or_fails_with_a_pixelwise_error(key, sub, value):
    meta = json.loads(FIXTURE.read_text())
    if sub is not None and isinstance(meta[key], dict):
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
