"""Objects from dense network outputs: instance grouping, panoptic merging, their file formats.

An instance or panoptic model is a semantic network with three more output channels (Panoptic-DeepLab
style): a centre heat-map logit and an offset (dy, dx) in pixels from each pixel to the centre of its
object. :func:`centre_targets` turns ground-truth instance ids into those three targets;
:func:`group_by_centres` turns predicted maps back into objects. :func:`split_components` finds
objects without the extra channels (connected components of the class mask, touching objects split
by a watershed). :func:`merge_panoptic` adds the stuff classes; :func:`panoptic_png`,
:func:`panoptic_json` and :func:`instances_json` write the COCO formats.

Every map here is one image: ``(H, W)`` int32 ids, 0 = no object (or void), each object a distinct
positive id. An object's class is stored in its :class:`Segment`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .errors import PixelwiseError

EXTRA_CHANNELS = 3  # centre logit, offset dy, offset dx
TASKS = ("semantic", "instance", "panoptic")

# The Gaussian of a centre is drawn out to this many standard deviations (beyond it, < 4e-4).
GAUSSIAN_REACH = 4.0
# Pixels x centres compared at once when grouping (and window pixels drawn at once for the heat
# map), to bound memory.
GROUPING_CHUNK = 1 << 22
# Two distance-transform peaks of one component are one object unless the widest passage between them
# is below this share of the lower peak (for two equal discs: centres more than about a radius apart)
# and at least NECK_PIXELS below it (a ragged border moves the distance by up to about 1.4 px).
NECK_RATIO = 0.85
NECK_PIXELS = 1.5
# Outlines in the overlay: the object colour times this.
OUTLINE_SHADE = 0.6


@dataclass
class Segment:
    """One object or stuff region of a map.

    ``bbox`` is (x, y, width, height) in pixels (COCO convention); ``area`` in pixels; ``score`` in
    [0, 1] (1 for ground truth).
    """

    id: int
    category: int
    score: float = 1.0
    area: int = 0
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)
    isthing: bool = True

    def to_dict(self, names: Sequence[str] | None = None) -> dict:
        """Plain JSON types; with ``names``, also ``category_name``."""
        out = asdict(self)
        out["bbox"] = [int(v) for v in self.bbox]
        out["score"] = float(self.score)
        if names is not None:
            out["category_name"] = _name(names, self.category)
        return out


@dataclass
class InstanceMap:
    """Objects of thing classes in one image: ``ids`` (H, W) int32, 0 = no object."""

    ids: np.ndarray
    segments: list[Segment] = field(default_factory=list)

    def categories(self) -> dict[int, int]:
        """Object id -> class index."""
        return {s.id: s.category for s in self.segments}

    def scores(self) -> dict[int, float]:
        """Object id -> score in [0, 1]."""
        return {s.id: float(s.score) for s in self.segments}


@dataclass
class PanopticMap:
    """Every pixel of one image: a stuff segment, a thing segment or 0 = void. ``ids`` (H, W) int32."""

    ids: np.ndarray
    segments: list[Segment] = field(default_factory=list)

    def categories(self) -> dict[int, int]:
        """Segment id -> class index."""
        return {s.id: s.category for s in self.segments}


@dataclass
class GroupingConfig:
    """How dense maps become objects, and objects plus stuff a panoptic map."""

    centre_threshold: float = 0.1  # min centre heat-map value of a kept centre, in [0, 1]
    nms_kernel: int = 7  # odd, pixels: max-pool window for centre NMS
    top_k: int = 200  # most centres per image
    min_area: int = 16  # objects with fewer pixels are dropped
    min_stuff_area: int = 64  # panoptic: smaller stuff regions become void
    overlap: float = 0.5  # panoptic: a thing keeping less than this share of its pixels is dropped

    def __post_init__(self) -> None:
        _check_number("centre_threshold", self.centre_threshold, 0.0, 1.0, "a number in [0, 1]")
        _check_int("nms_kernel", self.nms_kernel, 1, "an odd integer >= 1 (pixels)")
        if self.nms_kernel % 2 == 0:
            raise PixelwiseError(f"nms_kernel must be an odd integer >= 1 (pixels), got {self.nms_kernel}")
        _check_int("top_k", self.top_k, 1, "an integer >= 1")
        _check_int("min_area", self.min_area, 0, "an integer >= 0 (pixels)")
        _check_int("min_stuff_area", self.min_stuff_area, 0, "an integer >= 0 (pixels)")
        _check_number("overlap", self.overlap, 0.0, 1.0, "a number in [0, 1]")


def _check_int(name: str, value, low: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise PixelwiseError(f"{name} must be {what}, got {value!r}")


def _check_number(name: str, value, low: float, high: float, what: str) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not (low <= float(value) <= high):
        raise PixelwiseError(f"{name} must be {what}, got {value!r}")


def _name(names: Sequence[str], category: int) -> str:
    return str(names[category]) if 0 <= category < len(names) else str(category)


# ---------------------------------------------------------------------------------------------
# Training targets


def centre_targets(instance_ids: torch.Tensor, sigma: float = 8.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre heat map, offsets and object mask from instance ids (Panoptic-DeepLab targets).

    Args:
        instance_ids: (N, H, W) integer ids, 0 (or negative, e.g. padding) = no object; ids need
            only be distinct within an image.
        sigma: standard deviation of each centre's Gaussian, in pixels (> 0).

    Returns:
        heat (N, 1, H, W) float32 in [0, 1]: a Gaussian at each object's centre of mass (the exact,
        sub-pixel centre, so the peak is 1 only when the centre falls on a pixel), max over objects;
        offsets (N, 2, H, W) float32: (dy, dx) in pixels from each object pixel to its object's
        centre, 0 off objects; on_object (N, 1, H, W) bool. All on the input's device.
    """
    if instance_ids.ndim != 3:
        raise ValueError(f"instance ids must be (N, H, W), got shape {tuple(instance_ids.shape)}")
    if not sigma > 0:
        raise PixelwiseError(f"centre sigma must be > 0 pixels, got {sigma}")
    ids = instance_ids.long().clamp(min=0)
    n, h, w = ids.shape
    on = ids > 0
    heat = torch.zeros(n * h * w, dtype=torch.float32, device=ids.device)
    slot, owner, object_id = _object_slots(ids)
    size = len(owner)
    ys = torch.arange(h, device=ids.device, dtype=torch.float64).view(1, h, 1).expand(n, h, w).reshape(-1)
    xs = torch.arange(w, device=ids.device, dtype=torch.float64).view(1, 1, w).expand(n, h, w).reshape(-1)
    count = torch.bincount(slot, minlength=size).double()
    # float64 sums of whole numbers are exact in any order, so the centres are the same on every
    # device and run; index_add_ (not a weighted bincount) is allowed in deterministic mode on CUDA.
    zero = torch.zeros(size, dtype=torch.float64, device=ids.device)
    cy = zero.index_add(0, slot, ys) / count.clamp(min=1)
    cx = zero.index_add(0, slot, xs) / count.clamp(min=1)
    dy = torch.where(on.view(-1), cy[slot] - ys, 0.0).float()
    dx = torch.where(on.view(-1), cx[slot] - xs, 0.0).float()
    offsets = torch.stack((dy.view(n, h, w), dx.view(n, h, w)), dim=1)
    present = (count > 0) & (object_id > 0)
    _draw_gaussians(heat, owner[present], cy[present], cx[present], (h, w), sigma)
    return heat.view(n, 1, h, w), offsets.view(n, 2, h, w), on.unsqueeze(1)


def _object_slots(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, H, W) ids >= 0 -> slot of every pixel (N*H*W,), and the image and id of each slot.

    Small ids (the usual 1..K, or Cityscapes' class * 1000 + k) index a table of N x (max id + 1)
    slots directly, which needs no sort; large ones are numbered by ``torch.unique``. Slots of id 0
    (no object) and of absent ids are left out by the caller.
    """
    n = ids.shape[0]
    top = int(ids.max()) + 1
    key = (torch.arange(n, device=ids.device).view(n, 1, 1) * top + ids).view(-1)
    if n * top <= max(1 << 20, 4 * key.numel()):
        table = torch.arange(n * top, device=ids.device)
        return key, table // top, table % top
    unique, slot = torch.unique(key, return_inverse=True)
    return slot, unique // top, unique % top


def _draw_gaussians(heat: torch.Tensor, image: torch.Tensor, cy, cx, size: tuple[int, int], sigma: float) -> None:
    """Max of one Gaussian per object into ``heat`` (N*H*W flat), each drawn in a square window.

    The Gaussian is separable, so a window is the outer product of a row and a column profile;
    objects are drawn by one scatter (amax) per chunk of objects (one chunk unless sigma is large),
    without a loop over pixels.
    """
    h, w = size
    reach = min(math.ceil(GAUSSIAN_REACH * sigma), max(h, w))
    steps = torch.arange(-reach, reach + 1, device=heat.device)
    chunk = max(1, GROUPING_CHUNK // len(steps) ** 2)
    for start in range(0, len(cy), chunk):
        y, x, n = cy[start : start + chunk], cx[start : start + chunk], image[start : start + chunk]
        rows = torch.round(y).long()[:, None] + steps  # (K, S)
        cols = torch.round(x).long()[:, None] + steps
        gy = torch.exp(-((rows - y[:, None]) ** 2) / (2 * sigma**2)).float()
        gx = torch.exp(-((cols - x[:, None]) ** 2) / (2 * sigma**2)).float()
        valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        values = torch.where(valid, gy[:, :, None] * gx[:, None, :], 0.0)
        index = n[:, None, None] * (h * w) + rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
        heat.scatter_reduce_(0, index.reshape(-1), values.reshape(-1), reduce="amax")


def dense_maps(extra: torch.Tensor) -> torch.Tensor:
    """(N, 3, h, w) raw extra channels -> (N, 3, h, w): sigmoid(centre), dy, dx (what engines average)."""
    if extra.ndim != 4 or extra.shape[1] != EXTRA_CHANNELS:
        raise ValueError(f"extra channels must be (N, {EXTRA_CHANNELS}, H, W), got shape {tuple(extra.shape)}")
    return torch.cat([torch.sigmoid(extra[:, :1]), extra[:, 1:]], dim=1)


# ---------------------------------------------------------------------------------------------
# Grouping


def _tensor(value, device=None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        value = np.ascontiguousarray(value)
        # torch warns on read-only arrays (an image decoded by PIL, a memory map): copy those.
        value = value if value.flags.writeable else value.copy()
    out = value if isinstance(value, torch.Tensor) else torch.from_numpy(value)
    return out.to(device) if device is not None else out


def _find_centres(heat: torch.Tensor, config: GroupingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) heat -> centres (K, 2) long (y, x) and their values (K,), best first, K <= top_k.

    A centre is the maximum of its nms_kernel window. Where equal values share a window (a centre
    exactly between pixels gives a plateau of two or four), only the first pixel in raster order
    is kept, so one object never gets two centres.
    """
    h, w = heat.shape
    k = config.nms_kernel
    pooled = F.max_pool2d(heat[None, None], k, stride=1, padding=k // 2)[0, 0]
    peak = (heat == pooled) & (heat >= config.centre_threshold)
    order = -torch.arange(h * w, device=heat.device, dtype=torch.float64).view(h, w)
    ranked = torch.where(peak, order, torch.tensor(-math.inf, dtype=torch.float64, device=heat.device))
    first = F.max_pool2d(ranked[None, None], k, stride=1, padding=k // 2)[0, 0]
    flat = (peak & (ranked == first)).view(-1).nonzero().squeeze(1)
    values = heat.view(-1)[flat]
    best = torch.sort(values, descending=True, stable=True).indices[: config.top_k]
    flat = flat[best]
    return torch.stack((flat // w, flat % w), dim=1), values[best]


def _nearest(py: torch.Tensor, px: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre to each point (ties: the better centre), in chunks of pixels."""
    cy, cx = centres[:, 0].to(py.dtype), centres[:, 1].to(px.dtype)
    step = max(1, GROUPING_CHUNK // len(centres))
    parts = []
    for start in range(0, len(py), step):
        dy = py[start : start + step, None] - cy[None]
        dx = px[start : start + step, None] - cx[None]
        parts.append(torch.argmin(dy * dy + dx * dx, dim=1))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=py.device)


def group_by_centres(labels, probs, dense, things: Sequence[int], config: GroupingConfig | None = None) -> InstanceMap:
    """Objects from predicted centres and offsets (Panoptic-DeepLab grouping).

    Args:
        labels: (H, W) int64 class indices (numpy or torch).
        probs: (C, H, W) float32 class probabilities, or None (scores then use the centre alone).
        dense: (3, H, W) float32: centre heat map in [0, 1], dy, dx in pixels.
        things: class indices that are objects.

    Centres: max-pool NMS on the heat map, values >= centre_threshold, best top_k. Every pixel whose
    label is a thing class joins the centre nearest to (pixel + offset); an object's class is the
    majority label of its pixels; score = centre value x mean probability of that class over its
    pixels. Objects under min_area pixels are dropped; ids are 1..K by descending score.
    Runs on the device of ``dense``.
    """
    config = config or GroupingConfig()
    dense_t = _tensor(dense).float()
    device = dense_t.device
    labels_t = _tensor(labels, device).long()
    h, w = labels_t.shape
    if dense_t.shape != (EXTRA_CHANNELS, h, w):
        raise ValueError(f"dense maps must be ({EXTRA_CHANNELS}, {h}, {w}), got shape {tuple(dense_t.shape)}")
    centres, centre_values = _find_centres(dense_t[0], config)
    thing = torch.isin(labels_t, torch.as_tensor(list(things), dtype=torch.long, device=device))
    pixel = thing.view(-1).nonzero().squeeze(1)
    if not len(centres) or not pixel.numel():
        return InstanceMap(np.zeros((h, w), np.int32), [])
    ys, xs = pixel // w, pixel % w
    owner = _nearest(ys + dense_t[1].view(-1)[pixel], xs + dense_t[2].view(-1)[pixel], centres)
    classes = labels_t.view(-1)[pixel]
    k, c = len(centres), int(classes.max()) + 1
    votes = torch.bincount(owner * c + classes, minlength=k * c).view(k, c)
    category = votes.argmax(dim=1)
    area = torch.bincount(owner, minlength=k)
    if probs is None:
        mean_prob = torch.ones(k, dtype=torch.float64, device=device)
    else:
        probs_t = _tensor(probs, device)
        if probs_t.ndim != 3 or probs_t.shape[1:] != (h, w) or probs_t.shape[0] <= int(category.max()):
            raise ValueError(
                f"probabilities must be (C, {h}, {w}) with a channel per class, got {tuple(probs_t.shape)}"
            )
        taken = probs_t[category[owner], ys, xs].double()
        total = torch.zeros(k, dtype=torch.float64, device=device).index_add_(0, owner, taken)
        mean_prob = total / area.clamp(min=1)
    score = (centre_values.double() * mean_prob).cpu().numpy()
    ids = torch.zeros(h * w, dtype=torch.long, device=device)
    ids[pixel] = owner + 1
    return _ranked_map(ids.view(h, w).cpu().numpy(), category.cpu().numpy(), score, config.min_area)


def _ranked_map(ids: np.ndarray, category: np.ndarray, score: np.ndarray, min_area: int) -> InstanceMap:
    """Objects 1..K of ``ids`` (object j has category[j-1], score[j-1]) renumbered by descending score.

    Objects under ``min_area`` pixels (and empty ones) are dropped; ties keep the given order.
    """
    k = len(category)
    area = np.bincount(ids.ravel(), minlength=k + 1)[1:]
    keep = np.flatnonzero(area >= max(min_area, 1))
    keep = keep[np.argsort(-score[keep], kind="stable")]
    lut = np.zeros(k + 1, np.int32)
    lut[keep + 1] = np.arange(1, len(keep) + 1, dtype=np.int32)
    out = lut[ids]
    boxes = _boxes(out, len(keep))
    segments = [
        Segment(int(i + 1), int(category[j]), float(np.clip(score[j], 0.0, 1.0)), int(area[j]), boxes[i])
        for i, j in enumerate(keep)
    ]
    return InstanceMap(out.astype(np.int32), segments)


def _boxes(ids: np.ndarray, count: int) -> list[tuple[int, int, int, int]]:
    """(x, y, width, height) of ids 1..count of an (H, W) map (zeros for an absent id)."""
    out = []
    for found in ndimage.find_objects(ids, max_label=count):
        if found is None:
            out.append((0, 0, 0, 0))
        else:
            rows, cols = found
            out.append((cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start))
    return out


def split_components(labels, probs, things: Sequence[int], config: GroupingConfig | None = None) -> InstanceMap:
    """Objects without centre maps: connected components of each thing class, touching objects split.

    Args:
        labels: (H, W) int64 class indices (numpy or torch).
        probs: (C, H, W) float32 class probabilities, or None (every score is then 1).
        things: class indices that are objects.

    Each 4-connected component of a thing class is one object unless its distance transform (distance
    of each pixel to the nearest pixel outside the component) has several peaks separated by a neck.
    Peaks are found with ``skimage.feature.peak_local_max``, at least half the component's largest
    inscribed radius apart; a watershed of the negated distance restricted to the component gives
    each peak a region. Two neighbouring regions stay one object unless the widest passage between
    them (the highest distance along their shared border) is below ``NECK_RATIO`` (0.85) of the lower
    of their two peaks and at least ``NECK_PIXELS`` (1.5 px, more than a ragged border moves it)
    below it: two discs touching, or overlapping with centres more than about a radius apart, split;
    a convex shape (rectangle, ellipse, bar), whose distance has no dip, never does. The rule depends
    only on the component's own shape, not on an image size. Score = mean probability of the class over
    the object; objects under min_area pixels are dropped; ids are 1..K by descending score.
    """
    config = config or GroupingConfig()
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    ids = np.zeros(labels.shape, np.int64)
    categories: list[int] = []
    for cls in sorted({int(t) for t in things}):
        components, count = ndimage.label(labels == cls)
        for index, found in enumerate(ndimage.find_objects(components), start=1):
            crop = components[found] == index
            if crop.sum() < config.min_area:
                continue
            pieces = _split(crop)
            view = ids[found]
            view[pieces > 0] = pieces[pieces > 0] + len(categories)
            categories.extend([cls] * int(pieces.max()))
    category = np.asarray(categories, np.int64)
    score = _mean_probs(ids, category, probs)
    return _ranked_map(ids, category, score, config.min_area)


def _mean_probs(ids: np.ndarray, category: np.ndarray, probs) -> np.ndarray:
    """Mean probability of each object's class over its pixels (1 without probabilities)."""
    k = len(category)
    if probs is None or not k:
        return np.ones(k)
    probs = np.asarray(probs.cpu() if isinstance(probs, torch.Tensor) else probs)
    ys, xs = np.nonzero(ids)
    owner = ids[ys, xs] - 1
    taken = probs[category[owner], ys, xs].astype(np.float64)
    return np.bincount(owner, weights=taken, minlength=k) / np.maximum(np.bincount(owner, minlength=k), 1)


def _split(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool one component -> (h, w) int pieces 1..P (P = 1 when it is one object)."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    # A zero border: the edge of the crop is outside the component.
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    radius = float(dist.max())
    peaks = peak_local_max(
        dist, min_distance=max(1, int(radius / 2)), labels=mask.astype(np.int32), exclude_border=False
    )
    if len(peaks) < 2:
        return mask.astype(np.int64)
    markers = np.zeros(mask.shape, np.int64)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    regions = watershed(-dist, markers, mask=mask)
    groups = _merge_shallow(regions, dist, dist[tuple(peaks.T)])
    return groups[regions]


def _merge_shallow(regions: np.ndarray, dist: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """Lookup region (1..P) -> object (1..Q): neighbouring regions with no real neck between them merge.

    Borders are visited from the widest passage down (as when computing the dynamics of maxima): a
    region pair whose passage is at least NECK_RATIO of the lower peak, or less than NECK_PIXELS below
    it, is one object; the merged object keeps the higher peak.
    """
    saddles = _saddles(regions, dist)
    parent = list(range(len(heights) + 1))
    top = [0.0] + [float(v) for v in heights]

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for (a, b), passage in sorted(saddles.items(), key=lambda item: (-item[1], item[0])):
        ra, rb = root(a), root(b)
        if ra == rb:
            continue
        lower = min(top[ra], top[rb])
        if passage >= NECK_RATIO * lower or passage > lower - NECK_PIXELS:
            parent[max(ra, rb)] = min(ra, rb)
            top[min(ra, rb)] = max(top[ra], top[rb])
    roots = np.array([root(i) for i in range(len(parent))])
    _, lut = np.unique(roots, return_inverse=True)
    return lut.astype(np.int64)  # root 0 (outside) stays 0


def _saddles(regions: np.ndarray, dist: np.ndarray) -> dict[tuple[int, int], float]:
    """For each pair of 4-adjacent regions, the widest passage: max over their border of min(dist)."""
    size = int(regions.max()) + 1
    pairs, passages = [], []
    for a, b, da, db in (
        (regions[1:, :], regions[:-1, :], dist[1:, :], dist[:-1, :]),
        (regions[:, 1:], regions[:, :-1], dist[:, 1:], dist[:, :-1]),
    ):
        cut = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.minimum(a[cut], b[cut]).astype(np.int64) * size + np.maximum(a[cut], b[cut]))
        passages.append(np.minimum(da[cut], db[cut]))
    keys, where = np.unique(np.concatenate(pairs), return_inverse=True)
    best = np.full(len(keys), -1.0)
    np.maximum.at(best, where, np.concatenate(passages))
    return {(int(key // size), int(key % size)): float(value) for key, value in zip(keys, best)}


# ---------------------------------------------------------------------------------------------
# Panoptic maps and ground truth


def _numpy(value) -> np.ndarray:
    return np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value)


def merge_panoptic(
    labels, instances: InstanceMap, things: Sequence[int], config: GroupingConfig | None = None, ignore_index: int = 255
) -> PanopticMap:
    """Objects plus stuff classes: one panoptic map (Panoptic-FPN merge).

    Args:
        labels: (H, W) int class indices (the semantic prediction).
        instances: objects of the same image; a segment's ``area`` may exceed what its map shows
            (another object covered part of it), which is what ``overlap`` measures.

    Things go first, by descending score, each taking only free pixels; a thing keeping less than
    ``overlap`` of its area is dropped. Then each stuff class of ``labels`` on the free pixels is one
    segment; one under ``min_stuff_area`` pixels becomes void. Thing-class pixels with no object and
    ``ignore_index`` pixels are void (0). Panoptic ids are 1..S: things by score, then stuff by class.
    """
    config = config or GroupingConfig()
    return _panoptic(_numpy(labels), instances, things, config.overlap, config.min_stuff_area, ignore_index)


def _panoptic(
    labels: np.ndarray, instances: InstanceMap, things: Sequence[int], overlap: float, min_stuff: int, ignore: int
) -> PanopticMap:
    if instances.ids.shape != labels.shape:
        raise ValueError(f"instance map {instances.ids.shape} and labels {labels.shape} differ in size")
    present, inverse, shown = np.unique(instances.ids, return_inverse=True, return_counts=True)
    pan_of = np.zeros(len(present), np.int32)  # position in `present` -> panoptic id
    taken = dict(zip(present.tolist(), range(len(present))))
    segments: list[Segment] = []
    for seg in sorted(instances.segments, key=lambda s: -s.score):
        where = taken.get(seg.id) if seg.id > 0 else None
        if where is None or pan_of[where]:
            continue
        kept = int(shown[where])
        if kept < overlap * max(seg.area, kept):
            continue
        segments.append(Segment(len(segments) + 1, seg.category, seg.score, kept, isthing=True))
        pan_of[where] = len(segments)
    pan = pan_of[inverse.reshape(labels.shape)]
    stuff = (pan == 0) & ~np.isin(labels, list(things)) & (labels != ignore) & (labels >= 0)
    classes, counts = np.unique(labels[stuff], return_counts=True)
    stuff_of = {}
    for cls, count in zip(classes.tolist(), counts.tolist()):
        if count >= max(min_stuff, 1):
            segments.append(Segment(len(segments) + 1, int(cls), 1.0, int(count), isthing=False))
            stuff_of[cls] = len(segments)
    if stuff_of:
        lut = np.zeros(int(classes.max()) + 1, np.int32)
        lut[list(stuff_of)] = list(stuff_of.values())
        pan[stuff] = lut[labels[stuff]]
    for seg, box in zip(segments, _boxes(pan, len(segments))):
        seg.bbox = box
    return PanopticMap(pan.astype(np.int32), segments)


def ground_truth_instances(mask, instance_ids, things: Sequence[int], ignore_index: int = 255) -> InstanceMap:
    """Objects of a ground-truth mask: ids on thing-class pixels, original id values kept.

    Args:
        mask: (H, W) int class indices. instance_ids: (H, W) int ids, 0 = no object.

    An id's class is the majority class of its thing pixels; ids on stuff or ``ignore_index`` pixels
    are not part of an object. Scores are 1.
    """
    mask, ids = _numpy(mask).astype(np.int64), _numpy(instance_ids).astype(np.int64)
    if mask.shape != ids.shape:
        raise ValueError(f"mask {mask.shape} and instance ids {ids.shape} differ in size")
    thing = np.isin(mask, list(things)) & (ids > 0)
    ids = np.where(thing, ids, 0)
    values = np.unique(ids[thing])
    if len(values) and values.max() >= 2**31:
        raise PixelwiseError(f"instance id {values.max()} is too large: ids must be below 2**31")
    dense = np.zeros(mask.shape, np.int64)
    dense[thing] = np.searchsorted(values, ids[thing]) + 1
    k, c = len(values), max(things, default=0) + 1
    votes = np.bincount((dense[thing] - 1) * c + mask[thing], minlength=k * c).reshape(k, c)
    area = np.bincount(dense.ravel(), minlength=k + 1)[1:]
    boxes = _boxes(dense, k)
    segments = [Segment(int(values[j]), int(votes[j].argmax()), 1.0, int(area[j]), boxes[j], True) for j in range(k)]
    return InstanceMap(ids.astype(np.int32), segments)


def ground_truth_panoptic(
    mask, instance_ids, things: Sequence[int], ignore_index: int = 255
) -> tuple[PanopticMap, np.ndarray]:
    """Ground-truth panoptic map and the (H, W) bool void map.

    Every object is kept and every stuff region, however small; void = ``ignore_index`` pixels and
    thing-class pixels without an id (not scored, as in panopticapi).
    """
    mask = _numpy(mask).astype(np.int64)
    instances = ground_truth_instances(mask, instance_ids, things, ignore_index)
    pan = _panoptic(mask, instances, things, 0.0, 0, ignore_index)
    void = (mask == ignore_index) | (np.isin(mask, list(things)) & (instances.ids == 0))
    return pan, void


# ---------------------------------------------------------------------------------------------
# Files


def panoptic_png(pan: PanopticMap) -> np.ndarray:
    """(H, W, 3) uint8 COCO panoptic PNG pixels: id = R + 256 G + 256^2 B (0 = void)."""
    ids = np.asarray(pan.ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"panoptic ids must be in [0, 256**3), got {ids.min()}..{ids.max()}")
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)


def panoptic_ids(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 COCO panoptic PNG pixels -> (H, W) int32 ids (inverse of :func:`panoptic_png`)."""
    rgb = np.asarray(rgb).astype(np.int64)
    return (rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]).astype(np.int32)


def panoptic_json(pan: PanopticMap, file_name: str, names: Sequence[str]) -> dict:
    """COCO panoptic annotation of one image: ``file_name`` (of the PNG) and ``segments_info``.

    ``category_id`` is the class index; ``bbox`` [x, y, w, h] and ``area`` in pixels.
    """
    info = [
        {
            "id": int(s.id),
            "category_id": int(s.category),
            "iscrowd": 0,
            "area": int(s.area),
            "bbox": [int(v) for v in s.bbox],
            "isthing": int(bool(s.isthing)),
            "score": float(s.score),
            "category_name": _name(names, s.category),
        }
        for s in pan.segments
    ]
    return {"file_name": str(file_name), "segments_info": info}


def instances_json(inst: InstanceMap, names: Sequence[str]) -> list[dict]:
    """One record per object: id, class, class_name, score, box [x, y, w, h], area (px), COCO RLE mask.

    ``rle`` is ``{"size": [H, W], "counts": str}``, readable by ``pycocotools.mask.decode`` once the
    counts are encoded back to bytes.
    """
    from pycocotools import mask as mask_utils

    h, w = inst.ids.shape
    out = []
    for s in inst.segments:
        rle = mask_utils.encode(np.asfortranarray((inst.ids == s.id).astype(np.uint8)))
        counts = rle["counts"]
        out.append(
            {
                "id": int(s.id),
                "class": int(s.category),
                "class_name": _name(names, s.category),
                "score": float(s.score),
                "box": [int(v) for v in s.bbox],
                "area": int(s.area),
                "rle": {
                    "size": [int(h), int(w)],
                    "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
                },
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Pictures


def instance_colors(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB: distinct, deterministic colours (golden-ratio hue steps, two brightnesses)."""
    i = np.arange(max(int(n), 0))
    hue = (0.07 + i * 0.618033988749895) % 1.0
    sat = np.where(i % 3 == 2, 0.6, 0.85)
    val = np.where(i % 2 == 0, 0.95, 0.75)
    sector = np.floor(hue * 6).astype(int) % 6
    frac = hue * 6 - np.floor(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - sat * frac), val * (1 - sat * (1 - frac))
    table = np.stack(
        [
            np.choose(sector, [val, q, p, p, t, val]),
            np.choose(sector, [t, val, val, q, p, p]),
            np.choose(sector, [p, p, t, val, val, q]),
        ],
        axis=-1,
    )
    return np.round(table * 255).astype(np.uint8).reshape(-1, 3)


def object_outlines(ids: np.ndarray) -> np.ndarray:
    """(H, W) bool: object pixels with a 4-neighbour of another id (background or a touching object)."""
    ids = np.asarray(ids)
    edge = np.zeros(ids.shape, bool)
    vertical = ids[1:, :] != ids[:-1, :]
    horizontal = ids[:, 1:] != ids[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge & (ids > 0)


def instance_overlay(image, inst: InstanceMap, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: each object blended in its own colour, its 1-pixel outline drawn opaque.

    Args:
        image: (H, W, 3) or (H, W) uint8. alpha: weight of the object colour in [0, 1].

    Colours follow the objects' ids in ascending order (:func:`instance_colors`); the outline is a
    darker shade of the object's colour; background stays the image. Touching objects each get their
    own outline, so the border between them shows.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise PixelwiseError(f"overlay alpha must be in [0, 1], got {alpha}")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    ids = np.asarray(inst.ids)
    if image.shape[:2] != ids.shape:
        raise ValueError(f"image {image.shape[:2]} and instance map {ids.shape} differ in size")
    values = np.unique(ids[ids > 0])
    on = ids > 0
    colours = instance_colors(len(values)).astype(np.float32)
    painted = colours[np.searchsorted(values, ids[on])]
    out = image[:, :, :3].astype(np.float32)
    out[on] = (1 - alpha) * out[on] + alpha * painted
    edge = object_outlines(ids)
    # A darker shade: the outline stands out from the object's own blended fill and from a touching
    # object's, whatever the image behind.
    out[edge] = OUTLINE_SHADE * colours[np.searchsorted(values, ids[edge])]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
