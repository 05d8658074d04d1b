"""Runwatch's own counters: what came in, what was refused, what the OTLP path did."""

from __future__ import annotations

import threading
from collections import Counter


class Stats:
    """Thread-safe counters behind the ``runwatch_*`` self-metrics.

    Sources count under the pipeline lock; the OTLP export threads count here too,
    hence the small lock of its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ingested: Counter[str] = Counter()  # source
        self.rejected: Counter[tuple[str, str]] = Counter()  # (source, reason)
        self.file_rotations: Counter[str] = Counter()  # kind: rotated, truncated
        self.otlp_exported: Counter[str] = Counter()  # signal
        self.otlp_dropped: Counter[tuple[str, str]] = Counter()  # (signal, reason)

    def count(self, counter: Counter, key: object, amount: int = 1) -> None:
        with self._lock:
            counter[key] += amount

    def snapshot(self, counter: Counter) -> list[tuple[object, int]]:
        with self._lock:
            return list(counter.items())
