"""Joint transforms keep image and mask aligned, never interpolate labels, pad with ignore."""

from __future__ import annotations

import random

import numpy as np
import torch
from torchvision import tv_tensors

from pixelwise.data.dataset import pad_collate
from pixelwise.data.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transform


def _pair(h=40, w=50, seed=0, block=10):
    rng = np.random.default_rng(seed)
    # Square blocks with a class each; the image's red channel is 60 * class.
    blocks = rng.integers(0, 4, size=(h // block + 1, w // block + 1))
    mask = np.kron(blocks, np.ones((block, block), np.int64))[:h, :w]
    image = np.stack([mask * 60, np.full_like(mask, 30), np.full_like(mask, 90)], 0).astype(np.uint8)
    return tv_tensors.Image(torch.from_numpy(image)), tv_tensors.Mask(torch.from_numpy(mask))


def _red(img):
    return (img[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255


def test_crop_flip_keep_alignment_exactly():
    tf = train_transform(24, scale_range=(1.0, 1.0), color_jitter=0)
    for seed in range(10):
        torch.manual_seed(seed)
        img, msk = tf(*_pair())
        assert img.shape == (3, 24, 24) and msk.shape == (24, 24) and msk.dtype == torch.int64
        assert torch.allclose(_red(img), msk.float() * 60, atol=0.5)


def test_rescale_never_invents_labels_and_stays_aligned():
    tf = train_transform(32, scale_range=(0.5, 2.0), color_jitter=0)
    for seed in range(10):
        torch.manual_seed(seed)
        random.seed(seed)
        img, msk = tf(*_pair(h=64, w=80, seed=seed, block=16))
        assert set(msk.unique().tolist()) <= {0, 1, 2, 3, 255}
        valid = msk != 255
        # Bilinear image vs nearest mask differ only along block edges.
        agree = (torch.abs(_red(img) - msk.float() * 60) < 20) | ~valid
        assert agree.float().mean() > 0.85


def test_small_image_is_padded_with_ignore():
    tf = train_transform(64, ignore_index=255, scale_range=(1.0, 1.0), color_jitter=0, hflip=False)
    img, msk = tf(*_pair(h=20, w=30))
    assert img.shape == (3, 64, 64)
    assert int((msk != 255).sum()) == 20 * 30  # every original pixel kept, the rest ignored


def test_pad_collate_pads_masks_with_ignore():
    batch = [
        (torch.ones(3, 4, 5), torch.zeros(4, 5, dtype=torch.long)),
        (torch.ones(3, 6, 3), torch.ones(6, 3, dtype=torch.long)),
    ]
    x, y = pad_collate(255)(batch)
    assert x.shape == (2, 3, 6, 5) and y.shape == (2, 6, 5)
    assert (y[0, 4:] == 255).all() and (y[1, :, 3:] == 255).all() and (y[1, :, :3] == 1).all()
    assert float(x[0, :, 4:].abs().sum()) == 0.0


def _rare_pair(h=100, w=100):
    """Class 0 on the left half, 1 on the right, a 2x2 patch of class 3 and a 4x4 ignored patch."""
    mask = np.zeros((h, w), np.int64)
    mask[:, w // 2 :] = 1
    mask[70:72, 10:12] = 3
    mask[5:9, 80:84] = 255
    image = np.stack([mask * 60 % 256, np.full_like(mask, 30), np.full_like(mask, 90)], 0).astype(np.uint8)
    return tv_tensors.Image(torch.from_numpy(image)), tv_tensors.Mask(torch.from_numpy(mask))


def test_class_crops_find_the_rare_class_and_keep_alignment():
    img, msk = _rare_pair()
    random.seed(0)
    torch.manual_seed(0)
    share = {}
    for p in (0.0, 1.0):
        tf = train_transform(20, scale_range=(1.0, 1.0), hflip=False, color_jitter=0, class_crops=p)
        hits = 0
        for _ in range(300):
            out_img, out_msk = tf(img, msk)
            assert out_msk.shape == (20, 20)
            scored = out_msk != 255
            # The image moved with the mask: red = 60 * class wherever the pixel is not ignored.
            assert torch.allclose(_red(out_img)[scored], (out_msk[scored] * 60 % 256).float(), atol=1.0)
            hits += int((out_msk == 3).any())
        share[p] = hits / 300
    # Uniform 20x20 crops contain the 2x2 patch about 6% of the time; class-drawn crops whenever
    # class 3 is drawn (one time in three, never the ignore index).
    assert share[0.0] < 0.15 and 0.25 < share[1.0] < 0.45, share


def test_class_crops_pad_small_images_and_skip_all_ignored_masks():
    tf = train_transform(32, scale_range=(1.0, 1.0), color_jitter=0, class_crops=1.0)
    img, msk = _pair(h=20, w=24)
    out_img, out_msk = tf(img, msk)
    assert out_msk.shape == (32, 32) and int((out_msk == 255).sum()) == 32 * 32 - 20 * 24
    ignored = tv_tensors.Mask(torch.full((40, 40), 255, dtype=torch.int64))
    _, out_msk = tf(tv_tensors.Image(torch.zeros(3, 40, 40, dtype=torch.uint8)), ignored)
    assert out_msk.shape == (32, 32) and bool((out_msk == 255).all())
