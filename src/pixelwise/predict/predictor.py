"""Segmenter: a trained bundle that labels every pixel of new images.

>>> seg = pixelwise.load("runs/demo")
>>> mask = seg.predict("street.jpg")      # (H, W) int64 class indices, the image's own size
>>> probs = seg.predict_proba(image)       # (C, H, W) float32 softmax probabilities
>>> cfg = InferenceConfig(hflip=True, scales=(0.75, 1.0, 1.25), tile_size=1024)
>>> pred = seg.predict_full(image, cfg)    # probs, labels, confidence, entropy (+ MC variance)

Backends: ``torch`` (the PyTorch model, channels-last, inference mode), ``onnxruntime`` (the
run's ``model.onnx`` from ``pixelwise export``, else the model exported in memory) and ``auto``
(the default: ONNX Runtime on the CPU when it is installed and the model exports, PyTorch
otherwise and on GPUs). Monte-Carlo dropout always runs the PyTorch model.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..bundle import Bundle, load_bundle
from ..data.folder import IMAGE_EXTENSIONS, read_image
from ..errors import PixelwiseError
from ..fileio import atomic_path, write_json
from ..postprocess import PostprocessConfig, postprocess
from ..viz import colorize, overlay, save_png
from .engine import InferenceConfig, Prediction, predict_image, predict_labels

BACKENDS = ("auto", "torch", "onnxruntime")
# fp32: exact; bf16: PyTorch autocast to bfloat16 (fast on GPUs and on CPUs with AMX or AVX512-BF16;
# probabilities differ from fp32 by up to about 1e-2).
PRECISIONS = ("fp32", "bf16")


class TorchMember:
    """The PyTorch model as an inference member: [0, 1] images in, logits out.

    Runs in inference mode with the channels-last memory layout (faster convolutions on CPU
    and GPU, same results within float rounding). ``stochastic=True`` turns the dropout layers
    on for that call only (Monte-Carlo dropout); batch norm stays in evaluation mode.
    ``bf16=True`` runs the network under bfloat16 autocast and returns float32 logits.
    """

    def __init__(self, model: torch.nn.Module, mean, std, device: torch.device, num_classes: int, bf16: bool = False):
        self.model = model
        self.device = device
        self.num_classes = num_classes
        self.bf16 = bf16
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._dropouts = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0]
        self._lock = threading.Lock()

    @property
    def has_dropout(self) -> bool:
        return bool(self._dropouts)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if not self.bf16:
            return self.model(x)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            return self.model(x).float()

    def logits(self, x01: torch.Tensor, stochastic: bool = False) -> torch.Tensor:
        x = ((x01.to(self.device) - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        if not stochastic:
            return self._run(x)
        if not self._dropouts:
            raise PixelwiseError(
                "MC dropout needs a model with dropout; this one has none "
                "(train with --dropout 0.1, or leave --mc-dropout off)"
            )
        with self._lock:  # the train/eval switch is shared state
            for m in self._dropouts:
                m.train()
            try:
                return self._run(x)
            finally:
                for m in self._dropouts:
                    m.eval()


class Segmenter:
    """A loaded model plus its preprocessing. Thread-safe for prediction.

    ``backend``: ``auto``, ``torch`` or ``onnxruntime`` (see the module docstring); ``onnx_path``:
    an ONNX file from ``pixelwise export`` to use instead of ``RUN/model.onnx``; ``precision``:
    ``fp32`` (default) or ``bf16`` (PyTorch autocast; ``auto`` then means ``torch``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        bundle: Bundle,
        device: str | torch.device = "cpu",
        backend: str = "auto",
        onnx_path: str | Path | None = None,
        run_dir: str | Path | None = None,
        precision: str = "fp32",
    ):
        if backend not in BACKENDS:
            raise PixelwiseError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise PixelwiseError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if precision == "bf16" and (backend == "onnxruntime" or onnx_path):
            raise PixelwiseError("bf16 runs the PyTorch model; use --backend torch or auto with --precision bf16")
        self.precision = precision
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.bundle = bundle
        self.classes = bundle.classes
        self.backend = backend
        self.onnx_path = Path(onnx_path) if onnx_path else None
        self.run_dir = Path(run_dir) if run_dir else None
        norm = bundle.normalization
        self.torch_member = TorchMember(
            self.model, norm.mean, norm.std, self.device, self.num_classes, bf16=precision == "bf16"
        )
        self._onnx_member = None
        self._resolved: str | None = None
        self._fingerprint: str | None = None
        self._lock = threading.Lock()

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @property
    def fingerprint(self) -> str:
        """Hash of the weights (also stored in exported ONNX files)."""
        if self._fingerprint is None:
            from ..export import weights_fingerprint

            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    @property
    def active_backend(self) -> str:
        """The backend plain inference uses: ``torch`` or ``onnxruntime`` (exports on first call)."""
        self._member()
        assert self._resolved is not None
        return self._resolved

    def _load_onnx(self, strict: bool):
        from ..export import OnnxMember, check_onnx_matches, onnx_bytes, onnx_session

        path = self.onnx_path
        if path is None and self.run_dir is not None and (self.run_dir / "model.onnx").is_file():
            path = self.run_dir / "model.onnx"
        if path is not None:
            if not path.is_file():
                raise PixelwiseError(f"{path}: no such ONNX file; export one with `pixelwise export RUN --format onnx`")
            session = onnx_session(path, self.device)
            try:
                check_onnx_matches(session, path, self.fingerprint, self.num_classes)
                return OnnxMember(session, self.num_classes, source=path)
            except PixelwiseError:
                if strict or self.onnx_path is not None:
                    raise
                # auto with a stale RUN/model.onnx: ignore it and export the current weights.
        graph = onnx_bytes(self.model.to(memory_format=torch.contiguous_format).cpu(), self.bundle)
        session = onnx_session(graph, self.device)
        self.model.to(self.device).to(memory_format=torch.channels_last)
        return OnnxMember(session, self.num_classes, source=graph)

    def _member(self):
        """The member plain (deterministic) inference runs through."""
        if self._resolved is not None:
            return self._onnx_member if self._resolved == "onnxruntime" else self.torch_member
        with self._lock:
            if self._resolved is None:
                want = self.backend
                if want == "auto" and (
                    (self.device.type != "cpu" and self.onnx_path is None) or self.precision == "bf16"
                ):
                    want = "torch"
                if want == "torch":
                    self._resolved = "torch"
                elif want == "onnxruntime":
                    self._onnx_member = self._load_onnx(strict=True)
                    self._resolved = "onnxruntime"
                else:
                    try:
                        self._onnx_member = self._load_onnx(strict=False)
                        self._resolved = "onnxruntime"
                    except PixelwiseError as e:
                        if self.onnx_path is not None:
                            raise
                        warnings.warn(f"ONNX Runtime not used ({e}); predicting with PyTorch", stacklevel=3)
                        self._resolved = "torch"
        return self._member()

    def members(self, config: InferenceConfig | None = None) -> list:
        """The inference members for ``config`` (the PyTorch model when MC dropout is on)."""
        if config is not None and config.mc_dropout:
            if self.backend == "onnxruntime":
                raise PixelwiseError("MC dropout needs the PyTorch model; use --backend torch (or auto)")
            if not self.torch_member.has_dropout:
                raise PixelwiseError(
                    f"MC dropout needs a model with dropout; {self.bundle.model.arch}/"
                    f"{self.bundle.model.encoder} was trained without (train with --dropout 0.1, "
                    "or leave --mc-dropout off)"
                )
            return [self.torch_member]
        return [self._member()]

    @staticmethod
    def _as_array(image) -> np.ndarray:
        """Path, PIL image or array (gray, RGB, RGBA; uint8 or uint16) -> ``(H, W, 3)`` uint8."""
        if isinstance(image, (str, Path)):
            return read_image(image)
        if isinstance(image, Image.Image):
            return np.asarray(image.convert("RGB"))
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise PixelwiseError(f"expected an (H, W, 3) RGB image, got an array of shape {arr.shape}")
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            raise PixelwiseError(f"the image is empty ({arr.shape[0]}x{arr.shape[1]} pixels)")
        if arr.dtype == np.uint16:  # 16-bit: scale 0..65535 onto 0..255
            arr = ((arr[..., :3].astype(np.float32) + 128.5) / 257.0).astype(np.uint8)
        if arr.dtype != np.uint8:
            raise PixelwiseError(f"expected a uint8 or uint16 image, got {arr.dtype}; convert it to 8-bit RGB first")
        return np.ascontiguousarray(arr[..., :3])

    def predict_full(self, image, config: InferenceConfig | None = None) -> Prediction:
        """Probabilities and uncertainty of one image (path, PIL image or array) under ``config``."""
        return predict_image(self._as_array(image), self.members(config), config, self.device)

    def predict_proba(self, image, config: InferenceConfig | None = None) -> np.ndarray:
        """Softmax probabilities ``(C, H, W)`` float32 for one image (path, PIL image or uint8 array)."""
        return self.predict_full(image, config).probs

    def predict_batch(self, images: list, config: InferenceConfig | None = None) -> list[np.ndarray]:
        """Class-index masks for several images; same-size images run as one batch (unless tiled)."""
        arrays = [self._as_array(im) for im in images]
        return _labels_grouped(arrays, self.members(config), config, self.device)

    def predict(self, image, config: InferenceConfig | None = None) -> np.ndarray:
        """Class indices ``(H, W)`` int64 for one image; H and W are the image's own."""
        return predict_labels([self._as_array(image)], self.members(config), config, self.device)[0]

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        return colorize(mask, self.classes.colors)

    def overlay(self, image, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        return overlay(self._as_array(image), mask, self.classes.colors, alpha)


def _labels_grouped(arrays: list[np.ndarray], members, config, device) -> list[np.ndarray]:
    """Labels for images of any sizes, each size as one batch."""
    out: list[np.ndarray | None] = [None] * len(arrays)
    by_size: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        by_size.setdefault(a.shape[:2], []).append(i)
    for idx in by_size.values():
        for i, labels in zip(idx, predict_labels([arrays[i] for i in idx], members, config, device)):
            out[i] = labels
    return out  # type: ignore[return-value]


class Ensemble:
    """Several segmenters trained on the same classes; their probabilities are averaged.

    Every model, scale and flip counts once in the average; each model keeps its own input
    normalisation.
    """

    def __init__(self, segmenters: Sequence[Segmenter], names: Sequence[str] | None = None):
        if not segmenters:
            raise PixelwiseError("an ensemble needs at least one model")
        names = list(names) if names else [f"model {i + 1}" for i in range(len(segmenters))]
        first = segmenters[0].classes
        for seg, name in zip(segmenters[1:], names[1:]):
            if seg.classes.names != first.names:
                raise PixelwiseError(
                    f"{name} predicts classes {seg.classes.names}, {names[0]} predicts {first.names}; "
                    "an ensemble needs models trained on the same class list"
                )
        self.segmenters = list(segmenters)
        self.classes = first
        self.device = segmenters[0].device
        self.bundle = segmenters[0].bundle

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @property
    def fingerprint(self) -> str:
        return "+".join(s.fingerprint for s in self.segmenters)

    @property
    def precision(self) -> str:
        return self.segmenters[0].precision

    def members(self, config: InferenceConfig | None = None) -> list:
        return [m for s in self.segmenters for m in s.members(config)]

    def predict_full(self, image, config: InferenceConfig | None = None) -> Prediction:
        return predict_image(Segmenter._as_array(image), self.members(config), config, self.device)

    def predict_proba(self, image, config: InferenceConfig | None = None) -> np.ndarray:
        return self.predict_full(image, config).probs

    def predict(self, image, config: InferenceConfig | None = None) -> np.ndarray:
        return self.predict_full(image, config).labels

    def predict_batch(self, images: list, config: InferenceConfig | None = None) -> list[np.ndarray]:
        arrays = [Segmenter._as_array(im) for im in images]
        return _labels_grouped(arrays, self.members(config), config, self.device)

    def overlay(self, image, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        return overlay(Segmenter._as_array(image), mask, self.classes.colors, alpha)


def save_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write class indices as an 8-bit PNG (16-bit when there are more than 256 classes), atomically."""
    if mask.max(initial=0) < 256:
        save_png(path, mask.astype(np.uint8))
        return
    with atomic_path(path) as tmp:
        Image.fromarray(mask.astype(np.uint16)).save(tmp, format="PNG")


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Write a ``.npy`` array atomically (never pickled: object arrays are refused)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)


def heatmap(values: np.ndarray, vmin: float, vmax: float, cmap: str = "magma") -> np.ndarray:
    """``(H, W)`` floats -> ``(H, W, 3)`` uint8 colours of a matplotlib colour map over [vmin, vmax]."""
    from matplotlib import colormaps

    lut = (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
    scaled = (np.asarray(values, dtype=np.float32) - vmin) / max(vmax - vmin, 1e-12)
    return lut[np.clip(scaled * 255 + 0.5, 0, 255).astype(np.uint8)]


def load(
    run: str | Path,
    device: str = "auto",
    backend: str = "auto",
    onnx_path: str | Path | None = None,
    precision: str = "fp32",
) -> Segmenter:
    """Load a trained model from a run directory (or any folder with model.safetensors + model.json).

    ``backend``: auto, torch or onnxruntime; ``precision``: fp32 or bf16 (see :class:`Segmenter`).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, bundle = load_bundle(run, device)
    return Segmenter(model, bundle, device, backend=backend, onnx_path=onnx_path, run_dir=run, precision=precision)


def load_ensemble(
    runs: Sequence[str | Path], device: str = "auto", backend: str = "auto", precision: str = "fp32"
) -> Segmenter | Ensemble:
    """Load one run (a :class:`Segmenter`) or several (an :class:`Ensemble`; same class list required)."""
    segs = [load(r, device, backend, precision=precision) for r in runs]
    return segs[0] if len(segs) == 1 else Ensemble(segs, [str(r) for r in runs])


def is_run_dir(path: str | Path) -> bool:
    """A folder holding a trained bundle (model.json + model.safetensors)."""
    p = Path(path)
    return p.is_dir() and (p / "model.json").is_file() and (p / "model.safetensors").is_file()


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


MANIFEST = "predict.json"


def _outputs_for(out: Path, stem: str, probs: bool, uncertainty: bool, uncertainty_npy: bool, mc: bool) -> list[Path]:
    """Every file written for one input; the mask comes last (it marks the input as done)."""
    paths = [out / "overlays" / f"{stem}.png"]
    if probs:
        paths.append(out / "probs" / f"{stem}.npy")
    if uncertainty:
        kinds = ["confidence", "entropy"] + (["variance"] if mc else [])
        paths += [out / "uncertainty" / f"{stem}_{k}.png" for k in kinds]
        if uncertainty_npy:
            paths += [out / "uncertainty" / f"{stem}_{k}.npy" for k in kinds]
    paths.append(out / "masks" / f"{stem}.png")
    return paths


def _decode(path: Path) -> np.ndarray:
    return read_image(path)


def predict_files(
    segmenter: Segmenter | Ensemble,
    inputs: list[str | Path],
    out: str | Path,
    alpha: float = 0.5,
    progress: bool = True,
    config: InferenceConfig | None = None,
    postprocess_config: PostprocessConfig | None = None,
    probs: bool = False,
    uncertainty: bool = False,
    uncertainty_npy: bool = False,
    overwrite: bool = False,
    workers: int | None = None,
) -> dict:
    """Predict every input and write ``OUT/masks/<stem>.png`` (class indices) and ``OUT/overlays/<stem>.png``.

    Optional: ``OUT/probs/<stem>.npy`` ((C, H, W) float32 probabilities), ``OUT/uncertainty/
    <stem>_{confidence,entropy[,variance]}.png`` heat maps (and ``.npy`` float arrays with
    ``uncertainty_npy``). Images are decoded by ``workers`` threads while the model runs, and
    outputs are encoded in the background. Resumable: ``OUT/predict.json`` records the models
    and settings; an input whose files all exist is skipped when the settings match, and a
    folder holding predictions with other settings is refused unless ``overwrite``.

    Returns ``{"written": n, "skipped": n, "failed": [(path, reason), ...], "out": OUT}``: an
    unreadable input is listed and skipped, the others are still predicted.
    """
    from tqdm.auto import tqdm

    config = config or InferenceConfig()
    pp = postprocess_config or PostprocessConfig()
    files = collect_inputs(inputs)
    out = Path(out)
    mc = bool(config.mc_dropout)
    segmenter.members(config)  # fail now (e.g. MC dropout without dropout), not per image
    manifest = {
        "models": segmenter.fingerprint,
        "precision": segmenter.precision,
        "classes": segmenter.classes.names,
        "inference": config.to_dict(),
        "postprocess": pp.to_dict(),
        "alpha": alpha,
        "outputs": {"probs": probs, "uncertainty": uncertainty, "uncertainty_npy": uncertainty_npy},
    }
    mpath = out / MANIFEST
    if mpath.is_file() and not overwrite:
        try:
            previous = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = None
        if previous != manifest:
            raise PixelwiseError(
                f"{out} holds predictions made with another model or other settings ({MANIFEST}); "
                "use another --out, or --overwrite to redo them"
            )
    elif not mpath.is_file() and not overwrite and (out / "masks").is_dir() and any((out / "masks").iterdir()):
        raise PixelwiseError(f"{out}/masks already holds masks of unknown origin; use another --out, or --overwrite")
    write_json(mpath, manifest)

    todo, skipped = [], 0
    for f in files:
        targets = _outputs_for(out, f.stem, probs, uncertainty, uncertainty_npy, mc)
        if not overwrite and all(t.is_file() for t in targets):
            skipped += 1
        else:
            todo.append(f)

    workers = workers or min(4, os.cpu_count() or 1)
    written, failed = 0, []
    colors = segmenter.classes.colors
    log_c = float(np.log(max(segmenter.num_classes, 2)))

    def write(f: Path, img: np.ndarray, pred: Prediction, labels: np.ndarray) -> None:
        stem = f.stem
        save_png(out / "overlays" / f"{stem}.png", overlay(img, labels, colors, alpha))
        if probs:
            save_npy(out / "probs" / f"{stem}.npy", pred.probs)
        if uncertainty:
            maps = {"confidence": (pred.confidence, 0.0, 1.0), "entropy": (pred.entropy, 0.0, log_c)}
            if mc and pred.variance is not None:
                maps["variance"] = (pred.variance, 0.0, 0.25)  # 0.25: the largest variance of a [0, 1] value
            for kind, (values, lo, hi) in maps.items():
                save_png(out / "uncertainty" / f"{stem}_{kind}.png", heatmap(values, lo, hi))
                if uncertainty_npy:
                    save_npy(out / "uncertainty" / f"{stem}_{kind}.npy", values.astype(np.float32))
        save_mask(out / "masks" / f"{stem}.png", labels)

    bar = tqdm(total=len(todo), desc="predict", unit="img", disable=not progress)
    if skipped:
        bar.set_postfix(already_done=skipped)
    with (
        ThreadPoolExecutor(workers, thread_name_prefix="decode") as decoders,
        ThreadPoolExecutor(1, thread_name_prefix="write") as writer,
    ):
        queue: deque = deque()
        pending_writes: deque = deque()
        it = iter(todo)

        def refill() -> None:
            # Bounded read-ahead: decoded images waiting for the model stay few.
            while len(queue) < 2 * workers:
                f = next(it, None)
                if f is None:
                    return
                queue.append((f, decoders.submit(_decode, f)))

        refill()
        while queue:
            f, fut = queue.popleft()
            refill()
            try:
                img = fut.result()
            except PixelwiseError as e:
                failed.append((str(f), str(e)))
                bar.update(1)
                continue
            pred = segmenter.predict_full(img, config)
            labels = postprocess(pred.probs, img, pp) if pp.active else pred.labels
            pending_writes.append(writer.submit(write, f, img, pred, labels))
            while len(pending_writes) > 2:
                pending_writes.popleft().result()  # re-raises a write error (disk full, ...)
            written += 1
            bar.update(1)
        while pending_writes:
            pending_writes.popleft().result()
    bar.close()
    return {"written": written, "skipped": skipped, "failed": failed, "out": str(out)}
