"""Small components, holes and the dense CRF (against a brute-force reference and pydensecrf)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pixelwise.errors import PixelwiseError
from pixelwise.postprocess import (
    PostprocessConfig,
    crf_offsets,
    dense_crf,
    dense_crf_torch,
    fill_holes,
    postprocess,
    pydensecrf_available,
    remove_small_components,
)


def test_remove_small_components_takes_the_nearest_kept_label():
    m = np.zeros((10, 12), dtype=np.int64)
    m[:, 6:] = 1
    m[2:4, 2:4] = 2  # 4 px island inside class 0
    m[7, 9] = 0  # 1 px speck inside class 1
    m[5:10, 0:3] = 3  # 15 px, kept
    out = remove_small_components(m, min_size=5)
    expected = np.zeros_like(m)
    expected[:, 6:] = 1
    expected[5:10, 0:3] = 3
    np.testing.assert_array_equal(out, expected)
    assert remove_small_components(m, 0) is not m
    np.testing.assert_array_equal(remove_small_components(m, 0), m)
    # everything small: nothing to take labels from, so nothing changes
    checker = (np.indices((4, 4)).sum(0) % 2).astype(np.int64)
    np.testing.assert_array_equal(remove_small_components(checker, 2), checker)


def test_diagonal_pixels_are_one_component():
    m = np.zeros((6, 6), dtype=np.int64)
    for i in range(1, 5):
        m[i, i] = 1  # 4 pixels touching at corners: one 8-connected component
    np.testing.assert_array_equal(remove_small_components(m, 4), m)
    assert remove_small_components(m, 5).max() == 0


def test_fill_holes_only_up_to_the_size_and_only_when_enclosed():
    m = np.zeros((12, 12), dtype=np.int64)
    m[1:6, 1:6] = 1
    m[2:4, 2:4] = 0  # 4 px hole inside class 1
    m[6:12, 6:12] = 2
    m[7:11, 7:11] = 0  # 16 px hole inside class 2
    m[0:3, 9:12] = 1
    m[0, 10] = 0  # notch on the border: not enclosed
    out = fill_holes(m, max_size=5)
    assert (out[2:4, 2:4] == 1).all()
    assert (out[7:11, 7:11] == 0).all()
    assert out[0, 10] == 0
    assert (fill_holes(m, max_size=16)[7:11, 7:11] == 2).all()
    np.testing.assert_array_equal(fill_holes(m, 0), m)


def _brute_force_crf(probs, image, iterations, sxy, srgb, weight, smooth_sxy, smooth_weight):
    """Mean field with explicit N x N kernels (the documented model, nothing approximated)."""
    c, h, w = probs.shape
    yy, xx = np.mgrid[0:h, 0:w]
    pos = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
    col = image.reshape(-1, 3).astype(np.float64)
    dp = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    dc = ((col[:, None] - col[None]) ** 2).sum(-1)
    k_app = np.exp(-dp / (2 * sxy**2) - dc / (2 * srgb**2))
    r = math.ceil(3 * smooth_sxy)  # the smoothness kernel is truncated at 3 sigma in each direction
    box = (np.abs(pos[:, None, 0] - pos[None, :, 0]) <= r) & (np.abs(pos[:, None, 1] - pos[None, :, 1]) <= r)
    k_sm = np.exp(-dp / (2 * smooth_sxy**2)) * box
    np.fill_diagonal(k_app, 0)
    np.fill_diagonal(k_sm, 0)
    logp = np.log(np.clip(probs.reshape(c, -1), 1e-8, None)).T
    q = probs.reshape(c, -1).T.astype(np.float64)
    for _ in range(iterations):
        m_app = k_app @ q / k_app.sum(1, keepdims=True)
        m_sm = k_sm @ q / k_sm.sum(1, keepdims=True)
        z = logp + weight * m_app + smooth_weight * m_sm
        z -= z.max(1, keepdims=True)
        q = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return q.T.reshape(c, h, w)


def test_torch_crf_equals_brute_force_mean_field_with_every_offset():
    rng = np.random.default_rng(0)
    h, w, c = 7, 9, 3
    probs = rng.dirichlet(np.ones(c), size=(h, w)).transpose(2, 0, 1).astype(np.float32)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    kw = dict(iterations=3, sxy=4.0, srgb=40.0, weight=5.0, smooth_sxy=1.0, smooth_weight=2.0)
    ours = dense_crf_torch(probs, image, offsets=crf_offsets(4.0, radius=max(h, w), step=1), **kw)
    ref = _brute_force_crf(probs.astype(np.float64), image, **kw)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    np.testing.assert_allclose(ours.sum(0), 1.0, atol=1e-5)


def _two_region_case(seed=0):
    """A disc of one colour on another; probabilities that are right on only 70% of the pixels."""
    rng = np.random.default_rng(seed)
    h, w = 48, 56
    yy, xx = np.mgrid[0:h, 0:w]
    truth = ((yy - 22) ** 2 + (xx - 30) ** 2 < 15**2).astype(np.int64)
    image = np.where(truth[..., None] == 1, [200, 60, 40], [40, 70, 190]).astype(np.float64)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    flip = rng.random((h, w)) < 0.3
    noisy = np.where(flip, 1 - truth, truth)
    p1 = np.where(noisy == 1, 0.6, 0.4)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    return probs, image, truth


@pytest.mark.parametrize("backend", ["torch", "pydensecrf"])
def test_crf_snaps_noisy_labels_to_colour_regions(backend):
    if backend == "pydensecrf" and not pydensecrf_available():
        pytest.skip("pydensecrf (pip install pydensecrf2) is not installed; the torch CRF is tested alone")
    probs, image, truth = _two_region_case()
    before = (probs.argmax(0) == truth).mean()
    cfg = PostprocessConfig(crf=True, crf_backend=backend, crf_sxy=20, crf_srgb=13, crf_weight=10)
    refined = dense_crf(probs, image, cfg)
    after = (refined.argmax(0) == truth).mean()
    assert before < 0.75 and after > 0.98
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-4)


def test_torch_and_pydensecrf_agree():
    if not pydensecrf_available():
        pytest.skip("pydensecrf (pip install pydensecrf2) is not installed; nothing to compare against")
    probs, image, _ = _two_region_case(seed=1)
    kw = dict(crf=True, crf_sxy=20, crf_srgb=13, crf_weight=10)
    a = dense_crf(probs, image, PostprocessConfig(crf_backend="torch", **kw)).argmax(0)
    b = dense_crf(probs, image, PostprocessConfig(crf_backend="pydensecrf", **kw)).argmax(0)
    assert (a == b).mean() > 0.98


def test_postprocess_runs_the_enabled_steps_in_order():
    probs, image, truth = _two_region_case(seed=2)
    plain = postprocess(probs, image, PostprocessConfig())
    np.testing.assert_array_equal(plain, probs.argmax(0))
    cleaned = postprocess(probs, image, PostprocessConfig(min_size=30, fill_holes=30))
    assert (cleaned == truth).mean() > (plain == truth).mean() + 0.1
    crf = postprocess(probs, image, PostprocessConfig(crf=True, crf_backend="torch", crf_sxy=20))
    assert crf.dtype == np.int64 and (crf == truth).mean() > 0.98
    with pytest.raises(PixelwiseError, match="needs the image"):
        postprocess(probs, None, PostprocessConfig(crf=True))
    with pytest.raises(PixelwiseError):
        PostprocessConfig(min_size=-1)
    with pytest.raises(PixelwiseError, match="CRF backend"):
        PostprocessConfig(crf_backend="gpu")
    with pytest.raises(PixelwiseError, match="crf_iterations must be 1 to 100"):
        PostprocessConfig(crf_iterations=101)


def test_crf_on_a_single_pixel_is_the_input():
    probs = np.array([0.3, 0.7], dtype=np.float32).reshape(2, 1, 1)
    out = dense_crf_torch(probs, np.zeros((1, 1, 3), np.uint8))
    np.testing.assert_allclose(out, probs)
