"""Runwatch's own counters: what came in, what was refused, what the OTLP path and the
sampled sources lost."""

from __future__ import annotations

import threading
from collections import Counter

from exporter.events import LENIENCIES, REJECT_REASONS

JSONL_SOURCE = "jsonl"
HTTP_SOURCE = "http"
EVENT_SOURCES: tuple[str, ...] = (JSONL_SOURCE, HTTP_SOURCE)
PID_FILE_SOURCE = "pid_file"
BRIDGE_SOURCE = "bridge"
BACKEND_SOURCE = "backend"
ROUTER_SOURCE = "router"


class Stats:
    """Thread-safe counters behind the ``runwatch_*`` self-metrics.

    Sources count under the pipeline lock; the OTLP export threads count here too,
    hence the small lock of its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Every series starts at 0, so rate() and increase() see the first increment.
        self.ingested: Counter[str] = Counter(dict.fromkeys(EVENT_SOURCES, 0))
        self.rejected: Counter[tuple[str, str]] = Counter(
            {(s, r): 0 for s in EVENT_SOURCES for r in REJECT_REASONS if r != "pid_file_invalid"}
        )
        self.rejected[(PID_FILE_SOURCE, "pid_file_invalid")] = 0
        self.lenient: Counter[tuple[str, str]] = Counter(
            {(s, leniency): 0 for s in EVENT_SOURCES for leniency in LENIENCIES}
        )
        self.file_rotations: Counter[str] = Counter({"rotated": 0, "truncated": 0})
        self.otlp_exported: Counter[str] = Counter()  # signal, once OTLP is on
        self.otlp_dropped: Counter[tuple[str, str]] = Counter()  # (signal, reason)
        self.remote_write_sent: Counter[tuple[()]] = Counter()  # step samples, once it is on
        self.remote_write_dropped: Counter[str] = Counter()  # by reason
        self.source_errors: Counter[tuple[str, str]] = Counter()  # (source, reason)
        self.series_dropped: Counter[str] = Counter()  # cuts made outside the reducer
        self.trading_events: Counter[str] = Counter()  # bridge event-bus messages by type
        self.websocket_reconnects: Counter[str] = Counter()  # by channel
        self.websocket_connected: Counter[str] = Counter()  # by channel: 1 or 0, a gauge
        self.render_errors: Counter[str] = Counter()  # samples left out of a collection
        self.backend_log_lines: Counter[tuple[()]] = Counter({(): 0})  # new log-tail lines

    def declare(self, counter: Counter, keys: list[object]) -> None:
        """Start these series at 0 (a source that is configured declares its own)."""
        with self._lock:
            for key in keys:
                counter[key] += 0

    def count(self, counter: Counter, key: object, amount: int = 1) -> None:
        with self._lock:
            counter[key] += amount

    def set(self, counter: Counter, key: object, value: int) -> None:
        with self._lock:
            counter[key] = value

    def snapshot(self, counter: Counter) -> list[tuple[object, int]]:
        with self._lock:
            return list(counter.items())
