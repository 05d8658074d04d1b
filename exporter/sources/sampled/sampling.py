"""Sampled sources on their own clock: each in a thread that stores into the ReadingsCache.

A source that cannot start (no NVML library, no driver) reports down, says
why on one log line and is retried now and then; a sample that raises is
logged once per kind of failure. Nothing a source does reaches a scrape other
than through the cache.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from exporter.pipeline.readings import ReadingsCache
from exporter.sources.worker import Worker

log = logging.getLogger(__name__)

RETRY_OPEN_SECONDS = 60.0


class SourceUnavailable(Exception):
    """The source cannot run here (e.g. no NVIDIA driver); the message says why."""


class SampledSource(Protocol):
    name: str

    def open(self) -> None:
        """Prepare to sample; raise SourceUnavailable when the source cannot run."""

    def sample(self) -> object:
        """One immutable sample (GpuSample, SystemSample)."""

    def close(self) -> None: ...


class PeriodicSampler(Worker):
    """Samples one source every ``interval`` seconds (fixed rate) into the cache."""

    def __init__(
        self,
        source: SampledSource,
        cache: ReadingsCache,
        interval: float,
        retry_open: float = RETRY_OPEN_SECONDS,
    ) -> None:
        # A hung NVML call cannot be interrupted: stop leaves its thread behind after this.
        super().__init__(f"runwatch-{source.name}", join_timeout=2 * interval + 1)
        self.source = source
        self._cache = cache
        self._interval = interval
        self._retry_open = retry_open
        self._logged: set[str] = set()
        cache.register(source.name, interval)

    def _run(self) -> None:
        if not self._open_until_stopped():
            return
        try:
            next_at = time.monotonic()
            while not self._stop.is_set():
                self.sample_once()
                next_at += self._interval
                now = time.monotonic()
                if next_at < now:  # a sample overran: skip the missed ticks, keep the phase
                    next_at += self._interval * ((now - next_at) // self._interval + 1)
                if self._stop.wait(next_at - now):
                    break
        finally:
            self.source.close()

    def _crashed(self) -> None:
        self._cache.mark_down(self.source.name)

    def _open_until_stopped(self) -> bool:
        while not self._stop.is_set():
            try:
                self.source.open()
                return True
            except SourceUnavailable as exc:
                self._log_once("open", "%s source unavailable: %s (retrying every %g s)",
                               self.source.name, exc, self._retry_open)  # fmt: skip
                self._cache.mark_down(self.source.name)
            self._stop.wait(self._retry_open)
        return False

    def sample_once(self) -> None:
        started = time.perf_counter()
        try:
            sample = self.source.sample()
        except Exception as exc:  # one bad sample must not end the thread
            self._log_once(type(exc).__name__, "%s sample failed: %s", self.source.name, exc)
            self._cache.mark_down(self.source.name)
            return
        if self._logged:
            log.info("%s source is up", self.source.name)
            self._logged.clear()
        self._cache.store(self.source.name, sample, time.perf_counter() - started, time.time())

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message, *args)
