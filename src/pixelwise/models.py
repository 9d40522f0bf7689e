"""Architectures by name, and a wrapper that makes any input size work.

``MODELS`` maps a name to a factory. segmentation-models-pytorch provides ``unet``,
``unetplusplus``, ``fpn``, ``deeplabv3plus`` and ``deeplabv3`` with any encoder it accepts
(``resnet18``, ``mobilenet_v2``, ``efficientnet-b0``, ``tu-<any timm model>``, ...);
torchvision provides ``fcn`` (ResNet-50) and ``lraspp`` (MobileNetV3-Large).

:class:`SegmentationModel` pads the input to the network's stride, runs the network, and crops
the logits back, so the output has exactly the input's height and width.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PixelwiseError, short_message


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network (stored in every bundle)."""

    arch: str = "unet"
    encoder: str = "resnet18"
    num_classes: int = 2
    in_channels: int = 3
    dropout: float = 0.0
    # Extra keyword arguments for the architecture (e.g. decoder_channels for smp models).
    kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def _smp(arch_cls_name: str):
    def build(cfg: ModelConfig, encoder_weights: str | None) -> tuple[nn.Module, int]:
        import segmentation_models_pytorch as smp

        cls = getattr(smp, arch_cls_name)
        kwargs = dict(cfg.kwargs)
        if "decoder_channels" in kwargs and isinstance(kwargs["decoder_channels"], list):
            kwargs["decoder_channels"] = tuple(kwargs["decoder_channels"])
        try:
            net = cls(
                encoder_name=cfg.encoder,
                encoder_weights=encoder_weights,
                in_channels=cfg.in_channels,
                classes=cfg.num_classes,
                **kwargs,
            )
        except (KeyError, ValueError, RuntimeError) as e:
            if encoder_weights is not None:
                raise  # build_model reports a failed weight download
            raise PixelwiseError(
                f"cannot build {cfg.arch} with encoder '{cfg.encoder}': {short_message(e, 200)}; "
                "pick an encoder segmentation-models-pytorch knows (e.g. resnet18, resnet34, mobilenet_v2, efficientnet-b0)"
            ) from None
        if cfg.dropout > 0:
            # Dropout right before the 1x1 classifier of the segmentation head.
            head = net.segmentation_head
            head[0] = nn.Sequential(nn.Dropout2d(cfg.dropout), head[0])
        depth = kwargs.get("encoder_depth", 5)
        stride = 2**depth
        if arch_cls_name in ("DeepLabV3", "DeepLabV3Plus"):
            stride = max(stride, 16)
        return net, stride

    return build


def _torchvision(kind: str):
    def build(cfg: ModelConfig, encoder_weights: str | None) -> tuple[nn.Module, int]:
        from torchvision.models import segmentation as tvseg

        if cfg.in_channels != 3:
            raise PixelwiseError(f"{cfg.arch} takes 3-channel images; use a segmentation-models-pytorch architecture")
        if kind == "fcn":
            backbone_weights = "IMAGENET1K_V1" if encoder_weights else None
            net = tvseg.fcn_resnet50(weights=None, weights_backbone=backbone_weights, num_classes=cfg.num_classes)
            # FCNHead: conv-bn-relu-dropout-conv; set the dropout the user asked for.
            net.classifier[3].p = cfg.dropout
        else:
            backbone_weights = "IMAGENET1K_V1" if encoder_weights else None
            net = tvseg.lraspp_mobilenet_v3_large(
                weights=None, weights_backbone=backbone_weights, num_classes=cfg.num_classes
            )
            if cfg.dropout > 0:
                net.classifier.high_classifier = nn.Sequential(
                    nn.Dropout2d(cfg.dropout), net.classifier.high_classifier
                )
        return net, 1

    return build


# name -> factory(ModelConfig, encoder_weights) -> (network, stride the input must be a multiple of)
MODELS = {
    "unet": _smp("Unet"),
    "unetplusplus": _smp("UnetPlusPlus"),
    "fpn": _smp("FPN"),
    "deeplabv3plus": _smp("DeepLabV3Plus"),
    "deeplabv3": _smp("DeepLabV3"),
    "fcn": _torchvision("fcn"),
    "lraspp": _torchvision("lraspp"),
}


TORCHVISION_BACKBONES = {"fcn": "resnet50", "lraspp": "mobilenet_v3_large"}


class SegmentationModel(nn.Module):
    """Any-size wrapper: ``(N, 3, H, W)`` normalised image -> ``(N, C, H, W)`` logits.

    The input is zero-padded at the bottom and right up to a multiple of ``stride`` (zero is
    the mean colour after normalisation) and the logits are cropped back to ``(H, W)``.
    """

    def __init__(self, net: nn.Module, stride: int, config: ModelConfig):
        super().__init__()
        self.net = net
        self.stride = stride
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.stride
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        out = self.net(x)
        if isinstance(out, dict):  # torchvision segmentation models return {"out": ..., "aux": ...}
            out = out["out"]
        return out[..., :h, :w]


def build_model(config: ModelConfig, pretrained: str | None = None) -> SegmentationModel:
    """Build the network named by ``config.arch``.

    ``pretrained``: None (random initialisation, nothing downloaded), ``"imagenet"`` (the
    encoder's published weights, downloaded by the underlying library; a failure is a clear
    error after at most 60 s without data), or a path to a local ``.safetensors`` file: a
    pixelwise bundle's ``model.safetensors`` (or its run directory), or an encoder state dict.
    """
    if config.arch not in MODELS:
        raise PixelwiseError(f"unknown architecture '{config.arch}'; choose one of: {', '.join(MODELS)}")
    if config.arch in TORCHVISION_BACKBONES:  # fixed backbones: record the real one
        config.encoder = TORCHVISION_BACKBONES[config.arch]
    if pretrained in (None, "", "none"):
        net, stride = MODELS[config.arch](config, None)
        return SegmentationModel(net, stride, config)
    if pretrained == "imagenet":
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(60)
        try:
            net, stride = MODELS[config.arch](config, "imagenet")
        except PixelwiseError:
            raise
        except Exception as e:  # network errors come in many types from many libraries
            raise PixelwiseError(
                f"could not get ImageNet weights for {config.arch}/{config.encoder} "
                f"({short_message(e, 150, with_type=True)}); "
                "check the network, or pass --pretrained PATH to a local .safetensors file"
            ) from None
        finally:
            socket.setdefaulttimeout(old)
        return SegmentationModel(net, stride, config)
    net, stride = MODELS[config.arch](config, None)
    model = SegmentationModel(net, stride, config)
    load_pretrained(model, pretrained)
    return model


def _encoder_of(model: SegmentationModel) -> tuple[nn.Module, str]:
    net = model.net
    if hasattr(net, "encoder"):
        return net.encoder, "net.encoder."
    return net.backbone, "net.backbone."


def load_pretrained(model: SegmentationModel, path: str | Path) -> dict:
    """Load weights from a local safetensors file into ``model`` (in place, no pickle).

    Accepts a pixelwise run directory or bundle (``model.safetensors``; tensors whose shape
    differs, such as a classifier for another number of classes, are skipped) or a bare
    encoder state dict (keys as in the encoder module, optionally prefixed ``encoder.``).
    Returns ``{"loaded": n, "skipped": [...]}``; loading nothing at all is an error.
    """
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise PixelwiseError(f"{path}: pretrained weights not found; give a .safetensors file or a pixelwise run")
    try:
        tensors = load_file(str(p))
    except Exception as e:
        raise PixelwiseError(f"{p}: not a readable safetensors file ({e.__class__.__name__}); check the path") from None

    own = model.state_dict()
    encoder, prefix = _encoder_of(model)
    if any(k in own for k in tensors):
        mapped = tensors  # a pixelwise bundle: same key space as the model
    else:
        strip = next((pre for pre in ("encoder.", "backbone.", "") if all(k.startswith(pre) for k in tensors)), "")
        mapped = {prefix + k[len(strip) :]: v for k, v in tensors.items()}
    take, skipped = {}, []
    for k, v in mapped.items():
        if k in own and own[k].shape == v.shape:
            take[k] = v
        else:
            skipped.append(k)
    if not take:
        raise PixelwiseError(
            f"{p}: none of its {len(tensors)} tensors fit {model.config.arch}/{model.config.encoder}; "
            "use weights of the same architecture and encoder"
        )
    model.load_state_dict(take, strict=False)
    return {"loaded": len(take), "skipped": skipped}


def describe(model: nn.Module) -> str:
    n = sum(p.numel() for p in model.parameters())
    cfg = getattr(model, "config", None)
    name = f"{cfg.arch}/{cfg.encoder}" if cfg else model.__class__.__name__
    return f"{name}, {n / 1e6:.2f} M parameters"
