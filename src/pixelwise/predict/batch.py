"""Prediction of files and folders: masks, overlays, probabilities and uncertainty maps, resumable.

>>> predict_files(load_predictor("runs/demo"), ["photos/"], "out")
{'written': 12, 'skipped': 0, 'failed': [], 'out': 'out'}

Images are decoded by a few threads while the model runs, and the outputs are encoded by a
background thread. ``OUT/predict.json`` records the models and every option; a second run into
the same folder with the same settings skips the inputs whose files all exist.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data import IMAGE_EXTENSIONS, read_image
from ..errors import PixelwiseError
from ..fileio import write_json, write_mask_png, write_npy, write_png
from ..postprocess import PostprocessConfig
from ..viz import overlay
from .engine import InferenceConfig, Prediction
from .predictor import BaseSegmenter, Predictor, as_predictor

MANIFEST = "predict.json"


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


def heatmap(values: np.ndarray, vmin: float, vmax: float, cmap: str = "magma") -> np.ndarray:
    """``(H, W)`` floats -> ``(H, W, 3)`` uint8 colours of a matplotlib colour map over [vmin, vmax]."""
    from matplotlib import colormaps

    lut = (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
    scaled = (np.asarray(values, dtype=np.float32) - vmin) / max(vmax - vmin, 1e-12)
    return lut[np.clip(scaled * 255 + 0.5, 0, 255).astype(np.uint8)]


@dataclass(frozen=True)
class Outputs:
    """Which files are written per input besides the mask and the overlay."""

    probs: bool = False
    uncertainty: bool = False
    uncertainty_npy: bool = False

    @property
    def need_probabilities(self) -> bool:
        return self.probs or self.uncertainty


class OutputWriter:
    """Writes every file of one input into ``out``; the mask comes last (it marks the input as done)."""

    def __init__(self, out: Path, predictor: Predictor, outputs: Outputs, alpha: float):
        self.out, self.outputs, self.alpha = out, outputs, alpha
        self.colors = predictor.classes.colors
        self.log_c = float(np.log(max(predictor.num_classes, 2)))
        self.mc = bool(predictor.inference.mc_dropout)

    def paths(self, stem: str) -> list[Path]:
        """Every file written for ``stem``, the mask last."""
        out, o = self.out, self.outputs
        paths = [out / "overlays" / f"{stem}.png"]
        if o.probs:
            paths.append(out / "probs" / f"{stem}.npy")
        if o.uncertainty:
            kinds = ["confidence", "entropy"] + (["variance"] if self.mc else [])
            paths += [out / "uncertainty" / f"{stem}_{k}.png" for k in kinds]
            if o.uncertainty_npy:
                paths += [out / "uncertainty" / f"{stem}_{k}.npy" for k in kinds]
        return paths + [out / "masks" / f"{stem}.png"]

    def done(self, stem: str) -> bool:
        return all(p.is_file() for p in self.paths(stem))

    def __call__(self, stem: str, image: np.ndarray, labels: np.ndarray, pred: Prediction | None) -> None:
        out = self.out
        write_png(out / "overlays" / f"{stem}.png", overlay(image, labels, self.colors, self.alpha))
        if pred is not None and self.outputs.probs:
            write_npy(out / "probs" / f"{stem}.npy", pred.probs)
        if pred is not None and self.outputs.uncertainty:
            self._uncertainty(stem, pred)
        write_mask_png(out / "masks" / f"{stem}.png", labels)

    def _uncertainty(self, stem: str, pred: Prediction) -> None:
        maps = {"confidence": (pred.confidence, 0.0, 1.0), "entropy": (pred.entropy, 0.0, self.log_c)}
        if self.mc and pred.variance is not None:
            maps["variance"] = (pred.variance, 0.0, 0.25)  # 0.25: the largest variance of a [0, 1] value
        for kind, (values, lo, hi) in maps.items():
            write_png(self.out / "uncertainty" / f"{stem}_{kind}.png", heatmap(values, lo, hi))
            if self.outputs.uncertainty_npy:
                write_npy(self.out / "uncertainty" / f"{stem}_{kind}.npy", values.astype(np.float32))


def manifest_for(predictor: Predictor, outputs: Outputs, alpha: float) -> dict:
    """What ``OUT/predict.json`` records: the weights and every setting the outputs depend on."""
    return {
        "models": predictor.fingerprint,
        "precision": predictor.precision,
        "classes": predictor.classes.names,
        "inference": predictor.inference.to_dict(),
        "postprocess": predictor.postprocess.to_dict(),
        "alpha": alpha,
        "outputs": asdict(outputs),
    }


def check_manifest(out: Path, manifest: dict, overwrite: bool) -> None:
    """Refuse a folder holding predictions of another model or other settings (unless ``overwrite``)."""
    mpath = out / MANIFEST
    if overwrite:
        return
    if mpath.is_file():
        try:
            previous = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = None
        if previous != manifest:
            raise PixelwiseError(
                f"{out} holds predictions made with another model or other settings ({MANIFEST}); "
                "use another --out, or --overwrite to redo them"
            )
    elif (out / "masks").is_dir() and any((out / "masks").iterdir()):
        raise PixelwiseError(f"{out}/masks already holds masks of unknown origin; use another --out, or --overwrite")


def _decode(path: Path) -> np.ndarray:
    return read_image(path)


def _label(predictor: Predictor, image: np.ndarray, full: bool) -> tuple[np.ndarray, Prediction | None]:
    """Post-processed labels, and the Prediction when ``full`` (probabilities are written)."""
    if full:
        return predictor.run(image)
    return predictor.predict(image), None


def _pipeline(predictor: Predictor, files: list[Path], write: Callable, full: bool, threads: int, tick) -> tuple:
    """Decode ``files`` on ``threads`` threads, label them here, write them on a background thread.

    Returns ``(written, failed)``; ``failed`` lists ``(path, reason)`` of unreadable inputs.
    """
    written, failed = 0, []
    with (
        ThreadPoolExecutor(threads, thread_name_prefix="decode") as decoders,
        ThreadPoolExecutor(1, thread_name_prefix="write") as writer,
    ):
        queue: deque = deque()
        pending_writes: deque = deque()
        it = iter(files)

        def refill() -> None:
            # Bounded read-ahead: decoded images waiting for the model stay few.
            while len(queue) < 2 * threads and (f := next(it, None)) is not None:
                queue.append((f, decoders.submit(_decode, f)))

        refill()
        while queue:
            f, fut = queue.popleft()
            refill()
            try:
                img = fut.result()
            except PixelwiseError as e:
                failed.append((str(f), str(e)))
                tick()
                continue
            labels, pred = _label(predictor, img, full)
            pending_writes.append(writer.submit(write, f.stem, img, labels, pred))
            while len(pending_writes) > 2:
                pending_writes.popleft().result()  # re-raises a write error (disk full, ...)
            written += 1
            tick()
        while pending_writes:
            pending_writes.popleft().result()
    return written, failed


def predict_files(
    model: Predictor | BaseSegmenter,
    inputs: list[str | Path],
    out: str | Path,
    alpha: float = 0.5,
    progress: bool = True,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    probs: bool = False,
    uncertainty: bool = False,
    uncertainty_npy: bool = False,
    overwrite: bool = False,
    decode_threads: int | None = None,
) -> dict:
    """Predict every input and write ``OUT/masks/<stem>.png`` (class indices) and ``OUT/overlays/<stem>.png``.

    ``model``: a :class:`Predictor` (its inference options and post-processing apply) or a
    Segmenter / Ensemble; ``inference`` and ``postprocess``, when given, replace the
    predictor's (the same keywords as :func:`pixelwise.evaluate` and :func:`pixelwise.serve.create_app`). Optional: ``OUT/probs/<stem>.npy`` ((C, H, W) float32 probabilities),
    ``OUT/uncertainty/<stem>_{confidence,entropy[,variance]}.png`` heat maps (and ``.npy`` float
    arrays with ``uncertainty_npy``). Images are decoded by ``decode_threads`` threads (default:
    up to 4) while the model runs. Resumable: ``OUT/predict.json`` records the models and
    settings; an input whose files all exist is skipped when the settings match, and a folder
    holding predictions with other settings is refused unless ``overwrite``.

    Returns ``{"written": n, "skipped": n, "failed": [(path, reason), ...], "out": OUT}``: an
    unreadable input is listed and skipped, the others are still predicted.
    """
    from tqdm.auto import tqdm

    predictor = as_predictor(model, inference, postprocess)
    files = collect_inputs(inputs)
    out = Path(out)
    predictor.members()  # fail now (e.g. MC dropout without dropout), not per image
    outputs = Outputs(probs, uncertainty, uncertainty_npy)
    manifest = manifest_for(predictor, outputs, alpha)
    check_manifest(out, manifest, overwrite)
    write_json(out / MANIFEST, manifest)

    write = OutputWriter(out, predictor, outputs, alpha)
    todo = [f for f in files if overwrite or not write.done(f.stem)]
    skipped = len(files) - len(todo)
    threads = decode_threads or min(4, os.cpu_count() or 1)
    bar = tqdm(total=len(todo), desc="predict", unit="img", disable=not progress)
    if skipped:
        bar.set_postfix(already_done=skipped)
    written, failed = _pipeline(predictor, todo, write, outputs.need_probabilities, threads, lambda: bar.update(1))
    bar.close()
    return {"written": written, "skipped": skipped, "failed": failed, "out": str(out)}
