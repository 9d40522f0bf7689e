"""Architectures by name, and a wrapper that makes any input size work.

``MODELS`` maps a name to a factory. segmentation-models-pytorch provides ``unet``,
``unetplusplus``, ``fpn``, ``deeplabv3plus``, ``segformer`` (the SegFormer all-MLP head; its own
Mix Transformer encoders are ``mit_b0`` ... ``mit_b5``) and ``deeplabv3`` with any encoder it
accepts (``resnet18``, ``mobilenet_v2``, ``efficientnet-b0``, ``mit_b0``, ``tu-<any timm model>``, ...);
torchvision provides ``fcn`` (ResNet-50) and ``lraspp`` (MobileNetV3-Large); ``bisenetv2`` is
BiSeNet V2's two-path network (:mod:`pixelwise.bisenet`), which no library ships.

:class:`SegmentationModel` pads the input to the network's stride, runs the network, and crops
the logits back, so the output has exactly the input's height and width.

A model description (:class:`ModelConfig`, the ``model`` section of ``model.json``) is checked
before anything is built (:func:`model_config_problem`): the encoder must be a name the library
knows, and ``kwargs`` may hold only the keyword arguments of :data:`ALLOWED_KWARGS`, which shape
the network and never name a file, a URL or weights to fetch.

Pretrained weights (:func:`build_model`'s ``pretrained``): ``"auto"`` takes the encoder's ImageNet
weights from the local cache, else downloads them, else trains from scratch and says why;
``"imagenet"`` insists on them; ``"none"`` starts from random weights; a path loads a local
safetensors file. The built model records what it started from in ``pretrained_source``.
"""

from __future__ import annotations

import math
import os
import re
import socket
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PixelwiseError, short_message
from .instances import EXTRA_CHANNELS, TASKS


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
    # "semantic": C class logits; "instance"/"panoptic": the same network with EXTRA_CHANNELS more
    # outputs (centre logit, offset dy, offset dx), grouped into objects after the network.
    task: str = "semantic"

    @property
    def out_channels(self) -> int:
        """Channels the network gives: ``num_classes``, plus 3 (centre, dy, dx) for instance/panoptic."""
        return self.num_classes + (0 if self.task == "semantic" else EXTRA_CHANNELS)

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
        if encoder_weights and (
            cfg.encoder.startswith("tu-") or smp.encoders.is_equivalent_to_timm_universal(cfg.encoder)
        ):
            encoder_weights = True  # timm encoders take the weights of the name's default tag
        for key in ("decoder_channels", "decoder_atrous_rates"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        if "decoder_use_batchnorm" in kwargs:  # the earlier name of decoder_use_norm
            kwargs.setdefault("decoder_use_norm", kwargs.pop("decoder_use_batchnorm"))
        try:
            net = cls(
                encoder_name=cfg.encoder,
                encoder_weights=encoder_weights,
                in_channels=cfg.in_channels,
                classes=cfg.out_channels,
                **kwargs,
            )
        except Exception as e:  # the library's checks raise many types; a description it cannot build
            if encoder_weights is not None:
                raise  # build_model reports a failed weight download
            if torch.get_default_device().type == "meta":
                raise  # a shapes-only build (the bundle's size check): some encoders need real tensors
            raise PixelwiseError(
                f"cannot build {cfg.arch} with encoder '{cfg.encoder}' and {cfg.kwargs or 'no extra arguments'}: "
                f"{short_message(e, 200)}; pick an encoder segmentation-models-pytorch knows "
                "(e.g. resnet18, resnet34, mobilenet_v2, efficientnet-b0) and arguments it accepts"
            ) from None
        if cfg.dropout > 0:
            # Dropout right before the 1x1 classifier of the segmentation head.
            head = net.segmentation_head
            head[0] = nn.Sequential(nn.Dropout2d(cfg.dropout), head[0])
        depth = kwargs.get("encoder_depth", 5)
        stride = 2**depth
        if arch_cls_name in ("DeepLabV3", "DeepLabV3Plus"):
            stride = max(stride, 16)
        if cfg.encoder.startswith("mit_"):
            # Mix Transformer stages reduce keys by 8x8 at 1/4 scale: any depth needs whole 32 px.
            stride = max(stride, 32)
        return net, stride

    return build


def _torchvision(kind: str):
    def build(cfg: ModelConfig, encoder_weights: str | None) -> tuple[nn.Module, int]:
        from torchvision.models import segmentation as tvseg

        if cfg.in_channels != 3:
            raise PixelwiseError(f"{cfg.arch} takes 3-channel images; use a segmentation-models-pytorch architecture")
        if kind == "fcn":
            backbone_weights = "IMAGENET1K_V1" if encoder_weights else None
            net = tvseg.fcn_resnet50(weights=None, weights_backbone=backbone_weights, num_classes=cfg.out_channels)
            # FCNHead: conv-bn-relu-dropout-conv; set the dropout the user asked for.
            net.classifier[3].p = cfg.dropout
        else:
            backbone_weights = "IMAGENET1K_V1" if encoder_weights else None
            net = tvseg.lraspp_mobilenet_v3_large(
                weights=None, weights_backbone=backbone_weights, num_classes=cfg.out_channels
            )
            if cfg.dropout > 0:
                net.classifier.high_classifier = nn.Sequential(
                    nn.Dropout2d(cfg.dropout), net.classifier.high_classifier
                )
        return net, 1

    return build


def _bisenetv2(cfg: ModelConfig, encoder_weights: str | None) -> tuple[nn.Module, int]:
    from .bisenet import HEAD_CHANNELS, STRIDE, BiSeNetV2

    head = cfg.kwargs.get("head_channels", HEAD_CHANNELS)
    return BiSeNetV2(cfg.in_channels, cfg.out_channels, head_channels=head, dropout=cfg.dropout), STRIDE


# name -> factory(ModelConfig, encoder_weights) -> (network, stride the input must be a multiple of)
MODELS = {
    "unet": _smp("Unet"),
    "unetplusplus": _smp("UnetPlusPlus"),
    "fpn": _smp("FPN"),
    "deeplabv3plus": _smp("DeepLabV3Plus"),
    "segformer": _smp("Segformer"),
    "deeplabv3": _smp("DeepLabV3"),
    "fcn": _torchvision("fcn"),
    "lraspp": _torchvision("lraspp"),
    "bisenetv2": _bisenetv2,
}


TORCHVISION_BACKBONES = {"fcn": "resnet50", "lraspp": "mobilenet_v3_large"}
# Architectures whose backbone is part of them: the encoder name is replaced by this one.
FIXED_BACKBONES = {**TORCHVISION_BACKBONES, "bisenetv2": "two-path"}


# What a model description may say. Everything in ModelConfig.kwargs goes to the library's
# builder, and a library keyword can load or fetch a file (timm's checkpoint_path unpickles one,
# encoder_weights and pretrained download); so only the keywords below, which shape the network,
# are accepted, each with the values it may take. Bounds keep a hostile model.json from asking
# for a network too large to build.
MAX_CLASSES = 4096
MAX_IN_CHANNELS = 64
MAX_CHANNELS = 1024

# One check: (test of a value, the values allowed in words).
Rule = tuple[Callable[[object], bool], str]


def _whole(lo: int, hi: int) -> Rule:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi), f"a whole number {lo}..{hi}"


def _fraction() -> Rule:
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 1  # noqa: E731
    return ok, "a number in [0, 1)"


def _among(*values) -> Rule:
    return (lambda v: isinstance(v, (str, type(None))) and v in values), " or ".join(
        "null" if v is None else v for v in values
    )


def _flag() -> Rule:
    return (lambda v: isinstance(v, bool)), "true or false"


def _whole_list(lo_len: int, hi_len: int, lo: int, hi: int) -> Rule:
    each = _whole(lo, hi)[0]
    ok = lambda v: isinstance(v, (list, tuple)) and lo_len <= len(v) <= hi_len and all(each(x) for x in v)  # noqa: E731
    size = f"{lo_len}" if lo_len == hi_len else f"{lo_len} to {hi_len}"
    return ok, f"a list of {size} whole numbers {lo}..{hi}"


_INTERPOLATION = _among("nearest", "bilinear", "bicubic", "area", "nearest-exact")
_UNET = {
    "decoder_channels": _whole_list(1, 5, 1, MAX_CHANNELS),
    "decoder_use_norm": (
        lambda v: isinstance(v, bool) or v in ("batchnorm", "identity"),
        "true, false, batchnorm or identity",
    ),
    "decoder_use_batchnorm": _flag(),
    "decoder_attention_type": _among(None, "scse"),
    "decoder_interpolation": _INTERPOLATION,
}
_DEEPLAB = {
    "encoder_output_stride": ((lambda v: v in (8, 16) and not isinstance(v, bool)), "8 or 16"),
    "decoder_channels": _whole(1, MAX_CHANNELS),
    "decoder_atrous_rates": _whole_list(3, 3, 1, 64),
    "decoder_aspp_separable": _flag(),
    "decoder_aspp_dropout": _fraction(),
}
_FPN = {
    "decoder_pyramid_channels": _whole(1, MAX_CHANNELS),
    "decoder_segmentation_channels": (  # group normalisation in groups of 32
        lambda v: _whole(32, MAX_CHANNELS)[0](v) and v % 32 == 0,
        f"a multiple of 32 up to {MAX_CHANNELS}",
    ),
    "decoder_merge_policy": _among("add", "cat"),
    "decoder_dropout": _fraction(),
    "decoder_interpolation": _INTERPOLATION,
}
# architecture -> keyword -> rule. Not here on purpose: encoder_weights, aux_params, activation,
# upsampling (changes the output size), in_channels/classes/encoder_name (set by pixelwise).
ALLOWED_KWARGS: dict[str, dict[str, Rule]] = {
    "unet": {"encoder_depth": _whole(1, 5), **_UNET},
    "unetplusplus": {"encoder_depth": _whole(2, 5), **_UNET},
    "fpn": {"encoder_depth": _whole(3, 5), **_FPN},
    "deeplabv3plus": {"encoder_depth": _whole(3, 5), **_DEEPLAB},
    "segformer": {"encoder_depth": _whole(3, 5), "decoder_segmentation_channels": _whole(1, MAX_CHANNELS)},
    "deeplabv3": {"encoder_depth": _whole(1, 5), **_DEEPLAB},
    "fcn": {},
    "lraspp": {},
    "bisenetv2": {"head_channels": _whole(1, MAX_CHANNELS)},
}
# Extra keywords of timm encoders (``tu-...``), passed on to timm.create_model: layer types by
# name and drop rates. Not: checkpoint_path, pretrained, pretrained_cfg(_overlay), features_only, ...
TIMM_ENCODER_KWARGS: dict[str, Rule] = {
    "norm_layer": _among(
        "batchnorm", "batchnorm2d", "groupnorm", "groupnorm1", "layernorm", "layernorm2d", "rmsnorm", "rmsnorm2d"
    ),
    "act_layer": _among(
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "celu",
        "selu",
        "gelu",
        "gelu_tanh",
        "quick_gelu",
        "silu",
        "swish",
        "mish",
        "hard_swish",
        "hardswish",
        "hard_mish",
        "tanh",
        "sigmoid",
        "hard_sigmoid",
        "hardsigmoid",
        "prelu",
    ),
    "drop_rate": _fraction(),
    "drop_path_rate": _fraction(),
}
_ENCODER_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]{0,99}(\.[a-z0-9_]{1,60})?")


def allowed_kwargs(arch: str, encoder: str) -> dict[str, Rule]:
    """The keyword arguments ``kwargs`` may hold for ``arch`` with ``encoder``, with their rules."""
    allowed = dict(ALLOWED_KWARGS.get(arch, {}))
    if arch not in FIXED_BACKBONES and encoder.startswith("tu-"):
        allowed.update(TIMM_ENCODER_KWARGS)
    return allowed


def encoder_problem(name: str) -> str | None:
    """Why ``name`` is not an encoder to build (None when it is): a segmentation-models-pytorch
    encoder name, or ``tu-`` and a model name timm lists. Paths, URLs and hub names are refused."""
    import segmentation_models_pytorch as smp

    if name in smp.encoders.get_encoder_names():
        return None
    if name.startswith("tu-") and _ENCODER_NAME.fullmatch(name[3:]):
        import timm

        if timm.is_model(name[3:]):
            return None
    return (
        f"{name[:80]!r} is not an encoder pixelwise builds: give a segmentation-models-pytorch encoder "
        "(resnet18, resnet34, mobilenet_v2, efficientnet-b0, ...) or tu-<a model name timm lists>; "
        "file paths, URLs and hub names are not accepted"
    )


def model_config_problem(config: ModelConfig) -> tuple[str, str] | None:
    """What is wrong with a model description, as (field, words), or None when it may be built.

    ``field`` is ``arch``, ``encoder``, ``num_classes``, ``in_channels``, ``dropout``, ``task``, ``kwargs``
    or ``kwargs.<key>``; the words follow the field's name in a message ("is not ...", "must be ...").
    Nothing is imported but the library that knows the encoder names; nothing is built or read.
    """
    c = config
    checks = [
        ("arch", isinstance(c.arch, str) and c.arch in MODELS, f"is not an architecture ({', '.join(MODELS)})"),
        ("encoder", isinstance(c.encoder, str), "must be text"),
        ("num_classes", _whole(1, MAX_CLASSES)[0](c.num_classes), f"must be {_whole(1, MAX_CLASSES)[1]}"),
        ("in_channels", _whole(1, MAX_IN_CHANNELS)[0](c.in_channels), f"must be {_whole(1, MAX_IN_CHANNELS)[1]}"),
        ("dropout", _fraction()[0](c.dropout), "must be a number in [0, 1)"),
        ("task", isinstance(c.task, str) and c.task in TASKS, f"must be one of {', '.join(TASKS)}"),
        ("kwargs", isinstance(c.kwargs, dict) and all(isinstance(k, str) for k in c.kwargs), "must be a mapping"),
    ]
    for name, ok, words in checks:
        if not ok:
            return name, words
    if c.arch not in FIXED_BACKBONES:  # the name is replaced for those
        problem = encoder_problem(c.encoder)
        if problem:
            return "encoder", problem
    return _kwargs_problem(c.arch, c.encoder, c.kwargs)


def _kwargs_problem(arch: str, encoder: str, kwargs: dict) -> tuple[str, str] | None:
    allowed = allowed_kwargs(arch, encoder)
    for key, value in kwargs.items():
        if key not in allowed:
            options = ", ".join(sorted(allowed)) or "none"
            shown = key if key.isidentifier() and len(key) <= 60 else _short_repr(key)
            with_encoder = "" if arch in FIXED_BACKBONES else f" with encoder {encoder}"  # a known name
            return (
                f"kwargs.{shown}",
                f"is not an option of {arch}{with_encoder} (allowed: {options}); "
                "nothing that names a file, a URL or weights to fetch",
            )
        test, words = allowed[key]
        if not test(value):
            return f"kwargs.{key}", f"must be {words}, not {_short_repr(value)}"
    channels = kwargs.get("decoder_channels")
    depth = kwargs.get("encoder_depth", 5)
    if arch in ("unet", "unetplusplus") and channels is not None and len(channels) != depth:
        return (
            "kwargs.decoder_channels",
            f"must have one entry per encoder stage: {len(channels)} given for encoder_depth {depth}",
        )
    return None


def _short_repr(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_model_config(config: ModelConfig) -> None:
    """Raise a one-line :class:`PixelwiseError` naming the option (``--model-kwargs KEY``,
    ``--encoder``, ...) when ``config`` is not a description :func:`build_model` may build."""
    problem = model_config_problem(config)
    if problem is None:
        return
    where, words = problem
    if where == "arch":
        raise PixelwiseError(f"unknown architecture {config.arch!r}; choose one of: {', '.join(MODELS)}")
    flags = {"encoder": "--encoder", "dropout": "--dropout", "task": "--task", "kwargs": "--model-kwargs"}
    name = flags.get(where, where)
    if where.startswith("kwargs."):
        name = f"--model-kwargs {where[len('kwargs.') :]}"
    raise PixelwiseError(f"{name} {words}")


class SegmentationModel(nn.Module):
    """Any-size wrapper: ``(N, 3, H, W)`` normalised image -> ``(N, config.out_channels, H, W)``:
    C class logits, then for instance/panoptic models the centre logit and the offsets dy, dx (pixels).

    The input is zero-padded at the bottom and right up to a multiple of ``stride`` (zero is
    the mean colour after normalisation) and the logits are cropped back to ``(H, W)``.
    """

    def __init__(self, net: nn.Module, stride: int, config: ModelConfig):
        super().__init__()
        self.net = net
        self.stride = stride
        self.config = config
        self.pretrained_source: str | None = None  # what the weights started from (see build_model)
        self.pretrained_note: str | None = None  # one line for the user when "auto" fell back to scratch

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
    """Build the network named by ``config.arch`` after checking the description (:func:`check_model_config`).

    ``pretrained``:

    - None: random initialisation, nothing looked up (``pretrained_source`` None; what loading a
      bundle and resuming a run use);
    - ``"none"``: random initialisation, recorded as ``"none"``;
    - ``"auto"``: the encoder's ImageNet weights from the local cache (``"imagenet (cache)"``), else
      downloaded (``"imagenet (downloaded)"``), else random with ``pretrained_note`` saying why
      (``"none: offline"``, ``"none: no ImageNet weights"``, ``"none: download failed"``);
    - ``"imagenet"``: the same weights, and a clear error when they cannot be had (after at most
      60 s without data);
    - a path to a local ``.safetensors`` file: a pixelwise bundle's ``model.safetensors`` (or its
      run directory), or an encoder state dict; recorded as the resolved path.

    The model gets ``pretrained_source`` (str or None) and ``pretrained_note`` (one line for the
    user, or None).
    """
    if isinstance(config.arch, str) and config.arch in FIXED_BACKBONES:  # record the real one
        config.encoder = FIXED_BACKBONES[config.arch]
    check_model_config(config)
    note = None
    if pretrained is None or pretrained in ("", "none"):
        net, stride = MODELS[config.arch](config, None)
        source = None if pretrained is None else "none"
    elif pretrained in ("auto", "imagenet"):
        net, stride, source, note = _build_imagenet(config, required=pretrained == "imagenet")
    else:
        net, stride = MODELS[config.arch](config, None)
        model = SegmentationModel(net, stride, config)
        load_pretrained(model, pretrained)
        model.pretrained_source = str(Path(pretrained).resolve())
        return model
    model = SegmentationModel(net, stride, config)
    model.pretrained_source, model.pretrained_note = source, note
    return model


# Seconds to wait for a connection to the weights' host before "auto" trains from scratch, and
# without data during a download before it gives up.
PROBE_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ImagenetWeights:
    """Where the ImageNet weights of an encoder come from: a hub repository or URL, its host, cached or not."""

    location: str
    host: str
    cached: bool


def imagenet_weights(config: ModelConfig) -> ImagenetWeights | None:
    """Where the ImageNet weights of ``config``'s encoder live, and whether the local cache holds
    them (no network used); None when the encoder has none."""
    if config.arch == "bisenetv2":  # trained from scratch, as in its paper
        return None
    if config.arch in TORCHVISION_BACKBONES:
        from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights

        url = {"fcn": ResNet50_Weights, "lraspp": MobileNet_V3_Large_Weights}[config.arch].IMAGENET1K_V1.url
        return _url_weights(url)
    import segmentation_models_pytorch as smp

    name = config.encoder
    if smp.encoders.is_equivalent_to_timm_universal(name):  # smp builds these with timm
        name = name.replace("timm-", "tu-").replace("tu-mobilenetv3", "tu-tf_mobilenetv3")
    if name.startswith("tu-"):
        return _timm_weights(name[3:])
    settings = smp.encoders.encoders.get(name, {}).get("pretrained_settings", {}).get("imagenet")
    if settings is None:
        return None
    repo, revision = settings["repo_id"], settings["revision"]
    files = ("config.json", "model.safetensors")
    return ImagenetWeights(repo, _hub_host(), all(_hub_cached(repo, f, revision) for f in files))


def _timm_weights(name: str) -> ImagenetWeights | None:
    import timm

    if not timm.models.is_model_pretrained(name):
        return None
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg.hf_hub_id:
        repo = cfg.hf_hub_id
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        return ImagenetWeights(repo, _hub_host(), any(_hub_cached(repo, f) for f in files))
    return _url_weights(cfg.url) if cfg.url else None


def _url_weights(url: str) -> ImagenetWeights:
    """Weights fetched by torch.hub into ``$TORCH_HOME/hub/checkpoints``."""
    cached = Path(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path)).is_file()
    return ImagenetWeights(url, urlparse(url).hostname or "", cached)


def _hub_host() -> str:
    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


def _hub_cached(repo: str, filename: str, revision: str | None = None) -> bool:
    from huggingface_hub import constants, try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=constants.HF_HUB_CACHE, revision=revision)
    return isinstance(found, str)


def offline_by_environment() -> bool:
    """True when ``PIXELWISE_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to 1/true/yes: nothing is downloaded."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARIABLES)


_OFFLINE_VARIABLES = ("PIXELWISE_OFFLINE", "HF_HUB_OFFLINE")


def reachable(host: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host``:443 opens within ``timeout`` seconds (name lookup included)."""
    if not host:
        return False
    opened = []

    def probe():
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                opened.append(True)
        except Exception:  # no network, no name service, refused: all mean "not now"
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def _build_imagenet(config: ModelConfig, required: bool):
    """(network, stride, source, note) for ``pretrained="auto"`` (``required`` False) or ``"imagenet"``."""
    name = f"{config.arch}/{config.encoder}"
    weights = imagenet_weights(config)
    if weights is None:
        return _scratch(config, required, "none: no ImageNet weights", f"{name} has no ImageNet weights")
    if weights.cached:
        try:
            with _hub_offline():
                net, stride = MODELS[config.arch](config, "imagenet")
            return net, stride, "imagenet (cache)", None
        except Exception as e:  # a damaged cache entry: try the network as for a missing one
            cache_error = short_message(e, 100, with_type=True)
            if not required and (offline_by_environment() or not reachable(weights.host)):
                why = f"its ImageNet weights in the local cache cannot be read ({cache_error})"
                return _scratch(config, required, "none: cache unreadable", f"{name}: {why}")
    elif offline_by_environment() or not reachable(weights.host):
        why = f"the ImageNet weights of {name} are not in the local cache and {weights.host} cannot be reached"
        return _scratch(config, required, "none: offline", why)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            net, stride = MODELS[config.arch](config, "imagenet")
        return net, stride, "imagenet (downloaded)", None
    except PixelwiseError:
        raise
    except Exception as e:  # network errors come in many types from many libraries
        why = f"downloading the ImageNet weights of {name} failed ({short_message(e, 150, with_type=True)})"
        return _scratch(config, required, "none: download failed", why)


def _scratch(config: ModelConfig, required: bool, source: str, why: str):
    """Random weights with a note saying why, or for ``required`` weights the error."""
    if required:
        raise PixelwiseError(
            f"could not get ImageNet weights: {why}; check the network, pass --pretrained PATH to a local "
            ".safetensors file, or --pretrained auto to train from scratch when they cannot be had"
        )
    net, stride = MODELS[config.arch](config, None)
    note = f"training from scratch: {why}; --pretrained PATH starts from a local .safetensors file, --pretrained none silences this"
    return net, stride, source, note


@contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


@contextmanager
def _hub_offline():
    """Hugging Face Hub look-ups answered from the local cache only (no update check over the network)."""
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


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
