"""Refused lines of followed files, in the log: the first of each reason per file with its
line number and why, then at most one summary per file a minute. Every refusal is counted in
runwatch_events_rejected_total either way; this says which file and where to look."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from exporter.core.events import Refused

log = logging.getLogger("exporter.sources.files.jsonl")

SUMMARY_SECONDS = 60.0
MAX_REMEMBERED = 10_000  # (file, reason) pairs already logged


class RejectionLog:
    def __init__(
        self, interval: float = SUMMARY_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._logged: set[tuple[str, str]] = set()
        self._pending: dict[str, Counter[str]] = {}
        self._last_summary: dict[str, float] = {}

    def note(self, path: str, first_line: int, rejections: list[tuple[int, Refused]]) -> None:
        """Rejections of a batch whose first line is line ``first_line`` (1-based) of ``path``."""
        for index, refused in rejections:
            key = (path, refused.reason)
            if key in self._logged:
                self._pending.setdefault(path, Counter())[refused.reason] += 1
                continue
            if len(self._logged) >= MAX_REMEMBERED:
                self._logged.clear()
            self._logged.add(key)
            self._last_summary.setdefault(path, self._clock())  # the next, a minute on
            log.warning("%s line %d refused (%s): %s; more lines refused for this reason are "
                        "summed up here once a minute", path, first_line + index,
                        refused.reason, refused.detail)  # fmt: skip
        self.summarise()

    def summarise(self) -> None:
        """Log what was refused since the last summary, where a minute has passed."""
        now = self._clock()
        for path, reasons in list(self._pending.items()):
            if now - self._last_summary.get(path, -self._interval) < self._interval:
                continue
            self._last_summary[path] = now
            del self._pending[path]
            counts = ", ".join(f"{reason}={n}" for reason, n in sorted(reasons.items()))
            total = sum(reasons.values())
            log.warning("%s: %d more line%s refused (%s)", path, total,
                        "" if total == 1 else "s", counts)  # fmt: skip
