"""The cache the sampled sources write and scrapes read.

Sampled sources (NVML, psutil, the peer pollers) run on their own clock and store
one immutable sample each here; ``/metrics`` and the OTel callbacks only read the
latest snapshot, so a slow or hung NVML call never delays a scrape. A sample older
than ``STALE_AFTER_INTERVALS`` intervals is no longer served and its source reports
down: a hung source disappears instead of showing frozen values. The cache knows no
kind of sample: each source defines its own (``sources/sampled/samples.py``,
``sources/peers/samples.py``) and the outputs ask for it by type.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TypeVar

S = TypeVar("S")

STALE_AFTER_INTERVALS = 3
HISTORY_SAMPLES = 720
"""Samples each source keeps for ``GET /api/system/history``: an hour at the default 5 s."""


@dataclass(frozen=True, slots=True)
class SourceStatus:
    up: bool
    sample_seconds: float | None  # how long the last sample took
    sampled_at: float | None  # Unix time the last sample finished


@dataclass(frozen=True, slots=True)
class Readings:
    """What a scrape sees: each source's status and its latest fresh sample."""

    sources: dict[str, SourceStatus] = field(default_factory=dict)
    samples: tuple[object, ...] = ()

    def latest(self, kind: type[S]) -> S | None:
        """The fresh sample of type ``kind``, if a source of that kind is up."""
        return next((s for s in self.samples if type(s) is kind), None)


@dataclass(slots=True)
class _Entry:
    interval: float
    sample: object = None
    sample_seconds: float | None = None
    sampled_at: float | None = None
    up: bool = False
    history: deque[tuple[float, object]] = field(
        default_factory=lambda: deque(maxlen=HISTORY_SAMPLES)
    )


class ReadingsCache:
    """Latest sample per source, written by sampler threads and read by scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def register(self, source: str, interval: float) -> None:
        """Make the source's status visible (down) before its first sample."""
        with self._lock:
            self._entries[source] = _Entry(interval)

    def store(self, source: str, sample: object, seconds: float, at: float) -> None:
        with self._lock:
            entry = self._entries[source]
            entry.history.append((at, sample))
            entry.sample, entry.sample_seconds, entry.sampled_at, entry.up = (
                sample,
                seconds,
                at,
                True,
            )

    def mark_down(self, source: str) -> None:
        with self._lock:
            entry = self._entries[source]
            entry.sample, entry.up = None, False

    def history(self, source: str) -> list[tuple[float, object]]:
        """The source's last HISTORY_SAMPLES samples with their times, oldest first."""
        with self._lock:
            entry = self._entries.get(source)
            return list(entry.history) if entry is not None else []

    def snapshot(self, now: float | None = None) -> Readings:
        now = time.time() if now is None else now
        sources: dict[str, SourceStatus] = {}
        samples: list[object] = []
        with self._lock:
            for name, entry in self._entries.items():
                fresh = (
                    entry.up
                    and entry.sampled_at is not None
                    and now - entry.sampled_at <= STALE_AFTER_INTERVALS * entry.interval
                )
                sources[name] = SourceStatus(fresh, entry.sample_seconds, entry.sampled_at)
                if fresh:
                    samples.append(entry.sample)
        return Readings(sources, tuple(samples))
