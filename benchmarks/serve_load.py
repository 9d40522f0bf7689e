"""Load test for `pixelwise serve`: N concurrent clients on this machine for a bounded time.

Either starts the server itself from a run directory, or loads one already running on a
localhost URL. Each client keeps one HTTP connection open and posts the same image to
/predict in a loop until the time is up. Prints requests/s, p50/p95/p99 latency and the errors.

    python benchmarks/serve_load.py --run runs/demo --clients 16 --duration 20
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --clients 16 --duration 20 --token T

Only loopback addresses are accepted as targets.
"""

from __future__ import annotations

import argparse
import http.client
import io
import ipaddress
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

import numpy as np
from PIL import Image


def synthetic_image(size: int) -> bytes:
    """A PNG of one synthetic demo image (shapes on a textured background), ``size`` x ``size``."""
    from pixelwise.data.synthetic import generate_sample

    image, _ = generate_sample(np.random.default_rng(0), size=size)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def check_loopback(host: str) -> None:
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        sys.exit(f"serve_load: cannot resolve {host!r}")
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        sys.exit(f"serve_load: {host} is not this machine; this script only loads servers on localhost")


def start_server(run: str, model_threads: int, device: str, token: str | None) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ)
    if token:
        env["PIXELWISE_TOKEN"] = token
    cmd = [
        sys.executable,
        "-m",
        "pixelwise",
        "serve",
        run,
        "--port",
        "0",
        "--model-threads",
        str(model_threads),
        "--device",
        device,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if " at http://" not in line:
        proc.kill()
        sys.exit(f"serve_load: the server did not start ({' '.join(cmd)})")
    return proc, line.split(" at ")[1].split("/ ")[0]


def client_loop(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict,
    deadline: float,
    latencies: list[float],
    statuses: Counter,
    lock: threading.Lock,
) -> None:
    conn = None
    while time.perf_counter() < deadline:
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=120)
        t0 = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            status = f"{e.__class__.__name__}"
            conn.close()
            conn = None
        elapsed = time.perf_counter() - t0
        with lock:
            statuses[status] += 1
            if status == 200:
                latencies.append(elapsed)
    if conn is not None:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = ap.add_mutually_exclusive_group(required=True)
    target.add_argument("--run", help="run directory: start `pixelwise serve RUN` on a free localhost port")
    target.add_argument("--url", help="a server already running on this machine, e.g. http://127.0.0.1:8000")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default %(default)s)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load, at most 600 (default %(default)s)")
    ap.add_argument("--size", type=int, default=256, help="side of the synthetic test image (default %(default)s)")
    ap.add_argument("--image", help="post this image file instead of a synthetic one")
    ap.add_argument("--format", choices=["json", "mask", "overlay"], default="json", help="default %(default)s")
    ap.add_argument("--token", default=None, help="bearer token (passed to a server this script starts)")
    ap.add_argument(
        "--model-threads", type=int, default=1, help="--model-threads of a server this script starts (default 1)"
    )
    ap.add_argument("--device", default="auto", help="--device of a server this script starts")
    args = ap.parse_args()
    if not 0 < args.duration <= 600 or not 1 <= args.clients <= 1024:
        ap.error("--duration must be in (0, 600] and --clients in [1, 1024]")

    proc = None
    if args.run:
        proc, url = start_server(args.run, args.model_threads, args.device, args.token)
    else:
        url = args.url.rstrip("/")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    check_loopback(host)
    try:
        if args.image:
            with open(args.image, "rb") as f:
                data, name = f.read(), os.path.basename(args.image)
        else:
            data, name = synthetic_image(args.size), "synthetic.png"
        body, ctype = multipart(data, name)
        headers = {"Content-Type": ctype}
        if args.token:
            headers["Authorization"] = f"Bearer {args.token}"
        path = f"{parts.path.rstrip('/')}/predict?format={args.format}"
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size

        # One request first: a wrong URL or token shows at once, and the model is warm.
        warm = http.client.HTTPConnection(host, port, timeout=120)
        warm.request("POST", path, body=body, headers=headers)
        first = warm.getresponse()
        detail = first.read()[:300]
        warm.close()
        if first.status != 200:
            print(f"serve_load: the first request failed: {first.status} {detail!r}", file=sys.stderr)
            return 1

        latencies: list[float] = []
        statuses: Counter = Counter()
        lock = threading.Lock()
        start = time.perf_counter()
        deadline = start + args.duration
        threads = [
            threading.Thread(
                target=client_loop,
                args=(host, port, path, body, headers, deadline, latencies, statuses, lock),
                daemon=True,
            )
            for _ in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=args.duration + 180)
        wall = time.perf_counter() - start
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    total = sum(statuses.values())
    errors = total - statuses.get(200, 0)
    print(f"server   {url}" + (f" (started from {args.run}, --model-threads {args.model_threads})" if args.run else ""))
    print(
        f"load     {args.clients} clients for {args.duration:g} s, POST /predict?format={args.format}, "
        f"{w}x{h} PNG ({len(data)} bytes)"
    )
    print(
        f"requests {total} in {wall:.1f} s: {total / wall:.2f} requests/s, {errors} errors"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items(), key=str) if k != 200)})" if errors else "")
    )
    if len(latencies) >= 2:
        q = statistics.quantiles([x * 1000 for x in latencies], n=100, method="inclusive")
        print(
            f"latency  p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms, max {max(latencies) * 1000:.1f} ms"
        )
    return 0 if statuses.get(200) else 1


if __name__ == "__main__":
    sys.exit(main())
