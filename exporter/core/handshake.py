"""The training backend's start handshake as telemetry.

A client POSTs ``/start_training`` and gets 202 with a ``job_id``; the backend
should then say ``training.started`` on its WebSocket, and a client gives up after
30 s. runwatch watches the same exchange: a job seen accepted (in ``GET /jobs`` or
an accepted message) starts a clock; ``training.started`` stops it and the delay
goes into a histogram; a job still waiting after the timeout is counted once.
Pure: the times are the backend's, and the caller's clock for the timeout check.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import TypeVar

from exporter.core.outputs import Histogram

V = TypeVar("V")

ACK_METRIC = "training_job_ack_seconds"
ACK_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
MAX_TRACKED = 1000  # jobs remembered per kind; the oldest are forgotten first


class Handshakes:
    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.pending: OrderedDict[str, float] = OrderedDict()  # job -> accepted at
        self.late: OrderedDict[str, float] = OrderedDict()  # timed out, may still start
        self.started: OrderedDict[str, None] = OrderedDict()
        self.latency = Histogram.empty(ACK_BUCKETS)
        self.timeouts = 0

    def snapshot(self) -> Handshakes:
        """A copy that later handshakes will not change, for rendering outside the lock."""
        handshakes = copy.copy(self)
        handshakes.pending = self.pending.copy()
        handshakes.late = self.late.copy()
        handshakes.started = self.started.copy()
        handshakes.latency = self.latency.copy()
        return handshakes

    def accepted(self, job: str, at: float) -> None:
        if job not in self.pending and job not in self.late and job not in self.started:
            _bounded_set(self.pending, job, at)

    def start(self, job: str, at: float) -> float | None:
        """The job started; returns the delay since it was accepted, if that was seen."""
        accepted_at = self.pending.pop(job, None)
        if accepted_at is None:
            accepted_at = self.late.pop(job, None)
        _bounded_set(self.started, job, None)
        if accepted_at is None:
            return None
        delay = max(0.0, at - accepted_at)
        self.latency.observe(delay)
        return delay

    def expire(self, now: float) -> int:
        """Count the jobs that have waited past the timeout; returns how many did now."""
        expired = [job for job, at in self.pending.items() if now - at > self.timeout]
        for job in expired:
            _bounded_set(self.late, job, self.pending.pop(job))
        self.timeouts += len(expired)
        return len(expired)


def _bounded_set(mapping: OrderedDict[str, V], key: str, value: V) -> None:
    mapping[key] = value
    while len(mapping) > MAX_TRACKED:
        mapping.popitem(last=False)
