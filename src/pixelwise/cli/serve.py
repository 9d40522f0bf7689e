"""``pixelwise serve``: serve a trained model (or an ensemble) over HTTP."""

from __future__ import annotations

import argparse
import sys
from textwrap import fill

from ..errors import PixelwiseError
from .arguments import real_number, whole_number
from .config_flags import add_old_spelling
from .inference_flags import add_inference_flags, inference_options, object_options

# The upper bounds of pixelwise.serve.app (LIMIT_MAXIMA, MAX_TIMEOUT_S) in the flags' units,
# repeated so that building the parser imports no FastAPI; a test checks they match.
MAX_MODEL_THREADS = 256
MAX_UPLOAD_MB = 2000.0
MAX_UPLOAD_PIXELS = 1 << 28
MAX_PENDING = 4096
MAX_QUEUED_MB = 64000.0
MAX_CONNECTIONS = 16384
MAX_OPEN_CONNECTIONS = 65535
MAX_TIMEOUT_S = 3600.0

MEMORY_NOTE = """\
memory with the default limits (worst case):
  uploads wait for the model as their compressed files and are decoded only when their turn
  comes, so the memory is bounded by
    queued uploads       --max-queued-mb                    200 MB
    uploads arriving     --max-connections x 1 MB in memory  64 MB (larger parts go to temporary
                                                                    files: up to 64 x 20 MB on disk)
    running predictions  --model-threads x one image of --max-upload-pixels (16.8 Mpx):
                         about 1 GB with PyTorch, 2.5 GB with ONNX Runtime (its memory pool), for
                         5 classes; about 70 MB more per further class
  on top of the loaded model (about 1 GB for a small one with PyTorch and ONNX Runtime loaded):
  about 2.3 GB (PyTorch) to 3.8 GB (ONNX Runtime) in all with --model-threads 1.

slow clients: a request's headers must arrive within --header-timeout seconds and its body
within --body-timeout seconds after them (else 408 and the connection is closed); sockets that
have not sent a whole request hold no request slot, and past --max-open-connections the one
waiting longest is closed.
"""


def port_number(text: str) -> int:
    """A TCP port: 0 (any free one) to 65535."""
    return whole_number(0, 65535)(text)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "serve",
        help="serve a trained model (or an ensemble) over HTTP: JSON/PNG API and a web page",
        description=fill(
            "Serve RUN at http://HOST:PORT/: a web page at /, POST /predict (image upload -> "
            "mask PNG, overlay PNG or JSON areas), GET /model, GET /health, schema at "
            "/openapi.json. The model is loaded once; several runs are served as an ensemble. "
            "Every prediction runs with the inference options given, as `pixelwise predict` does.",
            width=90,
        ),
        usage="pixelwise serve RUN [RUN ...] [options]",
        epilog=MEMORY_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    s.add_argument(
        "--port", type=port_number, default=8000, help="TCP port 1-65535, 0 = any free one (default %(default)s)"
    )
    threads = s.add_argument(
        "--model-threads",
        type=whole_number(1, MAX_MODEL_THREADS),
        default=1,
        help=f"threads running the model at once, sharing one loaded copy, 1 to {MAX_MODEL_THREADS} (default %(default)s)",
    )
    add_old_spelling(s, "--workers", threads)
    s.add_argument(
        "--token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' on every endpoint but /health and the page. "
        "A token given here is visible to every user of this machine in `ps`; prefer the "
        "PIXELWISE_TOKEN environment variable (used when --token is not given)",
    )
    s.add_argument(
        "--max-upload-mb",
        type=real_number(above=0, maximum=MAX_UPLOAD_MB),
        default=20.0,
        help="largest image file accepted (default %(default)s MB)",
    )
    pixels = s.add_argument(
        "--max-upload-pixels",
        type=whole_number(1, MAX_UPLOAD_PIXELS),
        default=4096 * 4096,
        metavar="PIXELS",
        help="largest width x height accepted, checked before decoding (default %(default)s)",
    )
    add_old_spelling(s, "--max-pixels", pixels)
    _add_queue_flags(s)


def _add_queue_flags(s) -> None:
    s.add_argument(
        "--max-pending",
        type=whole_number(1, MAX_PENDING),
        default=16,
        help="predictions in flight (running or waiting for the model) before new ones get 503 (default %(default)s)",
    )
    s.add_argument(
        "--max-queued-mb",
        type=real_number(above=0, maximum=MAX_QUEUED_MB),
        default=200.0,
        help="MB of uploaded files held by predictions in flight before new ones get 503 (default %(default)s)",
    )
    s.add_argument(
        "--max-connections",
        type=whole_number(1, MAX_CONNECTIONS),
        default=64,
        help="requests in progress (being received, waiting or answered; /health not counted) "
        "before new ones get 503 (default %(default)s)",
    )
    s.add_argument(
        "--header-timeout",
        type=real_number(above=0, maximum=MAX_TIMEOUT_S),
        default=10.0,
        metavar="SECONDS",
        help="time a client has to send a request's headers (default %(default)s)",
    )
    s.add_argument(
        "--body-timeout",
        type=real_number(above=0, maximum=MAX_TIMEOUT_S),
        default=60.0,
        metavar="SECONDS",
        help="time a request's body has to arrive after its headers (default %(default)s)",
    )
    s.add_argument(
        "--max-open-connections",
        type=whole_number(1, MAX_OPEN_CONNECTIONS),
        default=1024,
        help="open sockets at most; past that the one waiting longest for a request is closed (default %(default)s)",
    )
    s.add_argument("--access-log", action="store_true", help="print one line per request")


def run(args) -> int:
    """Serve as ``args`` says, until interrupted."""
    import os

    from ..serve import ServeConfig, serve

    token = args.token if args.token is not None else os.environ.get("PIXELWISE_TOKEN") or None
    if token is not None and not token.strip():
        raise PixelwiseError("--token must not be empty")
    if args.token is not None:
        print(
            "pixelwise: note: a --token on the command line is visible to other users of this machine "
            "(ps, /proc); set the PIXELWISE_TOKEN environment variable instead",
            file=sys.stderr,
            flush=True,
        )
    config = ServeConfig(
        host=args.host,
        port=args.port,
        model_threads=args.model_threads,
        token=token,
        max_upload_bytes=int(args.max_upload_mb * 1_000_000),
        max_upload_pixels=args.max_upload_pixels,
        max_pending=args.max_pending,
        max_queued_bytes=int(args.max_queued_mb * 1_000_000),
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_open_connections=args.max_open_connections,
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
        **object_options(args),
    )
    return 0
