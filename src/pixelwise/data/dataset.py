"""The torch Dataset over validated samples, and a collate that pads to a common size."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .decode import read_instances, read_sample
from .transforms import InstanceIds
from .types import Sample


class SegmentationDataset(Dataset):
    """Yields ``(image (3, H, W) float32, mask (H, W) int64)`` after ``transform``.

    ``instances=True``: yields ``(image, target (2, H, W) int64)``, target[0] the class mask and
    target[1] the object ids (0 = no object), both changed identically by ``transform``, which is
    then called as ``transform(image, mask, ids)`` with the ids as :class:`InstanceIds`.

    ``cache=True`` keeps the decoded arrays in memory after the first read: on a small data set
    this removes PNG decoding from every epoch after the first. Each DataLoader worker holds its
    own cache.
    """

    def __init__(self, samples: list[Sample], transform=None, cache: bool = False, instances: bool = False):
        self.samples = list(samples)
        self.transform = transform
        self.cache = cache
        self.instances = instances
        self._cache: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded ``(H, W, 3) uint8`` image and ``(H, W) int64`` mask of sample ``i``.

        The mask is decoded as the sample's spec says (encoding, lookup table, resizing), the
        same way validation read it.
        """
        if i in self._cache:
            return self._cache[i]
        s = self.samples[i]
        pair = read_sample(s)
        if self.instances:
            # uint16 would do for most maps, but ids of 32-bit maps must survive: int32.
            pair = (*pair, read_instances(s, pair[0].shape[:2]))
        if self.cache:
            self._cache[i] = pair
        return pair

    def __getitem__(self, i: int):
        loaded = self.load(i)
        img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(loaded[0])).permute(2, 0, 1))
        msk = tv_tensors.Mask(torch.from_numpy(loaded[1]))
        if not self.instances:
            if self.transform is not None:
                img, msk = self.transform(img, msk)
            return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor).long()
        ids = InstanceIds(torch.from_numpy(loaded[2].astype(np.int64)))
        if self.transform is not None:
            img, msk, ids = self.transform(img, msk, ids)
        target = torch.stack([msk.as_subclass(torch.Tensor).long(), ids.as_subclass(torch.Tensor).long()])
        return img.as_subclass(torch.Tensor), target


def pad_collate(ignore_index: int = 255):
    """Collate images of different sizes by padding at the bottom/right to the largest.

    Padded image pixels are 0 (the mean colour after normalisation); padded mask pixels are
    ``ignore_index``, so they are neither trained on nor scored. Targets are (H, W) masks ->
    (N, H, W), or (2, H, W) mask + object ids -> (N, 2, H, W) with padded ids 0 (no object).
    """

    def collate(batch):
        h = max(img.shape[-2] for img, _ in batch)
        w = max(img.shape[-1] for img, _ in batch)
        images = torch.zeros(len(batch), batch[0][0].shape[0], h, w, dtype=batch[0][0].dtype)
        paired = batch[0][1].dim() == 3
        masks = torch.full((len(batch), h, w), ignore_index, dtype=torch.long)
        if paired:
            masks = torch.stack([masks, torch.zeros_like(masks)], dim=1)
        for k, (img, msk) in enumerate(batch):
            images[k, :, : img.shape[-2], : img.shape[-1]] = img
            masks[k, ..., : msk.shape[-2], : msk.shape[-1]] = msk
        return images, masks

    return collate
