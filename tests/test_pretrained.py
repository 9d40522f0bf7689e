"""--pretrained auto: ImageNet encoder weights from the local cache, else a download, else from scratch
with one line saying why; what was used is recorded. Offline throughout: the caches are temporary
folders holding weights these tests write, and every network connection fails at once."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import pixelwise.models as models
from pixelwise.errors import PixelwiseError
from pixelwise.models import ModelConfig, build_model

FIXTURE = Path(__file__).parent / "fixtures" / "bundle_v1" / "model.json"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty weight caches under tmp_path, no network (each attempt recorded and refused at once)."""
    from huggingface_hub import constants

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:1])
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for variable in ("PIXELWISE_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    return attempts


def _seeded(state: dict, seed: int = 7) -> dict:
    """The same keys and shapes with recognisable values (floats random, integer buffers kept)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (torch.rand(v.shape, generator=gen) if v.is_floating_point() else v.clone()).contiguous()
        for k, v in state.items()
    }


def _hub_snapshot(cache, repo: str, revision: str, files: dict[str, bytes | dict], ref: str | None = None):
    """Files laid out as huggingface_hub caches them: models--ORG--NAME/snapshots/REVISION/FILE."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / revision
    snap.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, dict):
            save_file(content, str(snap / name))
        else:
            (snap / name).write_bytes(content)
    if ref:
        (root / "refs").mkdir()
        (root / "refs" / ref).write_text(revision)


def test_auto_takes_smp_imagenet_weights_from_the_local_cache(offline, tmp_path):
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    weights = _seeded(smp.encoders.get_encoder("resnet18", weights=None).state_dict())
    cache = tmp_path / "hf" / "hub"
    _hub_snapshot(
        cache, settings["repo_id"], settings["revision"], {"config.json": b"{}", "model.safetensors": weights}
    )

    model = build_model(ModelConfig(arch="unet", encoder="resnet18", num_classes=3), pretrained="auto")
    assert model.pretrained_source == "imagenet (cache)" and model.pretrained_note is None
    mine = model.net.encoder.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in weights.items())
    assert offline == []  # answered from the cache, no connection tried


def test_auto_takes_timm_weights_from_the_local_cache(offline, tmp_path):
    import timm

    cfg = timm.models.get_pretrained_cfg("resnet10t")
    weights = _seeded(timm.create_model("resnet10t").state_dict())
    revision = "0123456789abcdef0123456789abcdef01234567"
    _hub_snapshot(tmp_path / "hf" / "hub", cfg.hf_hub_id, revision, {"model.safetensors": weights}, ref="main")

    model = build_model(ModelConfig(arch="fpn", encoder="tu-resnet10t", num_classes=2), pretrained="auto")
    assert model.pretrained_source == "imagenet (cache)"
    conv = model.net.encoder.model.conv1[0].weight  # the stem's first convolution
    assert torch.equal(conv, weights["conv1.0.weight"])
    assert offline == []


def test_auto_takes_torchvision_backbone_weights_from_the_torch_cache(offline, tmp_path):
    from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large

    url = MobileNet_V3_Large_Weights.IMAGENET1K_V1.url
    weights = _seeded(mobilenet_v3_large().state_dict())
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(weights, checkpoints / url.rsplit("/", 1)[1])

    model = build_model(ModelConfig(arch="lraspp", num_classes=2), pretrained="auto")
    assert model.pretrained_source == "imagenet (cache)"
    first = model.net.backbone["0"][0].weight
    assert torch.equal(first, weights["features.0.0.weight"])
    assert offline == []


def test_auto_with_no_cache_and_no_network_trains_from_scratch_and_says_why(offline):
    model = build_model(ModelConfig(arch="unet", encoder="resnet18", num_classes=2), pretrained="auto")
    assert model.pretrained_source == "none: offline"
    note = model.pretrained_note
    assert note.startswith("training from scratch: ") and "\n" not in note
    assert "not in the local cache" in note and "huggingface.co cannot be reached" in note
    assert "--pretrained none" in note
    assert len(offline) == 1  # one quick probe, no download attempted


def test_offline_environment_skips_the_probe(offline, monkeypatch):
    monkeypatch.setenv("PIXELWISE_OFFLINE", "1")
    model = build_model(ModelConfig(arch="fcn", num_classes=2), pretrained="auto")
    assert model.pretrained_source == "none: offline" and "download.pytorch.org" in model.pretrained_note
    assert offline == []


def test_imagenet_insists_and_fails_with_one_line_when_offline(offline):
    with pytest.raises(PixelwiseError, match="could not get ImageNet weights") as info:
        build_model(ModelConfig(arch="unet", encoder="resnet18", num_classes=2), pretrained="imagenet")
    assert "\n" not in str(info.value) and "--pretrained PATH" in str(info.value)


def test_an_encoder_without_imagenet_weights_trains_from_scratch(offline):
    model = build_model(ModelConfig(arch="fpn", encoder="dpn68b", num_classes=2), pretrained="auto")
    assert model.pretrained_source == "none: no ImageNet weights"
    assert "fpn/dpn68b has no ImageNet weights" in model.pretrained_note
    assert offline == []


def test_auto_downloads_when_not_cached_and_online(offline, monkeypatch):
    asked = []
    real = models.MODELS["unet"]

    def builder(cfg, encoder_weights):  # stands in for the library's download
        asked.append(encoder_weights)
        return real(cfg, None)

    monkeypatch.setitem(models.MODELS, "unet", builder)
    monkeypatch.setattr(models, "reachable", lambda host, timeout=3.0: True)
    model = build_model(ModelConfig(arch="unet", encoder="resnet18", num_classes=2), pretrained="auto")
    assert asked == ["imagenet"] and model.pretrained_source == "imagenet (downloaded)"
    assert model.pretrained_note is None


def test_a_failed_download_falls_back_to_scratch_with_the_reason(offline, monkeypatch):
    real = models.MODELS["unet"]

    def builder(cfg, encoder_weights):
        if encoder_weights:
            raise TimeoutError("read timed out")
        return real(cfg, None)

    monkeypatch.setitem(models.MODELS, "unet", builder)
    monkeypatch.setattr(models, "reachable", lambda host, timeout=3.0: True)
    model = build_model(ModelConfig(arch="unet", encoder="resnet18", num_classes=2), pretrained="auto")
    assert model.pretrained_source == "none: download failed"
    assert "TimeoutError: read timed out" in model.pretrained_note
    with pytest.raises(PixelwiseError, match="TimeoutError: read timed out"):
        build_model(ModelConfig(arch="unet", encoder="resnet18", num_classes=2), pretrained="imagenet")


def test_none_and_paths_are_recorded(offline, tmp_path):
    cfg = ModelConfig(arch="unet", encoder="resnet18", num_classes=2)
    assert build_model(cfg, pretrained="none").pretrained_source == "none"
    assert build_model(cfg).pretrained_source is None  # not asked: loading a bundle, resuming
    src = build_model(cfg)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = build_model(cfg, pretrained=str(tmp_path / "w.safetensors"))
    assert model.pretrained_source == str((tmp_path / "w.safetensors").resolve())
    assert offline == []


def test_the_bundle_records_what_the_weights_started_from(offline, tmp_path):
    from pixelwise.bundle import Bundle, load_bundle, read_bundle, save_bundle

    meta = json.loads(FIXTURE.read_text())
    bundle = Bundle.from_dict(meta)
    model = build_model(bundle.model, pretrained="auto")
    save_bundle(tmp_path / "run", model, bundle)
    assert json.loads((tmp_path / "run" / "model.json").read_text())["training"]["pretrained"] == "none: offline"
    assert read_bundle(tmp_path / "run").training.pretrained == "none: offline"
    _, loaded = load_bundle(tmp_path / "run")
    assert loaded.training.pretrained == "none: offline"
    old = Bundle.from_dict(meta)  # a bundle written before the field existed reads as "not recorded"
    assert old.training.pretrained is None


def test_train_defaults_to_auto_and_records_it(offline, simple_data, tmp_path):
    from pixelwise import train
    from pixelwise.training.config import TrainConfig

    assert TrainConfig().pretrained == "auto"
    train(
        data=str(simple_data),
        out=str(tmp_path / "run"),
        epochs=1,
        batch_size=2,
        crop_size=16,
        num_workers=0,
        progress=False,
        arch="unet",
        encoder="resnet18",
        model_kwargs={"decoder_channels": [16, 8, 8, 8, 8]},
    )
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["training"]["pretrained"] == "none: offline"
    assert meta["training"]["config"]["pretrained"] == "auto"
