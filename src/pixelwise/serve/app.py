"""The HTTP app: a FastAPI application around one :class:`~pixelwise.predict.Predictor`.

>>> from . import ServeConfig, create_app
>>> app = create_app("runs/demo", ServeConfig(model_threads=2, token="s3cret"))
>>> app = create_app(["runs/a", "runs/b"], inference=InferenceConfig(hflip=True))   # an ensemble

Endpoints: ``GET /health`` (always public), ``GET /model`` (what is served: the models, backend,
precision, inference options, post-processing, limits), ``POST /predict`` (an image as the
multipart field ``file``; ``?format=json|mask|overlay``, and for a model giving objects
``instances|panoptic|panoptic_json``), the web page at ``/`` and FastAPI's own
``/openapi.json`` and ``/docs``.

The event loop never runs model code: PNGs are encoded in the thread pool of the ASGI framework,
and uploads are decoded and labelled in a pool of ``model_threads`` threads of its own. An upload
waits for the model as its compressed file, decoded only when its turn comes. At most
``max_pending`` predictions holding at most ``max_queued_bytes`` of uploads are in flight; past
that a request gets 503 at once instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from .. import instances as objects
from ..fileio import mask_png_bytes, png_bytes
from ..postprocess import PostprocessConfig
from ..predict.batch import load_object_predictor, objects_on
from ..predict.engine import InferenceConfig
from ..predict.predictor import BaseSegmenter, Predictor, as_predictor
from ..version import __version__
from .guard import GuardRules, RequestGuard, token_matches
from .uploads import UploadError, decode_upload

STATIC_DIR = Path(__file__).parent / "static"
# Room for the multipart framing around the file: boundaries, part headers, a short filename.
MULTIPART_OVERHEAD = 64 * 1024
# The page and its files: a browser needs them without a token; they hold no data of the model.
PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


# Upper bounds of ServeConfig's limits: each far above what one machine serves, low enough that a
# typo (an extra zero or three) is refused instead of leaving memory or time per request unbounded.
LIMIT_MAXIMA = {
    "model_threads": 256,
    "max_upload_bytes": 2_000_000_000,
    "max_upload_pixels": 1 << 28,  # 16384 x 16384
    "max_pending": 4096,
    "max_queued_bytes": 64_000_000_000,
    "max_connections": 16384,
    "max_open_connections": 65535,
}
MAX_TIMEOUT_S = 3600.0


@dataclass
class ServeConfig:
    """How the server runs. Every limit applies to each request.

    Attributes:
        host: interface to listen on; 127.0.0.1 (this machine only) unless you mean otherwise.
        port: TCP port; 0 picks a free one.
        model_threads: threads that run the model at the same time (the model is loaded once and shared).
        token: when set, every endpoint but ``/health`` and the web page needs
            ``Authorization: Bearer <token>``.
        max_upload_bytes: largest accepted image file, in bytes (default 20 MB); a larger upload is
            refused from its Content-Length, or cut off while it streams in.
        max_upload_pixels: largest accepted width x height, read from the image header before decoding.
        max_pending: predictions in flight (running or waiting for the model) before new ones get 503.
        max_queued_bytes: bytes of uploaded files held by predictions in flight before new ones get
            503. Uploads wait for the model as their compressed files and are decoded only when
            their turn comes, so this bounds the memory of queued work.
        max_connections: requests in progress (being received, waiting or answered; ``/health``
            not counted) before new ones get 503; bounds the uploads being received at once. A
            socket that has not sent a complete request header holds no slot.
        header_timeout: seconds a connection may take to send a request's headers (from its
            opening, or from its previous answer) before it is closed (408 if it sent part of one).
        body_timeout: seconds a request's body may take to arrive after its headers (408, closed).
        max_open_connections: open sockets at most; past that the one that has been waiting
            longest for a request is closed to make room.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` (used when run directories are given).
        access_log: print one line per request.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    model_threads: int = 1
    token: str | None = None
    max_upload_bytes: int = 20_000_000
    max_upload_pixels: int = 4096 * 4096
    max_pending: int = 16
    max_queued_bytes: int = 200_000_000
    max_connections: int = 64
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_open_connections: int = 1024
    device: str = "auto"
    access_log: bool = False

    def __post_init__(self) -> None:
        for name, most in LIMIT_MAXIMA.items():
            if not 1 <= getattr(self, name) <= most:
                raise ValueError(f"ServeConfig.{name} must be 1 to {most}, got {getattr(self, name)}")
        if not 1 <= self.port + 1 <= 65536:
            raise ValueError(f"ServeConfig.port must be 0..65535, got {self.port}")
        for name in ("header_timeout", "body_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
                raise ValueError(
                    f"ServeConfig.{name} must be above 0 and at most {MAX_TIMEOUT_S:g} seconds, got {value}"
                )
        if self.token is not None and not self.token.strip():
            raise ValueError("ServeConfig.token must not be empty")


class OutputFormat(str, Enum):
    json = "json"
    mask = "mask"
    overlay = "overlay"
    instances = "instances"
    panoptic = "panoptic"
    panoptic_json = "panoptic_json"


# The formats that need the objects of the served model.
OBJECT_FORMATS = (OutputFormat.instances, OutputFormat.panoptic, OutputFormat.panoptic_json)


class Health(BaseModel):
    status: str = Field(description="'ok' while the server is up")
    version: str = Field(description="pixelwise version")


class ClassEntry(BaseModel):
    index: int = Field(description="value of this class in the index mask")
    name: str
    color: list[int] = Field(description="[r, g, b], 0-255, as drawn in overlays")


class ModelInfo(BaseModel):
    architecture: dict[str, Any] = Field(description="architecture, encoder and their arguments (first model)")
    num_classes: int
    classes: list[ClassEntry]
    ignore_index: int
    metrics: dict[str, Any] = Field(description="validation metrics of the saved epoch (fractions in [0, 1])")
    training: dict[str, Any] = Field(description="epoch and best epoch of the saved weights")
    normalization: dict[str, Any]
    versions: dict[str, Any] = Field(description="library versions the model was saved with")
    limits: dict[str, int] = Field(description="max_upload_bytes and max_upload_pixels of this server")
    members: list[dict[str, Any]] = Field(
        description="the models served (several: an ensemble, probabilities averaged): run, arch, encoder, "
        "weights fingerprint, backend in use"
    )
    backend: str = Field(description="backend asked for: auto, torch or onnxruntime")
    precision: str = Field(description="fp32 or bf16")
    device: str
    inference: dict[str, Any] = Field(description="inference options: tiling, flips, scales, MC dropout")
    postprocess: dict[str, Any] = Field(description="post-processing of the labels")
    task: str = Field("semantic", description="semantic, instance or panoptic")
    things: list[str] = Field([], description="the classes split into objects (format=instances answers them)")
    objects: bool = Field(False, description="whether format=instances and format=panoptic are answered")
    instances: dict[str, Any] | None = Field(None, description="how labels are split into objects")


class ClassArea(ClassEntry):
    pixels: int = Field(description="pixels predicted as this class")
    share: float = Field(description="pixels / all pixels of the image, in [0, 1]")


class Timing(BaseModel):
    decode_ms: float
    inference_ms: float
    total_ms: float = Field(description="from the upload being received to the answer, waiting included")


class Prediction(BaseModel):
    width: int
    height: int
    classes: list[ClassArea]
    timing: Timing


class ErrorBody(BaseModel):
    detail: str = Field(description="what was wrong and what to do")


class InferenceService:
    """The Predictor, its thread pool, and the predictions in flight with the bytes they hold."""

    def __init__(self, predictor: Predictor, model_threads: int, max_pending: int, max_queued_bytes: int = 1 << 62):
        self.predictor = predictor
        self.max_pending = max_pending
        self.max_queued_bytes = max_queued_bytes
        # Changed only on the event loop thread, so no lock is needed.
        self.pending = 0
        self.queued_bytes = 0
        self.pool = ThreadPoolExecutor(max_workers=model_threads, thread_name_prefix="pixelwise-model")

    def segment(self, image: np.ndarray) -> np.ndarray:
        """The one place the server calls the model: ``(H, W, 3)`` uint8 -> ``(H, W)`` int64 classes."""
        return self.predictor.predict(image)

    def decode_and_segment(self, data: bytes, max_pixels: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Decode an upload and label it, on a model thread: ``(image, mask, decode_ms, inference_ms)``.

        Decoding here, when the model is free, keeps the uploads that wait for it compressed.
        """
        t0 = time.perf_counter()
        image = decode_upload(data, max_pixels)
        t1 = time.perf_counter()
        mask = self.segment(image)
        return image, mask, (t1 - t0) * 1000.0, (time.perf_counter() - t1) * 1000.0

    def decode_and_find(self, data: bytes, max_pixels: int) -> tuple:
        """Decode an upload and find its objects, on a model thread: ``(image, ObjectResult, decode_ms,
        inference_ms)``."""
        t0 = time.perf_counter()
        image = decode_upload(data, max_pixels)
        t1 = time.perf_counter()
        found = self.predictor.run_objects(image)
        return image, found, (t1 - t0) * 1000.0, (time.perf_counter() - t1) * 1000.0

    def busy(self, size: int) -> str | None:
        """Why a new upload of ``size`` bytes cannot be queued now (None: it can)."""
        if self.pending >= self.max_pending:
            return f"busy: {self.pending} predictions in flight; retry shortly"
        if self.pending and self.queued_bytes + size > self.max_queued_bytes:
            return f"busy: {self.queued_bytes / 1e6:.1f} MB of uploads waiting for the model; retry shortly"
        return None


def _finite(value):
    """JSON has no NaN/Infinity: replace them by null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def model_info(predictor: Predictor, config: ServeConfig) -> dict:
    """What ``GET /model`` answers: the (first) bundle's metadata and what the Predictor runs."""
    bundle = predictor.bundle
    classes = predictor.classes
    training = bundle.training
    return _finite(
        {
            "architecture": bundle.model.to_dict(),
            "num_classes": classes.num_classes,
            "classes": [
                {"index": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(zip(classes.names, classes.colors))
            ],
            "ignore_index": classes.ignore_index,
            "metrics": dict(bundle.metrics),
            "training": {k: getattr(training, k) for k in ("epoch", "best_epoch") if getattr(training, k) is not None},
            "normalization": bundle.normalization.to_dict(),
            "versions": dict(bundle.versions),
            "limits": {"max_upload_bytes": config.max_upload_bytes, "max_upload_pixels": config.max_upload_pixels},
            **predictor.describe(),
            **_object_info(predictor),
        }
    )


def _object_info(predictor: Predictor) -> dict:
    """``task``, ``things`` (names) and ``objects`` of ``GET /model``."""
    if not objects_on(predictor):
        return {"task": getattr(predictor, "task", "semantic"), "things": [], "objects": False}
    names = predictor.classes.names
    return {"task": predictor.task, "things": [names[i] for i in predictor.things], "objects": True}


def class_areas(mask: np.ndarray, predictor: Predictor) -> list[dict]:
    """Per-class pixel counts and area shares of a predicted ``(H, W)`` mask."""
    classes = predictor.classes
    counts = np.bincount(mask.ravel(), minlength=classes.num_classes)
    total = max(int(mask.size), 1)
    return [
        {
            "index": i,
            "name": classes.names[i],
            "color": list(classes.colors[i]),
            "pixels": int(counts[i]),
            "share": float(counts[i]) / total,
        }
        for i in range(classes.num_classes)
    ]


def serving_predictor(
    model: Predictor | BaseSegmenter | str | Path | Sequence[str | Path],
    config: ServeConfig,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    onnx_path: str | Path | None = None,
    instances=None,
    stuff_run: str | Path | None = None,
) -> Predictor:
    """The Predictor to serve: ``model`` itself, or loaded (once) from one run or several (an ensemble).

    ``inference`` / ``postprocess`` given with a loaded model replace its own; ``backend``,
    ``precision``, ``onnx_path``, ``instances`` (an :class:`~pixelwise.predict.InstanceOptions`),
    ``stuff_run`` and ``config.device`` apply when runs are loaded (see
    :func:`~pixelwise.predict.load_predictor`).
    """
    if isinstance(model, (Predictor, BaseSegmenter)):
        return as_predictor(model, inference, postprocess)
    runs = [model] if isinstance(model, (str, Path)) else list(model)
    extra = {} if instances is None else {"instances": instances}
    options = dict(device=config.device, backend=backend, precision=precision, onnx_path=onnx_path)
    return load_object_predictor(
        runs, stuff_run=stuff_run, inference=inference, postprocess=postprocess, **options, **extra
    )


# Module-level: FastAPI resolves the (postponed) annotations below in this module's namespace.
_bearer = HTTPBearer(auto_error=False, description="the server's --token")
_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 413, 415, 503)}
_PREDICT_DESCRIPTION = (
    "Send the image as the multipart field `file`. `format=json` (default) answers per-class "
    "pixel counts and area shares; `format=mask` a PNG of class indices, the image's own size "
    "(a palette PNG in the class colours; 16-bit grey past 256 classes); `format=overlay` a PNG "
    "of the image with the class colours blended in at `alpha` (background clear, regions "
    "outlined) and a legend of the classes found below it. With a model that gives objects (an instance or "
    "panoptic model, or a server started with `--instances components --things NAME`): `format=instances` "
    "answers JSON `{width, height, instances: [{id, class, class_name, score, box [x, y, w, h], area, rle}]}` "
    "(`rle`: COCO run-length mask); `format=panoptic` a COCO panoptic PNG (id = R + 256 G + 256^2 B); "
    "`format=panoptic_json` JSON `{width, height, segments_info, png}` (`png`: that PNG in base64). "
    "PNG answers carry the timings in `Server-Timing`. The labels "
    "are those of the served Predictor: its inference options and post-processing apply."
)


def _token_dependency(token: str | None) -> list:
    """The FastAPI dependencies that require the bearer token (none without a token)."""
    if not token:
        return []

    def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        # The guard middleware has refused a bad token already, before the body was read; this
        # repeats the check for direct users of the app and declares the scheme in the schema.
        header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
        if not token_matches(header, token):
            raise HTTPException(
                401,
                "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return [Depends(require_token)]


def _add_service_routes(app: FastAPI, info: dict, protected: list) -> None:
    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/health", response_model=Health, tags=["service"], summary="Liveness check (no token needed)")
    async def health() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get(
        "/model",
        response_model=ModelInfo,
        tags=["service"],
        dependencies=protected,
        summary="What is served: models, classes and colours, validation metrics, inference options",
        responses={401: {"model": ErrorBody}},
    )
    async def get_model() -> dict:
        return info


async def _labels_of_upload(service: InferenceService, config: ServeConfig, file: UploadFile, find=False) -> tuple:
    """Read and check an upload, then decode and label it on the model threads.

    Returns ``(image, mask, decode_ms, inference_ms)`` (with ``find``: the ObjectResult in place of
    the mask); raises :class:`UploadError` for a bad upload.
    """
    data = await file.read(config.max_upload_bytes + 1)
    if len(data) > config.max_upload_bytes:
        raise UploadError(413, f"upload too large: the limit is {config.max_upload_bytes} bytes")
    if not data:
        raise UploadError(400, "the uploaded file is empty; send an image file (PNG, JPEG, ...)")
    loop = asyncio.get_running_loop()
    work = service.decode_and_find if find else service.decode_and_segment
    return await loop.run_in_executor(service.pool, work, data, config.max_upload_pixels)


async def _answer(service, image, mask, how: tuple[OutputFormat, float, bool], timing: tuple[float, float, float]):
    """The response for a labelled image: JSON areas, or a mask / overlay PNG with Server-Timing.

    ``how``: the output format, the overlay's alpha, and whether a mask PNG gets the class palette.
    """
    predictor = service.predictor
    format, alpha, palette = how
    decode_ms, inference_ms, t0 = timing
    if format is OutputFormat.json:
        return {
            "width": int(mask.shape[1]),
            "height": int(mask.shape[0]),
            "classes": class_areas(mask, predictor),
            "timing": {
                "decode_ms": decode_ms,
                "inference_ms": inference_ms,
                "total_ms": (time.perf_counter() - t0) * 1000.0,
            },
        }
    # Level 1: masks compress well anyway, and the server spends its time on the model, not zlib.
    if format is OutputFormat.mask:
        png = await run_in_threadpool(mask_png_bytes, mask, predictor.classes.colors if palette else None, 1)
    else:
        png = await run_in_threadpool(lambda: png_bytes(predictor.overlay(image, mask, alpha, legend=True), 1))
    total_ms = (time.perf_counter() - t0) * 1000.0
    server_timing = f"decode;dur={decode_ms:.1f}, inference;dur={inference_ms:.1f}, total;dur={total_ms:.1f}"
    return Response(
        png,
        media_type="image/png",
        headers={"Server-Timing": server_timing, "X-Image-Size": f"{mask.shape[1]}x{mask.shape[0]}"},
    )


def _object_answer(service: InferenceService, found, format: OutputFormat, timing: dict):
    """The answer of an object format: instances JSON, the panoptic PNG, or the panoptic JSON with the PNG."""
    import base64

    names = service.predictor.classes.names
    height, width = (int(n) for n in found.labels.shape)
    if format is OutputFormat.instances:
        entries = objects.instances_json(found.instances, names)
        return {"width": width, "height": height, "instances": entries, "timing": timing}
    png = png_bytes(objects.panoptic_png(found.panoptic), 1)
    if format is OutputFormat.panoptic:
        server_timing = ", ".join(f"{k.removesuffix('_ms')};dur={v:.1f}" for k, v in timing.items())
        headers = {"Server-Timing": server_timing, "X-Image-Size": f"{width}x{height}"}
        return Response(png, media_type="image/png", headers=headers)
    segments = objects.panoptic_json(found.panoptic, "upload.png", names)["segments_info"]
    body = {"width": width, "height": height, "segments_info": segments, "png": base64.b64encode(png).decode()}
    return {**body, "timing": timing}


async def _find_and_answer(service, config: ServeConfig, file: UploadFile, format: OutputFormat, t0: float):
    """Objects of an upload, answered in an object format (see :func:`_object_answer`)."""
    _image, found, decode_ms, inference_ms = await _labels_of_upload(service, config, file, find=True)
    timing = {"decode_ms": decode_ms, "inference_ms": inference_ms}
    answer = await run_in_threadpool(_object_answer, service, found, format, timing)
    if isinstance(answer, dict):
        answer["timing"]["total_ms"] = (time.perf_counter() - t0) * 1000.0
        return JSONResponse(_finite(answer))
    return answer


def _no_objects(service: InferenceService, format: OutputFormat) -> str | None:
    """Why ``format`` cannot be answered by the served model (None: it can)."""
    if format not in OBJECT_FORMATS or objects_on(service.predictor):
        return None
    return (
        f"format={format.value}: the served model gives no objects (a semantic model with no thing classes); "
        "serve an instance or panoptic model, or start the server with --instances components --things NAME"
    )


def _add_predict_route(app: FastAPI, service: InferenceService, config: ServeConfig, protected: list) -> None:
    @app.post(
        "/predict",
        tags=["predict"],
        dependencies=protected,
        response_model=Prediction,
        summary="Label every pixel of an uploaded image",
        description=_PREDICT_DESCRIPTION,
        responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}, **_ERRORS},
    )
    async def predict(
        file: Annotated[UploadFile, File(description="the image: PNG, JPEG, BMP, TIFF, WebP or GIF")],
        format: Annotated[
            OutputFormat, Query(description="json, mask, overlay; instances, panoptic, panoptic_json")
        ] = OutputFormat.json,
        alpha: Annotated[float, Query(ge=0.0, le=1.0, description="overlay opacity of the class colours")] = 0.5,
        palette: Annotated[
            bool, Query(description="format=mask: a palette PNG in the class colours (false: 8-bit grey indices)")
        ] = True,
    ):
        t0 = time.perf_counter()
        ctype = (file.content_type or "").split(";")[0].strip().lower()
        if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise HTTPException(415, f"the file was sent as {ctype!r}; send an image (image/png, image/jpeg, ...)")
        if (why := _no_objects(service, format)) is not None:
            raise HTTPException(400, why)
        size = min(file.size or 0, config.max_upload_bytes)
        reason = service.busy(size)
        if reason:
            raise HTTPException(503, reason, headers={"Retry-After": "1"})
        service.pending += 1
        service.queued_bytes += size
        try:
            if format in OBJECT_FORMATS:
                return await _find_and_answer(service, config, file, format, t0)
            image, mask, decode_ms, inference_ms = await _labels_of_upload(service, config, file)
            return await _answer(service, image, mask, (format, alpha, palette), (decode_ms, inference_ms, t0))
        finally:
            service.pending -= 1
            service.queued_bytes -= size


def _add_page_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_SECURITY_HEADERS)

    static = StaticFiles(directory=STATIC_DIR)

    async def static_with_headers(scope, receive, send):
        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                extra = [(k.lower().encode(), v.encode()) for k, v in PAGE_SECURITY_HEADERS.items()]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await static(scope, receive, send_wrapped)

    app.mount("/static", static_with_headers, name="static")


def create_app(
    model: Predictor | BaseSegmenter | str | Path | Sequence[str | Path],
    config: ServeConfig | None = None,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    onnx_path: str | Path | None = None,
    instances=None,
    stuff_run: str | Path | None = None,
) -> FastAPI:
    """Build the FastAPI app around a Predictor (see :func:`serving_predictor` for ``model``).

    ``model``: a Predictor, a Segmenter or Ensemble, or one run directory or several (an
    ensemble), loaded once on ``config.device`` with ``backend``, ``precision`` and ``onnx_path``
    (and ``instances``, ``stuff_run`` for objects); ``inference`` and ``postprocess`` are the
    options every prediction runs with. Raises
    :class:`~pixelwise.PixelwiseError` when a run cannot be loaded or the options cannot run on it.
    """
    config = config or ServeConfig()
    predictor = serving_predictor(
        model, config, inference, postprocess, backend, precision, onnx_path, instances, stuff_run
    )
    predictor.members()  # fail at start-up, not on the first request
    service = InferenceService(predictor, config.model_threads, config.max_pending, config.max_queued_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="pixelwise",
        version=__version__,
        description="Semantic segmentation: upload an image, get each pixel's class.",
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.service = service
    protected = _token_dependency(config.token)
    _add_service_routes(app, model_info(predictor, config), protected)
    _add_predict_route(app, service, config, protected)
    _add_page_routes(app)
    rules = GuardRules(
        max_body_bytes=config.max_upload_bytes + MULTIPART_OVERHEAD,
        token=config.token,
        max_requests=config.max_connections,
    )
    app.add_middleware(RequestGuard, rules=rules)
    return app
