"""Prediction of files and folders: masks, overlays, probabilities, uncertainty maps and objects, resumable.

>>> predict_files(load_predictor("runs/demo"), ["photos/"], "out")
{'written': 12, 'skipped': 0, 'failed': [], 'out': 'out'}

Images are decoded by a few threads while the model runs, and the outputs are encoded by a
background thread. ``OUT/predict.json`` records the models and every option; a second run into
the same folder with the same settings skips the inputs whose files all exist.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import instances as objects
from ..data import IMAGE_EXTENSIONS, read_image
from ..data.types import DEFAULT_MAX_PIXELS
from ..errors import PixelwiseError
from ..fileio import prepare_output_dir, write_json, write_mask_png, write_npy, write_png
from ..postprocess import PostprocessConfig
from ..viz import heatmap_with_colorbar
from ..viz import overlay as class_overlay
from .engine import InferenceConfig, Prediction
from .predictor import BaseSegmenter, Predictor, as_predictor

MANIFEST = "predict.json"
# The folders predict writes into OUT, and the name of an atomic write's temporary file in them.
OUTPUT_FOLDERS = ("masks", "overlays", "probs", "uncertainty", "instances", "panoptic")
# Object ids are stored in 16-bit PNGs.
MAX_OBJECT_ID = 65535
_LEFTOVER = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")
DEFAULT_OUT = "predictions"


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


@dataclass(frozen=True)
class Outputs:
    """Which files are written per input besides the mask and the overlay."""

    probs: bool = False
    uncertainty: bool = False
    uncertainty_npy: bool = False
    instances: bool = False
    panoptic: bool = False

    @property
    def need_probabilities(self) -> bool:
        return self.probs or self.uncertainty


class OutputWriter:
    """Writes every file of one input into ``out``; the mask comes last (it marks the input as done)."""

    def __init__(self, out: Path, predictor: Predictor, outputs: Outputs, alpha: float, manifest: dict | None = None):
        self.out, self.outputs, self.alpha = out, outputs, alpha
        # Written before the first output, so a run that fails before that leaves nothing behind.
        self.manifest = manifest
        self.predictor = predictor
        self.colors = predictor.classes.colors
        self.log_c = float(np.log(max(predictor.num_classes, 2)))
        self.mc = bool(predictor.inference.mc_dropout)
        self.names = list(predictor.classes.names)

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
        if o.instances:
            paths += [out / "instances" / f"{stem}.json", out / "instances" / f"{stem}.png"]
        if o.panoptic:
            paths += [out / "panoptic" / f"{stem}.json", out / "panoptic" / f"{stem}.png"]
        return paths + [out / "masks" / f"{stem}.png"]

    def done(self, stem: str) -> bool:
        return all(p.is_file() for p in self.paths(stem))

    def __call__(self, stem: str, image: np.ndarray, labels: np.ndarray, pred: Prediction | None, found=None) -> None:
        """Write the files of one input; ``found``: its ObjectResult when objects are on."""
        out = self.out
        if self.manifest is not None:
            write_json(out / MANIFEST, self.manifest)
            self.manifest = None
        if found is not None:
            base = self._stuff_overlay(image, found.panoptic) if self.outputs.panoptic else image
            overlay = objects.instance_overlay(base, found.instances, self.alpha)
        else:
            overlay = self.predictor.overlay(image, labels, self.alpha, legend=True)
        write_png(out / "overlays" / f"{stem}.png", overlay)
        if pred is not None and self.outputs.probs:
            write_npy(out / "probs" / f"{stem}.npy", pred.probs)
        if pred is not None and self.outputs.uncertainty:
            self._uncertainty(stem, pred)
        if found is not None:
            self._objects(stem, found)
        write_mask_png(out / "masks" / f"{stem}.png", labels, colors=self.colors)

    def _stuff_overlay(self, image: np.ndarray, panoptic) -> np.ndarray:
        """The image with the panoptic map's stuff regions in their class colours (class 0 left clear)."""
        stuff = np.full(panoptic.ids.shape, 255, dtype=np.int64)  # 255: never painted by class_overlay
        for seg in panoptic.segments:
            if not seg.isthing:
                stuff[panoptic.ids == seg.id] = seg.category
        return class_overlay(image, stuff, self.colors, self.alpha)

    def _objects(self, stem: str, found) -> None:
        """instances/<stem>.png (16-bit ids, 0 = none) and .json; panoptic/<stem>.png and .json."""
        out, names = self.out, self.names
        if self.outputs.instances:
            write_json(out / "instances" / f"{stem}.json", objects.instances_json(found.instances, names))
            write_png(out / "instances" / f"{stem}.png", id_png_array(found.instances.ids, stem))
        if self.outputs.panoptic:
            png_name = f"{stem}.png"
            write_json(out / "panoptic" / f"{stem}.json", objects.panoptic_json(found.panoptic, png_name, names))
            write_png(out / "panoptic" / png_name, objects.panoptic_png(found.panoptic))

    def _uncertainty(self, stem: str, pred: Prediction) -> None:
        maps = {
            "confidence": (pred.confidence, 0.0, 1.0, "confidence (top probability)"),
            "entropy": (pred.entropy, 0.0, self.log_c, "entropy (nats)"),
        }
        if self.mc and pred.variance is not None:
            # 0.25: the largest variance of a value in [0, 1]
            maps["variance"] = (pred.variance, 0.0, 0.25, "MC dropout variance")
        for kind, (values, lo, hi, label) in maps.items():
            write_png(self.out / "uncertainty" / f"{stem}_{kind}.png", heatmap_with_colorbar(values, lo, hi, label))
            if self.outputs.uncertainty_npy:
                write_npy(self.out / "uncertainty" / f"{stem}_{kind}.npy", values.astype(np.float32))


def id_png_array(ids: np.ndarray, stem: str = "") -> np.ndarray:
    """``(H, W)`` object ids as the uint16 array of a 16-bit PNG (0 = no object)."""
    top = int(ids.max()) if ids.size else 0
    if top > MAX_OBJECT_ID or (ids.size and int(ids.min()) < 0):
        raise PixelwiseError(f"{stem}: object ids must be 0..{MAX_OBJECT_ID} for a 16-bit PNG, got up to {top}")
    return ids.astype(np.uint16)


def manifest_for(predictor: Predictor, outputs: Outputs, alpha: float) -> dict:
    """What ``OUT/predict.json`` records: the weights and every setting the outputs depend on."""
    manifest = {
        "models": predictor.fingerprint,
        "precision": predictor.precision,
        "classes": predictor.classes.names,
        "inference": predictor.inference.to_dict(),
        "postprocess": predictor.postprocess.to_dict(),
        "alpha": alpha,
        "outputs": asdict(outputs),
    }
    max_side = predictor.bundle.input.max_side
    if max_side:  # the working resolution (folders of native-size models keep the manifest they had)
        manifest["max_side"] = max_side
    if outputs.instances:
        # Only with objects on: folders of semantic runs keep the manifest they always had.
        manifest["objects"] = predictor.describe().get("instances")
    else:
        del manifest["outputs"]["instances"], manifest["outputs"]["panoptic"]
    return manifest


def objects_on(predictor) -> bool:
    """Whether ``predictor`` splits its labels into objects (False for predictors without objects)."""
    return bool(getattr(predictor, "objects_enabled", False))


def wants_panoptic(predictor, panoptic: bool = False) -> bool:
    """Panoptic outputs: asked for, or a panoptic model, or stuff labels from another run."""
    if not objects_on(predictor):
        return False
    described = predictor.describe().get("instances") or {}
    return bool(panoptic or predictor.task == "panoptic" or described.get("stuff_from"))


def load_object_predictor(runs, stuff_run: str | Path | None = None, **options) -> Predictor:
    """:func:`~pixelwise.predict.load_predictor` of ``runs`` with ``options`` (its keywords, with
    ``instances`` passed only when given), and ``stuff_run``, a semantic run whose labels give the
    stuff classes of the panoptic output (see ``Predictor.stuff_from``)."""
    from .predictor import load_predictor

    predictor = load_predictor(runs, **options)
    chosen = options.get("instances")
    if chosen is not None and chosen.things and not objects_on(predictor):
        raise PixelwiseError(
            f"--things {','.join(chosen.things)}: objects are off for this {predictor.task} model; "
            "add --instances components to split its labels into objects"
        )
    if stuff_run is None:
        return predictor
    if not objects_on(predictor):
        raise PixelwiseError(
            f"--stuff-run {stuff_run}: the model gives no objects; use an instance model or --instances components"
        )
    keep = {k: options[k] for k in ("device", "backend", "precision", "inference") if k in options}
    predictor.stuff_from(load_predictor([stuff_run], **keep))
    return predictor


def _previous_manifest(out: Path) -> dict | None:
    try:
        previous = json.loads((out / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return previous if isinstance(previous, dict) else None


def _foreign_outputs(out: Path) -> str | None:
    """The first output folder of ``out`` holding files when ``out`` has no manifest (None: none)."""
    for name in OUTPUT_FOLDERS:
        folder = out / name
        if folder.is_dir() and any(not _LEFTOVER.match(f.name) for f in folder.iterdir()):
            return name
    return None


def check_manifest(out: Path, manifest: dict, overwrite: bool) -> None:
    """Refuse a folder holding predictions of another model or other settings, or files pixelwise did
    not write in its output folders (unless ``overwrite``)."""
    if overwrite:
        return
    if (out / MANIFEST).is_file():
        if _previous_manifest(out) != manifest:
            raise PixelwiseError(
                f"{out} holds predictions made with another model or other settings ({MANIFEST}); "
                "use another --out, or --overwrite to redo them"
            )
    elif (name := _foreign_outputs(out)) is not None:
        raise PixelwiseError(f"{out}/{name} already holds files of unknown origin; use another --out, or --overwrite")


def default_out(manifest: dict, base: str | Path = DEFAULT_OUT) -> Path:
    """Where predictions go without ``--out``: ``predictions/`` in the current folder, unless it holds
    other predictions or other files; then the first free or matching ``predictions-2/``, ``-3/``, ..."""
    base = Path(base)
    for n in range(1, 10_000):
        out = base if n == 1 else base.with_name(f"{base.name}-{n}")
        if not out.exists():
            return out
        if not out.is_dir():
            continue
        if (out / MANIFEST).is_file():
            if _previous_manifest(out) == manifest:
                return out
        elif not any(out.iterdir()):
            return out
    raise PixelwiseError(f"no free folder name {base}-N; give --out")


def remove_leftovers(out: Path) -> int:
    """Remove the hidden temporary files a killed run left in ``out`` and its output folders."""
    removed = 0
    for folder in (out, *(out / name for name in OUTPUT_FOLDERS)):
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            if _LEFTOVER.match(f.name) and f.is_file():
                try:
                    f.unlink()
                    removed += 1
                except OSError:
                    pass
    return removed


def _decoder(max_pixels: int) -> Callable[[Path], np.ndarray]:
    def decode(path: Path) -> np.ndarray:
        return read_image(path, max_pixels)

    return decode


def _label(predictor: Predictor, image: np.ndarray, full: bool) -> tuple[np.ndarray, Prediction | None]:
    """Post-processed labels, and the Prediction when ``full`` (probabilities are written)."""
    if full:
        return predictor.run(image)
    return predictor.predict(image), None


def _label_objects(predictor: Predictor, image: np.ndarray, full: bool) -> tuple:
    """The ObjectResult's labels (the ones written), its Prediction when ``full``, and the result."""
    result = predictor.run_objects(image)
    return result.labels, (result.prediction if full else None), result


def _pipeline(
    predictor: Predictor, files: list[Path], write: Callable, full: bool, threads: int, tick, decode, objects_on_=False
) -> tuple:
    """Decode ``files`` on ``threads`` threads, label them here, write them on a background thread.

    ``full``: probabilities are needed; ``objects_on_``: objects too. Returns ``(written, failed)``; ``failed`` lists
    ``(path, reason)`` of unreadable inputs.
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
                queue.append((f, decoders.submit(decode, f)))

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
            if objects_on_:
                labels, pred, found = _label_objects(predictor, img, full)
            else:
                (labels, pred), found = _label(predictor, img, full), None
            pending_writes.append(writer.submit(write, f.stem, img, labels, pred, found))
            while len(pending_writes) > 2:
                pending_writes.popleft().result()  # re-raises a write error (disk full, ...)
            written += 1
            tick()
        while pending_writes:
            pending_writes.popleft().result()
    return written, failed


# long: the signature and the docstring are most of it; the steps read in order
def predict_files(
    model: Predictor | BaseSegmenter,
    inputs: list[str | Path],
    out: str | Path | None = None,
    alpha: float = 0.5,
    progress: bool = True,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    probs: bool = False,
    uncertainty: bool = False,
    uncertainty_npy: bool = False,
    overwrite: bool = False,
    decode_threads: int | None = None,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    panoptic: bool = False,
) -> dict:
    """Predict every input and write ``OUT/masks/<stem>.png`` (class indices) and ``OUT/overlays/<stem>.png``.

    ``model``: a :class:`Predictor` (its inference options and post-processing apply) or a
    Segmenter / Ensemble; ``inference`` and ``postprocess``, when given, replace the
    predictor's (the same keywords as :func:`pixelwise.evaluate` and
    :func:`pixelwise.serve.create_app`). Masks are palette PNGs: the values are the class
    indices, the palette the class colours. Optional: ``OUT/probs/<stem>.npy`` ((C, H, W) float32
    probabilities), ``OUT/uncertainty/<stem>_{confidence,entropy[,variance]}.png`` heat maps with a
    colour bar (and ``.npy`` float arrays of the maps with ``uncertainty_npy``). ``alpha``: overlay
    opacity in [0, 1]. An image of more than ``max_image_pixels`` pixels is refused before it is
    decoded (listed in ``failed``). Images are decoded by ``decode_threads`` threads (default: up
    to 4) while the model runs.

    Objects (when ``predictor.objects_enabled``): ``OUT/instances/<stem>.png`` (16-bit object ids,
    0 = none), ``OUT/instances/<stem>.json`` (one entry per object: class, score, box, area, RLE
    mask), and the overlay shows one colour per object, outlined. With ``panoptic``, a panoptic
    model or stuff labels from another run, also ``OUT/panoptic/<stem>.png`` (COCO panoptic RGB,
    id = R + 256 G + 256^2 B) and ``OUT/panoptic/<stem>.json`` (its ``segments_info``).

    ``out`` defaults to ``predictions/`` in the current folder (``predictions-2/``, ... when that
    one holds other predictions or other files: see :func:`default_out`). Resumable:
    ``OUT/predict.json`` records the models and settings, written with the first output; an
    input whose files all exist is skipped when the settings match, and a folder holding
    predictions with other settings, or files pixelwise did not write, is refused unless
    ``overwrite``. Temporary files left by a killed run are removed.

    Returns ``{"written": n, "skipped": n, "failed": [(path, reason), ...], "out": OUT}``: an
    unreadable input is listed and skipped, the others are still predicted.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise PixelwiseError(f"alpha is the overlay opacity and must be in [0, 1], got {alpha!r}")
    if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, int) or max_image_pixels < 1:
        raise PixelwiseError(f"max_image_pixels must be a whole number >= 1, got {max_image_pixels!r}")
    predictor = as_predictor(model, inference, postprocess)
    files = collect_inputs(inputs)
    predictor.members()  # fail now (e.g. MC dropout without dropout), not per image
    found = objects_on(predictor)
    if panoptic and not found:
        raise PixelwiseError(
            "--panoptic needs objects: an instance or panoptic model, or --instances components --things NAME"
        )
    outputs = Outputs(probs, uncertainty, uncertainty_npy, found, wants_panoptic(predictor, panoptic))
    manifest = manifest_for(predictor, outputs, alpha)
    out = default_out(manifest) if out is None else Path(out)
    prepare_output_dir(out, "--out")
    check_manifest(out, manifest, overwrite)
    remove_leftovers(out)
    # Images above the limit are refused by our own check with a one-line reason; Pillow's
    # warning for them would only repeat it, as a raw warning.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

    write = OutputWriter(out, predictor, outputs, float(alpha), manifest)
    todo = [f for f in files if overwrite or not write.done(f.stem)]
    skipped = len(files) - len(todo)
    threads = decode_threads or min(4, os.cpu_count() or 1)
    bar = tqdm(total=len(todo), desc="predict", unit="img", disable=not progress)
    if skipped:
        bar.set_postfix(already_done=skipped)
    tick = lambda: bar.update(1)  # noqa: E731
    full, decode = outputs.need_probabilities, _decoder(max_image_pixels)
    written, failed = _pipeline(predictor, todo, write, full, threads, tick, decode, found)
    bar.close()
    return {"written": written, "skipped": skipped, "failed": failed, "out": str(out)}
