"""Runwatch's own counters: what came in, what was refused, what the OTLP path and the
sampled sources lost."""

from __future__ import annotations

import threading
from collections import Counter

from exporter.events import REJECT_REASONS

JSONL_SOURCE = "jsonl"
HTTP_SOURCE = "http"
EVENT_SOURCES: tuple[str, ...] = (JSONL_SOURCE, HTTP_SOURCE)
PID_FILE_SOURCE = "pid_file"


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
        self.file_rotations: Counter[str] = Counter({"rotated": 0, "truncated": 0})
        self.otlp_exported: Counter[str] = Counter()  # signal, once OTLP is on
        self.otlp_dropped: Counter[tuple[str, str]] = Counter()  # (signal, reason)
        self.source_errors: Counter[tuple[str, str]] = Counter()  # (source, reason)

    def count(self, counter: Counter, key: object, amount: int = 1) -> None:
        with self._lock:
            counter[key] += amount

    def snapshot(self, counter: Counter) -> list[tuple[object, int]]:
        with self._lock:
            return list(counter.items())
