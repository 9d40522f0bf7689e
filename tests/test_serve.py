"""The HTTP server: API answers checked against the Segmenter, every bad upload a 4xx JSON error
(after which the server still serves), the token, the limits, concurrency on a real server."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pixelwise import PixelwiseError
from pixelwise.cli import main
from pixelwise.predict.predictor import as_predictor
from pixelwise.serve import ServeConfig, create_app, serve_in_background
from pixelwise.serve.server import bind_socket


@pytest.fixture(scope="module")
def segmenter(trained_run):
    from pixelwise import load

    return load(trained_run, "cpu")


def rgb(h=40, w=52, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encode(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def upload(data: bytes, name: str = "x.png", ctype: str = "image/png") -> dict:
    return {"file": (name, data, ctype)}


def png_claiming_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height pixels (a decompression-bomb header), CRC fixed."""
    data = bytearray(encode(np.zeros((1, 1), np.uint8)))
    struct.pack_into(">II", data, 16, width, height)  # IHDR data starts after signature(8)+length(4)+type(4)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.fixture
def client(segmenter):
    app = create_app(segmenter, ServeConfig(max_upload_bytes=200_000, max_upload_pixels=250_000))
    with TestClient(app) as c:
        yield c


def assert_good_request_works(client, segmenter, headers=None):
    image = rgb(seed=7)
    r = client.post("/predict?format=mask", files=upload(encode(image)), headers=headers)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), segmenter.predict(image))


# --- the API -------------------------------------------------------------------------------------


def test_health_and_model(client, segmenter):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    info = client.get("/model").json()
    meta = segmenter.bundle.to_dict()
    assert info["architecture"]["arch"] == meta["model"]["arch"] == "unet"
    assert info["architecture"]["encoder"] == "resnet18"
    assert [c["name"] for c in info["classes"]] == meta["classes"]["names"]
    assert [c["color"] for c in info["classes"]] == [list(c) for c in meta["classes"]["colors"]]
    assert [c["index"] for c in info["classes"]] == list(range(segmenter.num_classes))
    assert info["metrics"]["val"]["miou"] == pytest.approx(meta["metrics"]["val"]["miou"])
    assert info["limits"] == {"max_upload_bytes": 200_000, "max_upload_pixels": 250_000}


def test_predict_json_counts_match_the_segmenter(client, segmenter):
    image = rgb(37, 61, seed=1)
    r = client.post("/predict", files=upload(encode(image)))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert (body["width"], body["height"]) == (61, 37)
    expected = np.bincount(segmenter.predict(image).ravel(), minlength=segmenter.num_classes)
    assert [c["pixels"] for c in body["classes"]] == expected.tolist()
    assert [c["share"] for c in body["classes"]] == pytest.approx((expected / (37 * 61)).tolist())
    assert sum(c["share"] for c in body["classes"]) == pytest.approx(1.0)
    assert [c["name"] for c in body["classes"]] == segmenter.classes.names
    t = body["timing"]
    assert 0 <= t["inference_ms"] <= t["total_ms"] and t["decode_ms"] >= 0


def test_predict_mask_and_overlay_png(client, segmenter):
    image = rgb(33, 45, seed=2)
    mask = segmenter.predict(image)
    r = client.post("/predict?format=mask", files=upload(encode(image)))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert "inference;dur=" in r.headers["server-timing"] and r.headers["x-image-size"] == "45x33"
    got = Image.open(io.BytesIO(r.content))
    assert got.mode == "P"  # a palette PNG: any viewer shows the class colours, the values are the indices
    np.testing.assert_array_equal(np.asarray(got), mask)
    palette = np.array(got.getpalette()[: 3 * segmenter.num_classes]).reshape(-1, 3)
    np.testing.assert_array_equal(palette, np.array(segmenter.classes.colors))
    r = client.post("/predict?format=mask&palette=false", files=upload(encode(image)))
    got = Image.open(io.BytesIO(r.content))
    assert got.mode == "L"  # what the page reads
    np.testing.assert_array_equal(np.asarray(got), mask)

    r = client.post("/predict?format=overlay&alpha=0.3", files=upload(encode(image)))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    expected = as_predictor(segmenter).overlay(image, mask, 0.3, legend=True)  # what `pixelwise predict` writes
    assert expected.shape[0] > 33  # the legend strip below the picture
    got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
    assert np.abs(got - expected.astype(int)).max() <= 1


def test_jpeg_exif_orientation_is_applied(client, segmenter):
    image = rgb(20, 30, seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(image, "JPEG", quality=95, exif=exif.tobytes())
    r = client.post("/predict", files=upload(data, "x.jpg", "image/jpeg"))
    assert r.status_code == 200
    assert (r.json()["width"], r.json()["height"]) == (20, 30)


def test_openapi_schema_describes_the_api(client):
    schema = client.get("/openapi.json").json()
    assert {"/health", "/model", "/predict"} <= set(schema["paths"])
    assert "/" not in schema["paths"]
    post = schema["paths"]["/predict"]["post"]
    body_ref = post["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    body = schema["components"]["schemas"][body_ref]
    assert body["required"] == ["file"]
    assert (
        body["properties"]["file"].get("format") == "binary"
        or body["properties"]["file"].get("contentMediaType") == "application/octet-stream"
    )
    params = {p["name"]: p for p in post["parameters"]}
    fmt_schema = params["format"]["schema"]
    enum = fmt_schema.get("enum") or schema["components"]["schemas"][fmt_schema["$ref"].split("/")[-1]]["enum"]
    assert sorted(enum) == ["instances", "json", "mask", "overlay", "panoptic", "panoptic_json"]
    assert set(post["responses"]["200"]["content"]) == {"application/json", "image/png"}
    assert {"400", "413", "415", "422"} <= set(post["responses"])
    assert "securitySchemes" not in schema.get("components", {})  # no token configured


def test_page_and_its_files_are_served(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="overlay"' in r.text and 'id="legend"' in r.text and "static/app.js" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "predict?format=mask" in js.text
    assert client.get("/static/style.css").status_code == 200


# --- bad input: a 4xx JSON error each, and the next good request still works ------------------------


def _bad_requests():
    good = encode(rgb())
    truncated_png = encode(rgb(64, 64, seed=4))
    truncated_jpeg = encode(rgb(64, 64, seed=5), "JPEG")
    return {
        "not an image": ({"files": upload(b"this is plain text, not a picture")}, 400, "not an image"),
        "truncated png": ({"files": upload(truncated_png[: len(truncated_png) * 2 // 3])}, 400, "truncated"),
        "truncated jpeg": (
            {"files": upload(truncated_jpeg[: len(truncated_jpeg) // 2], "x.jpg", "image/jpeg")},
            400,
            "truncated",
        ),
        "empty body": (
            {"content": b"", "headers": {"content-type": "multipart/form-data; boundary=abc"}},
            400,
            "empty request body",
        ),
        "empty file": ({"files": upload(b"")}, 400, "empty"),
        "over the size limit": ({"files": upload(b"\x89PNG" + bytes(300_000))}, 413, "too large"),
        "more pixels than the limit": (
            {"files": upload(encode(np.zeros((600, 600), np.uint8)))},
            413,
            "over the limit of 250000",
        ),
        "bomb header past Pillow's own limit": ({"files": upload(png_claiming_size(30_000, 30_000))}, 413, "refused"),
        "request is not multipart": (
            {"content": good, "headers": {"content-type": "image/png"}},
            415,
            "multipart/form-data",
        ),
        "file sent as text": ({"files": upload(good, "x.txt", "text/plain")}, 415, "text/plain"),
        "missing field": ({"files": {"image": ("x.png", good, "image/png")}}, 422, "file"),
        "unknown format": ({"files": upload(good), "params": {"format": "gif"}}, 422, "format"),
        "alpha out of range": ({"files": upload(good), "params": {"format": "overlay", "alpha": 2}}, 422, "alpha"),
    }


@pytest.mark.parametrize("case", list(_bad_requests()))
def test_bad_request_gets_4xx_json_and_server_keeps_serving(case, client, segmenter):
    kwargs, status, words = _bad_requests()[case]
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in str(r.json()["detail"])
    assert_good_request_works(client, segmenter)


def test_header_under_default_pixel_limit_checks_before_decoding(segmenter):
    # 5000 x 5000 is under Pillow's own bomb limit, over the server's default of 4096 x 4096.
    with TestClient(create_app(segmenter)) as c:
        r = c.post("/predict", files=upload(png_claiming_size(5000, 5000)))
        assert r.status_code == 413 and "25000000 pixels" in r.json()["detail"]
        assert_good_request_works(c, segmenter)


def test_token(segmenter):
    app = create_app(segmenter, ServeConfig(token="s3cret"))
    good = {"Authorization": "Bearer s3cret"}
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/").status_code == 200  # the page asks for the token itself
        for headers in (
            None,
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic s3cret"},
            {"Authorization": "s3cret"},
        ):
            for method, path in (("GET", "/model"), ("POST", "/predict"), ("GET", "/openapi.json")):
                r = c.request(method, path, headers=headers, files=upload(encode(rgb())) if method == "POST" else None)
                assert r.status_code == 401, (headers, path)
                assert r.headers["www-authenticate"] == "Bearer" and "token" in r.json()["detail"]
            assert_good_request_works(c, segmenter, headers=good)
        assert c.get("/model", headers=good).status_code == 200
        schema = c.get("/openapi.json", headers=good).json()
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_config_is_validated():
    with pytest.raises(ValueError, match="model_threads"):
        ServeConfig(model_threads=0)
    with pytest.raises(ValueError, match="max_upload_pixels"):
        ServeConfig(max_upload_pixels=0)
    with pytest.raises(ValueError, match="token"):
        ServeConfig(token=" ")


def test_model_is_loaded_once(trained_run, monkeypatch):
    import pixelwise.predict.predictor

    calls = []
    real = pixelwise.predict.predictor.load

    def counting_load(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(pixelwise.predict.predictor, "load", counting_load)
    with TestClient(create_app(trained_run, ServeConfig(device="cpu"))) as c:
        for seed in range(3):
            assert c.post("/predict", files=upload(encode(rgb(seed=seed)))).status_code == 200
    assert len(calls) == 1


def test_missing_run_is_one_line_error(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pixelwise: error: ") and "no such run" in err and "\n" not in err


def test_port_in_use_is_a_clear_error():
    taken = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(PixelwiseError, match="cannot listen on 127.0.0.1"):
            bind_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_serve_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: pixelwise serve" in out and "127.0.0.1" in out and "--token" in out


# --- a real server on a localhost port ---------------------------------------------------------------


def _slow(service, seconds: float):
    real = service.segment

    def slow_segment(image):
        time.sleep(seconds)
        return real(image)

    service.segment = slow_segment


def test_real_server_concurrent_requests_and_free_event_loop(segmenter):
    app = create_app(segmenter, ServeConfig(model_threads=2, max_pending=2))
    service = app.state.service
    images = [rgb(32, 40, seed=10 + i) for i in range(8)]
    expected = [segmenter.predict(im) for im in images]
    with serve_in_background(app) as url:
        assert url.startswith("http://127.0.0.1:")
        results: dict[int, httpx.Response] = {}

        def post(i):
            with httpx.Client(base_url=url, timeout=60) as h:
                results[i] = h.post("/predict?format=mask", files=upload(encode(images[i])))

        # 8 clients at once, max_pending 2: some are served, the others told to retry (503).
        threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results.values())
        assert set(codes) <= {200, 503} and codes.count(200) >= 2, codes
        for i, r in results.items():
            if r.status_code == 200:
                np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), expected[i])
            else:
                assert r.headers["retry-after"] == "1" and "busy" in r.json()["detail"]

        # While a slow prediction runs, the event loop still answers at once.
        _slow(service, 1.5)
        slow = threading.Thread(target=post, args=(0,))
        slow.start()
        deadline = time.monotonic() + 10
        while service.pending == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.pending == 1
        with httpx.Client(base_url=url, timeout=10) as h:
            t0 = time.perf_counter()
            assert h.get("/health").status_code == 200
            assert h.get("/model").status_code == 200
            assert time.perf_counter() - t0 < 1.0
            assert service.pending == 1  # the slow one is still running
        slow.join()
        assert results[0].status_code == 200
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(results[0].content))), expected[0])


def test_real_server_idle_connections_hold_no_request_slot(segmenter):
    # max_connections bounds requests in progress; idle keep-alive sockets do not lock others out.
    app = create_app(segmenter, ServeConfig(max_connections=2))
    with serve_in_background(app) as url:
        with httpx.Client(base_url=url, timeout=30) as first, httpx.Client(base_url=url, timeout=30) as second:
            assert first.get("/health").status_code == 200  # both connections stay open (keep-alive)
            assert second.get("/model").status_code == 200
            with httpx.Client(base_url=url, timeout=30) as third:
                assert third.get("/model").status_code == 200
                assert third.post("/predict", files=upload(encode(rgb()))).status_code == 200


def _http_exchange(url: str, head: bytes, chunks=(), chunk_pause: float = 0.05) -> tuple[bytes, int]:
    """Send raw request bytes; stop sending as soon as the server answers. Returns (answer, body bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head)
        s.settimeout(chunk_pause)
        answer = b""
        for chunk in chunks:
            try:
                answer = s.recv(65536)
            except TimeoutError:
                pass
            if answer:
                break
            try:
                s.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
        s.settimeout(10)
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            more = s.recv(65536)
            if not more:
                break
            answer += more
    return answer, sent


def test_real_server_refuses_large_uploads_before_reading_them(segmenter):
    app = create_app(segmenter, ServeConfig(max_upload_bytes=100_000))
    with serve_in_background(app) as url:
        # Declared too large: answered from the headers alone, no body byte sent.
        head = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        answer, _ = _http_exchange(url, head)
        assert answer.startswith(b"HTTP/1.1 413") and b"upload too large" in answer

        # No length given (chunked): cut off once the limit is passed, long before 50 MB.
        head = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        part = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + b"\0" * 1000
        )
        piece = 16 * 1024
        chunk = f"{piece:x}\r\n".encode() + b"\0" * piece + b"\r\n"
        first = f"{len(part):x}\r\n".encode() + part + b"\r\n"
        answer, sent = _http_exchange(url, head, [first] + [chunk] * (50_000_000 // piece))
        assert answer.startswith(b"HTTP/1.1 413") and b"upload too large" in answer
        assert sent < 2_000_000

        # An empty chunked body: no length to check, caught when the body ends.
        answer, _ = _http_exchange(url, head + b"0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400") and b"empty request body" in answer

        with httpx.Client(base_url=url, timeout=30) as h:
            assert h.get("/health").status_code == 200
            assert h.post("/predict", files=upload(encode(rgb()))).status_code == 200


def test_cli_serve_in_a_real_process(trained_run):
    env = dict(os.environ, PIXELWISE_TOKEN="tok", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixelwise", "serve", str(trained_run), "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()  # printed once the socket listens
        assert line.startswith("serving ") and "http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ")[1].split("/ ")[0]
        with httpx.Client(base_url=url, timeout=60) as h:
            assert h.get("/health").json()["status"] == "ok"
            assert h.get("/model").status_code == 401
            r = h.post("/predict", files=upload(encode(rgb())), headers={"Authorization": "Bearer tok"})
            assert r.status_code == 200 and r.json()["width"] == 52
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- the same Predictor as predict: inference options, ensembles --------------------------------------


def test_serves_an_ensemble_with_inference_options(trained_run, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from pixelwise.postprocess import PostprocessConfig
    from pixelwise.predict import InferenceConfig, load_predictor

    second = tmp_path / "second"
    shutil.copytree(trained_run, second, ignore=shutil.ignore_patterns("checkpoint.*", "model.onnx", "eval-*"))
    state = load_file(str(second / "model.safetensors"))
    key = next(k for k, v in state.items() if v.ndim == 4 and "segmentation_head" in k)
    state[key] = state[key] + 0.3 * torch.randn(state[key].shape, generator=torch.Generator().manual_seed(0))
    save_file(state, str(second / "model.safetensors"))

    runs = [trained_run, second]
    inference, post = InferenceConfig(hflip=True), PostprocessConfig(min_size=6)
    app = create_app(runs, ServeConfig(device="cpu"), inference=inference, postprocess=post, backend="torch")
    expected = load_predictor(runs, "cpu", "torch", inference=inference, postprocess=post)
    plain = load_predictor(runs, "cpu", "torch")
    images = [rgb(40, 52, seed=s) for s in range(4)]
    with TestClient(app) as c:
        info = c.get("/model").json()
        assert [m["run"] for m in info["members"]] == [str(r) for r in runs]
        assert len({m["weights"] for m in info["members"]}) == 2
        assert info["inference"]["hflip"] is True and info["postprocess"]["min_size"] == 6
        assert info["backend"] == "torch" and all(m["backend"] == "torch" for m in info["members"])
        differs = False
        for image in images:
            r = c.post("/predict?format=mask", files=upload(encode(image)))
            assert r.status_code == 200, r.text
            got = np.asarray(Image.open(io.BytesIO(r.content)))
            np.testing.assert_array_equal(got, expected.predict(image))
            differs |= bool((got != plain.predict(image)).any())
        assert differs  # the options were applied: without them some mask would differ


def test_an_option_the_model_cannot_run_stops_the_server_at_start(segmenter):
    from pixelwise.predict import InferenceConfig

    with pytest.raises(PixelwiseError, match="MC dropout"):
        create_app(segmenter, inference=InferenceConfig(mc_dropout=3))
