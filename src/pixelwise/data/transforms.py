"""Joint image + mask transforms on torchvision's transforms v2.

Images travel as ``tv_tensors.Image`` and masks as ``tv_tensors.Mask``, so torchvision applies
every geometric change to both and resizes masks with nearest-neighbour (a class index is never
interpolated). Padding of masks is filled with the ignore index: padded pixels carry no loss and
no score. Object ids travel as :class:`InstanceIds` (a ``tv_tensors.Mask``): moved, flipped and
resized exactly as the class mask (nearest neighbour), padded with 0 (no object).
"""

from __future__ import annotations

import random

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def working_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    """The size (h, w) at which the network sees an image of (h, w) px for a working resolution of
    ``max_side`` px on the longer side: unchanged when ``max_side`` is 0 or the image already fits
    (never upscaled), else both sides scaled by ``max_side / max(h, w)`` (rounded, at least 1 px).
    """
    if max_side <= 0 or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ``(..., 3, H, W)`` uint8 image resized to ``size`` (h, w): bilinear, antialiased. The one way
    pixelwise brings an image to its working resolution, in training and in inference alike, so the
    network sees the same pixels in both."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return TF.resize(image, list(size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


class WorkingResize(v2.Transform):
    """Bring image and masks to the working resolution (:func:`working_size` of ``max_side``): the
    image with :func:`resize_image`, masks and object ids with nearest neighbour. ``masks=False``
    leaves masks at their own size (validation scores there)."""

    def __init__(self, max_side: int, masks: bool = True):
        super().__init__()
        self.max_side = max_side
        self.masks = masks

    def make_params(self, flat_inputs):
        h, w = v2.query_size(flat_inputs)
        return {"size": working_size(h, w, self.max_side)}

    def transform(self, inpt, params):
        if isinstance(inpt, tv_tensors.Image):
            return tv_tensors.wrap(resize_image(inpt.as_subclass(torch.Tensor), params["size"]), like=inpt)
        if isinstance(inpt, tv_tensors.Mask) and self.masks:
            return TF.resize(inpt, list(params["size"]), interpolation=v2.InterpolationMode.NEAREST)
        return inpt


class InstanceIds(tv_tensors.Mask):
    """(H, W) object ids (0 = no object): a mask to every transform, padded with 0 instead of the ignore index."""


def _is_class_mask(x) -> bool:
    return isinstance(x, tv_tensors.Mask) and not isinstance(x, InstanceIds)


class RandomScale(v2.Transform):
    """Resize image and mask together by one random factor drawn from ``scale_range``."""

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)):
        super().__init__()
        self.scale_range = scale_range

    def make_params(self, flat_inputs):
        h, w = v2.query_size(flat_inputs)
        f = random.uniform(*self.scale_range)
        return {"size": [max(1, round(h * f)), max(1, round(w * f))]}

    def transform(self, inpt, params):
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return TF.resize(inpt, params["size"], antialias=True)
        return inpt


class ClassAwareCrop(v2.RandomCrop):
    """A random crop (padded with ``fill`` where the image is smaller) that, with probability
    ``p``, is centred on a pixel of one class drawn uniformly from the classes in the mask.

    Drawing the class, not the pixel, uniformly is what makes rare classes show up: a class with
    0.5% of the pixels is drawn as often as the road. The ignore index is never drawn. The crop
    window is clamped to the (padded) image, so the chosen pixel is inside it but not always in
    its centre near a border.
    """

    def __init__(self, size, p: float, ignore_index: int, fill):
        super().__init__(size, pad_if_needed=True, fill=fill)
        self.p = p
        self.ignore_index = ignore_index

    def make_params(self, flat_inputs):
        params = super().make_params(flat_inputs)
        if self.p <= 0 or random.random() >= self.p:
            return params
        mask = next((x for x in flat_inputs if _is_class_mask(x)), None)
        if mask is None:
            return params
        m = mask.as_subclass(torch.Tensor)
        m = m.reshape(m.shape[-2:])
        classes = torch.unique(m)
        classes = classes[classes != self.ignore_index]
        if len(classes) == 0:
            return params
        cls = classes[random.randrange(len(classes))]
        ys, xs = torch.nonzero(m == cls, as_tuple=True)
        k = random.randrange(len(ys))
        pad_left, pad_top, pad_right, pad_bottom = params["padding"]
        padded_h, padded_w = m.shape[0] + pad_top + pad_bottom, m.shape[1] + pad_left + pad_right
        h, w = params["height"], params["width"]
        params["top"] = min(max(0, int(ys[k]) + pad_top - h // 2), padded_h - h)
        params["left"] = min(max(0, int(xs[k]) + pad_left - w // 2), padded_w - w)
        params["needs_crop"] = padded_h > h or padded_w > w
        return params


def train_transform(
    crop_size: int | tuple[int, int],
    ignore_index: int = 255,
    scale_range: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    vflip: bool = False,
    color_jitter: float = 0.2,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    class_crops: float = 0.0,
    max_side: int = 0,
) -> v2.Compose:
    """Working resolution, random scale, random crop (padded where the image is smaller), flips, colour jitter, normalise.

    ``max_side``: the working resolution (see :func:`working_size`; 0 = native size): image and
    masks are first resized to it (:class:`WorkingResize`), so scale and crop act on the image the
    network will see in inference. ``class_crops``: the share of crops centred on a pixel of a class drawn uniformly from those
    in the mask (:class:`ClassAwareCrop`); 0 = every crop uniformly placed.

    Input: ``tv_tensors.Image`` (3, H, W) uint8 and ``tv_tensors.Mask`` (H, W) int64 (and optionally
    :class:`InstanceIds` (H, W) int64, changed exactly as the mask).
    Output: (3, h, w) float32 normalised image and (h, w) int64 mask (and ids), (h, w) = crop size.
    """
    ops: list = [WorkingResize(max_side)] if max_side else []
    if scale_range and tuple(scale_range) != (1.0, 1.0):
        ops.append(RandomScale(tuple(scale_range)))
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index, InstanceIds: 0}
    if class_crops > 0:
        size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        ops.append(ClassAwareCrop(size, class_crops, ignore_index, fill))
    else:
        ops.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if vflip:
        ops.append(v2.RandomVerticalFlip())
    if color_jitter:
        j = color_jitter
        ops.append(v2.RandomApply([v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(0.5, j / 4))], p=0.8))
    ops += [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


def eval_transform(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """Full-size image, no augmentation: uint8 -> normalised float32; the mask is untouched."""
    return v2.Compose(
        [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(mean, std)]
    )
