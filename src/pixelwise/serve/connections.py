"""Connection-level defences uvicorn does not have: deadlines for a request to arrive, a cap on sockets.

uvicorn's h11 protocol waits for a request's headers and body without a deadline, and its
``limit_concurrency`` counts every open socket, so a few hundred clients that send half a header
and stop (a "slowloris") get every other client a 503. The protocol below:

* closes a connection whose request headers are not complete ``header_timeout`` seconds after it
  opened (or after its previous answer), with ``408 Request Timeout`` when it had sent part of one;
* answers ``408`` and closes when a request's body has not fully arrived ``body_timeout`` seconds
  after its headers;
* keeps at most ``max_open`` sockets: past that, the connection that has been waiting longest for
  a request is closed to make room, so a new client always gets in.

The number of requests in progress is bounded separately, by the app (see :mod:`.guard`): a
socket that has not sent a complete request header holds no slot.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class ConnectionLimits:
    """Deadlines in seconds and the cap on open sockets (see the module docstring)."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_open: int = 1024


def _timeout_answer(what: str) -> bytes:
    body = json.dumps({"detail": f"request timeout: the {what} did not arrive in time; send it at once"}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


# uvicorn is imported only when a server starts, so the class is made here, one per server.
# long: the protocol class made per server, with its limits and its table of waiting connections
def guarded_protocol(limits: ConnectionLimits) -> type:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` that enforces ``limits`` (one per server)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    # Connections waiting for a request's headers, longest-waiting first (shared by one server's sockets).
    waiting: OrderedDict[object, None] = OrderedDict()

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._timer: asyncio.TimerHandle | None = None
            self._phase = ""
            self._cycle_seen = None
            self._bytes_since_wait = False
            self._make_room()
            self._wait_for_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            waiting.pop(self, None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self._bytes_since_wait = True
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            cycle = self.cycle
            super().on_response_complete()
            if self.transport.is_closing():
                return
            if self.cycle is cycle:  # no pipelined request started: wait for the next one
                self._wait_for_headers()
            else:
                self._follow()

        # -- deadlines --------------------------------------------------------------------------

        def _make_room(self) -> None:
            while len(self.connections) > limits.max_open and waiting:
                oldest = next(iter(waiting))
                if oldest is self:
                    break
                waiting.pop(oldest)
                oldest._close(None)

        def _wait_for_headers(self) -> None:
            waiting[self] = None
            waiting.move_to_end(self)
            self._bytes_since_wait = False
            self._arm("headers", limits.header_timeout)

        def _follow(self) -> None:
            """After new bytes or an answer: move from waiting for headers to waiting for the body, to done."""
            cycle = self.cycle
            if cycle is None:
                return
            if cycle is not self._cycle_seen:  # a request's headers are complete
                self._cycle_seen = cycle
                waiting.pop(self, None)
                if cycle.more_body:
                    self._arm("body", limits.body_timeout)
                else:
                    self._cancel()
            elif self._phase == "body" and not cycle.more_body:
                self._cancel()

        def _arm(self, phase: str, seconds: float) -> None:
            self._cancel()
            self._phase = phase
            self._timer = self.loop.call_later(seconds, self._expired)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._phase = None, ""

        def _expired(self) -> None:
            phase, self._timer = self._phase, None
            if self.transport.is_closing():
                return
            if phase == "body":
                cycle = self.cycle
                if cycle is None or not cycle.more_body:
                    return
                if self.flow.read_paused:  # the app is slow to take the body, not the client to send it
                    self._arm("body", limits.body_timeout)
                    return
                self._close(None if cycle.response_started else _timeout_answer("request body"))
            else:
                waiting.pop(self, None)
                self._close(_timeout_answer("request header") if self._bytes_since_wait else None)

        def _close(self, answer: bytes | None) -> None:
            self._cancel()
            if self.transport.is_closing():
                return
            if answer:
                self.transport.write(answer)
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False
            self.transport.close()

    return GuardedH11Protocol
