"""Every input refused is counted by source and reason; one whose handling raised is
also logged, once per source, with its traceback."""

from __future__ import annotations

import logging
import threading

from exporter.core.events import Refused, Rejected, failure
from exporter.pipeline.self_stats import Stats

log = logging.getLogger(__name__)


class Rejections:
    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._failed_sources: set[str] = set()  # logged once each
        self._lock = threading.Lock()  # guards _failed_sources (any source's thread)

    def count(self, source: str, rejected: Rejected | Refused) -> None:
        self._stats.count(self._stats.rejected, (source, rejected.reason))

    def failed(self, source: str, exc: Exception) -> Refused:
        """Count an input whose handling raised (see :func:`~exporter.core.events.failure`):
        one rejection, and the traceback logged once per source."""
        refused = failure(exc).as_refused()
        self.count(source, refused)
        with self._lock:
            first = source not in self._failed_sources
            self._failed_sources.add(source)
        if first:
            log.error("%s input could not be processed; it is counted as %s and skipped",
                      source, refused.reason, exc_info=exc)  # fmt: skip
        return refused
