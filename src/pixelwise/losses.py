"""Pixel-wise segmentation losses.

Every loss takes ``logits`` (N, C, H, W), any float dtype, and ``target`` (N, H, W) int64 class
indices, and returns a float32 scalar. Pixels whose target equals ``ignore_index`` contribute to
neither numerator nor denominator. When every pixel is ignored the loss is 0, still attached to
``logits`` so ``backward()`` works, and never NaN. Half-precision logits are upcast to float32
because softmax and log over fp16/bf16 lose too much precision near 0 and 1.

:class:`InstanceLoss` is the exception: it takes the (N, C+3, H, W) outputs of an instance or
panoptic network and (N, 2, H, W) targets (labels, instance ids), and adds the centre heatmap and
offset terms to one of the losses above.

Thin classes get three levers here: :class:`OhemCrossEntropyLoss` (the loss of BiSeNet and STDC:
only the hard pixels count), :class:`LovaszSoftmaxLoss` (a surrogate of the IoU itself, so a class
of few pixels weighs as much as a large one), and the boundary weight of the cross-entropy terms
(:func:`boundary_weight_map`: pixels near a class edge count ``1 + boundary_weight`` times).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import PixelwiseError
from .instances import EXTRA_CHANNELS, centre_targets

__all__ = [
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "OhemCrossEntropyLoss",
    "LovaszSoftmaxLoss",
    "ComboLoss",
    "InstanceLoss",
    "boundary_weight_map",
    "LOSSES",
    "build_loss",
    "class_weights_from_counts",
]


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() < 2 or target.dim() != logits.dim() - 1:
        raise ValueError(
            f"expected logits (N, C, H, W) and target (N, H, W), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")


def _weight_tensor(weight: torch.Tensor | np.ndarray | None) -> torch.Tensor | None:
    if weight is None:
        return None
    # Own copy: torch.as_tensor would share memory with a caller's float32 array.
    return torch.as_tensor(weight, dtype=torch.float32).flatten().clone()


def _weight_for(weight: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
    """The class weights on the logits' device, checked against C = logits.shape[1]."""
    if weight is None:
        return None
    if weight.numel() != logits.shape[1]:
        raise ValueError(f"{weight.numel()} class weights for {logits.shape[1]} classes")
    return weight.to(device=logits.device, dtype=torch.float32)


def _safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, with den == 0 read as 1: then num is an empty sum (0), so the result is 0.

    Avoids a host sync (no ``if den == 0``) and keeps the graph attached to the logits.
    """
    return num / torch.where(den > 0, den, torch.ones_like(den))


# Chebyshev radius of the boundary band: a 7x7 window.
BOUNDARY_RADIUS = 3


def boundary_weight_map(
    target: torch.Tensor, ignore_index: int, boundary_weight: float, radius: int = BOUNDARY_RADIUS
) -> torch.Tensor:
    """Per-pixel loss weights that stress class edges: (N, H, W) int64 labels -> (N, H, W) float32.

    A labelled pixel within ``radius`` px (Chebyshev distance: a (2 radius + 1)^2 window) of a
    labelled pixel of another class gets ``1 + boundary_weight``, every other labelled pixel 1,
    and ignored pixels 0: they neither make a boundary nor get a loss. The image border is no
    boundary. Computed with a max-pool and a min-pool of the labels, so it runs on any device, in
    float32 whatever autocast is on (labels up to 2^24 are exact).
    """
    valid = target != ignore_index
    labels = target.to(torch.float32).unsqueeze(1)
    far = float(2**24)  # above every label: ignored pixels drop out of both pools
    size = 2 * radius + 1
    high = F.max_pool2d(torch.where(valid.unsqueeze(1), labels, -far), size, stride=1, padding=radius)
    low = -F.max_pool2d(torch.where(valid.unsqueeze(1), -labels, -far), size, stride=1, padding=radius)
    # The pixel is in its own window, so two labels in it mean one differs from the pixel's own.
    edge = (high != low).squeeze(1) & valid
    weights = valid.to(torch.float32) + float(boundary_weight) * edge.to(torch.float32)
    return weights


def _pixel_weights(
    target: torch.Tensor,
    valid: torch.Tensor,
    safe_target: torch.Tensor,
    class_weight: torch.Tensor | None,
    boundary_weight: float,
    ignore_index: int,
) -> torch.Tensor:
    """(N, H, W) float32: class weight of the pixel's class x boundary weight; 0 on ignored pixels."""
    if boundary_weight > 0:
        weights = boundary_weight_map(target, ignore_index, boundary_weight)
    else:
        weights = valid.to(torch.float32)
    if class_weight is not None:
        weights = weights * class_weight[safe_target]
    return weights


class CrossEntropyLoss(nn.Module):
    """Cross-entropy over non-ignored pixels, mean weighted as torch does.

    With class weights ``w``, the loss is sum_i w[y_i] * CE_i / sum_i w[y_i] over non-ignored pixels
    i (the ``F.cross_entropy`` convention). With ``boundary_weight`` b > 0 each pixel's weight is
    further multiplied by its :func:`boundary_weight_map` value (1 + b near a class edge, else 1):
    sum_i w[y_i] m_i CE_i / sum_i w[y_i] m_i. Returns a float32 scalar; 0 if every pixel is ignored.
    """

    def __init__(self, ignore_index: int = 255, weight: torch.Tensor | None = None, boundary_weight: float = 0.0):
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.boundary_weight = _check_boundary_weight(boundary_weight)
        # A buffer, so .to(device) moves the weights with the module.
        self.register_buffer("weight", _weight_tensor(weight))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, C, H, W) float, target (N, H, W) int64 -> scalar float32."""
        _check_shapes(logits, target)
        logits = logits.float()
        target = target.long()
        weight = _weight_for(self.weight, logits)
        valid = target != self.ignore_index
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        if self.boundary_weight > 0:
            per_pixel = F.cross_entropy(logits, safe_target, reduction="none")
            pixel_weight = _pixel_weights(target, valid, safe_target, weight, self.boundary_weight, self.ignore_index)
            return _safe_divide((per_pixel * pixel_weight).sum(), pixel_weight.sum())
        # Sum then divide ourselves: F.cross_entropy's 'mean' is 0/0 = NaN when all pixels are ignored.
        total = F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index, reduction="sum")
        if weight is None:
            den = valid.sum().to(torch.float32)
        else:
            den = (weight[safe_target] * valid).sum()
        return _safe_divide(total, den)


def _check_boundary_weight(value: float) -> float:
    value = float(value)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"boundary_weight must be a finite number >= 0, got {value}")
    return value


class OhemCrossEntropyLoss(nn.Module):
    """Online hard example mining cross-entropy, as BiSeNet and STDC train with.

    The rule, over the non-ignored pixels of the whole batch (n of them): a pixel is kept when the
    softmax probability of its true class is below ``thresh`` (0.7: its cross-entropy exceeds
    -ln 0.7), and the ``floor(n * min_kept)`` pixels of lowest true-class probability (the hardest;
    ``min_kept`` 1/16) are kept whatever their probability, so the loss never rests on a handful
    of pixels once the network is good. Ignored pixels are never kept. The loss is the weighted
    mean of the cross-entropy over the kept pixels, sum_k w_k CE_k / sum_k w_k, where w_k is the
    class weight of the pixel's class times its :func:`boundary_weight_map` value (both 1 when
    unused). Selection looks at the probability only, never at the weights. ``thresh`` > 1 keeps
    every pixel: then this is :class:`CrossEntropyLoss`. Returns a float32 scalar; 0 if every
    pixel is ignored. No host synchronisation: one sort of the batch's pixels.
    """

    def __init__(
        self,
        ignore_index: int = 255,
        weight: torch.Tensor | None = None,
        thresh: float = 0.7,
        min_kept: float = 1 / 16,
        boundary_weight: float = 0.0,
    ):
        super().__init__()
        if not 0 < thresh:
            raise ValueError(f"thresh must be > 0, got {thresh}")
        if not 0 <= min_kept <= 1:
            raise ValueError(f"min_kept must be a share in [0, 1], got {min_kept}")
        self.ignore_index = int(ignore_index)
        self.thresh = float(thresh)
        self.min_kept = float(min_kept)
        self.boundary_weight = _check_boundary_weight(boundary_weight)
        self.register_buffer("weight", _weight_tensor(weight))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, C, H, W) float, target (N, H, W) int64 -> scalar float32."""
        _check_shapes(logits, target)
        logits = logits.float()
        target = target.long()
        valid = target != self.ignore_index
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        per_pixel = F.cross_entropy(logits, safe_target, reduction="none")  # -ln p(true class)
        weight = _weight_for(self.weight, logits)
        pixel_weight = _pixel_weights(target, valid, safe_target, weight, self.boundary_weight, self.ignore_index)
        keep = self.kept(per_pixel.detach(), valid)
        pixel_weight = pixel_weight * keep
        return _safe_divide((per_pixel * pixel_weight).sum(), pixel_weight.sum())

    def kept(self, per_pixel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(N, H, W) bool: the pixels the loss keeps, from their cross-entropy and the valid mask."""
        hard = per_pixel > -math.log(self.thresh)  # thresh > 1: a negative bound, every pixel
        flat = torch.where(valid, per_pixel, torch.full_like(per_pixel, -1.0)).flatten()  # ignored sort last
        order = torch.argsort(flat, descending=True)
        n_min = torch.floor(valid.sum() * self.min_kept)
        top = torch.arange(flat.numel(), device=flat.device) < n_min
        hardest = torch.zeros_like(top).scatter(0, order, top).view_as(valid)
        return (hard | hardest) & valid


class LovaszSoftmaxLoss(nn.Module):
    """The Lovasz-softmax loss (Berman et al., 2018): a convex surrogate of 1 - IoU per class.

    segmentation-models-pytorch's ``LovaszLoss(mode="multiclass")`` computes it: softmax over the
    classes, then for each class present in the batch target the Lovasz extension of the Jaccard
    loss applied to the errors |onehot - p| of the non-ignored pixels of the whole batch, averaged
    over those classes. A perfect, confident prediction gives ~0. There are no class weights: every
    present class already has the same say. Logits are upcast to float32; returns a float32 scalar,
    0 (attached to the logits) if every pixel is ignored.
    """

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        from segmentation_models_pytorch.losses import LovaszLoss

        self.ignore_index = int(ignore_index)
        self.lovasz = LovaszLoss(mode="multiclass", ignore_index=self.ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, C, H, W) float, target (N, H, W) int64 -> scalar float32."""
        _check_shapes(logits, target)
        loss = self.lovasz(logits.float(), target.long())
        # With no labelled pixel the library returns the empty (0, C) probabilities times 0.
        return loss.sum() if loss.dim() else loss


class DiceLoss(nn.Module):
    """Multiclass soft Dice loss on softmax probabilities against the one-hot target.

    Per class c, over all non-ignored pixels of the batch together:
    ``dice_c = (2 * sum(p_c * g_c) + smooth) / (sum(p_c) + sum(g_c) + smooth)``.
    The loss is 1 - mean of dice_c over the classes that occur in the batch target. A class absent
    from the batch target is left out: its ideal prediction is all-zero, and with full weight in the
    mean it would push its probabilities to zero on every batch that lacks it, swamping the classes
    that are present. Returns a float32 scalar; 0 if every pixel is ignored.
    """

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0):
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, C, H, W) float, target (N, H, W) int64 -> scalar float32."""
        _check_shapes(logits, target)
        num_classes = logits.shape[1]
        probs = torch.softmax(logits.float(), dim=1)
        target = target.long()
        valid = target != self.ignore_index
        # Ignored pixels get a placeholder class, then are zeroed out of both probs and one-hot.
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        mask = valid.unsqueeze(1).to(probs.dtype)
        one_hot = F.one_hot(safe_target, num_classes).movedim(-1, 1).to(probs.dtype) * mask
        probs = probs * mask

        reduce_dims = [0, *range(2, probs.dim())]
        intersection = (probs * one_hot).sum(reduce_dims)
        gt_sum = one_hot.sum(reduce_dims)
        cardinality = probs.sum(reduce_dims) + gt_sum
        dice = (2.0 * intersection + self.smooth) / (cardinality + self.smooth)

        present = (gt_sum > 0).to(dice.dtype)
        # Mean of (1 - dice) over present classes equals 1 - mean dice, and is 0 when none is present.
        return _safe_divide(((1.0 - dice) * present).sum(), present.sum())


class FocalLoss(nn.Module):
    """Multiclass focal loss (Lin et al., 2017): ``-(1 - p_t)^gamma * log p_t`` per pixel.

    ``p_t`` is the softmax probability of the target class. With class weights ``w`` each pixel is
    multiplied by ``w[y]`` and the mean is weighted like torch's cross-entropy
    (sum w[y_i] * l_i / sum w[y_i]), so gamma=0 equals :class:`CrossEntropyLoss` with or without
    weights; ``boundary_weight`` multiplies each pixel's weight by its :func:`boundary_weight_map`
    value, as there. Returns a float32 scalar; 0 if every pixel is ignored.
    """

    def __init__(
        self,
        ignore_index: int = 255,
        gamma: float = 2.0,
        weight: torch.Tensor | None = None,
        boundary_weight: float = 0.0,
    ):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.ignore_index = int(ignore_index)
        self.gamma = float(gamma)
        self.boundary_weight = _check_boundary_weight(boundary_weight)
        self.register_buffer("weight", _weight_tensor(weight))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, C, H, W) float, target (N, H, W) int64 -> scalar float32."""
        _check_shapes(logits, target)
        log_probs = torch.log_softmax(logits.float(), dim=1)
        target = target.long()
        valid = target != self.ignore_index
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        log_pt = log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)
        # Clamp keeps d/dp of (1 - p)^gamma finite at p == 1 when 0 < gamma < 1; x^0 stays 1.
        modulator = (1.0 - log_pt.exp()).clamp_min(torch.finfo(torch.float32).tiny).pow(self.gamma)
        per_pixel = -modulator * log_pt
        weight = _weight_for(self.weight, logits)
        pixel_weight = _pixel_weights(target, valid, safe_target, weight, self.boundary_weight, self.ignore_index)
        return _safe_divide((per_pixel * pixel_weight).sum(), pixel_weight.sum())


class ComboLoss(nn.Module):
    """Weighted sum of losses: ``sum_k weights[k] * losses[k](logits, target)``."""

    def __init__(self, losses: list[nn.Module], weights: list[float]):
        super().__init__()
        if len(losses) != len(weights):
            raise PixelwiseError(f"ComboLoss got {len(losses)} losses but {len(weights)} weights")
        if not losses:
            raise PixelwiseError("ComboLoss needs at least one loss")
        self.losses = nn.ModuleList(losses)
        self.weights = [float(w) for w in weights]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (N, C, H, W) float, target (N, H, W) int64 -> scalar float32."""
        total = None
        for loss, w in zip(self.losses, self.weights):
            term = w * loss(logits, target)
            total = term if total is None else total + term
        return total


class InstanceLoss(nn.Module):
    """The loss of an instance/panoptic network (Panoptic-DeepLab): semantic + centre + offsets.

    ``outputs`` (N, C+3, H, W): C class logits, the centre logit, the offsets dy, dx (pixels);
    ``target`` (N, 2, H, W) int64: the class mask and the instance ids (0 = no object). The loss is
    ``semantic(outputs[:, :C], target[:, 0])`` + ``centre_weight`` x the mean squared error of
    sigmoid(centre) against the Gaussian heat of :func:`pixelwise.instances.centre_targets`
    (std ``sigma`` px) over every pixel + ``offset_weight`` x the L1 error of (dy, dx), summed over
    the two and averaged over the object pixels (0 when the batch has none). The extra terms are
    computed in float32, whatever the outputs' dtype. Returns a float32 scalar.
    """

    def __init__(
        self,
        semantic: nn.Module,
        num_classes: int,
        sigma: float = 8.0,
        centre_weight: float = 200.0,
        offset_weight: float = 0.01,
    ):
        super().__init__()
        self.semantic = semantic
        self.num_classes = int(num_classes)
        self.sigma = float(sigma)
        self.centre_weight = float(centre_weight)
        self.offset_weight = float(offset_weight)

    def forward(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """outputs (N, C+3, H, W) float, target (N, 2, H, W) int64 -> scalar float32."""
        c = self.num_classes
        if outputs.dim() != 4 or outputs.shape[1] != c + EXTRA_CHANNELS:
            raise ValueError(f"expected outputs (N, {c + EXTRA_CHANNELS}, H, W), got {tuple(outputs.shape)}")
        if target.dim() != 4 or target.shape[1] != 2 or target.shape[2:] != outputs.shape[2:]:
            raise ValueError(
                f"expected target (N, 2, H, W) for outputs {tuple(outputs.shape)}, got {tuple(target.shape)}"
            )
        semantic = self.semantic(outputs[:, :c], target[:, 0])
        heat, offsets, on_object = centre_targets(target[:, 1], self.sigma)
        extra = outputs[:, c:].float()
        centre = F.mse_loss(torch.sigmoid(extra[:, :1]), heat)
        weight = on_object.to(torch.float32)
        offset_sum = ((extra[:, 1:] - offsets).abs() * weight).sum()
        offset = _safe_divide(offset_sum, weight.sum())
        return semantic + self.centre_weight * centre + self.offset_weight * offset


# A factory: (ignore_index, class_weights (C,) or None) -> loss module. Those with a cross-entropy
# term also take ``boundary_weight`` (see build_loss); a factory written for the two positional
# arguments alone still works whenever no boundary weight is asked for.
LossFactory = Callable[..., nn.Module]


def _ce(ignore_index, class_weights, boundary_weight=0.0):
    return CrossEntropyLoss(ignore_index, weight=class_weights, boundary_weight=boundary_weight)


def _focal(ignore_index, class_weights, boundary_weight=0.0):
    return FocalLoss(ignore_index, weight=class_weights, boundary_weight=boundary_weight)


def _ohem(ignore_index, class_weights, boundary_weight=0.0):
    return OhemCrossEntropyLoss(ignore_index, weight=class_weights, boundary_weight=boundary_weight)


def _plus(first: Callable[..., nn.Module], second: Callable[[int], nn.Module]) -> LossFactory:
    """A factory of ``first`` (a cross-entropy term, weighted) + ``second`` (unweighted), each with weight 1."""

    def factory(ignore_index, class_weights, boundary_weight=0.0):
        return ComboLoss([first(ignore_index, class_weights, boundary_weight), second(ignore_index)], [1.0, 1.0])

    return factory


# Dice and Lovasz have no per-class or per-pixel weights: they already give every present class
# the same say.
LOSSES: dict[str, LossFactory] = {
    "ce": _ce,
    "dice": lambda ignore_index, class_weights: DiceLoss(ignore_index),
    "focal": _focal,
    "ce+dice": _plus(_ce, DiceLoss),
    "focal+dice": _plus(_focal, DiceLoss),
    "ohem": _ohem,
    "ohem+dice": _plus(_ohem, DiceLoss),
    "lovasz": lambda ignore_index, class_weights: LovaszSoftmaxLoss(ignore_index),
    "ce+lovasz": _plus(_ce, LovaszSoftmaxLoss),
}


def build_loss(
    name: str, ignore_index: int = 255, class_weights: torch.Tensor | None = None, boundary_weight: float = 0.0
) -> nn.Module:
    """Build the loss registered in :data:`LOSSES` under ``name``.

    ``class_weights`` (C,) is used by the cross-entropy, focal and OHEM terms; Dice and Lovasz
    ignore it. ``boundary_weight`` > 0 weights the pixels near class edges in those same terms
    (:func:`boundary_weight_map`); the factory is then called with it as a keyword, so a loss
    without such a term ("dice", "lovasz", a factory taking only (ignore_index, class_weights))
    is refused. Raises PixelwiseError for an unknown name or a boundary weight it cannot use.
    """
    try:
        factory = LOSSES[name]
    except KeyError:
        raise PixelwiseError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}") from None
    if not boundary_weight:
        return factory(ignore_index, class_weights)
    if not _takes_boundary_weight(factory):
        raise PixelwiseError(
            f"--boundary-weight {boundary_weight:g}: loss {name!r} has no cross-entropy term to weight; "
            "use ce, focal, ohem or one of them with dice or lovasz (e.g. --loss ohem+dice), or --boundary-weight 0"
        )
    return factory(ignore_index, class_weights, boundary_weight=float(boundary_weight))


def _takes_boundary_weight(factory: Callable) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return "boundary_weight" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def class_weights_from_counts(counts: np.ndarray, method: str = "median") -> np.ndarray:
    """Per-class loss weights from per-class pixel counts.

    Args:
        counts: (C,) number of labelled pixels of each class (ignored pixels excluded).
        method: "median" - median frequency balancing (Eigen & Fergus, 2015):
            median(freq over present classes) / freq_c;
            "inverse" - inverse frequency total / (C_present * count_c), about 1 on average over
            present classes;
            "sqrt" - the square root of the median-frequency weights: the same order, a much
            narrower range (on CamVid 0.37-3.9 instead of 0.14-15), so rare classes are not
            bought with the large ones.

    Returns:
        (C,) float32 weights. A class with 0 pixels gets weight 0: nothing in these masks can teach
        it, and an infinite or arbitrary weight would only blow up the loss if it ever appeared.

    Raises PixelwiseError for an unknown method, negative counts or no labelled pixel at all.
    """
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise PixelwiseError("class pixel counts must be finite and non-negative")
    present = counts > 0
    total = counts.sum()
    if total <= 0:
        raise PixelwiseError("no labelled pixels: cannot derive class weights from all-zero counts")

    weights = np.zeros_like(counts)
    if method in ("median", "sqrt"):
        freq = counts[present] / total
        weights[present] = np.median(freq) / freq
        if method == "sqrt":
            weights = np.sqrt(weights)
    elif method == "inverse":
        weights[present] = total / (present.sum() * counts[present])
    else:
        raise PixelwiseError(f"unknown class weight method {method!r}; valid methods: inverse, median, sqrt")
    return weights.astype(np.float32)
