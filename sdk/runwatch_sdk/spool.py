"""The HTTP sender's spool: events runwatch could not take yet, on local disk, in order.

One JSON Lines file per sender (``<spool_dir>/<sender>.jsonl``), written and read only by
the sender's thread: batches are appended while runwatch is away and read back from the
front once it answers; the file is removed when it has all been delivered. Every line
carries its ``event_id``, so a file left behind by a process that exited before runwatch
came back is an ordinary event file: ``runwatch serve`` follows the spool folder by
default, and whatever of it was delivered already is applied once.

Bounded by ``max_bytes``: past it, metric updates are dropped (the caller counts them)
while lifecycle events (run start, status, checkpoints) are still written.
"""

from __future__ import annotations

import os
from pathlib import Path


class Spool:
    def __init__(self, directory: str | os.PathLike[str], sender: str, max_bytes: int) -> None:
        self.path = Path(directory) / f"{sender}.jsonl"
        self.max_bytes = max_bytes
        self.events = 0  # written and not yet delivered
        self._size = 0  # bytes written since the file was last emptied
        self._offset = 0  # bytes delivered from its front

    def __bool__(self) -> bool:
        return self.events > 0

    def fits(self, size: int) -> bool:
        return self._size + size <= self.max_bytes

    def append(self, lines: list[bytes]) -> None:
        """Write lines at the end (raises OSError: the caller counts them lost)."""
        if not lines:
            return
        if self._size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(lines)
        with open(self.path, "ab") as out:
            out.write(data)
        self._size += len(data)
        self.events += len(lines)

    def read(self, max_bytes: int) -> tuple[bytes, int]:
        """The next whole lines from the front, about ``max_bytes`` of them (one line at
        least, however long), and how many."""
        with open(self.path, "rb") as spooled:
            spooled.seek(self._offset)
            chunk = spooled.read(max_bytes)
            end = chunk.rfind(b"\n") + 1
            if end == 0:  # one line longer than max_bytes: to its end
                chunk += spooled.readline()
                end = len(chunk)
        chunk = chunk[:end]
        return chunk, chunk.count(b"\n")

    def delivered(self, size: int, events: int) -> None:
        """The front ``size`` bytes (``events`` lines) reached runwatch; an emptied file
        is removed."""
        self._offset += size
        self.events -= events
        if self.events == 0:
            self.discard()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self._size = self._offset = self.events = 0
