"""``pixelwise serve``: serve a trained model over HTTP."""

from __future__ import annotations

import argparse

from ..errors import PixelwiseError
from .arguments import positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "serve",
        help="serve a trained model over HTTP: JSON/PNG API and a web page",
        description="Serve RUN at http://HOST:PORT/: a web page at /, POST /predict (image upload -> "
        "mask PNG, overlay PNG or JSON areas), GET /model, GET /health, schema at "
        "/openapi.json. The model is loaded once.",
    )
    p.add_argument("run", help="run directory (holds model.safetensors + model.json)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default %(default)s: this machine only; 0.0.0.0 = every interface)",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port, 0 = any free one (default %(default)s)")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="threads running the model at once, sharing one loaded copy (default %(default)s)",
    )
    p.add_argument(
        "--token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' on every endpoint but /health and the page "
        "(default: the PIXELWISE_TOKEN environment variable, if set)",
    )
    p.add_argument(
        "--max-upload-mb", type=float, default=20.0, help="largest image file accepted (default %(default)s MB)"
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=4096 * 4096,
        help="largest width x height accepted, checked before decoding (default %(default)s)",
    )
    p.add_argument(
        "--max-pending",
        type=positive_int,
        default=64,
        help="predictions in flight before new requests get 503 (default %(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=positive_int,
        default=256,
        help="open connections before new requests get 503 (default %(default)s)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--access-log", action="store_true", help="print one line per request")
    return p


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
        workers=args.workers,
        token=token,
        max_upload_bytes=int(args.max_upload_mb * 1_000_000),
        max_pixels=args.max_pixels,
        max_pending=args.max_pending,
        max_connections=args.max_connections,
        device=args.device,
        access_log=args.access_log,
    )
    serve(args.run, config)
    return 0
