"""Scrapes before ingestion: a scrape has a timeout where a batch has none."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

APPLY_SLICE = 500
"""Items applied per hold of the pipeline lock (about a millisecond of reduction)."""
RENDER_PRIORITY_SECONDS = 0.05
"""Longest ingestion waits, between two slices, for a scrape that is rendering."""


class ScrapePriority:
    """Counts the scrapes rendering now; a batch cut into slices steps aside for them
    between slices, since the two share one interpreter."""

    def __init__(self) -> None:
        self._rendering = 0
        self._done = threading.Condition()  # guards _rendering; notified when it is 0

    @contextmanager
    def rendering(self) -> Iterator[None]:
        """Mark a scrape in progress, from its snapshot to its last byte."""
        with self._done:
            self._rendering += 1
        try:
            yield
        finally:
            with self._done:
                self._rendering -= 1
                if not self._rendering:
                    self._done.notify_all()

    def slices(self, count: int) -> Iterator[range]:
        """The indices of a batch, a slice per hold of the pipeline lock (or per parse);
        before each slice but the first, step aside while a scrape renders."""
        for first in range(0, count, APPLY_SLICE):
            if first and self._rendering:
                self._step_aside()
            yield range(first, min(first + APPLY_SLICE, count))

    def _step_aside(self) -> None:
        """Wait up to RENDER_PRIORITY_SECONDS while a scrape renders: asleep until it ends,
        so the scrape has the interpreter to itself (no polling that would take it)."""
        with self._done:
            self._done.wait_for(lambda: not self._rendering, RENDER_PRIORITY_SECONDS)
