"""Export a trained model to ONNX or TorchScript, with a parity check against PyTorch.

The exported graph takes ``image``: ``(N, 3, H, W)`` float32 RGB in [0, 1] (N, H and W free;
the input normalisation is inside the graph) and returns ``logits``: ``(N, C, H, W)`` float32.
Any H and W work: the graph pads to the network's stride and crops back, as
:class:`pixelwise.models.SegmentationModel` does.

An ONNX file carries the bundle's metadata (``pixelwise.meta``: classes, normalisation,
architecture) and a fingerprint of the weights it was made from (``pixelwise.weights``), so
``pixelwise predict --backend onnxruntime`` can refuse a file exported from another model.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .bundle import Bundle, load_bundle
from .errors import PixelwiseError
from .fileio import atomic_path

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
DEFAULT_TOLERANCE = 1e-3
# Sizes the parity check runs: odd sizes (padding), a batch of 2, and a single pixel.
PARITY_SIZES = ((1, 67, 93), (2, 96, 128), (1, 1, 1))
META_KEY = "pixelwise.meta"
FINGERPRINT_KEY = "pixelwise.weights"


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every tensor of the state dict (names, dtypes, shapes, bytes); 16 hex digits."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


class ExportableModel(nn.Module):
    """``(N, 3, H, W)`` [0, 1] images -> ``(N, C, H, W)`` logits, with shape arithmetic a tracer follows.

    The padding is always emitted (possibly of zero pixels) rather than chosen by a Python
    ``if``, so a traced graph stays correct for every height and width.
    """

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.net = model.net
        self.stride = int(model.stride)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2], image.shape[-1]
        s = self.stride
        x = (image - self.mean) / self.std
        x = F.pad(x, (0, (s - w % s) % s, 0, (s - h % s) % s))
        out = self.net(x)
        if isinstance(out, dict):
            out = out["out"]
        return out[:, :, :h, :w]


def _exportable(model: nn.Module, bundle: Bundle) -> ExportableModel:
    norm = bundle.normalization
    return ExportableModel(model, norm.mean, norm.std).to("cpu").eval()


def onnx_bytes(model: nn.Module, bundle: Bundle, opset: int = 17) -> bytes:
    """The model as an in-memory ONNX graph with dynamic batch, height and width."""
    wrapped = _exportable(model, bundle)
    buf = io.BytesIO()
    sample = torch.rand(1, 3, 67, 93)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                wrapped,
                (sample,),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={
                    "image": {0: "batch", 2: "height", 3: "width"},
                    "logits": {0: "batch", 2: "height", 3: "width"},
                },
            )
        except Exception as e:
            cfg = bundle.model
            raise PixelwiseError(
                f"cannot export {cfg.arch}/{cfg.encoder} to ONNX "
                f"({e.__class__.__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}); "
                "use --backend torch or --format torchscript"
            ) from None
    return buf.getvalue()


def _metadata(model: nn.Module, bundle: Bundle) -> dict[str, str]:
    full = bundle.to_dict()
    keep = {k: full[k] for k in ("classes", "normalization", "model")}
    return {META_KEY: json.dumps(keep), FINGERPRINT_KEY: weights_fingerprint(model)}


def onnx_session(
    model_source: str | Path | bytes,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    fixed: dict[str, int] | None = None,
):
    """An ONNX Runtime session (CUDA provider when asked for and available, else CPU).

    ``threads`` defaults to PyTorch's intra-op thread count, so both backends use the same cores.
    ``fixed`` gives free input dimensions (``batch``, ``height``, ``width``) fixed values.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise PixelwiseError("onnxruntime is not installed; `pip install onnxruntime` or use --backend torch") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    for name, value in (fixed or {}).items():
        opts.add_free_dimension_override_by_name(name, int(value))
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    source = model_source if isinstance(model_source, bytes) else str(model_source)
    try:
        return ort.InferenceSession(source, opts, providers=providers)
    except Exception as e:
        name = "the exported model" if isinstance(model_source, bytes) else str(model_source)
        raise PixelwiseError(
            f"{name}: ONNX Runtime cannot load it ({e.__class__.__name__}: {str(e).splitlines()[0][:120]}); "
            "re-export it with `pixelwise export RUN --format onnx`"
        ) from None


def check_onnx_matches(session, path: str | Path, fingerprint: str, num_classes: int) -> None:
    """Refuse an ONNX file that was not exported from these weights (or not by pixelwise)."""
    props = session.get_modelmeta().custom_metadata_map
    if FINGERPRINT_KEY not in props:
        raise PixelwiseError(
            f"{path}: not an ONNX file written by `pixelwise export` (no {FINGERPRINT_KEY} metadata); "
            "export the run with `pixelwise export RUN --format onnx`"
        )
    if props[FINGERPRINT_KEY] != fingerprint:
        raise PixelwiseError(
            f"{path}: exported from another model (weights {props[FINGERPRINT_KEY]}, this run has {fingerprint}); "
            "re-export with `pixelwise export RUN --format onnx`"
        )
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != "image":
        raise PixelwiseError(f"{path}: expected one input named 'image'; re-export the run")
    out_shape = session.get_outputs()[0].shape
    if len(out_shape) == 4 and isinstance(out_shape[1], int) and out_shape[1] != num_classes:
        raise PixelwiseError(f"{path}: predicts {out_shape[1]} classes, the run has {num_classes}; re-export the run")


class OnnxMember:
    """An ONNX Runtime session as an inference member: [0, 1] images in, logits out.

    A batch of several images on the CPU runs as single images on ``threads`` parallel
    single-threaded runs (ONNX Runtime releases the GIL): on a few cores that keeps every core
    busy with its own image instead of splitting each layer between cores. One image runs with
    all threads, which has the lower latency.

    Image sizes seen more than once get sessions of their own whose batch, height and width are
    fixed (``add_free_dimension_override_by_name``): ONNX Runtime then plans memory and picks
    kernels for that exact shape, 3-10% more images per second at 480x360 on 2 cores than the
    free-shape graph, for about 0.15 s to make each. A folder of same-size photos or the tiles of
    a large image reuse one size; at most ``STATIC_SIZES`` sizes keep sessions (least recently
    used dropped). ``source`` (the ONNX file's path or bytes) is what the extra sessions are made
    from; without it everything runs on ``session``.
    """

    STATIC_SIZES = 4

    def __init__(self, session, num_classes: int, source: str | Path | bytes | None = None, threads: int = 0):
        self.session = session
        self.num_classes = num_classes
        self.source = source
        self.threads = threads or torch.get_num_threads()
        # Extra sessions (per-image threads, fixed sizes) only on the CPU and where they can be made.
        self._can_split = source is not None and session.get_providers()[0] == "CPUExecutionProvider"
        self._single = None
        self._pool = None
        self._seen: dict[tuple[int, int], int] = {}
        self._static: OrderedDict[tuple[int, int, int], object] = OrderedDict()
        self._lock = threading.Lock()

    def _pool_and_single(self):
        """The thread pool for batches and the single-threaded free-shape session (made on first use)."""
        with self._lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._single = onnx_session(self.source, "cpu", threads=1)
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="pixelwise-onnx")
        return self._pool, self._single

    def _session_for(self, height: int, width: int, threads: int, free):
        """A fixed-size session for one ``height x width`` image on ``threads`` threads, or ``free``.

        The fixed-size session is made the second time a size is seen, so one-off sizes do not pay
        for it.
        """
        key = (threads, height, width)
        with self._lock:
            if key in self._static:
                self._static.move_to_end(key)
                return self._static[key]
            seen = self._seen[key[1:]] = self._seen.get(key[1:], 0) + 1
            if seen < 2:
                return free
            session = onnx_session(
                self.source, "cpu", threads=threads, fixed={"batch": 1, "height": height, "width": width}
            )
            self._static[key] = session
            while len(self._static) > 2 * self.STATIC_SIZES:  # two thread counts per size
                self._static.popitem(last=False)
            if len(self._seen) > 64 * self.STATIC_SIZES:
                self._seen.clear()
            return session

    def logits(self, x01: torch.Tensor, stochastic: bool = False) -> torch.Tensor:
        if stochastic:
            raise PixelwiseError("MC dropout needs the PyTorch model; use --backend torch (or auto)")
        x = np.ascontiguousarray(x01.detach().to("cpu", torch.float32).numpy())
        n, _, h, w = x.shape
        if not self._can_split:
            out = self.session.run(["logits"], {"image": x})[0]
        elif n > 1 and self.threads > 1:
            pool, single = self._pool_and_single()
            session = self._session_for(h, w, 1, single)
            out = np.concatenate(
                list(pool.map(lambda i: session.run(["logits"], {"image": x[i : i + 1]})[0], range(n)))
            )
        elif n == 1:
            out = self._session_for(h, w, self.threads, self.session).run(["logits"], {"image": x})[0]
        else:
            out = self.session.run(["logits"], {"image": x})[0]
        return torch.from_numpy(out).to(x01.device)


def _parity_inputs(sizes) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(n, 3, h, w, generator=g) for n, h, w in sizes]


def parity(reference: nn.Module, run_exported, sizes=PARITY_SIZES) -> float:
    """Largest ``|exported - PyTorch|`` over the logits of random images of ``sizes`` ((N, H, W) each)."""
    worst = 0.0
    with torch.inference_mode():
        for x in _parity_inputs(sizes):
            ref = reference(x).numpy()
            got = np.asarray(run_exported(x))
            if got.shape != ref.shape:
                raise PixelwiseError(
                    f"exported model returned shape {got.shape} for input {tuple(x.shape)}, "
                    f"PyTorch {ref.shape}; the export is broken"
                )
            worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def export_model(
    run: str | Path,
    fmt: str = "onnx",
    out: str | Path | None = None,
    opset: int = 17,
    tolerance: float = DEFAULT_TOLERANCE,
    sizes=PARITY_SIZES,
) -> dict:
    """Export the model of ``run`` and check it against PyTorch on random inputs of several sizes.

    Writes ``RUN/model.onnx`` or ``RUN/model.torchscript.pt`` (or ``out``) only if the largest
    absolute logit difference is within ``tolerance``; otherwise raises :class:`PixelwiseError`
    and leaves no file. Returns ``{"path", "format", "max_abs_diff", "sizes", "fingerprint"}``.
    """

    if fmt not in FORMATS:
        raise PixelwiseError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model, bundle = load_bundle(run, "cpu")
    path = Path(out) if out else Path(run) / FORMATS[fmt]
    reference = _exportable(model, bundle)
    fingerprint = weights_fingerprint(model)
    with atomic_path(path) as tmp:
        if fmt == "onnx":
            import onnx

            proto = onnx.load_from_string(onnx_bytes(model, bundle, opset))
            for k, v in _metadata(model, bundle).items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = k, v
            onnx.save(proto, str(tmp))
            session = onnx_session(tmp, "cpu")
            diff = parity(reference, lambda x: session.run(["logits"], {"image": x.numpy()})[0], sizes)
        else:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(reference, torch.rand(1, 3, 67, 93), check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files={"pixelwise.json": json.dumps(_metadata(model, bundle))})
                reloaded = torch.jit.load(str(tmp), map_location="cpu")
            diff = parity(reference, lambda x: reloaded(x).numpy(), sizes)
        if not np.isfinite(diff) or diff > tolerance:
            raise PixelwiseError(
                f"{fmt} export of {run} differs from PyTorch by {diff:.3g} (tolerance {tolerance:g}); "
                "the file was not written"
            )
    return {
        "path": str(path),
        "format": fmt,
        "max_abs_diff": diff,
        "sizes": [list(s) for s in sizes],
        "fingerprint": fingerprint,
    }
