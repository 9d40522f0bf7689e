"""Segmenter: a trained bundle that labels every pixel of new images.

>>> seg = pixelwise.load("runs/demo")
>>> mask = seg.predict("street.jpg")      # (H, W) int64 class indices, the image's own size
>>> probs = seg.predict_proba(image)       # (C, H, W) float32 softmax probabilities
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .bundle import load_bundle
from .data.folder import ClassInfo, IMAGE_EXTENSIONS, read_image
from .errors import PixelwiseError
from .io import atomic_path
from .viz import colorize, overlay, save_png


class Segmenter:
    """A loaded model plus its preprocessing. Thread-safe for prediction (no state changes)."""

    def __init__(self, model: torch.nn.Module, meta: dict, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meta = meta
        self.classes = ClassInfo.from_dict(meta["classes"])
        norm = meta["normalization"]
        self._mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self._std = torch.tensor(norm["std"], dtype=torch.float32).view(1, 3, 1, 1).to(self.device)

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @staticmethod
    def _as_array(image) -> np.ndarray:
        if isinstance(image, (str, Path)):
            return read_image(image)
        if isinstance(image, Image.Image):
            return np.asarray(image.convert("RGB"))
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise PixelwiseError(f"expected an (H, W, 3) RGB image, got an array of shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise PixelwiseError(f"expected a uint8 image, got {arr.dtype}; convert it to 8-bit RGB first")
        return arr[..., :3]

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """Same-size ``(H, W, 3) uint8`` images -> ``(N, 3, H, W)`` normalised float32 on the device."""
        x = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def predict_proba(self, image) -> np.ndarray:
        """Softmax probabilities ``(C, H, W)`` float32 for one image (path, PIL image or uint8 array)."""
        arr = self._as_array(image)
        logits = self.model(self.preprocess([arr]))
        return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()

    @torch.inference_mode()
    def predict_batch(self, images: list) -> list[np.ndarray]:
        """Class-index masks for several images; same-size images run as one batch."""
        arrays = [self._as_array(im) for im in images]
        out: list[np.ndarray | None] = [None] * len(arrays)
        by_size: dict[tuple, list[int]] = {}
        for i, a in enumerate(arrays):
            by_size.setdefault(a.shape[:2], []).append(i)
        for idx in by_size.values():
            logits = self.model(self.preprocess([arrays[i] for i in idx]))
            labels = logits.argmax(1).cpu().numpy().astype(np.int64)
            for k, i in enumerate(idx):
                out[i] = labels[k]
        return out  # type: ignore[return-value]

    def predict(self, image) -> np.ndarray:
        """Class indices ``(H, W)`` int64 for one image; H and W are the image's own."""
        return self.predict_batch([image])[0]

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        return colorize(mask, self.classes.colors)

    def overlay(self, image, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        return overlay(self._as_array(image), mask, self.classes.colors, alpha)


def save_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write class indices as an 8-bit PNG (16-bit when there are more than 256 classes), atomically."""
    if mask.max(initial=0) < 256:
        save_png(path, mask.astype(np.uint8))
        return
    with atomic_path(path) as tmp:
        Image.fromarray(mask.astype(np.uint16)).save(tmp, format="PNG")


def load(run: str | Path, device: str = "auto") -> Segmenter:
    """Load a trained model from a run directory (or any folder with model.safetensors + model.json)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, meta = load_bundle(run, device)
    return Segmenter(model, meta, device)


def collect_inputs(inputs: list[str | Path]) -> list[Path]:
    """Expand files and folders (their images, not recursive) into a sorted list of image paths."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise PixelwiseError(f"{p}: no images in this folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise PixelwiseError(f"{p}: no such file or folder")
    stems = [f.stem for f in files]
    dups = sorted({s for s in stems if stems.count(s) > 1})
    if dups:
        raise PixelwiseError(f"several inputs share the name {dups[0]!r}; their outputs would overwrite each other")
    return files


def predict_files(segmenter: Segmenter, inputs: list[str | Path], out: str | Path,
                  alpha: float = 0.5, progress: bool = True) -> dict:
    """Write ``OUT/masks/<stem>.png`` (class indices) and ``OUT/overlays/<stem>.png`` for each input.

    Returns ``{"written": n, "failed": [(path, reason), ...]}``; an unreadable input is listed
    and skipped, the others are still predicted.
    """
    from tqdm.auto import tqdm

    files = collect_inputs(inputs)
    out = Path(out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    written, failed = 0, []
    for f in tqdm(files, desc="predict", unit="img", disable=not progress):
        try:
            img = read_image(f)
        except PixelwiseError as e:
            failed.append((str(f), str(e)))
            continue
        mask = segmenter.predict(img)
        save_mask(out / "masks" / f"{f.stem}.png", mask)
        save_png(out / "overlays" / f"{f.stem}.png", overlay(img, mask, segmenter.classes.colors, alpha))
        written += 1
    return {"written": written, "failed": failed, "out": str(out)}
