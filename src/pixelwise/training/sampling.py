"""Seeded sampling: every sample's augmentation is drawn from a seed derived from (run seed, epoch, index).

That makes augmentation independent of the loader's workers and of process history, which is
what makes ``--resume`` exact, and what makes the global batches under torchrun the same as in
one process.
"""

from __future__ import annotations

import math
import random

import torch
from torch.utils.data import Dataset, Sampler


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and platforms."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class SeededSampler(Sampler):
    """Yields ``(index, seed)``: a per-epoch permutation, and a seed per sample for its augmentation.

    Seeding each sample from (run seed, epoch, index) makes augmentation independent of the
    loader's workers and of process history, which is what makes ``--resume`` exact.
    With ``num_replicas`` processes, rank ``r`` takes positions ``r, r + num_replicas, ...`` of
    the permutation (padded by repeating its start, as ``DistributedSampler`` does).
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 1))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        order = self._order()
        per = math.ceil(len(order) / self.num_replicas)
        order = (order + order[: per * self.num_replicas - len(order)])[self.rank :: self.num_replicas]
        for i in order:
            yield (i, derive_seed(self.seed, self.epoch, i, 2))

    def __len__(self) -> int:
        return math.ceil(self.n / self.num_replicas)


class SeededDataset(Dataset):
    """Runs the wrapped dataset's item under a private RNG seeded by the sampler's ``(index, seed)``."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        i, seed = key
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            try:
                return self.base[i]
            finally:
                random.setstate(state)
