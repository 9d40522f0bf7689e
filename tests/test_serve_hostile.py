"""The server against hostile clients: stalled connections, slow bodies, a flood of queued uploads."""

from __future__ import annotations

import io
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pixelwise.serve import ServeConfig, create_app, serve_in_background


@pytest.fixture(scope="module")
def segmenter(trained_run):
    from pixelwise import load

    return load(trained_run, "cpu")


def png(h=40, w=52, seed=0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _stalled_sockets(url: str, n: int, head: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(_address(url), timeout=10)
        s.sendall(head)
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket, wait: float) -> bytes | None:
    """What the server sent before closing ``s`` within ``wait`` seconds; None if it is still open."""
    s.settimeout(wait)
    got = b""
    try:
        while True:
            more = s.recv(4096)
            if not more:
                return got
            got += more
    except TimeoutError:
        return None
    except OSError:
        return got


def test_300_stalled_header_connections_do_not_take_the_server_down(segmenter):
    # Default limits: before, 256 such sockets filled uvicorn's connection limit and every
    # client got 503, /health included, until they went away.
    app = create_app(segmenter, ServeConfig())
    with serve_in_background(app) as url:
        socks = _stalled_sockets(url, 300, b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        try:
            with httpx.Client(base_url=url, timeout=10) as h:
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    r = h.get("/health")
                    times.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                r = h.post("/predict", files={"file": ("x.png", png(), "image/png")})
                assert r.status_code == 200, r.text
                assert sum(c["pixels"] for c in r.json()["classes"]) == 40 * 52
            print(
                f"/health under 300 stalled sockets: median {sorted(times)[2] * 1000:.1f} ms, max {max(times) * 1000:.1f} ms"
            )
        finally:
            for s in socks:
                s.close()


def test_stalled_headers_and_bodies_are_timed_out(segmenter):
    app = create_app(segmenter, ServeConfig(header_timeout=0.5, body_timeout=0.8))
    with serve_in_background(app) as url:
        (half_head,) = _stalled_sockets(url, 1, b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        body_head = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n--b\r\n"
        )
        (half_body,) = _stalled_sockets(url, 1, body_head)
        idle = socket.create_connection(_address(url), timeout=10)
        try:
            answer = _closed_by_server(half_head, 5)
            assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
            answer = _closed_by_server(half_body, 5)
            assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
            assert _closed_by_server(idle, 5) == b""  # a connection that never says anything is closed too
        finally:
            for s in (half_head, half_body, idle):
                s.close()
        with httpx.Client(base_url=url, timeout=10) as h:
            assert h.get("/health").status_code == 200


def test_open_connections_are_capped_by_closing_the_longest_waiting(segmenter):
    app = create_app(segmenter, ServeConfig(max_open_connections=20, header_timeout=60))
    with serve_in_background(app) as url:
        socks = _stalled_sockets(url, 30, b"GET /health HTTP/1.1\r\n")
        try:
            time.sleep(0.3)
            with httpx.Client(base_url=url, timeout=10) as h:
                assert h.get("/health").status_code == 200
            closed = [s for s in socks if _closed_by_server(s, 0.05) is not None]
            assert len(closed) >= 10
            assert socks[0] in closed and socks[-1] not in closed  # the oldest went first
        finally:
            for s in socks:
                s.close()


def test_requests_in_progress_are_bounded_but_health_is_not(segmenter):
    app = create_app(segmenter, ServeConfig(max_connections=2, body_timeout=30))
    body_head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 100000\r\n\r\n--b\r\n"
    )
    with serve_in_background(app) as url:
        socks = _stalled_sockets(url, 2, body_head)  # two uploads being received
        try:
            time.sleep(0.3)
            with httpx.Client(base_url=url, timeout=10) as h:
                assert h.get("/health").status_code == 200
                r = h.post("/predict", files={"file": ("x.png", png(), "image/png")})
                assert r.status_code == 503 and "requests in progress" in r.json()["detail"]
        finally:
            for s in socks:
                s.close()
        time.sleep(0.3)
        with httpx.Client(base_url=url, timeout=10) as h:
            assert h.post("/predict", files={"file": ("x.png", png(), "image/png")}).status_code == 200


def _hold_model(service):
    """Make the model wait until the returned event is set; returns (event, started counter)."""
    gate = threading.Event()
    real = service.segment
    started = []

    def held(image):
        started.append(1)
        gate.wait(30)
        return real(image)

    service.segment = held
    return gate, started


def test_queued_uploads_stay_compressed_and_their_bytes_are_bounded(segmenter, monkeypatch):
    # Before, every waiting request held its decoded pixels (16 clients: 1.2 -> 7.9 GB); now an
    # upload waits as its file, decoded when the model takes it, and the bytes held are bounded.
    import pixelwise.serve.app as app_module

    decoded = []
    real_decode = app_module.decode_upload
    monkeypatch.setattr(app_module, "decode_upload", lambda data, px: decoded.append(1) or real_decode(data, px))
    files = [png(64, 64, seed=i) for i in range(6)]
    size = len(files[0])
    app = create_app(segmenter, ServeConfig(max_pending=16, max_queued_bytes=int(3.5 * size)))
    gate, started = _hold_model(app.state.service)
    results: dict[int, httpx.Response] = {}
    with serve_in_background(app) as url:

        def post(i):
            with httpx.Client(base_url=url, timeout=60) as h:
                results[i] = h.post("/predict", files={"file": ("x.png", files[i], "image/png")})

        threads = [threading.Thread(target=post, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while app.state.service.pending < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.service.pending == 3 and len(started) == 1
        assert len(decoded) == 1  # the two waiting uploads are still files
        assert app.state.service.queued_bytes == 3 * size
        post(3)  # a fourth would hold more than 3.5 files' bytes
        assert results[3].status_code == 503 and "MB of uploads waiting" in results[3].json()["detail"]
        assert results[3].headers["retry-after"] == "1"
        gate.set()
        for t in threads:
            t.join()
        assert [results[i].status_code for i in range(3)] == [200, 200, 200]
        assert app.state.service.queued_bytes == 0 and app.state.service.pending == 0
        post(4)
        assert results[4].status_code == 200


def test_serve_limits_and_port_are_checked_before_loading(tmp_path, capsys):
    from pixelwise.cli import main

    for flags, words in (
        (["--port", "70000"], "--port: must be at most 65535"),
        (["--port", "-1"], "--port: must be at least 0"),
        (["--max-upload-mb", "0"], "--max-upload-mb: must be above 0"),
        (["--header-timeout", "nan"], "--header-timeout: expected a finite number"),
        (["--max-queued-mb", "-5"], "--max-queued-mb: must be above 0"),
        (["--max-queued-mb", "1e9"], "--max-queued-mb: must be at most 64000"),
        (["--max-upload-mb", "5000"], "--max-upload-mb: must be at most 2000"),
        (["--max-upload-pixels", "1000000000"], "--max-upload-pixels: must be at most 268435456"),
        (["--header-timeout", "1e6"], "--header-timeout: must be at most 3600"),
        (["--body-timeout", "86400"], "--body-timeout: must be at most 3600"),
        (["--model-threads", "1000"], "--model-threads: must be at most 256"),
        (["--max-pending", "100000"], "--max-pending: must be at most 4096"),
        (["--max-connections", "100000"], "--max-connections: must be at most 16384"),
        (["--max-open-connections", "70000"], "--max-open-connections: must be at most 65535"),
    ):
        with pytest.raises(SystemExit) as e:
            main(["serve", str(tmp_path / "no-such-run"), *flags])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
    with pytest.raises(ValueError, match="port"):
        ServeConfig(port=70000)
    with pytest.raises(ValueError, match="max_pending must be 1 to 4096"):
        ServeConfig(max_pending=10**6)
    with pytest.raises(ValueError, match="body_timeout must be above 0 and at most 3600"):
        ServeConfig(body_timeout=1e9)


def test_serve_limit_maxima_repeated_for_the_parser_match():
    import pixelwise.cli.serve as cli_serve
    from pixelwise.serve import app

    flags = {
        "model_threads": cli_serve.MAX_MODEL_THREADS,
        "max_upload_bytes": int(cli_serve.MAX_UPLOAD_MB * 1_000_000),
        "max_upload_pixels": cli_serve.MAX_UPLOAD_PIXELS,
        "max_pending": cli_serve.MAX_PENDING,
        "max_queued_bytes": int(cli_serve.MAX_QUEUED_MB * 1_000_000),
        "max_connections": cli_serve.MAX_CONNECTIONS,
        "max_open_connections": cli_serve.MAX_OPEN_CONNECTIONS,
    }
    assert flags == app.LIMIT_MAXIMA and cli_serve.MAX_TIMEOUT_S == app.MAX_TIMEOUT_S


def test_serve_help_warns_about_token_in_ps_and_states_memory(capsys):
    from pixelwise.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "visible to every user of this machine in `ps`" in out and "PIXELWISE_TOKEN" in out
    assert "memory with the default limits (worst case)" in out and "--max-queued-mb 200 MB" in out


def test_token_on_the_command_line_gets_a_note_and_the_environment_is_preferred(tmp_path, monkeypatch, capsys):
    import pixelwise.serve
    from pixelwise.cli import main

    seen = {}
    monkeypatch.setattr(pixelwise.serve, "serve", lambda model, config, **kw: seen.update(config=config))
    monkeypatch.setenv("PIXELWISE_TOKEN", "from-env")
    assert main(["serve", str(tmp_path)]) == 0
    assert seen["config"].token == "from-env" and "PIXELWISE_TOKEN" not in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--token", "s3cret"]) == 0
    err = capsys.readouterr().err
    assert seen["config"].token == "s3cret" and "visible to other users" in err and "PIXELWISE_TOKEN" in err
    assert "s3cret" not in err


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=600), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM"])
)
def test_fuzzed_uploads_give_a_4xx_or_an_image(data, prefix):
    from pixelwise.serve.uploads import UploadError, decode_upload

    try:
        image = decode_upload(prefix + data, 4096 * 4096)
    except UploadError as e:
        assert e.status in (400, 413) and "\n" not in e.message
    else:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def test_fuzzed_png_headers_claiming_any_size_are_refused_before_decoding():
    import struct
    import zlib

    from pixelwise.serve.uploads import UploadError, decode_upload

    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = (int(v) for v in rng.integers(1, 2**31 - 1, 2))
        data = bytearray(png(1, 1))
        struct.pack_into(">II", data, 16, w, h)
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
        with pytest.raises(UploadError) as e:
            decode_upload(bytes(data), 4096 * 4096)
        assert e.value.status in (400, 413)


def test_fuzzed_raw_requests_never_take_the_server_down(segmenter):
    rng = np.random.default_rng(0)
    heads = [
        b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n",  # a header over h11's limit
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
        b"GET /\x00\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    ] + [bytes(rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8)) for _ in range(40)]
    app = create_app(segmenter, ServeConfig(header_timeout=2))
    with serve_in_background(app) as url:
        for head in heads:
            with socket.create_connection(_address(url), timeout=10) as s:
                s.sendall(head)
                answer = _closed_by_server(s, 5)
                assert answer is not None, head[:40]  # answered (400, 408, 413, ...) and closed, never hung
                assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:80]
        with httpx.Client(base_url=url, timeout=10) as h:
            assert h.get("/health").status_code == 200
            assert h.post("/predict", files={"file": ("x.png", png(), "image/png")}).status_code == 200
