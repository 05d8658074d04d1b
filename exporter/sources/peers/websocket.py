"""Following a WebSocket (the trading bridge's channels, the training backend's /ws):
reconnect after 1, 2, 4, 8, 16, 30, 30 … s (back to 1 s once a connection succeeds),
count reconnects in ``trading_bridge_websocket_reconnects_total{channel}`` and publish
``trading_bridge_websocket_connected{channel}``; log the first failure of a streak once.

A message whose handling raises is reported to ``failed`` (counted as
``processing_failed``) and the follower goes on with the next; the connected gauge is
0 whenever the follower is not receiving, whatever ended it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from exporter.pipeline.self_stats import Stats
from exporter.sources.worker import Worker

log = logging.getLogger(__name__)

BACKOFF_SECONDS = (1, 2, 4, 8, 16, 30)


class WebSocketFollower(Worker):
    """Keeps one WebSocket channel open in a thread, with capped exponential backoff,
    handing every message to ``handle``."""

    def __init__(
        self,
        url: str,
        channel: str,
        stats: Stats,
        handle: Callable[[str | bytes], None],
        failed: Callable[[Exception], object],
        open_timeout: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"runwatch-ws-{channel}", join_timeout=5)
        self._url = url
        self._headers = headers or {}
        self.channel = channel
        self._stats = stats
        self._handle = handle
        self._failed = failed
        self._open_timeout = open_timeout
        self._logged = False
        stats.declare(stats.websocket_reconnects, [channel])
        stats.set(stats.websocket_connected, channel, 0)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                with connect(self._url, open_timeout=self._open_timeout, close_timeout=1,
                             additional_headers=self._headers) as ws:  # fmt: skip
                    attempt = 0
                    self._logged = False
                    self._stats.set(self._stats.websocket_connected, self.channel, 1)
                    log.info("WebSocket %s connected", self._url)
                    self._receive(ws)
            except (OSError, TimeoutError, WebSocketException) as exc:
                if not self._logged:
                    self._logged = True
                    log.warning("WebSocket %s: %s (reconnecting with backoff)",
                                self._url, exc or type(exc).__name__)  # fmt: skip
            finally:
                self._stats.set(self._stats.websocket_connected, self.channel, 0)
            if self._stop.wait(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]):
                return
            attempt += 1
            self._stats.count(self._stats.websocket_reconnects, self.channel)

    def _receive(self, ws: Any) -> None:
        while not self._stop.is_set():
            try:
                message = ws.recv(timeout=0.5)
            except TimeoutError:
                continue
            try:
                self._handle(message)
            except Exception as exc:  # one bad message must not end the channel
                self._failed(exc)
