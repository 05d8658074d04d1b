"""The web configuration's ``rate_limit``, as the exporter-toolkit applies it: one token
bucket for the whole server (golang.org/x/time/rate's ``Limiter``), a token every
``interval`` and at most ``burst`` saved up; a request that finds the bucket empty is
answered 429 at once, before any password is checked."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimit:
    interval: float  # seconds between two tokens
    burst: int  # tokens saved up at most


class TokenBucket:
    """Allows a request per ``interval`` on average and ``burst`` at once; starts full."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        elapsed, self._last = now - self._last, now
        self._tokens = min(self.limit.burst, self._tokens + elapsed / self.limit.interval)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
