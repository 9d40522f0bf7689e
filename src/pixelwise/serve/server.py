"""Run the app under uvicorn: in the foreground (``pixelwise serve``) or in a background thread."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ..errors import PixelwiseError
from ..postprocess import PostprocessConfig
from ..predict.engine import InferenceConfig
from ..predict.predictor import BaseSegmenter, Predictor
from .app import ServeConfig, create_app
from .connections import ConnectionLimits, guarded_protocol


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 = a free one); a PixelwiseError if it is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise PixelwiseError(
            f"cannot listen on {host!r}: unknown host ({e.strerror}); give an address such as 127.0.0.1"
        ) from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise PixelwiseError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port or --host") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(app, config: ServeConfig):
    """uvicorn on the guarded h11 protocol (request deadlines, a cap on sockets; see :mod:`.connections`).

    uvicorn's own ``limit_concurrency`` stays off: it counts sockets that never sent a request, so
    stalled clients would lock everyone out; the app bounds the requests in progress instead.
    """
    import uvicorn

    limits = ConnectionLimits(config.header_timeout, config.body_timeout, config.max_open_connections)
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            http=guarded_protocol(limits),
            lifespan="on",
            server_header=False,
            limit_concurrency=None,
            timeout_keep_alive=5,
            log_level="info" if config.access_log else "warning",
            access_log=config.access_log,
        )
    )


def _allow_open_files(count: int) -> None:
    """Raise this process's soft limit on open files to ``count`` (at most the hard limit)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count if hard == resource.RLIM_INFINITY else min(count, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass


def _what(model) -> str:
    """How the startup line names what is served."""
    if isinstance(model, (str, Path)):
        return str(model)
    if isinstance(model, (Predictor, BaseSegmenter)):
        return "model"
    runs = [str(r) for r in model]
    return runs[0] if len(runs) == 1 else f"an ensemble of {len(runs)} models ({', '.join(runs)})"


def serve(
    model: Predictor | BaseSegmenter | str | Path | Sequence[str | Path],
    config: ServeConfig | None = None,
    announce: Callable[[str], None] | None = None,
    inference: InferenceConfig | None = None,
    postprocess: PostprocessConfig | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    onnx_path: str | Path | None = None,
    instances=None,
    stuff_run: str | Path | None = None,
) -> None:
    """Load the model(s) once, listen on ``config.host:config.port`` and serve until Ctrl-C.

    ``model``, ``inference``, ``postprocess``, ``backend``, ``precision``, ``onnx_path``, ``instances``
    and ``stuff_run`` are as for
    :func:`~pixelwise.serve.create_app` (several run directories serve an ensemble).
    ``announce`` receives one line with the address once the socket is listening (default: print
    it to stdout), so ``port=0`` can be used and the chosen port read back.
    """
    config = config or ServeConfig()
    app = create_app(
        model, config, inference, postprocess, backend, precision, onnx_path, instances=instances, stuff_run=stuff_run
    )
    sock = bind_socket(config.host, config.port)
    line = f"serving {_what(model)} at {url_of(sock)}/ (page at /, API schema at /openapi.json; Ctrl-C to stop)"
    if announce is None:
        print(line, flush=True)
    else:
        announce(line)
    if not config.token and config.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"pixelwise: warning: listening on {config.host} without --token: anyone who can reach this "
            "port can use the model",
            file=sys.stderr,
            flush=True,
        )
    _allow_open_files(config.max_open_connections + 256)
    try:
        _uvicorn_server(app, config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a server is meant to stop; uvicorn has shut down cleanly by now
    finally:
        sock.close()


@contextmanager
def serve_in_background(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` under uvicorn in a daemon thread; yields its base URL; stops it on exit.

    The uvicorn settings (connection limit, access log) come from the app's ServeConfig.

    >>> with serve_in_background(create_app("runs/demo")) as url:
    ...     httpx.get(url + "/health")
    """
    sock = bind_socket(host, port)
    config = getattr(getattr(app, "state", None), "config", None) or ServeConfig()
    server = _uvicorn_server(app, replace(config, host=host, port=sock.getsockname()[1]))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="pixelwise-serve")
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
