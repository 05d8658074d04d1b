"""Log lines a flood of clients could repeat thousands of times a second: the first of each
kind is logged whole, the rest counted and summed up at most once a minute (every one is
also counted in ``runwatch_http_refused_total``)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

SUMMARY_SECONDS = 60.0


class LogOnce:
    """One logger's repeated lines, by kind; called from the event loop's thread only."""

    def __init__(
        self,
        log: logging.Logger,
        interval: float = SUMMARY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}  # kind -> when last logged
        self._pending: Counter[str] = Counter()

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        """The first line of ``kind`` as given; later ones summed up a minute on."""
        now = self._clock()
        last = self._last.get(kind)
        if last is None:
            self._last[kind] = now
            self._log.log(level, message + " (more of these are summed up once a minute)", *args)
            return
        self._pending[kind] += 1
        if now - last >= self._interval:
            count = self._pending.pop(kind)
            self._last[kind] = now
            self._log.log(level, "%s: %d more in the last %.0f s", kind, count, now - last)
