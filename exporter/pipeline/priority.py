"""Scrapes before ingestion: a scrape has a timeout where a batch has none."""

from __future__ import annotations

import threading
import time
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
        self._lock = threading.Lock()  # guards _rendering (scrape threads)

    @contextmanager
    def rendering(self) -> Iterator[None]:
        """Mark a scrape in progress, from its snapshot to its last byte."""
        with self._lock:
            self._rendering += 1
        try:
            yield
        finally:
            with self._lock:
                self._rendering -= 1

    def slices(self, count: int) -> Iterator[range]:
        """The indices of a batch, a slice per hold of the pipeline lock; before each slice
        but the first, wait up to RENDER_PRIORITY_SECONDS while a scrape renders."""
        for first in range(0, count, APPLY_SLICE):
            if first and self._rendering:
                deadline = time.monotonic() + RENDER_PRIORITY_SECONDS
                while self._rendering and time.monotonic() < deadline:
                    time.sleep(0.001)
            yield range(first, min(first + APPLY_SLICE, count))
