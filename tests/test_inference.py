"""Sliding windows, blending, test-time augmentation, MC dropout and the uncertainty maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelwise.errors import PixelwiseError
from pixelwise.predict.engine import (
    BLENDS,
    InferenceConfig,
    SlidingWindow,
    entropy,
    error_rate_by_confidence,
    gaussian_window,
    linear_window,
    predict_image,
    predict_images,
    tile_memory_bound,
)


class PointwiseMember:
    """A 1x1 convolution: each pixel's logits depend on that pixel alone (no context)."""

    def __init__(self, num_classes=4, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(num_classes, 3, generator=g) * 3
        self.b = torch.randn(num_classes, generator=g)
        self.num_classes = num_classes
        self.batches: list[tuple] = []

    def logits(self, x01, stochastic=False):
        self.batches.append(tuple(x01.shape))
        return torch.einsum("kc,nchw->nkhw", self.w, x01) + self.b.view(1, -1, 1, 1)


class RampMember(PointwiseMember):
    """Logits also depend on the column: not mirror-symmetric, so flip TTA changes the result."""

    def logits(self, x01, stochastic=False):
        base = super().logits(x01)
        ramp = torch.linspace(-2, 2, x01.shape[-1]).view(1, 1, 1, -1)
        return base + ramp * torch.arange(self.num_classes).view(1, -1, 1, 1)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _softmax_np(z, axis=0):
    z = z - z.max(axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis, keepdims=True)


def test_sliding_window_grid_covers_the_image_with_equal_tiles():
    g = SlidingWindow(100, 70, tile_size=32, overlap=0.25)
    assert (g.tile_h, g.tile_w) == (32, 32)
    assert g.ys == [0, 24, 48, 68] and g.xs == [0, 24, 38]  # stride 24, last tile flush with the edge
    covered = np.zeros((100, 70), dtype=int)
    for y, x in g.origins():
        covered[y : y + 32, x : x + 32] += 1
    assert covered.min() >= 1 and len(g) == 12
    assert sum(len(b) for b in g.batches(5)) == 12 and max(len(b) for b in g.batches(5)) == 5


def test_tile_larger_than_the_image_is_the_image():
    g = SlidingWindow(20, 30, tile_size=512)
    assert (g.tile_h, g.tile_w) == (20, 30) and g.origins() == [(0, 0)]
    g = SlidingWindow(1, 1, tile_size=64)
    assert len(g) == 1 and g.window.shape == (1, 1)


def test_blending_windows():
    gw = gaussian_window(33, 21)
    assert gw.shape == (33, 21) and gw.max() == pytest.approx(1.0) and gw.min() > 0
    assert gw[16, 10] == gw.max()  # centre-heavy
    assert torch.allclose(gw, gw.flip(0)) and torch.allclose(gw, gw.flip(1))
    lw = linear_window(10, 10, overlap=3)
    assert lw[0, 5].item() == pytest.approx(0.25) and lw[1, 5].item() == pytest.approx(0.5)
    assert lw[4, 5].item() == pytest.approx(1.0) and lw[9, 5].item() == pytest.approx(0.25)


@pytest.mark.parametrize("blend", list(BLENDS))
def test_tiled_equals_whole_image_for_a_context_free_model(blend):
    # With no context, any correct blending (weights normalised per pixel) reproduces the whole image.
    img = _image(50, 70)
    m = PointwiseMember()
    whole = predict_image(img, [m], InferenceConfig(tile="never"))
    tiled = predict_image(
        img, [m], InferenceConfig(tile="always", tile_size=16, tile_overlap=0.4, blend=blend, tile_batch=3)
    )
    assert tiled.stats["tiled"] and tiled.stats["tiles"] > 10
    np.testing.assert_allclose(tiled.probs, whole.probs, atol=1e-5)
    # and whole-image inference is the plain softmax of the logits
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    expected = torch.softmax(m.logits(x), 1)[0].numpy()
    np.testing.assert_allclose(whole.probs, expected, atol=1e-6)


def test_tiles_in_flight_are_bounded_by_the_tile_batch():
    # Stand-in for the 8000x8000 case: the network never sees more than tile_batch tiles at once.
    img = _image(300, 410)
    m = PointwiseMember()
    cfg = InferenceConfig(
        tile="auto", tile_above=100 * 100, tile_size=64, tile_overlap=0.25, tile_batch=3, scales=(1.0, 1.25)
    )
    pred = predict_image(img, [m], cfg)
    grid = SlidingWindow(300, 410, 64, 0.25)
    assert pred.stats["tiles"] == len(grid) == 6 * 9  # rows 0, 48, ..., 192, 236; columns 0, 48, ..., 336, 346
    assert max(b[0] for b in m.batches) == 3 == pred.stats["max_batch"]
    assert max(b[0] * b[2] * b[3] for b in m.batches) <= tile_memory_bound(cfg)
    assert tile_memory_bound(cfg) == 3 * 80 * 80
    assert pred.probs.shape == (4, 300, 410)
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-5)
    # Below the threshold the same config predicts the whole image at once.
    small = predict_image(_image(90, 100), [PointwiseMember()], cfg)
    assert not small.stats["tiled"]


def test_hflip_tta_averages_the_mirrored_prediction():
    img = _image(12, 17)
    m = RampMember()
    pred = predict_image(img, [m], InferenceConfig(hflip=True))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    a = m.logits(x)[0].numpy()
    b = m.logits(x.flip(3))[0].numpy()[:, :, ::-1]
    expected = 0.5 * (_softmax_np(a) + _softmax_np(b))
    np.testing.assert_allclose(pred.probs, expected, atol=1e-6)
    plain = predict_image(img, [m], InferenceConfig())
    assert np.abs(plain.probs - pred.probs).max() > 1e-3  # the flip did change something


def test_multiscale_keeps_the_size_and_a_constant_image_unchanged():
    m = PointwiseMember()
    img = np.full((30, 41, 3), 120, dtype=np.uint8)
    one = predict_image(img, [m], InferenceConfig())
    multi = predict_image(img, [m], InferenceConfig(scales=(0.75, 1.0, 1.25), hflip=True, vflip=True))
    assert multi.probs.shape == (4, 30, 41) and multi.stats["forwards"] == 9
    np.testing.assert_allclose(multi.probs, one.probs, atol=1e-5)
    # TTA and tiling together on a 1x1 image (scales would round it to 0 pixels without the clamp)
    tiny = predict_image(img[:1, :1], [m], InferenceConfig(scales=(0.5, 1.0), tile="always", tile_size=8))
    assert tiny.probs.shape == (4, 1, 1)


def test_predict_images_batches_same_size_images():
    m = PointwiseMember()
    imgs = [_image(20, 24, s) for s in range(3)]
    preds = predict_images(imgs, [m])
    assert m.batches == [(3, 3, 20, 24)]
    for im, p in zip(imgs, preds):
        np.testing.assert_allclose(p.probs, predict_image(im, [m]).probs, atol=1e-6)


def test_two_members_are_averaged():
    a, b = PointwiseMember(seed=1), PointwiseMember(seed=2)
    img = _image(9, 11)
    both = predict_image(img, [a, b])
    expected = 0.5 * (predict_image(img, [a]).probs + predict_image(img, [b]).probs)
    np.testing.assert_allclose(both.probs, expected, atol=1e-6)
    c = PointwiseMember(num_classes=3)
    with pytest.raises(PixelwiseError, match="different numbers of classes"):
        predict_image(img, [a, c])


def test_uncertainty_maps():
    probs = np.array([[0.5, 1.0], [0.25, 0.0], [0.25, 0.0]], dtype=np.float32).reshape(3, 1, 2)
    from pixelwise.predict.engine import Prediction

    p = Prediction(probs)
    np.testing.assert_allclose(p.confidence, [[0.5, 1.0]])
    np.testing.assert_allclose(p.entropy, [[1.5 * np.log(2), 0.0]], atol=1e-6)  # -(.5 ln .5 + 2 * .25 ln .25)
    assert p.labels.tolist() == [[0, 0]]
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(5), size=(4, 6)).transpose(2, 0, 1)
    from scipy.stats import entropy as scipy_entropy

    np.testing.assert_allclose(entropy(q), scipy_entropy(q, axis=0), atol=1e-5)


def test_error_rate_by_confidence():
    conf = np.arange(10, dtype=float)  # the 2 least confident pixels are 0 and 1
    correct = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 0], dtype=bool)
    r = error_rate_by_confidence(conf, correct, fraction=0.2)
    assert r["low_pixels"] == 2 and r["low_error"] == 1.0 and r["rest_error"] == pytest.approx(1 / 8)
    assert r["ratio"] == pytest.approx(8.0) and r["errors_in_low"] == pytest.approx(2 / 3)
    with pytest.raises(PixelwiseError):
        error_rate_by_confidence(conf[:1], correct[:1], 0.1)


def _segmenter(dropout=0.0, backend="torch"):
    """A Segmenter around a two-layer convolutional net (fast to build; dropout optional)."""
    from pixelwise.bundle import Bundle, Normalization
    from pixelwise.classes import ClassInfo
    from pixelwise.models import ModelConfig, SegmentationModel
    from pixelwise.predict.predictor import Segmenter

    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU()]
    if dropout:
        layers.append(torch.nn.Dropout2d(dropout))
    layers.append(torch.nn.Conv2d(16, 3, 1))
    cfg = ModelConfig(arch="custom", num_classes=3, dropout=dropout)
    model = SegmentationModel(torch.nn.Sequential(*layers), stride=4, config=cfg)
    bundle = Bundle(
        cfg,
        ClassInfo(["a", "b", "c"], [(0, 0, 0), (255, 0, 0), (0, 255, 0)]),
        Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    )
    return Segmenter(model, bundle, "cpu", backend=backend)


def test_mc_dropout_variance_and_a_clear_error_without_dropout():
    img = _image(40, 48)
    seg = _segmenter(dropout=0.5)
    plain = seg.predict_full(img)
    assert plain.variance is None
    mc = seg.predict_full(img, InferenceConfig(mc_dropout=6))
    assert mc.variance.shape == (40, 48) and mc.variance.max() > 0 and mc.variance.min() >= 0
    assert mc.variance.max() <= 0.25 + 1e-6
    # dropout is back off afterwards: plain inference is deterministic again
    np.testing.assert_allclose(seg.predict_full(img).probs, plain.probs, atol=1e-6)
    tiled = seg.predict_full(img, InferenceConfig(mc_dropout=3, tile="always", tile_size=32, tile_batch=1))
    assert tiled.variance.shape == (40, 48) and tiled.stats["max_batch"] == 1

    no_dropout = _segmenter(dropout=0.0)
    with pytest.raises(PixelwiseError, match="needs a model with dropout"):
        no_dropout.predict_full(img, InferenceConfig(mc_dropout=4))


def test_real_model_single_tile_equals_whole_and_tiles_stay_close(trained_run):
    from pixelwise.predict.predictor import load

    seg = load(trained_run, "cpu", backend="torch")
    img = _image(64, 80, seed=5)
    whole = seg.predict_full(img)
    one_tile = seg.predict_full(img, InferenceConfig(tile="always", tile_size=4096))
    assert one_tile.stats["tiles"] == 1
    np.testing.assert_allclose(one_tile.probs, whole.probs, atol=1e-5)
    tiled = seg.predict_full(img, InferenceConfig(tile="always", tile_size=48, tile_overlap=0.5))
    assert tiled.stats["tiles"] == 6  # rows 0, 16; columns 0, 24, 32
    np.testing.assert_allclose(tiled.probs.sum(0), 1.0, atol=1e-5)
    assert (tiled.labels == whole.labels).mean() > 0.5  # context at tile borders differs; most labels agree


def test_bad_configs_are_clear_errors():
    for kwargs, msg in [
        (dict(tile="sometimes"), "tile must be"),
        (dict(blend="cosine"), "blending window"),
        (dict(tile_overlap=1.0), "overlap"),
        (dict(scales=(0.0,)), "scales"),
        (dict(tile_batch=0), "tile batch"),
        (dict(mc_dropout=-1), "mc_dropout"),
        (dict(mc_dropout=1001), "mc_dropout must be 0 to 1000"),
        (dict(tile_size=16385), "tile size must be 1 to 16384"),
        (dict(tile_batch=1025), "tile batch must be 1 to 1024"),
    ]:
        with pytest.raises(PixelwiseError, match=msg):
            InferenceConfig(**kwargs)


def test_sixteen_bit_and_alpha_arrays_are_accepted():
    seg = _segmenter()
    rgb = _image(16, 20)
    rgba = np.concatenate([rgb, np.full((16, 20, 1), 7, np.uint8)], axis=2)
    sixteen = rgb.astype(np.uint16) * 257
    ref = seg.predict_proba(rgb)
    np.testing.assert_allclose(seg.predict_proba(rgba), ref, atol=1e-6)
    np.testing.assert_allclose(seg.predict_proba(sixteen), ref, atol=1e-6)
    assert seg.predict(rgb[:1, :1]).shape == (1, 1)
    with pytest.raises(PixelwiseError, match="uint8 or uint16"):
        seg.predict(rgb.astype(np.float64))


def test_bf16_precision_is_close_to_fp32_and_runs_on_pytorch():
    from pixelwise.predict.predictor import Segmenter

    seg = _segmenter()
    img = _image(40, 56, seed=2)
    fp32 = seg.predict_proba(img)
    fast = Segmenter(seg.model, seg.bundle, "cpu", backend="auto", precision="bf16")
    assert fast.active_backend == "torch"
    p = fast.predict_proba(img)
    assert p.dtype == np.float32 and p.shape == fp32.shape
    assert np.abs(p - fp32).max() < 0.05 and (p.argmax(0) == fp32.argmax(0)).mean() > 0.97
    with pytest.raises(PixelwiseError, match="bf16 runs the PyTorch model"):
        Segmenter(seg.model, seg.bundle, "cpu", backend="onnxruntime", precision="bf16")
    with pytest.raises(PixelwiseError, match="unknown precision"):
        Segmenter(seg.model, seg.bundle, "cpu", precision="fp8")
