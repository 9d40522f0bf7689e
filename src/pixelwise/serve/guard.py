"""An ASGI middleware that turns away bad requests before their body is read.

It runs in front of FastAPI, so a request with a wrong token, a body of the wrong type or a
declared length over the limit gets its 4xx answer without the server reading the upload; a
body that turns out longer than the limit while it streams in is cut off at the limit. It also
bounds the requests in progress (``max_requests``): past that, new ones get 503 at once
(``/health`` is never counted nor refused).
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>`` (constant-time compare)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


@dataclass
class GuardRules:
    """What the guard checks; paths are exact request paths."""

    max_body_bytes: int
    token: str | None = None
    max_requests: int | None = None
    uncounted_paths: tuple[str, ...] = ("/health",)
    public_paths: tuple[str, ...] = ("/health", "/")
    public_prefixes: tuple[str, ...] = ("/static/",)
    upload_paths: tuple[str, ...] = ("/predict",)
    upload_type: str = "multipart/form-data"
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=lambda: [(b"x-content-type-options", b"nosniff")])


class RequestGuard:
    """Pure ASGI middleware: bearer token, content type and body size, checked as early as possible."""

    def __init__(self, app, rules: GuardRules):
        self.app = app
        self.rules = rules
        self.in_progress = 0  # changed only on the event loop thread

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path", "") in self.rules.uncounted_paths:
            await self._guarded(scope, receive, send)
            return
        limit = self.rules.max_requests
        if limit is not None and self.in_progress >= limit:
            body = f"busy: {self.in_progress} requests in progress; retry shortly"
            await _error(send, 503, body, [(b"retry-after", b"1")] + self.rules.extra_headers)
            return
        self.in_progress += 1
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.in_progress -= 1

    async def _guarded(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rules = self.rules
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + rules.extra_headers
            await send(message)

        public = path in rules.public_paths or path.startswith(rules.public_prefixes)
        if rules.token and not public and not token_matches(headers.get("authorization"), rules.token):
            await _error(
                send_with_headers,
                401,
                "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                [(b"www-authenticate", b"Bearer")],
            )
            return

        if scope.get("method") == "POST" and path in rules.upload_paths:
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            length = headers.get("content-length")
            if length is not None and length.strip() == "0":
                await _error(
                    send_with_headers,
                    400,
                    f"empty request body; send the image as {rules.upload_type} with the field 'file'",
                )
                return
            if ctype != rules.upload_type:
                await _error(
                    send_with_headers,
                    415,
                    f"content type {ctype or '(none)'!r} not accepted; send the image as "
                    f"{rules.upload_type} with the field 'file'",
                )
                return
            if length is not None:
                try:
                    declared = int(length)
                except ValueError:
                    await _error(send_with_headers, 400, "Content-Length is not a number")
                    return
                if declared > rules.max_body_bytes:
                    await _error(send_with_headers, 413, _too_large(rules.max_body_bytes))
                    return

        empty_error = None
        if scope.get("method") == "POST" and path in rules.upload_paths:
            empty_error = f"empty request body; send the image as {rules.upload_type} with the field 'file'"
        await self.app(scope, _counting(receive, rules.max_body_bytes, empty_error), send_with_headers)


def _too_large(limit: int) -> str:
    return (
        f"upload too large: the limit is {limit} bytes ({limit / 1e6:.1f} MB); send a smaller file "
        "(or start the server with a larger --max-upload-mb)"
    )


def _counting(receive, limit: int, empty_error: str | None = None):
    """Wrap ``receive`` so that a body longer than ``limit`` stops at the first chunk past it.

    With ``empty_error``, a body that ends without a single byte (chunked, no length) is a 400.
    """
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            # Raised inside the app, so FastAPI's exception handling answers in JSON.
            if seen > limit:
                raise HTTPException(413, _too_large(limit))
            if empty_error and seen == 0 and not message.get("more_body", False):
                raise HTTPException(400, empty_error)
        return message

    return wrapped


async def _error(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})
