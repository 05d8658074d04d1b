"""Time a training script spends in named phases, for runwatch's goodput account.

A :class:`PhaseClock` adds up, per phase name, the seconds spent in it since they were
last taken; nested phases count to the innermost only, so no second is counted twice.
It costs two clock reads and a dict update per phase, cheap enough for every step; the
seconds travel with the next step's event (``phase_seconds``), or in a ``phase`` event of
their own when a long phase ends or another event is sent. Not thread-safe: the phases
of one thread (the training loop's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

LONG_PHASE_SECONDS = 1.0
"""Phase time pending at least this long is sent when its phase ends, not with the next
step (a long evaluation shows when it ends)."""


class PhaseClock:
    """Seconds per phase name since the last :meth:`take`."""

    def __init__(self) -> None:
        self.pending: dict[str, float] = {}
        self._open: list[str] = []
        self._since = 0.0

    def enter(self, name: str) -> None:
        now = time.monotonic()
        if self._open:  # the enclosing phase stops counting while this one runs
            self._add(self._open[-1], now - self._since)
        self._open.append(name)
        self._since = now

    def leave(self, as_name: str | None = None) -> bool:
        """Close the innermost phase (its time under ``as_name`` when given); whether the
        time pending is long enough to send now (see LONG_PHASE_SECONDS)."""
        if not self._open:
            return False
        now = time.monotonic()
        name = self._open.pop()
        self._add(as_name or name, now - self._since)
        self._since = now
        return not self._open and sum(self.pending.values()) >= LONG_PHASE_SECONDS

    @property
    def current(self) -> str | None:
        return self._open[-1] if self._open else None

    def take(self) -> dict[str, float] | None:
        """The seconds pending, rounded to microseconds, and none pending after; the time
        of phases still open so far is taken too and counts on from now."""
        if self._open:
            now = time.monotonic()
            self._add(self._open[-1], now - self._since)
            self._since = now
        if not self.pending:
            return None
        taken = {name: round(seconds, 6) for name, seconds in self.pending.items()}
        self.pending = {}
        return taken

    def _add(self, name: str, seconds: float) -> None:
        self.pending[name] = self.pending.get(name, 0.0) + seconds


class Phase:
    """``with monitor.phase("data_loading"):`` — a reusable context manager."""

    __slots__ = ("_clock", "_name", "_send")

    def __init__(self, clock: PhaseClock, name: str, send: Callable[[], None]) -> None:
        self._clock, self._name, self._send = clock, name, send

    def __enter__(self) -> None:
        self._clock.enter(self._name)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._clock.leave():
            self._send()
