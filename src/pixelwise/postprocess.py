"""Post-processing of predicted masks: small components, holes, dense-CRF boundary refinement.

Each step is optional (:class:`PostprocessConfig`, all off by default) and they run in this
order: CRF on the probabilities, then the argmax, then small-component removal, then hole
filling.

The dense CRF (Krähenbühl and Koltun 2011: Potts model, an appearance kernel on position and
colour and a smoothness kernel on position, mean-field inference) runs through ``pydensecrf``
(the ``pydensecrf2`` package, permutohedral-lattice filtering) when it is installed, else
through :func:`dense_crf_torch`, a mean-field implementation in PyTorch that evaluates the
appearance kernel exactly on a strided window of offsets around each pixel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import PixelwiseError

CRF_BACKENDS = ("auto", "pydensecrf", "torch")
# Mean-field updates converge in 5-10; more than this is a typo, not a refinement.
MAX_CRF_ITERATIONS = 100


@dataclass
class PostprocessConfig:
    """Which post-processing steps run (all off by default).

    Attributes:
        min_size: connected components (8-connected, per class) smaller than this many pixels are
            given the label of the nearest pixel outside them; 0 = off.
        fill_holes: a region entirely enclosed by one class and at most this many pixels large
            takes that class; 0 = off.
        crf: refine boundaries with a dense CRF on the image colours.
        crf_iterations: mean-field iterations.
        crf_sxy, crf_srgb, crf_weight: appearance (bilateral) kernel: spatial and colour standard
            deviations (pixels, 0-255 colour units) and its weight.
        crf_smooth_sxy, crf_smooth_weight: smoothness (spatial) kernel standard deviation and weight.
        crf_backend: ``auto`` (pydensecrf when installed, else torch), ``pydensecrf`` or ``torch``.
    """

    min_size: int = 0
    fill_holes: int = 0
    crf: bool = False
    crf_iterations: int = 5
    crf_sxy: float = 80.0
    crf_srgb: float = 13.0
    crf_weight: float = 10.0
    crf_smooth_sxy: float = 3.0
    crf_smooth_weight: float = 3.0
    crf_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.min_size < 0 or self.fill_holes < 0:
            raise PixelwiseError("min_size and fill_holes are pixel counts and must be >= 0")
        if self.crf_backend not in CRF_BACKENDS:
            raise PixelwiseError(f"unknown CRF backend {self.crf_backend!r}; choose one of {', '.join(CRF_BACKENDS)}")
        if not 1 <= self.crf_iterations <= MAX_CRF_ITERATIONS:
            raise PixelwiseError(f"crf_iterations must be 1 to {MAX_CRF_ITERATIONS}, got {self.crf_iterations}")

    @property
    def active(self) -> bool:
        return bool(self.min_size or self.fill_holes or self.crf)

    def to_dict(self) -> dict:
        return asdict(self)


_EIGHT = np.ones((3, 3), dtype=bool)


def remove_small_components(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Relabel every 8-connected single-class region smaller than ``min_size`` pixels.

    Removed pixels take the label of the nearest kept pixel (Euclidean distance). If every
    region is small, the mask is returned unchanged. ``labels``: ``(H, W)`` integers.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if min_size <= 1 or labels.size == 0:
        return labels.copy()
    small = np.zeros(labels.shape, dtype=bool)
    for c in np.unique(labels):
        comp, n = ndimage.label(labels == c, structure=_EIGHT)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())
        too_small = sizes < min_size
        too_small[0] = False
        small |= too_small[comp]
    if not small.any() or small.all():
        return labels.copy()
    _, (iy, ix) = ndimage.distance_transform_edt(small, return_indices=True)
    return labels[iy, ix]


def fill_holes(labels: np.ndarray, max_size: int) -> np.ndarray:
    """Give a class every region of at most ``max_size`` pixels that it encloses entirely.

    A hole is a connected region (4-connected) that is not of class c and does not reach the
    image border without crossing class c. Classes are processed in index order.
    """
    from scipy import ndimage

    out = np.array(labels, copy=True)
    if max_size <= 0 or out.size == 0:
        return out
    for c in np.unique(out):
        mask = out == c
        holes = ndimage.binary_fill_holes(mask) & ~mask
        if not holes.any():
            continue
        comp, n = ndimage.label(holes)
        sizes = np.bincount(comp.ravel())
        fill = sizes <= max_size
        fill[0] = False
        out[fill[comp]] = c
    return out


# -- dense CRF ---------------------------------------------------------------------------------


def _gaussian_blur(q: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter of ``(C, H, W)`` with zero padding, truncated at 3 sigma."""
    r = max(1, int(math.ceil(3 * sigma)))
    i = torch.arange(-r, r + 1, dtype=q.dtype, device=q.device)
    k = torch.exp(-0.5 * (i / sigma) ** 2)
    c = q.shape[0]
    x = q[:, None]
    x = F.conv2d(F.pad(x, (r, r, 0, 0)), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r)), k.view(1, 1, -1, 1))
    return x.view(c, *q.shape[1:])


def _shift(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """``x[..., y+dy, x+dx]`` aligned with ``x[..., y, x]`` on the overlapping region (slices of the target)."""
    h, w = x.shape[-2:]
    ys = slice(max(0, -dy), min(h, h - dy))
    xs = slice(max(0, -dx), min(w, w - dx))
    src = x[..., ys.start + dy : ys.stop + dy, xs.start + dx : xs.stop + dx]
    return src, (ys, xs)


def _appearance_message(q: torch.Tensor, feats: torch.Tensor, offsets, spatial: list[float]) -> torch.Tensor:
    """Row-normalised ``sum_j k(i, j) q_j`` over the given offsets, ``k`` = spatial x colour Gaussian."""
    c, h, w = q.shape
    msg = torch.zeros_like(q)
    norm = torch.zeros(h, w, dtype=q.dtype, device=q.device)
    for (dy, dx), ks in zip(offsets, spatial):
        if abs(dy) >= h or abs(dx) >= w:
            continue
        f_src, (ys, xs) = _shift(feats, dy, dx)
        d2 = (f_src - feats[:, ys, xs]).pow(2).sum(0)
        k = torch.exp(-0.5 * d2) * ks
        q_src, _ = _shift(q, dy, dx)
        msg[:, ys, xs] += k * q_src
        norm[ys, xs] += k
    return msg / norm.clamp_min(1e-12)


def crf_offsets(
    sxy: float, samples: int = 11, radius: float | None = None, step: int | None = None
) -> list[tuple[int, int]]:
    """Offsets (dy, dx), centre excluded, on a square grid of ``step`` pixels within ``radius``.

    Defaults: radius 2 x ``sxy``, about ``samples`` offsets per axis.
    """
    radius = 2.0 * sxy if radius is None else radius
    r = max(1, int(math.ceil(radius)))
    step = step or max(1, int(math.ceil(2 * r / max(samples - 1, 1))))
    rng = range(-(r // step) * step, r + 1, step)
    return [(dy, dx) for dy in rng for dx in rng if (dy, dx) != (0, 0)]


@torch.inference_mode()
def dense_crf_torch(
    probs: np.ndarray,
    image: np.ndarray,
    iterations: int = 5,
    sxy: float = 80.0,
    srgb: float = 13.0,
    weight: float = 10.0,
    smooth_sxy: float = 3.0,
    smooth_weight: float = 3.0,
    offsets: list[tuple[int, int]] | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """Mean-field inference of a fully connected Potts CRF; returns refined ``(C, H, W)`` probabilities.

    ``probs``: ``(C, H, W)`` softmax output (the unary is ``-log p``); ``image``: ``(H, W, 3)``
    uint8. Each iteration: ``Q_i(l) ∝ exp(log p_i(l) + w_a m^a_i(l) + w_s m^s_i(l))`` where
    ``m_i(l) = sum_{j != i} k(i, j) Q_j(l) / sum_{j != i} k(i, j)`` (the Potts compatibility
    ``w [l != l']`` written up to a constant). The smoothness message is a Gaussian blur; the
    appearance message sums the position-and-colour kernel exactly over ``offsets`` (default:
    an 11 x 11 strided grid within 2 ``sxy``), each sample standing for the pixels around it.
    With every offset in the image (step 1), this is exact dense mean-field inference.
    """
    p = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32)).to(device)
    c, h, w = p.shape
    img = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float()
    if img.shape[1:] != p.shape[1:]:
        raise PixelwiseError(f"CRF: image is {tuple(img.shape[1:])}, probabilities {tuple(p.shape[1:])}")
    logp = p.clamp_min(1e-8).log()
    if h * w == 1:
        return p.cpu().numpy()
    offsets = crf_offsets(sxy) if offsets is None else offsets
    feats = img / srgb  # spatial part handled per offset: same for every pixel pair at that offset
    spatial = [math.exp(-0.5 * (dy * dy + dx * dx) / (sxy * sxy)) for dy, dx in offsets]
    # The smoothness kernel without the centre term: blur minus the pixel's own contribution.
    ones = torch.ones(1, h, w, dtype=p.dtype, device=p.device)
    smooth_norm = (_gaussian_blur(ones, smooth_sxy) - 1.0).clamp_min(1e-12)
    q = p.clone()
    for _ in range(iterations):
        m_app = _appearance_message(q, feats, offsets, spatial)
        m_smooth = (_gaussian_blur(q, smooth_sxy) - q) / smooth_norm
        q = torch.softmax(logp + weight * m_app + smooth_weight * m_smooth, dim=0)
    return q.cpu().numpy()


def dense_crf_pydensecrf(
    probs: np.ndarray,
    image: np.ndarray,
    iterations: int = 5,
    sxy: float = 80.0,
    srgb: float = 13.0,
    weight: float = 10.0,
    smooth_sxy: float = 3.0,
    smooth_weight: float = 3.0,
) -> np.ndarray:
    """The same CRF through pydensecrf (permutohedral-lattice filtering); ``(C, H, W)`` probabilities."""
    import pydensecrf.densecrf as dcrf

    c, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    unary = -np.log(np.clip(probs, 1e-8, 1.0)).reshape(c, -1).astype(np.float32)
    d.setUnaryEnergy(np.ascontiguousarray(unary))
    d.addPairwiseGaussian(sxy=smooth_sxy, compat=smooth_weight)
    d.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=np.ascontiguousarray(image, dtype=np.uint8), compat=weight)
    q = np.array(d.inference(iterations), dtype=np.float32)
    return q.reshape(c, h, w)


def pydensecrf_available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def dense_crf(probs: np.ndarray, image: np.ndarray, config: PostprocessConfig | None = None) -> np.ndarray:
    """Refine ``(C, H, W)`` probabilities with a dense CRF on the ``(H, W, 3)`` uint8 image colours."""
    cfg = config or PostprocessConfig(crf=True)
    kw = dict(
        iterations=cfg.crf_iterations,
        sxy=cfg.crf_sxy,
        srgb=cfg.crf_srgb,
        weight=cfg.crf_weight,
        smooth_sxy=cfg.crf_smooth_sxy,
        smooth_weight=cfg.crf_smooth_weight,
    )
    backend = cfg.crf_backend
    if backend == "auto":
        backend = "pydensecrf" if pydensecrf_available() else "torch"
    if backend == "pydensecrf":
        if not pydensecrf_available():
            raise PixelwiseError("pydensecrf is not installed; `pip install pydensecrf2` or use the torch CRF backend")
        return dense_crf_pydensecrf(probs, image, **kw)
    return dense_crf_torch(probs, image, **kw)


def crf_backend_name(config: PostprocessConfig) -> str:
    """The CRF implementation ``config`` resolves to here."""
    if config.crf_backend == "auto":
        return "pydensecrf" if pydensecrf_available() else "torch"
    return config.crf_backend


def postprocess(probs: np.ndarray, image: np.ndarray | None, config: PostprocessConfig) -> np.ndarray:
    """``(C, H, W)`` probabilities (+ the image for the CRF) -> ``(H, W)`` int64 labels after every enabled step."""
    if config.crf:
        if image is None:
            raise PixelwiseError("the CRF needs the image")
        probs = dense_crf(probs, image, config)
    return refine_labels(np.asarray(probs).argmax(0).astype(np.int64), config)


def refine_labels(labels: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """The steps of ``config`` that work on ``(H, W)`` labels: small components, then holes."""
    if config.min_size:
        labels = remove_small_components(labels, config.min_size)
    if config.fill_holes:
        labels = fill_holes(labels, config.fill_holes)
    return labels
