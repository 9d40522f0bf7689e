"""Backends: the ways one trained network runs, each as an inference *member* (see
:class:`pixelwise.predict.engine.Member`): ``(N, 3, h, w)`` [0, 1] images in, ``(N, C, h, w)``
logits out.

* :class:`TorchMember`: the PyTorch model (channels-last, inference mode, optional bf16 autocast,
  optional Monte-Carlo dropout).
* :class:`OnnxMember`: an ONNX Runtime session of the graph built by :func:`onnx_bytes` (the same
  graph ``pixelwise export`` writes to ``RUN/model.onnx``).
* :class:`ModelBackends`: one model's members and the choice between them (``auto``, ``torch``,
  ``onnxruntime``), made once, on first use.

The ONNX graph takes ``image``: ``(N, 3, H, W)`` float32 RGB in [0, 1] (N, H and W free; the input
normalisation is inside the graph) and returns ``logits``: ``(N, C, H, W)`` float32, or for instance
and panoptic models ``(N, C + 3, H, W)`` (class logits, centre logit, dy, dx; the grouping into
objects runs after the network, in Python). A file
written by ``pixelwise export`` carries a fingerprint of the weights it was made from
(``pixelwise.weights``), so a file of another model is refused, and a hash of the tensors in its
graph (``pixelwise.graph``), so a file whose tensors were changed afterwards is refused too; on
first use its logits are also compared with the PyTorch model's on a fixed random image, which
catches any other change to the graph.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..bundle import Bundle
from ..errors import PixelwiseError, short_message
from ..instances import EXTRA_CHANNELS

BACKENDS = ("auto", "torch", "onnxruntime")
# fp32: exact; bf16: PyTorch autocast to bfloat16 (fast on GPUs and on CPUs with AMX or AVX512-BF16;
# probabilities differ from fp32 by up to about 1e-2).
PRECISIONS = ("fp32", "bf16")
META_KEY = "pixelwise.meta"
FINGERPRINT_KEY = "pixelwise.weights"
GRAPH_KEY = "pixelwise.graph"
# The first-use check of an ONNX file against PyTorch: logits of a seeded random image of this
# size, allowed to differ by at most max(PARITY_ATOL, PARITY_RTOL * largest |logit|).
PARITY_SHAPE = (1, 3, 48, 56)
PARITY_ATOL, PARITY_RTOL = 1e-2, 1e-3


def extra_channels_of(bundle: Bundle) -> int:
    """Output channels of the bundle's network besides the C class logits: 0 (semantic) or 3 (centre, dy, dx)."""
    cfg = bundle.model
    return int(getattr(cfg, "out_channels", cfg.num_classes)) - cfg.num_classes


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every tensor of the state dict (names, dtypes, shapes, bytes); 16 hex digits."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def graph_fingerprint(proto) -> str:
    """SHA-256 over every tensor stored in an ONNX graph (initializers and Constant nodes, with names,
    types and shapes); 16 hex digits. Changes whenever any stored weight changes."""
    from onnx import numpy_helper

    tensors = [(t.name, t) for t in proto.graph.initializer]
    for node in proto.graph.node:
        if node.op_type == "Constant":
            tensors += [(f"{node.output[0]}:{a.name}", a.t) for a in node.attribute if a.HasField("t")]
    h = hashlib.sha256()
    for name, t in sorted(tensors, key=lambda item: item[0]):
        arr = numpy_helper.to_array(t)
        h.update(f"{name}|{arr.dtype}|{arr.shape}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _quiet_stderr():
    """Send what native code writes to file descriptor 2 to nowhere (the ONNX exporter prints the
    whole graph there when it fails; the reason is in the exception)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


# -- PyTorch ------------------------------------------------------------------------------------


class TorchMember:
    """The PyTorch model as an inference member: [0, 1] images in, logits out.

    Runs in inference mode with the channels-last memory layout (faster convolutions on CPU
    and GPU, same results within float rounding). ``stochastic=True`` turns the dropout layers
    on for that call only (Monte-Carlo dropout); batch norm stays in evaluation mode.
    ``bf16=True`` runs the network under bfloat16 autocast and returns float32 logits.
    ``extra_channels``: outputs after the ``num_classes`` class logits (3 for instance models).
    ``max_side``: the model's working resolution (the bundle's ``input.max_side``; 0 = native size).
    :meth:`logits` runs the network on what it is given; the engine resizes images to the working
    resolution before and the outputs back after.
    """

    def __init__(
        self,
        model: nn.Module,
        mean,
        std,
        device: torch.device,
        num_classes: int,
        bf16: bool = False,
        extra_channels: int = 0,
        max_side: int = 0,
    ):
        self.model = model
        self.device = device
        self.num_classes = num_classes
        self.extra_channels = extra_channels
        self.max_side = max_side
        self.bf16 = bf16
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
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


# -- the exportable graph -----------------------------------------------------------------------


class ExportableModel(nn.Module):
    """``(N, 3, H, W)`` [0, 1] images -> ``(N, C + E, H, W)`` outputs (every channel the network gives),
    with shape arithmetic a tracer follows.

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


def exportable(model: nn.Module, bundle: Bundle) -> ExportableModel:
    """The model with its input normalisation, on the CPU in evaluation mode, ready to trace."""
    norm = bundle.normalization
    return ExportableModel(model, norm.mean, norm.std).to("cpu").eval()


def onnx_bytes(model: nn.Module, bundle: Bundle, opset: int = 17) -> bytes:
    """The model as an in-memory ONNX graph with dynamic batch, height and width."""
    cfg = bundle.model
    return graph_bytes(exportable(model, bundle), f"{cfg.arch}/{cfg.encoder}", opset)


def graph_bytes(wrapped: ExportableModel, name: str, opset: int = 17) -> bytes:
    """``wrapped`` as an in-memory ONNX graph with dynamic batch, height and width; ``name`` (arch/encoder)
    goes into the one-line error when it cannot be exported."""
    buf = io.BytesIO()
    sample = torch.rand(1, 3, 67, 93)
    with warnings.catch_warnings(), torch.no_grad(), _quiet_stderr():
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
            raise PixelwiseError(
                f"cannot export {name} to ONNX ({short_message(e, 150, with_type=True)}); "
                "use --backend torch or --format torchscript"
            ) from None
    return buf.getvalue()


# -- ONNX Runtime -------------------------------------------------------------------------------


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
            f"{name}: ONNX Runtime cannot load it ({short_message(e, 120, with_type=True)}); "
            "re-export it with `pixelwise export RUN --format onnx`"
        ) from None


def onnx_extra_channels(session, num_classes: int) -> int | None:
    """Channels besides the class logits that an ONNX file gives: from its output shape, else from the
    model description in its metadata; None when neither says."""
    out_shape = session.get_outputs()[0].shape
    if len(out_shape) == 4 and isinstance(out_shape[1], int):
        return out_shape[1] - num_classes
    try:
        model = json.loads(session.get_modelmeta().custom_metadata_map[META_KEY])["model"]
        return 0 if model.get("task", "semantic") == "semantic" else EXTRA_CHANNELS
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def check_onnx_matches(session, path: str | Path, fingerprint: str, num_classes: int, extra_channels: int = 0) -> None:
    """Refuse an ONNX file that was not exported from these weights (or not by pixelwise), or whose
    stored tensors were changed after the export, or whose outputs are not the ``num_classes +
    extra_channels`` channels of the run (C class logits, plus centre, dy, dx for instance models)."""
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
    _check_graph_tensors(path, props.get(GRAPH_KEY))
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != "image":
        raise PixelwiseError(f"{path}: expected one input named 'image'; re-export the run")
    extra = onnx_extra_channels(session, num_classes)
    if extra is not None and extra != extra_channels:
        want = num_classes + extra_channels
        raise PixelwiseError(
            f"{path}: gives {num_classes + extra} output channels, the run's model {want} "
            f"({num_classes} classes{' + centre, dy, dx' if extra_channels else ''}); re-export the run"
        )


def _check_graph_tensors(path: str | Path, recorded: str | None) -> None:
    """Compare the hash of the tensors in the file's graph with the one recorded at export."""
    import onnx

    redo = "re-export with `pixelwise export RUN --format onnx`"
    if recorded is None:
        raise PixelwiseError(f"{path}: made by an older pixelwise (no {GRAPH_KEY} metadata); {redo}")
    try:
        actual = graph_fingerprint(onnx.load(str(path)))
    except Exception as e:  # a file ONNX Runtime loaded but onnx cannot parse is not ours
        raise PixelwiseError(
            f"{path}: cannot read its graph ({short_message(e, 100, with_type=True)}); {redo}"
        ) from None
    if actual != recorded:
        raise PixelwiseError(
            f"{path}: its weights were changed after the export (graph tensors {actual}, exported as {recorded}); {redo}"
        )


def check_onnx_parity(onnx_member, torch_member, path: str | Path) -> float:
    """Largest |logit difference| of the ONNX file and the PyTorch model on a seeded random image;
    a PixelwiseError when it is over the tolerance (the file computes something else)."""
    x = torch.rand(PARITY_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = torch_member.logits(x).float().cpu()
        got = onnx_member.logits(x).float().cpu()
    if got.shape != ref.shape:
        raise PixelwiseError(
            f"{path}: returns logits of shape {tuple(got.shape)}, the run {tuple(ref.shape)}; re-export it"
        )
    diff = float((got - ref).abs().max())
    tolerance = max(PARITY_ATOL, PARITY_RTOL * float(ref.abs().max()))
    if not np.isfinite(diff) or diff > tolerance:
        raise PixelwiseError(
            f"{path}: its logits differ from the run's model.safetensors by {diff:.3g} (allowed {tolerance:.3g}): "
            "the file was changed after the export; re-export with `pixelwise export RUN --format onnx`"
        )
    return diff


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
    from; without it everything runs on ``session``. ``max_side``: the model's working resolution,
    as for :class:`TorchMember` (the engine resizes, so the sessions see working-size images).
    """

    STATIC_SIZES = 4

    def __init__(
        self,
        session,
        num_classes: int,
        source: str | Path | bytes | None = None,
        threads: int = 0,
        extra_channels: int = 0,
        max_side: int = 0,
    ):
        self.session = session
        self.num_classes = num_classes
        self.extra_channels = extra_channels
        self.max_side = max_side
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


# -- choosing a backend -------------------------------------------------------------------------


class ModelBackends:
    """One model's inference members and the choice of backend, resolved once on first use.

    ``backend``: ``auto`` (ONNX Runtime on the CPU when it is installed and the model exports,
    PyTorch otherwise, on GPUs and with bf16), ``torch`` or ``onnxruntime`` (``onnx_path``, else
    ``RUN/model.onnx`` from ``pixelwise export``, else the model exported in memory).
    Monte-Carlo dropout always runs the PyTorch model. Thread-safe.
    """

    def __init__(
        self,
        model: nn.Module,
        bundle: Bundle,
        device: torch.device,
        backend: str = "auto",
        precision: str = "fp32",
        onnx_path: str | Path | None = None,
        run_dir: str | Path | None = None,
    ):
        if backend not in BACKENDS:
            raise PixelwiseError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise PixelwiseError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if precision == "bf16" and (backend == "onnxruntime" or onnx_path):
            raise PixelwiseError("bf16 runs the PyTorch model; use --backend torch or auto with --precision bf16")
        self.model, self.bundle, self.device = model, bundle, device
        self.backend, self.precision = backend, precision
        self.onnx_path = Path(onnx_path) if onnx_path else None
        self.run_dir = Path(run_dir) if run_dir else None
        norm = bundle.normalization
        self.extra_channels = extra_channels_of(bundle)
        self.max_side = bundle.input.max_side
        self.torch = TorchMember(
            model,
            norm.mean,
            norm.std,
            device,
            bundle.classes.num_classes,
            bf16=precision == "bf16",
            extra_channels=self.extra_channels,
            max_side=bundle.input.max_side,
        )
        self.onnx: OnnxMember | None = None
        self.active: str | None = None  # "torch" or "onnxruntime" once resolved
        self._fingerprint: str | None = None
        self._lock = threading.Lock()

    @property
    def fingerprint(self) -> str:
        """Hash of the weights (also stored in exported ONNX files)."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    def plain(self) -> TorchMember | OnnxMember:
        """The member deterministic inference runs through (resolves the backend on the first call)."""
        if self.active is None:
            with self._lock:
                if self.active is None:
                    self._resolve()
        return self.onnx if self.active == "onnxruntime" else self.torch  # type: ignore[return-value]

    def stochastic(self) -> TorchMember:
        """The member for Monte-Carlo dropout: the PyTorch model, which must have dropout."""
        if self.backend == "onnxruntime":
            raise PixelwiseError("MC dropout needs the PyTorch model; use --backend torch (or auto)")
        if not self.torch.has_dropout:
            cfg = self.bundle.model
            raise PixelwiseError(
                f"MC dropout needs a model with dropout; {cfg.arch}/{cfg.encoder} was trained without "
                "(train with --dropout 0.1, or leave --mc-dropout off)"
            )
        return self.torch

    def _resolve(self) -> None:
        want = self.backend
        if want == "auto" and ((self.device.type != "cpu" and self.onnx_path is None) or self.precision == "bf16"):
            want = "torch"
        if want == "torch":
            self.active = "torch"
            return
        try:
            self.onnx = self._load_onnx(strict=want == "onnxruntime")
        except PixelwiseError as e:
            if want == "onnxruntime" or self.onnx_path is not None:
                raise
            warnings.warn(f"ONNX Runtime not used ({e}); predicting with PyTorch", stacklevel=4)
            self.active = "torch"
            return
        self.active = "onnxruntime"

    def _load_onnx(self, strict: bool) -> OnnxMember:
        num_classes = self.bundle.classes.num_classes
        path = self.onnx_path
        if path is None and self.run_dir is not None and (self.run_dir / "model.onnx").is_file():
            path = self.run_dir / "model.onnx"
        if path is not None:
            if not path.is_file():
                raise PixelwiseError(f"{path}: no such ONNX file; export one with `pixelwise export RUN --format onnx`")
            session = onnx_session(path, self.device)
            try:
                check_onnx_matches(session, path, self.fingerprint, num_classes, self.extra_channels)
                member = OnnxMember(
                    session, num_classes, source=path, extra_channels=self.extra_channels, max_side=self.max_side
                )
                check_onnx_parity(member, self.torch, path)
                return member
            except PixelwiseError as e:
                if strict or self.onnx_path is not None:
                    raise
                # auto with a stale or changed RUN/model.onnx: ignore it and export the current weights.
                warnings.warn(f"{e}; not used: exporting the run's weights in memory instead", stacklevel=5)
        graph = onnx_bytes(self.model.to(memory_format=torch.contiguous_format).cpu(), self.bundle)
        session = onnx_session(graph, self.device)
        self.model.to(self.device).to(memory_format=torch.channels_last)
        return OnnxMember(
            session, num_classes, source=graph, extra_channels=self.extra_channels, max_side=self.max_side
        )
