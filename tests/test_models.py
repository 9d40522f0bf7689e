"""Architectures by name, any input size, dropout, and local pretrained weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pixelwise.errors import PixelwiseError
from pixelwise.models import ALLOWED_KWARGS, MODELS, ModelConfig, allowed_kwargs, build_model, load_pretrained


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
    monkeypatch.setattr(models, "reachable", lambda host, timeout=3.0: True)  # the host answers, the download fails
    with pytest.raises(PixelwiseError, match="could not get ImageNet weights.*--pretrained PATH"):
        build_model(ModelConfig(arch="unet", num_classes=2), pretrained="imagenet")


# Every keyword argument the schema allows, at a value other than the library default: the schema
# must not allow what the library cannot build.
ALLOWED_SAMPLES = {
    ("unet", "resnet18"): dict(
        encoder_depth=4,
        decoder_channels=[64, 32, 32, 32],
        decoder_use_norm="identity",
        decoder_attention_type="scse",
        decoder_interpolation="bilinear",
    ),
    ("unet", "mobilenet_v2"): dict(decoder_use_batchnorm=False, decoder_channels=[16, 16, 8, 8, 8]),
    ("unetplusplus", "resnet18"): dict(
        encoder_depth=3,
        decoder_channels=[16, 8, 8],
        decoder_use_norm="batchnorm",
        decoder_interpolation="nearest-exact",
    ),
    ("fpn", "resnet18"): dict(
        encoder_depth=4,
        decoder_pyramid_channels=32,
        decoder_segmentation_channels=64,
        decoder_merge_policy="cat",
        decoder_dropout=0.1,
        decoder_interpolation="bilinear",
    ),
    ("deeplabv3plus", "resnet18"): dict(
        encoder_depth=5,
        encoder_output_stride=8,
        decoder_channels=32,
        decoder_atrous_rates=[6, 12, 18],
        decoder_aspp_separable=False,
        decoder_aspp_dropout=0.1,
    ),
    ("deeplabv3", "resnet18"): dict(
        encoder_output_stride=16, decoder_channels=32, decoder_atrous_rates=[2, 4, 6], decoder_aspp_separable=True
    ),
    ("segformer", "mit_b0"): dict(encoder_depth=4, decoder_segmentation_channels=48),
    ("segformer", "tu-resnet10t"): dict(encoder_depth=3, decoder_segmentation_channels=40),
    ("bisenetv2", "two-path"): dict(head_channels=48),
    ("unet", "tu-resnet18"): dict(
        norm_layer="groupnorm",
        act_layer="silu",
        drop_rate=0.1,
        drop_path_rate=0.1,
        encoder_depth=3,
        decoder_channels=[16, 8, 8],
        decoder_use_norm=False,
    ),
}


@pytest.mark.parametrize("arch, encoder", list(ALLOWED_SAMPLES))
def test_the_allowed_keyword_arguments_build(arch, encoder):
    kwargs = ALLOWED_SAMPLES[arch, encoder]
    assert set(kwargs) <= set(allowed_kwargs(arch, encoder))
    model = build_model(ModelConfig(arch=arch, encoder=encoder, num_classes=3, kwargs=dict(kwargs))).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 45)).shape == (1, 3, 37, 45)


def test_every_allowed_keyword_is_sampled():
    sampled = {k for (arch, enc), kw in ALLOWED_SAMPLES.items() for k in kw}
    allowed = {k for arch in ALLOWED_KWARGS for k in allowed_kwargs(arch, "tu-resnet10t")}
    assert allowed == sampled


@pytest.mark.parametrize(
    "encoder, kwargs, words",
    [
        ("tu-resnet18", {"checkpoint_path": "/tmp/x.pth"}, "--model-kwargs checkpoint_path is not an option"),
        ("resnet18", {"encoder_weights": "imagenet"}, "--model-kwargs encoder_weights is not an option"),
        ("tu-resnet18", {"pretrained": True}, "--model-kwargs pretrained is not an option"),
        ("resnet18", {"decoder_channels": [16, 8]}, "one entry per encoder stage"),
        ("resnet18", {"encoder_depth": "5"}, "--model-kwargs encoder_depth must be a whole number 1..5, not '5'"),
        ("tu-hf-hub:timm/resnet18.a1_in1k", {}, "--encoder 'tu-hf-hub:timm/resnet18.a1_in1k' is not an encoder"),
        ("https://example.com/r.pth", {}, "file paths, URLs and hub names are not accepted"),
    ],
)
def test_build_refuses_what_loads_files_naming_the_flag(encoder, kwargs, words, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(PixelwiseError) as info:
        build_model(ModelConfig(arch="unet", encoder=encoder, num_classes=2, kwargs=kwargs))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_train_with_a_file_loading_model_kwarg_is_one_line(simple_data, tmp_path, capsys):
    from pixelwise.cli import main

    argv = ["train", str(simple_data), "--out", str(tmp_path / "run"), "--epochs", "1", "--quiet"]
    argv += ["--encoder", "tu-resnet18", "--model-kwargs", f"checkpoint_path={tmp_path / 'evil.pth'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pixelwise: error: --model-kwargs checkpoint_path is not an option") and "\n" not in err
    assert not (tmp_path / "run" / "model.json").exists()


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_segformer_on_its_mix_transformer_gives_every_task_at_the_input_size(task):
    config = ModelConfig("segformer", "mit_b0", num_classes=3, kwargs={"decoder_segmentation_channels": 32}, task=task)
    model = build_model(config, pretrained="none").eval()
    assert model.stride == 32  # the encoder's key reduction needs whole 32 px blocks
    with torch.no_grad():
        for h, w in [(5, 7), (37, 45), (64, 96)]:
            assert model(torch.randn(1, 3, h, w)).shape == (1, config.out_channels, h, w)


def test_segformer_saves_and_loads_as_a_bundle(tmp_path):
    from pixelwise.bundle import Bundle, Normalization, load_bundle, save_bundle
    from pixelwise.classes import ClassInfo

    config = ModelConfig("segformer", "mit_b0", num_classes=2, kwargs={"decoder_segmentation_channels": 16})
    model = build_model(config).eval()
    classes = ClassInfo(["background", "pole"], [(0, 0, 0), (255, 255, 0)])
    run = save_bundle(
        tmp_path / "run",
        model,
        Bundle(model=config, classes=classes, normalization=Normalization((0.5,) * 3, (0.25,) * 3)),
    )
    loaded, bundle = load_bundle(run)
    assert bundle.model.arch == "segformer" and bundle.model.encoder == "mit_b0"
    x = torch.randn(1, 3, 40, 50)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_segformer_without_cached_imagenet_weights_trains_from_scratch_offline(monkeypatch):
    import pixelwise.models as models

    monkeypatch.setenv("PIXELWISE_OFFLINE", "1")
    monkeypatch.setattr(models, "_hub_cached", lambda repo, filename, revision=None: False)
    config = ModelConfig("segformer", "mit_b0", num_classes=2, kwargs={"decoder_segmentation_channels": 16})
    assert models.imagenet_weights(config).location == "smp-hub/mit_b0.imagenet"
    model = build_model(config, pretrained="auto")
    assert model.pretrained_source == "none: offline"
    assert "segformer/mit_b0" in model.pretrained_note and "\n" not in model.pretrained_note


def test_segformer_refuses_a_depth_its_decoder_cannot_take():
    with pytest.raises(PixelwiseError, match="--model-kwargs encoder_depth must be a whole number 3..5"):
        build_model(ModelConfig("segformer", "mit_b0", num_classes=2, kwargs={"encoder_depth": 2}))
