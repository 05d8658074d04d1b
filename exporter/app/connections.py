"""The HTTP connections the server holds: a deadline for each request head, an idle timeout
between requests, and a cap on how many are open.

uvicorn's h11 protocol arms no timer before a connection's first request: its keep-alive
timeout starts when a response ends, and any byte received cancels it. A client that
connects and sends nothing, or drips a request head, holds its connection (and a file
descriptor) for ever, and a thousand of them starve every scrape. uvicorn's
``limit_concurrency`` is no cure: it counts those idle connections too and then answers
503 to every new request, scrapes included. So the protocol here, uvicorn's own with a
guard:

* closes a connection whose request head has not arrived whole within
  ``--header-timeout`` of its opening, or of its first byte after a kept-alive wait
  (Go's ``ReadHeaderTimeout``);
* closes a kept-alive connection idle for ``--idle-timeout`` (uvicorn's keep-alive timer);
* at ``--max-connections``, makes room for a new connection by closing the one that has
  waited longest for a request; only when every connection is busy with a request is the
  new one answered 503 and closed. A scraper sends its request as soon as it connects,
  so it is never the one waiting longest.

Each is counted in ``runwatch_http_refused_total`` and logged once, then summed up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from exporter.app.log_once import LogOnce

log = logging.getLogger(__name__)

BUSY_BODY = b"every connection is busy with a request (--max-connections); try again\n"
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(BUSY_BODY), BUSY_BODY)
)


@dataclass(slots=True)
class ConnectionGuard:
    """What the connections of one server share: the limits, the open connections and
    those waiting for a request (oldest first)."""

    header_timeout: float
    idle_timeout: float
    max_connections: int
    on_refused: Callable[[str], None] = lambda reason: None  # counts by reason
    open: set[GuardedProtocol] = field(default_factory=set)
    waiting: dict[GuardedProtocol, None] = field(default_factory=dict)  # in arrival order
    _log: LogOnce = field(default_factory=lambda: LogOnce(log))

    def admit(self, new: GuardedProtocol) -> bool:
        """Count a new connection in; at the cap, close the one that has waited longest
        for a request, or refuse ``new`` (False) when none is waiting."""
        if len(self.open) >= self.max_connections:
            if not self.waiting:
                self.refuse("max_connections", "all_busy", "every one of the %d connections "
                            "is busy with a request: a new one got 503",
                            self.max_connections)  # fmt: skip
                return False
            self.refuse("max_connections", "idle_closed", "%d connections open "
                        "(--max-connections): closed the one idle longest to make room",
                        self.max_connections)  # fmt: skip
            next(iter(self.waiting)).drop()
        self.open.add(new)
        return True

    def refuse(self, reason: str, kind: str, message: str, *args: object) -> None:
        """Count it under ``reason``; log the first of each ``kind``, then a summary."""
        self.on_refused(reason)
        self._log.log(logging.INFO, kind, message, *args)


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol under a :class:`ConnectionGuard` (see the module's text)."""

    guard: ConnectionGuard  # set on the class :func:`guarded_protocol` makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.guard.idle_timeout  # type: ignore[assignment]
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            self.transport.write(BUSY_RESPONSE)
            self.transport.close()
            return
        self._await_request(head_started=True)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._await_request(head_started=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_request(head_started=False)  # kept alive: uvicorn's idle timer runs

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._forget()  # the connection is the WebSocket protocol's from here on
        super().handle_websocket_upgrade(event)

    def drop(self) -> None:
        """Close this connection (it was idle): it no longer counts against the cap."""
        self._forget()
        self.transport.close()

    def _await_request(self, head_started: bool) -> None:
        """Between requests the connection may be closed to make room; once bytes of a head
        have come, the head has --header-timeout to arrive whole."""
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            self._stop_waiting()
            return
        self.guard.waiting.setdefault(self, None)
        if head_started and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.guard.header_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._head_timer = None
        self.guard.refuse("header_timeout", "header_timeout", "a connection sent no whole "
                          "request head within %g s (--header-timeout): closed",
                          self.guard.header_timeout)  # fmt: skip
        self.drop()

    def _stop_waiting(self) -> None:
        self.guard.waiting.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _forget(self) -> None:
        self._stop_waiting()
        self.guard.open.discard(self)


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """The protocol class to give uvicorn (``http=``), bound to ``guard``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"guard": guard})
