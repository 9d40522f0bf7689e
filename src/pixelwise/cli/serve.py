"""``pixelwise serve``: serve a trained model (or an ensemble) over HTTP."""

from __future__ import annotations

import argparse

from ..errors import PixelwiseError
from .arguments import positive_int
from .config_flags import add_old_spelling
from .inference_flags import add_inference_flags, inference_options


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "serve",
        help="serve a trained model (or an ensemble) over HTTP: JSON/PNG API and a web page",
        description="Serve RUN at http://HOST:PORT/: a web page at /, POST /predict (image upload -> "
        "mask PNG, overlay PNG or JSON areas), GET /model, GET /health, schema at "
        "/openapi.json. The model is loaded once; several runs are served as an ensemble. "
        "Every prediction runs with the inference options given, as `pixelwise predict` does.",
        usage="pixelwise serve RUN [RUN ...] [options]",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (model.safetensors + model.json)")
    _add_server_flags(p.add_argument_group("server"))
    add_inference_flags(p)
    return p


def _add_server_flags(s) -> None:
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default %(default)s: this machine only; 0.0.0.0 = every interface)",
    )
    s.add_argument("--port", type=int, default=8000, help="TCP port, 0 = any free one (default %(default)s)")
    threads = s.add_argument(
        "--model-threads",
        type=positive_int,
        default=1,
        help="threads running the model at once, sharing one loaded copy (default %(default)s)",
    )
    add_old_spelling(s, "--workers", threads)
    s.add_argument(
        "--token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' on every endpoint but /health and the page "
        "(default: the PIXELWISE_TOKEN environment variable, if set)",
    )
    s.add_argument(
        "--max-upload-mb", type=float, default=20.0, help="largest image file accepted (default %(default)s MB)"
    )
    pixels = s.add_argument(
        "--max-upload-pixels",
        type=positive_int,
        default=4096 * 4096,
        metavar="PIXELS",
        help="largest width x height accepted, checked before decoding (default %(default)s)",
    )
    add_old_spelling(s, "--max-pixels", pixels)
    s.add_argument(
        "--max-pending",
        type=positive_int,
        default=64,
        help="predictions in flight before new requests get 503 (default %(default)s)",
    )
    s.add_argument(
        "--max-connections",
        type=positive_int,
        default=256,
        help="open connections before new requests get 503 (default %(default)s)",
    )
    s.add_argument("--access-log", action="store_true", help="print one line per request")


def run(args) -> int:
    """Serve as ``args`` says, until interrupted."""
    import os

    from ..serve import ServeConfig, serve

    if args.max_upload_mb <= 0:
        raise PixelwiseError("--max-upload-mb must be more than 0")
    token = args.token if args.token is not None else os.environ.get("PIXELWISE_TOKEN") or None
    if token is not None and not token.strip():
        raise PixelwiseError("--token must not be empty")
    config = ServeConfig(
        host=args.host,
        port=args.port,
        model_threads=args.model_threads,
        token=token,
        max_upload_bytes=int(args.max_upload_mb * 1_000_000),
        max_upload_pixels=args.max_upload_pixels,
        max_pending=args.max_pending,
        max_connections=args.max_connections,
        device=args.device,
        access_log=args.access_log,
    )
    inference, postprocess = inference_options(args)
    serve(
        args.runs[0] if len(args.runs) == 1 else args.runs,
        config,
        inference=inference,
        postprocess=postprocess,
        backend=args.backend,
        precision=args.precision,
        onnx_path=args.onnx_path,
    )
    return 0
