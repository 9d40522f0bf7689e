"""Joint image + mask transforms on torchvision's transforms v2.

Images travel as ``tv_tensors.Image`` and masks as ``tv_tensors.Mask``, so torchvision applies
every geometric change to both and resizes masks with nearest-neighbour (a class index is never
interpolated). Padding of masks is filled with the ignore index: padded pixels carry no loss and
no score.
"""

from __future__ import annotations

import random

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def train_transform(
    crop_size: int | tuple[int, int],
    ignore_index: int = 255,
    scale_range: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    vflip: bool = False,
    color_jitter: float = 0.2,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
) -> v2.Compose:
    """Random scale, random crop (padded where the image is smaller), flips, colour jitter, normalise.

    Input: ``tv_tensors.Image`` (3, H, W) uint8 and ``tv_tensors.Mask`` (H, W) int64.
    Output: (3, h, w) float32 normalised image and (h, w) int64 mask, (h, w) = crop size.
    """
    ops: list = []
    if scale_range and tuple(scale_range) != (1.0, 1.0):
        ops.append(RandomScale(tuple(scale_range)))
    ops.append(
        v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index})
    )
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
