"""Inference that scales: sliding windows, test-time augmentation, Monte-Carlo dropout.

Everything here works on softmax probabilities. A *member* is anything that turns a batch of
``(N, 3, h, w)`` float images in ``[0, 1]`` into ``(N, C + E, h, w)`` outputs (a PyTorch model, an
ONNX Runtime session, one model of an ensemble); :func:`predict_image` averages the
probabilities of every member, scale and flip, tile by tile, and blends the tiles into one
``(C, H, W)`` map.

Instance and panoptic models (``E = extra_channels = 3``) also give a centre logit and the offsets
``dy, dx`` (pixels) from each pixel to its object's centre. Those become the *dense maps*
(:func:`pixelwise.instances.dense_maps`: centre heatmap in [0, 1], dy, dx), averaged like the
probabilities: a flipped view is flipped back with its offset along the flip negated, a scaled view
is resized back with its offsets multiplied by original size / scaled size, tiles are blended with
the same window.

Working resolution: members may carry ``max_side`` (the bundle's ``input.max_side``; 0 or absent =
native size). Each image is first downscaled to :func:`pixelwise.data.transforms.working_size`
(:func:`pixelwise.data.transforms.resize_image`, the resize training used), and everything below
(tiling, flips, scales, MC dropout) happens at that size; the probabilities (plain inference: the
logits) and dense maps are then resized back to the image's own size (bilinear; offsets multiplied
by original size / working size per axis), so labels are the argmax at the image's size. Members of
one ensemble must share ``max_side``.

Memory: an image above ``InferenceConfig.tile_above`` pixels (or any image with ``tile="always"``) is
cut into ``tile_size`` squares; at most ``tile_batch`` tiles are in the network at once, so the
activations are bounded by the tile batch whatever the image size. What grows with the image is
only the output: the ``(C, H, W)`` float32 probability sum and an ``(H, W)`` weight sum (plus an
``(C, H, W)`` variance sum with MC dropout), all on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import resize_image, working_size
from ..errors import PixelwiseError
from ..instances import dense_maps

TILE_MODES = ("auto", "always", "never")


class Member(Protocol):
    """One network to average over: ``(N, 3, h, w)`` [0, 1] float images -> ``(N, C + E, h, w)`` outputs.

    ``num_classes`` is C (class logits first); ``extra_channels`` is E, 0 for semantic models and
    3 (centre logit, dy, dx) for instance and panoptic models. A member without the attribute has E = 0.

    ``max_side`` is the working resolution of the member (0 or absent: native size).
    """

    num_classes: int
    extra_channels: int
    max_side: int

    def logits(self, x01: torch.Tensor, stochastic: bool = False) -> torch.Tensor: ...


# Largest values the inference options accept: far above any use seen, low enough that a typo
# (an extra zero or two) is refused instead of running for hours or asking for all the memory.
MAX_TILE_SIZE = 16384
MAX_TILE_BATCH = 1024
MAX_MC_DROPOUT = 1000


@dataclass
class InferenceConfig:
    """How to turn an image into probabilities. The defaults are plain whole-image inference.

    Attributes:
        tile: ``auto`` (tile images with more than ``tile_above`` pixels), ``always`` or ``never``.
        tile_size: side of a square tile in image pixels (clamped to the image where it is smaller).
        tile_overlap: share of a tile overlapping its neighbour, in [0, 1).
        blend: weighting of overlapping tiles: ``gaussian`` (centre-heavy), ``linear`` (ramps over the overlap)
            or ``constant`` (plain average).
        tile_batch: tiles run through the network at once; bounds the activation memory.
        tile_above: with ``tile="auto"``, images with more pixels (width x height) than this are tiled.
        hflip, vflip: also predict the mirrored image and average (test-time augmentation).
        scales: also predict the image resized by these factors and average; 1.0 is the image itself.
        mc_dropout: number of stochastic passes with dropout on (0 = off); gives a variance map.
    """

    tile: str = "auto"
    tile_size: int = 1024
    tile_overlap: float = 0.25
    blend: str = "gaussian"
    tile_batch: int = 2
    tile_above: int = 2048 * 2048
    hflip: bool = False
    vflip: bool = False
    scales: tuple[float, ...] = (1.0,)
    mc_dropout: int = 0

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        if self.tile not in TILE_MODES:
            raise PixelwiseError(f"tile must be one of {', '.join(TILE_MODES)}, got {self.tile!r}")
        if self.blend not in BLENDS:
            raise PixelwiseError(f"unknown blending window {self.blend!r}; choose one of {', '.join(BLENDS)}")
        if not 1 <= self.tile_size <= MAX_TILE_SIZE:
            raise PixelwiseError(f"tile size must be 1 to {MAX_TILE_SIZE} pixels, got {self.tile_size}")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise PixelwiseError(f"tile overlap must be in [0, 1), got {self.tile_overlap}")
        if not 1 <= self.tile_batch <= MAX_TILE_BATCH:
            raise PixelwiseError(f"tile batch must be 1 to {MAX_TILE_BATCH}, got {self.tile_batch}")
        if self.tile_above < 1:
            raise PixelwiseError(f"tile_above must be at least 1 pixel, got {self.tile_above}")
        if not self.scales or any(not (0.05 <= s <= 8.0) for s in self.scales):
            raise PixelwiseError(f"scales must be between 0.05 and 8, got {self.scales}")
        if not 0 <= self.mc_dropout <= MAX_MC_DROPOUT:
            raise PixelwiseError(f"mc_dropout must be 0 to {MAX_MC_DROPOUT} passes, got {self.mc_dropout}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scales"] = list(self.scales)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> InferenceConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise PixelwiseError(f"unknown inference options: {', '.join(sorted(unknown))}")
        return cls(**d)

    @property
    def flips(self) -> list[tuple[int, ...]]:
        """Tensor dims to flip for each view: () is the image itself."""
        out: list[tuple[int, ...]] = [()]
        if self.hflip:
            out.append((3,))
        if self.vflip:
            out.append((2,))
        return out

    def needs_tiling(self, height: int, width: int) -> bool:
        if self.tile == "always":
            return True
        if self.tile == "never":
            return False
        return height * width > self.tile_above


@dataclass
class Prediction:
    """Probabilities of one image and the maps derived from them.

    ``probs`` is ``(C, H, W)`` float32 (sums to 1 over C); ``variance`` is the ``(H, W)`` variance,
    across MC-dropout passes, of the probability of the predicted class (None without MC dropout).
    ``stats`` says how the prediction was made (tiles, largest batch sent to a network).
    ``logit_labels``: the ``(H, W)`` argmax of the logits when one network saw the whole image
    once (plain inference), else None. ``dense``: for instance and panoptic models the ``(3, H, W)``
    float32 dense maps: centre heatmap in [0, 1], then the offsets dy, dx in pixels of the image
    from each pixel to its object's centre; None for semantic models.
    """

    probs: np.ndarray
    variance: np.ndarray | None = None
    stats: dict = field(default_factory=dict)
    logit_labels: np.ndarray | None = field(default=None, repr=False)
    dense: np.ndarray | None = field(default=None, repr=False)

    @property
    def labels(self) -> np.ndarray:
        """``(H, W)`` int64 class indices: the argmax of the probabilities.

        Under plain inference this is the argmax of the logits, which is what :func:`predict_labels`
        returns without computing probabilities; the two differ only where float32 rounding of
        the softmax ties two classes, and taking the logits' argmax here keeps every path equal.
        """
        if self.logit_labels is not None:
            return self.logit_labels
        return self.probs.argmax(0).astype(np.int64)

    @property
    def confidence(self) -> np.ndarray:
        """``(H, W)`` float32: the largest class probability, in [1/C, 1]."""
        return self.probs.max(0)

    @property
    def entropy(self) -> np.ndarray:
        """``(H, W)`` float32 entropy of the class distribution in nats, in [0, log C]."""
        return entropy(self.probs)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Per-pixel entropy ``-sum_c p log p`` (nats) of ``(C, H, W)`` probabilities."""
    p = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))
    return torch.special.entr(p).sum(0).numpy()


# -- blending windows --------------------------------------------------------------------------


def gaussian_window(height: int, width: int, overlap: int = 0) -> torch.Tensor:
    """Centre-weighted ``(height, width)`` window, sigma = 1/8 of the side, maximum 1, never 0."""

    def axis(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float64)
        sigma = max(n / 8.0, 1e-3)
        return torch.exp(-0.5 * ((i - (n - 1) / 2.0) / sigma) ** 2)

    w = torch.outer(axis(height), axis(width))
    w = w / w.max()
    return w.clamp_min(1e-6).float()


def linear_window(height: int, width: int, overlap: int = 0) -> torch.Tensor:
    """Weight that ramps linearly from the tile edge over ``overlap`` pixels, then stays 1."""

    def axis(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float64)
        m = max(min(overlap, n // 2), 0)
        return torch.minimum(torch.ones(n, dtype=torch.float64), torch.minimum(i + 1, n - i) / (m + 1))

    return torch.outer(axis(height), axis(width)).float()


def constant_window(height: int, width: int, overlap: int = 0) -> torch.Tensor:
    """Uniform weight: overlapping tiles are plainly averaged."""
    return torch.ones(height, width)


# name -> factory(height, width, overlap pixels) -> (height, width) float32 weights > 0
BLENDS = {"gaussian": gaussian_window, "linear": linear_window, "constant": constant_window}


def _starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride``, the last one flush with the far edge."""
    if tile >= size:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return sorted(set(starts))


class SlidingWindow:
    """A grid of overlapping tiles over an ``(H, W)`` image and the window that blends them.

    Tiles are ``tile_size`` squares (clamped to the image where it is smaller: a tile larger
    than the image is the image); neighbours overlap by ``overlap`` of a tile; the last row and
    column sit flush with the image edge, so every tile has the same shape.
    """

    def __init__(self, height: int, width: int, tile_size: int, overlap: float = 0.25, blend: str = "gaussian"):
        if height < 1 or width < 1:
            raise PixelwiseError(f"cannot tile an empty image of {height}x{width} pixels")
        self.height, self.width = height, width
        self.tile_h, self.tile_w = min(tile_size, height), min(tile_size, width)
        stride_h = max(1, int(round(self.tile_h * (1.0 - overlap))))
        stride_w = max(1, int(round(self.tile_w * (1.0 - overlap))))
        self.ys = _starts(height, self.tile_h, stride_h)
        self.xs = _starts(width, self.tile_w, stride_w)
        overlap_px = int(round(min(self.tile_h, self.tile_w) * overlap))
        self.window = BLENDS[blend](self.tile_h, self.tile_w, overlap_px)

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def origins(self) -> list[tuple[int, int]]:
        """``(y0, x0)`` of every tile, row by row."""
        return [(y, x) for y in self.ys for x in self.xs]

    def batches(self, batch_size: int):
        """Tile origins in groups of at most ``batch_size``."""
        o = self.origins()
        for i in range(0, len(o), batch_size):
            yield o[i : i + batch_size]


# -- the engine -------------------------------------------------------------------------------


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    down = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down)


def resize_outputs(out: torch.Tensor, size: tuple[int, int], num_classes: int) -> torch.Tensor:
    """``(N, C + E, h, w)`` network outputs at ``size`` (bilinear): class logits and the centre logit
    are resized, the offsets dy, dx (channels C + 1, C + 2, in pixels) also multiplied by
    ``size / (h, w)`` per axis. Unchanged when already at ``size``."""
    h, w = out.shape[-2:]
    if (h, w) == tuple(size):
        return out
    out = _resize(out.float(), size)
    if out.shape[1] <= num_classes:
        return out
    c = num_classes
    fy, fx = size[0] / h, size[1] / w
    return torch.cat([out[:, : c + 1], out[:, c + 1 : c + 2] * fy, out[:, c + 2 : c + 3] * fx, out[:, c + 3 :]], 1)


def to_working_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image at ``size`` (h, w) with :func:`pixelwise.data.transforms.resize_image`."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    image = image if image.flags.writeable else image.copy()  # torch.from_numpy warns on read-only memory
    return resize_image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), size).permute(1, 2, 0).numpy()


def max_side_of(members: Sequence[Member]) -> int:
    """The working resolution the members share (0 = native size); members that disagree are an error."""
    sides = {int(getattr(m, "max_side", 0) or 0) for m in members}
    if len(sides) > 1:
        raise PixelwiseError(
            f"the models were trained at different working resolutions (max side {sorted(sides)} px; 0 = native): "
            "their outputs cannot be averaged; use models trained with the same --max-side"
        )
    return sides.pop() if sides else 0


class _Tracker:
    """Counts what was sent to the networks (for the memory bound, and for tests)."""

    def __init__(self) -> None:
        self.max_batch = 0
        self.max_input_pixels = 0
        self.forwards = 0

    def saw(self, x: torch.Tensor) -> None:
        self.max_batch = max(self.max_batch, int(x.shape[0]))
        self.max_input_pixels = max(self.max_input_pixels, int(x.shape[0] * x.shape[-2] * x.shape[-1]))
        self.forwards += 1


def _split(out: torch.Tensor, num_classes: int, extra: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(N, C + E, h, w)`` outputs -> ``(N, C, h, w)`` softmax probabilities and the ``(N, 3, h, w)``
    dense maps (None for a semantic member, ``E = 0``)."""
    out = out.float()
    if not extra:
        return torch.softmax(out, 1), None
    return torch.softmax(out[:, :num_classes], 1), dense_maps(out[:, num_classes:])


def _one_view(
    member: Member, xv: torch.Tensor, config: InferenceConfig, extra: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Probabilities, MC-dropout variance (None without) and dense maps (None for semantic members) of one view,
    on ``xv``'s device. With MC dropout the probabilities and dense maps are the means over the passes."""
    device = xv.device
    if not config.mc_dropout:
        p, d = _split(member.logits(xv), member.num_classes, extra)
        return p.to(device), None, (d.to(device) if d is not None else None)
    mean = m2 = dense = torch.zeros(0)
    for k in range(config.mc_dropout):  # Welford: no list of passes kept
        p, d = _split(member.logits(xv, stochastic=True), member.num_classes, extra)
        p, d = p.to(device), (d.to(device) if d is not None else None)
        if k == 0:
            mean, m2, dense = p.clone(), torch.zeros_like(p), d
        else:
            delta = p - mean
            mean += delta / (k + 1)
            m2 += delta * (p - mean)
            if d is not None:
                dense = dense + (d - dense) / (k + 1)
    return mean, m2 / max(config.mc_dropout - 1, 1), dense


def _restore_dense(dense: torch.Tensor, dims: tuple[int, ...], size: tuple[int, int]) -> torch.Tensor:
    """Dense maps of a flipped and/or scaled view, back in the geometry of the ``size`` image.

    Flipped back, the offset along a flipped axis changes sign (dx for a horizontal flip, dims 3;
    dy for a vertical one, dims 2); resized to ``size``, offsets in pixels of the view are scaled by
    original size / view size.
    """
    sh, sw = dense.shape[-2:]
    if dims:
        dense = dense.flip(dims)
    dense = _resize(dense, size)
    fy = (-1.0 if 2 in dims else 1.0) * size[0] / sh
    fx = (-1.0 if 3 in dims else 1.0) * size[1] / sw
    if fy == 1.0 and fx == 1.0:
        return dense
    return torch.cat([dense[:, :1], dense[:, 1:2] * fy, dense[:, 2:3] * fx], 1)


def _plus(total: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return x if total is None else total + x


def augmented_outputs(
    x01: torch.Tensor, members: Sequence[Member], config: InferenceConfig, tracker: _Tracker | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Mean softmax (and dense maps) over members x scales x flips (x MC passes) for a batch.

    ``x01``: ``(N, 3, h, w)`` float in [0, 1]. Returns ``(N, C, h, w)`` float32 mean probabilities;
    with MC dropout the ``(N, C, h, w)`` per-class variance across the stochastic passes (averaged
    over members and views), else None; for instance models the ``(N, 3, h, w)`` mean dense maps
    (centre heatmap, dy, dx in pixels of ``x01``), else None.
    """
    h, w = x01.shape[-2:]
    extra = _extra_channels(members)
    total = var_total = dense_total = None
    views = 0
    for member in members:
        for s in config.scales:
            xs = _resize(x01, (max(1, int(round(h * s))), max(1, int(round(w * s)))))
            for dims in config.flips:
                xv = xs.flip(dims) if dims else xs
                if tracker is not None:
                    tracker.saw(xv)
                p, var, dense = _one_view(member, xv, config, extra)
                total = _plus(total, _resize(p.flip(dims) if dims else p, (h, w)))
                if var is not None:
                    var_total = _plus(var_total, _resize(var.flip(dims) if dims else var, (h, w)))
                if dense is not None:
                    dense_total = _plus(dense_total, _restore_dense(dense, dims, (h, w)))
                views += 1
    assert total is not None
    if views > 1:
        total = total / views
    if any(s != 1.0 for s in config.scales):
        # Bilinear resizing keeps the sum at 1 only up to rounding; renormalise so it holds exactly.
        total = total / total.sum(1, keepdim=True).clamp_min(1e-12)
    var_total = var_total / views if var_total is not None else None
    return total, var_total, (dense_total / views if dense_total is not None and views > 1 else dense_total)


def augmented_probs(
    x01: torch.Tensor, members: Sequence[Member], config: InferenceConfig, tracker: _Tracker | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The probabilities and MC variance of :func:`augmented_outputs` (without the dense maps)."""
    probs, var, _ = augmented_outputs(x01, members, config, tracker)
    return probs, var


def _to_x01(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(N, h, w, 3)`` uint8 -> ``(N, 3, h, w)`` float32 in [0, 1] on ``device``."""
    images = np.ascontiguousarray(images)
    if not images.flags.writeable:  # e.g. np.asarray(PIL image); torch.from_numpy warns on read-only memory
        images = images.copy()
    t = torch.from_numpy(images).to(device)
    return t.permute(0, 3, 1, 2).contiguous().float().div_(255.0)


def _predicted_class_variance(probs: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` probs and per-class variance -> ``(H, W)`` variance of the argmax class."""
    return var.gather(0, probs.argmax(0, keepdim=True))[0]


def _extra_channels(members: Sequence[Member]) -> int:
    """The members' ``extra_channels`` (0 when they have none); members that disagree are an error."""
    extras = {int(getattr(m, "extra_channels", 0)) for m in members}
    if len(extras) > 1:
        raise PixelwiseError(
            f"the models give different outputs ({sorted(extras)} channels besides the classes): semantic and "
            "instance/panoptic models cannot be averaged; use models of one task"
        )
    return extras.pop() if extras else 0


def _check_members(members: Sequence[Member]) -> int:
    if not members:
        raise PixelwiseError("no model to predict with")
    n = {m.num_classes for m in members}
    if len(n) != 1:
        raise PixelwiseError(f"the models predict different numbers of classes ({sorted(n)}); they cannot be averaged")
    _extra_channels(members)
    max_side_of(members)
    return n.pop()


def is_plain(config: InferenceConfig, members: Sequence[Member]) -> bool:
    """One network, one view, no MC dropout: the labels are the argmax of the logits."""
    return (
        len(members) == 1
        and not config.hflip
        and not config.vflip
        and config.scales == (1.0,)
        and not config.mc_dropout
    )


def _logit_labels(logits: torch.Tensor) -> np.ndarray:
    """``(N, C, h, w)`` logits -> ``(N, h, w)`` int64 argmax on the CPU."""
    # max(dim).indices: same first-maximum rule as argmax, several times faster over the class dim on CPU.
    return logits.max(1).indices.cpu().numpy().astype(np.int64, copy=False)


def _class_logits(out: torch.Tensor, member: Member) -> torch.Tensor:
    """The class logits ``(N, C, h, w)`` of a member's ``(N, C + E, h, w)`` outputs."""
    return out[:, : member.num_classes] if getattr(member, "extra_channels", 0) else out


def _whole_batch(
    x01: torch.Tensor,
    members: Sequence[Member],
    config: InferenceConfig,
    tracker: _Tracker,
    size: tuple[int, int] | None = None,
) -> list[Prediction]:
    """Predictions for a ``(N, 3, h, w)`` batch seen whole (no tiling), one per image, resized to
    ``size`` (the images' own size when ``x01`` is at the working resolution; None = ``(h, w)``)."""
    labels = None
    size = tuple(size or x01.shape[-2:])
    if is_plain(config, members):
        tracker.saw(x01)
        member = members[0]
        logits = resize_outputs(member.logits(x01).float(), size, member.num_classes)
        probs, var = torch.softmax(_class_logits(logits, member), 1).to(x01.device), None
        dense = dense_maps(logits[:, member.num_classes :]) if _extra_channels(members) else None
        labels = _logit_labels(_class_logits(logits, member))
    else:
        probs, var, dense = _outputs_at(*augmented_outputs(x01, members, config, tracker), size)
    probs = probs.cpu()
    dense = dense.cpu() if dense is not None else None
    stats = {"tiles": 1, "tiled": False, "max_batch": tracker.max_batch, "forwards": tracker.forwards}
    if size != tuple(x01.shape[-2:]):
        stats["working_size"] = list(x01.shape[-2:])
    out = []
    for i in range(probs.shape[0]):
        v = _predicted_class_variance(probs[i], var[i].cpu()).numpy() if var is not None else None
        pred = Prediction(probs[i].numpy(), v, dict(stats), labels[i] if labels is not None else None)
        pred.dense = dense[i].numpy() if dense is not None else None
        out.append(pred)
    return out


def _outputs_at(
    probs: torch.Tensor, var: torch.Tensor | None, dense: torch.Tensor | None, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Probabilities, variance and dense maps of :func:`augmented_outputs` resized to ``size`` (bilinear;
    offsets scaled, see :func:`_restore_dense`); unchanged when already at ``size``."""
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs, var, dense
    probs = _resize(probs, size)
    probs = probs / probs.sum(-3, keepdim=True).clamp_min(1e-12)  # bilinear keeps the sum at 1 only up to rounding
    var = _resize(var, size) if var is not None else None
    return probs, var, (_restore_dense(dense, (), size) if dense is not None else None)


@torch.inference_mode()
def predict_labels(
    images: Sequence[np.ndarray],
    members: Sequence[Member],
    config: InferenceConfig | None = None,
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """``(H, W)`` int64 class indices for same-size ``(H, W, 3)`` uint8 images.

    Plain inference (see :func:`is_plain`) of images that need no tiling skips the softmax: the
    argmax of the logits is the argmax of the probabilities (see :attr:`Prediction.labels`).
    Everything else goes through :func:`predict_images`.
    """
    config = config or InferenceConfig()
    if not images:
        return []
    h, w = images[0].shape[:2]
    _check_members(members)
    small = working_size(h, w, max_side_of(members))
    if (
        is_plain(config, members)
        and not config.needs_tiling(*small)
        and all(im.shape == images[0].shape for im in images)
    ):
        x01 = _to_x01(np.stack([to_working_size(im, small) for im in images]), torch.device(device))
        out = _class_logits(members[0].logits(x01), members[0])
        return list(_logit_labels(resize_outputs(out, (h, w), members[0].num_classes)))
    return [p.labels for p in predict_images(images, members, config, device)]


@torch.inference_mode()
def predict_images(
    images: Sequence[np.ndarray],
    members: Sequence[Member],
    config: InferenceConfig | None = None,
    device: str | torch.device = "cpu",
) -> list[Prediction]:
    """Probabilities for several same-size ``(H, W, 3)`` uint8 images, batched, without tiling.

    Images that need tiling (see :meth:`InferenceConfig.needs_tiling`) go one by one through
    :func:`predict_image` instead.
    """
    config = config or InferenceConfig()
    if not images:
        return []
    shapes = {im.shape for im in images}
    if len(shapes) != 1 or any(im.dtype != np.uint8 for im in images):
        raise PixelwiseError("predict_images needs uint8 images of one size; predict them one by one")
    h, w = images[0].shape[:2]
    _check_members(members)
    small = working_size(h, w, max_side_of(members))
    if config.needs_tiling(*small) or len(images) == 1:
        return [predict_image(im, members, config, device) for im in images]
    x01 = _to_x01(np.stack([to_working_size(im, small) for im in images]), torch.device(device))
    return _whole_batch(x01, members, config, _Tracker(), (h, w))


@torch.inference_mode()
def predict_image(
    image: np.ndarray,
    members: Sequence[Member],
    config: InferenceConfig | None = None,
    device: str | torch.device = "cpu",
) -> Prediction:
    """Probabilities for one ``(H, W, 3)`` uint8 image: whole, or tiled with blending.

    The image is first brought to the members' working resolution (see the module docstring) and
    the outputs resized back to ``(H, W)``. Tiled, at most ``config.tile_batch`` tiles are sent to a
    network at once; the blended sum is kept on the CPU in float32 and divided by the summed window
    weights at the end.
    """
    config = config or InferenceConfig()
    num_classes = _check_members(members)
    device = torch.device(device)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PixelwiseError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    size = image.shape[:2]
    small = to_working_size(image, working_size(*size, max_side_of(members)))
    if not config.needs_tiling(*small.shape[:2]):
        return _whole_batch(_to_x01(small[None], device), members, config, _Tracker(), size)[0]
    return _tiled(small, members, config, device, num_classes, size)


def _tiled(
    image: np.ndarray,
    members: Sequence[Member],
    config: InferenceConfig,
    device: torch.device,
    num_classes: int,
    size: tuple[int, int] | None = None,
) -> Prediction:
    """:func:`predict_image` of an image cut into blended tiles (see :class:`SlidingWindow`), the result
    resized to ``size`` (the image's own size when ``image`` is at the working resolution).

    Dense maps (instance models) are blended with the same window as the probabilities; their
    offsets are relative to each pixel, so a tile's offsets hold in the whole image as they are.
    """
    height, width = image.shape[:2]
    tracker = _Tracker()
    grid = SlidingWindow(height, width, config.tile_size, config.tile_overlap, config.blend)
    acc = torch.zeros(num_classes, height, width, dtype=torch.float32)
    weight = torch.zeros(height, width, dtype=torch.float32)
    var_acc = torch.zeros(num_classes, height, width, dtype=torch.float32) if config.mc_dropout else None
    dense_acc = torch.zeros(3, height, width, dtype=torch.float32) if _extra_channels(members) else None
    win = grid.window
    th, tw = grid.tile_h, grid.tile_w
    for batch in grid.batches(config.tile_batch):
        tiles = np.stack([image[y : y + th, x : x + tw] for y, x in batch])
        probs, var, dense = augmented_outputs(_to_x01(tiles, device), members, config, tracker)
        probs = probs.cpu()
        var = var.cpu() if var is not None else None
        dense = dense.cpu() if dense is not None else None
        for k, (y, x) in enumerate(batch):
            acc[:, y : y + th, x : x + tw].add_(probs[k] * win)
            weight[y : y + th, x : x + tw].add_(win)
            if var_acc is not None and var is not None:
                var_acc[:, y : y + th, x : x + tw].add_(var[k] * win)
            if dense_acc is not None and dense is not None:
                dense_acc[:, y : y + th, x : x + tw].add_(dense[k] * win)
        del probs, var, dense, tiles
    acc.div_(weight)
    var_acc = var_acc.div_(weight) if var_acc is not None else None
    dense_acc = dense_acc.div_(weight) if dense_acc is not None else None
    stats = _tile_stats(grid, tracker)
    if size is not None and tuple(size) != (height, width):
        stats["working_size"] = [height, width]
        probs, var_acc, dense_acc = _outputs_at(acc[None], _batch(var_acc), _batch(dense_acc), tuple(size))
        acc, var_acc, dense_acc = probs[0], _unbatch(var_acc), _unbatch(dense_acc)
    v = _predicted_class_variance(acc, var_acc).numpy() if var_acc is not None else None
    pred = Prediction(acc.numpy(), v, stats)
    pred.dense = dense_acc.numpy() if dense_acc is not None else None
    return pred


def _batch(x: torch.Tensor | None) -> torch.Tensor | None:
    return x[None] if x is not None else None


def _unbatch(x: torch.Tensor | None) -> torch.Tensor | None:
    return x[0] if x is not None else None


def _tile_stats(grid: SlidingWindow, tracker: _Tracker) -> dict:
    """What :func:`_tiled` records in :attr:`Prediction.stats`."""
    return {
        "tiles": len(grid),
        "tiled": True,
        "tile_size": [grid.tile_h, grid.tile_w],
        "max_batch": tracker.max_batch,
        "forwards": tracker.forwards,
        "max_input_pixels": tracker.max_input_pixels,
    }


def tile_memory_bound(config: InferenceConfig) -> int:
    """Most input pixels one network call can see under ``config`` (tile batch x largest scaled tile)."""
    side = max(1, int(math.ceil(config.tile_size * max(config.scales))))
    return config.tile_batch * side * side


def error_rate_by_confidence(confidence: np.ndarray, correct: np.ndarray, fraction: float = 0.1) -> dict:
    """How errors concentrate on low confidence: error rate in the least-confident ``fraction`` vs the rest.

    ``confidence`` and ``correct`` (bool) are same-shape arrays over the scored pixels. Ties at
    the threshold are broken by order (a stable sort), so exactly ``round(fraction * n)`` pixels
    form the low-confidence group. Returns ``{"pixels", "low_pixels", "low_error", "rest_error",
    "overall_error", "ratio", "errors_in_low"}`` (``errors_in_low``: share of all errors that
    fall in the low-confidence group).
    """
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=bool).ravel()
    if conf.shape != ok.shape:
        raise PixelwiseError(f"confidence has {conf.size} values, correct has {ok.size}")
    n = conf.size
    k = int(round(fraction * n))
    if n == 0 or not 0 < k < n:
        raise PixelwiseError(f"need pixels on both sides of the {fraction:.0%} cut (got {n} pixels)")
    order = np.argsort(conf, kind="stable")
    wrong = ~ok[order]
    low, rest = wrong[:k], wrong[k:]
    total_err = int(wrong.sum())
    low_err, rest_err = float(low.mean()), float(rest.mean())
    return {
        "pixels": n,
        "low_pixels": k,
        "low_error": low_err,
        "rest_error": rest_err,
        "overall_error": total_err / n,
        "ratio": low_err / rest_err if rest_err > 0 else float("inf"),
        "errors_in_low": float(low.sum()) / total_err if total_err else 0.0,
    }
