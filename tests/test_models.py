"""Architectures by name, any input size, dropout, and local pretrained weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pixelwise.errors import PixelwiseError
from pixelwise.models import MODELS, ModelConfig, build_model, load_pretrained


@pytest.mark.parametrize("arch", list(MODELS))
def test_output_has_the_input_size(arch):
    model = build_model(ModelConfig(arch=arch, encoder="resnet18", num_classes=4)).eval()
    with torch.no_grad():
        for h, w in [(37, 45), (64, 64), (33, 97)]:
            out = model(torch.randn(2, 3, h, w))
            assert out.shape == (2, 4, h, w)


def test_unknown_names_are_clear_errors():
    with pytest.raises(PixelwiseError, match="unknown architecture"):
        build_model(ModelConfig(arch="segnet"))
    with pytest.raises(PixelwiseError, match="encoder 'resnet9000'"):
        build_model(ModelConfig(arch="unet", encoder="resnet9000"))


def test_dropout_before_classifier():
    model = build_model(ModelConfig(arch="unet", encoder="resnet18", num_classes=3, dropout=0.3))
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout2d)]
    assert len(drops) == 1 and drops[0].p == 0.3
    model.train()
    x = torch.randn(2, 3, 64, 64)
    assert not torch.equal(model(x), model(x))  # stochastic in training mode
    model.eval()
    assert torch.equal(model(x), model(x))


def test_pretrained_from_encoder_state_dict(tmp_path):
    cfg = ModelConfig(arch="fpn", encoder="resnet18", num_classes=3)
    src = build_model(cfg)
    enc = {f"encoder.{k}": v.contiguous() for k, v in src.net.encoder.state_dict().items()}
    save_file(enc, str(tmp_path / "enc.safetensors"))
    torch.manual_seed(123)
    dst = build_model(cfg, pretrained=str(tmp_path / "enc.safetensors"))
    for k, v in src.net.encoder.state_dict().items():
        assert torch.equal(dst.net.encoder.state_dict()[k], v)


def test_pretrained_from_bundle_with_other_class_count(tmp_path):
    src = build_model(ModelConfig(arch="unet", encoder="resnet18", num_classes=5))
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "model.safetensors"))
    dst = build_model(ModelConfig(arch="unet", encoder="resnet18", num_classes=3))
    info = load_pretrained(dst, tmp_path)  # run directory form
    assert any("segmentation_head" in k for k in info["skipped"])  # classifier shape differs
    k = "net.encoder.conv1.weight"
    assert torch.equal(dst.state_dict()[k], src.state_dict()[k])


def test_pretrained_that_does_not_fit(tmp_path):
    save_file({"foo.bar": torch.zeros(3)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(PixelwiseError, match="none of its 1 tensors fit"):
        build_model(ModelConfig(num_classes=2), pretrained=str(tmp_path / "x.safetensors"))
    with pytest.raises(PixelwiseError, match="not found"):
        build_model(ModelConfig(num_classes=2), pretrained=str(tmp_path / "missing.safetensors"))


def test_failed_download_is_a_clear_error(monkeypatch):
    import pixelwise.models as models

    def offline(cfg, weights):
        raise ConnectionError("Name or service not known")

    monkeypatch.setitem(models.MODELS, "unet", offline)
    with pytest.raises(PixelwiseError, match="could not get ImageNet weights.*--pretrained PATH"):
        build_model(ModelConfig(arch="unet", num_classes=2), pretrained="imagenet")
