"""Which lines of a followed file the collector has taken: what the state file's
``delivered`` offset says, so that a restart sends again what it had not accepted, and
only that.

Reading a line is not delivering it: its spans and log records wait in the OTLP queue,
then in a request the collector may refuse or never answer. Each one leaves with a
:class:`Receipt` (its file's :class:`Ledger`, and where the line that made it starts),
held until the collector accepts it; the file's delivered offset is where its first
line still held starts (the read offset when none is). After a restart, the lines
between the delivered and the read offsets send their spans and log records again,
with the same ids, counted as sent again.

For that count to hold after ``kill -9``, nothing leaves before the state file says
its line was read: an item is :meth:`Receipt.ready` once the tailer has saved a read
offset past its line (the tailer saves soon after reading, so this costs about a
second), so no line past the saved read offset has sent anything.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass


class Ledger:
    """One file's lines with spans or log records not yet accepted, by where each starts.
    Held by the tailer's thread (under the pipeline lock), settled by the senders'."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}  # line start -> items queued or being sent
        self._lost: int | None = None  # the first line with an item the collector refused
        self._saved = 0  # the read offset in the state file: lines before it may send
        self._newest = -1  # where the last line held starts

    def release(self, read: int) -> None:
        """The state file now says the file was read up to ``read``."""
        self._saved = max(self._saved, read)

    def release_all(self) -> None:
        """The file is no longer followed, or was rewritten: its cursor no longer speaks
        for what it sent."""
        self._saved = sys.maxsize

    def released(self, offset: int) -> bool:
        return offset < self._saved

    @property
    def waiting(self) -> bool:
        """Whether an item waits for a read offset to be saved."""
        return self._newest >= self._saved

    def hold(self, offset: int) -> None:
        with self._lock:
            self._held[offset] = self._held.get(offset, 0) + 1
            self._newest = max(self._newest, offset)

    def settle(self, offset: int, accepted: bool) -> None:
        """An item is accepted, or lost (refused, or dropped for room): a lost one holds
        its line until a restart sends it again."""
        with self._lock:
            left = self._held.pop(offset) - 1
            if left:
                self._held[offset] = left
            if not accepted and (self._lost is None or offset < self._lost):
                self._lost = offset

    def delivered(self, read: int) -> int:
        """Where the first line not wholly delivered starts, ``read`` when all are."""
        with self._lock:
            first = min(self._held, default=read)
            return min(read, first, read if self._lost is None else self._lost)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What an item sent from a file carries: its line's place in the file's ledger."""

    ledger: Ledger
    offset: int  # where the line starts

    def hold(self) -> None:
        self.ledger.hold(self.offset)

    def ready(self) -> bool:
        """Whether the item may leave: the state file says its line was read."""
        return self.ledger.released(self.offset)

    def settle(self, accepted: bool) -> None:
        self.ledger.settle(self.offset, accepted)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a batch of lines handed to the pipeline was read: lines before ``fresh_from``
    were read before a restart (what they send, they send again); ``starts`` are the
    lines' offsets, when the file's delivery is tracked."""

    fresh_from: int
    ledger: Ledger | None = None
    starts: Sequence[int] = ()

    def receipt(self, index: int) -> Receipt | None:
        return None if self.ledger is None else Receipt(self.ledger, self.starts[index])
