"""BiSeNet V2 (``--arch bisenetv2``): its two paths, its options, and a run through train, export and predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pixelwise.bisenet import BiSeNetV2
from pixelwise.errors import PixelwiseError
from pixelwise.models import ModelConfig, build_model


def test_the_detail_path_keeps_an_eighth_and_the_semantic_path_a_thirty_second_of_the_size():
    net = BiSeNetV2(3, 5, head_channels=64).eval()
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        detail, semantic = net.backbone.detail(x), net.backbone.semantic(x)
        stem = net.backbone.semantic.stem(x)
        out = net(x)
    assert detail.shape == (2, 128, 12, 20)
    assert semantic.shape == (2, 128, 3, 5)
    assert stem.shape == (2, 16, 24, 40)
    assert out.shape == (2, 5, 96, 160)


def test_a_batch_of_one_image_trains():
    """The context block's pooled vector has one value per channel: no batch norm on it."""
    model = build_model(ModelConfig(arch="bisenetv2", num_classes=3, kwargs={"head_channels": 16})).train()
    out = model(torch.randn(1, 3, 40, 52))
    out.mean().backward()
    assert out.shape == (1, 3, 40, 52)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_the_backbone_is_fixed_and_head_channels_is_its_one_option():
    model = build_model(ModelConfig(arch="bisenetv2", encoder="resnet50", num_classes=4, kwargs={"head_channels": 24}))
    assert model.config.encoder == "two-path" and model.stride == 32
    assert model.net.head[0][0].out_channels == 24
    for value in (0, 2000, "64", True, 1.5):
        with pytest.raises(PixelwiseError, match="--model-kwargs head_channels must be a whole number 1..1024"):
            build_model(ModelConfig(arch="bisenetv2", num_classes=4, kwargs={"head_channels": value}))
    with pytest.raises(
        PixelwiseError, match=r"decoder_channels is not an option of bisenetv2 \(allowed: head_channels\)"
    ):
        build_model(ModelConfig(arch="bisenetv2", num_classes=4, kwargs={"decoder_channels": [8]}))


def test_dropout_goes_before_the_classifier():
    model = build_model(ModelConfig(arch="bisenetv2", num_classes=3, dropout=0.2, kwargs={"head_channels": 16}))
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout2d)]
    assert len(drops) == 1 and drops[0].p == 0.2 and model.net.head[1] is drops[0]


def test_no_imagenet_weights_is_said_in_one_line_without_the_network(monkeypatch):
    import socket

    calls = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: calls.append(a) or 1 / 0)
    model = build_model(ModelConfig(arch="bisenetv2", num_classes=3, kwargs={"head_channels": 16}), pretrained="auto")
    assert model.pretrained_source == "none: no ImageNet weights" and calls == []
    assert "bisenetv2/two-path has no ImageNet weights" in model.pretrained_note
    with pytest.raises(PixelwiseError, match="no ImageNet weights"):
        build_model(ModelConfig(arch="bisenetv2", num_classes=3), pretrained="imagenet")


def test_a_backbone_state_dict_starts_the_two_paths(tmp_path):
    config = ModelConfig(arch="bisenetv2", num_classes=3, kwargs={"head_channels": 16})
    source = build_model(config)
    state = {f"backbone.{k}": v.contiguous() for k, v in source.net.backbone.state_dict().items()}
    save_file(state, str(tmp_path / "backbone.safetensors"))
    torch.manual_seed(7)
    model = build_model(config, pretrained=str(tmp_path / "backbone.safetensors"))
    for k, v in source.net.backbone.state_dict().items():
        assert torch.equal(model.net.backbone.state_dict()[k], v)
    assert not torch.equal(model.net.head[-1].weight, source.net.head[-1].weight)  # the head stays new


def test_train_export_and_predict_a_bisenet_run(demo_data, tmp_path):
    from pixelwise import train
    from pixelwise.export import export_model
    from pixelwise.predict.predictor import load

    run = tmp_path / "run"
    train(
        data=str(demo_data),
        out=str(run),
        epochs=1,
        batch_size=4,
        crop_size=64,
        num_workers=0,
        progress=False,
        arch="bisenetv2",
        model_kwargs={"head_channels": 32},
        pretrained="auto",
    )
    meta = json.loads((run / "model.json").read_text())
    assert meta["model"]["arch"] == "bisenetv2" and meta["model"]["encoder"] == "two-path"
    assert meta["training"]["pretrained"] == "none: no ImageNet weights"
    result = export_model(run, "onnx")
    assert 0 <= result["max_abs_diff"] <= 1e-3
    image = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    by_torch = load(run, "cpu", backend="torch").predict_proba(image)
    by_onnx = load(run, "cpu", backend="onnxruntime").predict_proba(image)
    assert by_torch.shape[-2:] == (45, 70)
    np.testing.assert_allclose(by_onnx, by_torch, atol=1e-4)
