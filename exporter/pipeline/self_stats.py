"""Runwatch's own counters: what came in, what was refused, what the OTLP path and the
sampled sources lost."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

from exporter.core.events import LENIENCIES, REJECT_REASONS
from exporter.pipeline.source_names import EVENT_SOURCES, PID_FILE_SOURCE

K = TypeVar("K")

HTTP_REFUSALS = ("header_timeout", "max_connections", "auth_busy", "rate_limited")
"""Why the HTTP server turned a connection or a request away (runwatch_http_refused_total)."""
MAX_FILE_SERIES = 100
"""Followed files shown in the runwatch_file_* series, per source; more are counted in
runwatch_series_dropped_total{reason="max_file_series"}."""


@dataclass(slots=True)
class FileProgress:
    """How far runwatch has read one followed file (the mtail-style per-file series)."""

    lines: int = 0  # lines handed on, since the path was first followed
    bytes: int = 0  # bytes read
    offset: int = 0  # end of the last complete line, in the file the path names now
    size: int = 0  # that file's size at the last look; size - offset is the lag
    last_read: float | None = None  # wall-clock time new bytes were last read


class FileProgressTable:
    """Per (source, path) progress, bounded by MAX_FILE_SERIES paths per source; written by
    the tailers' threads, read by scrapes."""

    def __init__(self, on_refused: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._files: dict[tuple[str, str], FileProgress] = {}
        self._refused: set[tuple[str, str]] = set()  # counted once each
        self._on_refused = on_refused

    def update(self, source: str, path: str, lines: int, read: int, offset: int, size: int,
               read_at: float | None) -> None:  # fmt: skip
        key = (source, path)
        with self._lock:
            progress = self._files.get(key)
            if progress is None:
                if sum(1 for s, _ in self._files if s == source) >= MAX_FILE_SERIES:
                    refused = key not in self._refused
                    self._refused.add(key)
                    if refused:
                        self._on_refused()
                    return
                progress = self._files[key] = FileProgress()
            progress.lines += lines
            progress.bytes += read
            progress.offset, progress.size = offset, size
            if read_at is not None:
                progress.last_read = read_at

    def retain(self, source: str, paths: set[str]) -> None:
        """Forget the files of ``source`` no longer followed."""
        with self._lock:
            for key in [k for k in self._files if k[0] == source and k[1] not in paths]:
                del self._files[key]
            self._refused = {k for k in self._refused if k[0] != source or k[1] in paths}

    def snapshot(self) -> list[tuple[tuple[str, str], FileProgress]]:
        with self._lock:
            return [(key, replace(progress)) for key, progress in self._files.items()]


class Stats:
    """Thread-safe counters behind the ``runwatch_*`` self-metrics.

    Every thread counts here (sources, some under the pipeline lock and some not, the
    output threads, scrapes), so every change and read takes the small lock of its own;
    a ``View`` reads the counters live, not a copy.
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
        self.otlp_resent: Counter[str] = Counter()  # by signal: sent again after a restart
        self.remote_write_sent: Counter[tuple[()]] = Counter()  # step samples, once it is on
        self.remote_write_dropped: Counter[str] = Counter()  # by reason
        self.source_errors: Counter[tuple[str, str]] = Counter()  # (source, reason)
        self.series_dropped: Counter[str] = Counter()  # cuts made outside the reducer
        self.trading_events: Counter[str] = Counter()  # bridge event-bus messages by type
        self.websocket_reconnects: Counter[str] = Counter()  # by channel
        self.websocket_connected: Counter[str] = Counter()  # by channel: 1 or 0, a gauge
        self.render_errors: Counter[str] = Counter()  # samples left out of a collection
        self.backend_log_lines: Counter[tuple[()]] = Counter({(): 0})  # new log-tail lines
        self.http_refused: Counter[str] = Counter()  # by reason, declared by serve
        self.files = FileProgressTable(lambda: self.count(self.series_dropped, "max_file_series"))

    def declare(self, counter: Counter[K], keys: Iterable[K]) -> None:
        """Start these series at 0 (a source that is configured declares its own)."""
        with self._lock:
            for key in keys:
                counter[key] += 0

    def count(self, counter: Counter[K], key: K, amount: int = 1) -> None:
        with self._lock:
            counter[key] += amount

    def set(self, counter: Counter[K], key: K, value: int) -> None:
        with self._lock:
            counter[key] = value

    def snapshot(self, counter: Counter[K]) -> list[tuple[K, int]]:
        with self._lock:
            return list(counter.items())
