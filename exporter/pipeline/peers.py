"""What the programs runwatch talks to report besides events: the trading engine's
stages and bus messages, the training backend's job handshakes. Each call takes the
pipeline lock, as every input does."""

from __future__ import annotations

import threading
from typing import Any

from exporter.core.engine_cycles import EngineCycles
from exporter.core.handshake import ACK_METRIC, Handshakes
from exporter.core.outputs import Observed
from exporter.core.state import State
from exporter.pipeline.emit import EVERYTHING, Sinks


class TradingInputs:
    """The trading bridge's bus: engine stages as spans, messages as event-log lines."""

    def __init__(self, lock: threading.Lock, state: State, sinks: Sinks) -> None:
        self._lock, self._state, self._sinks = lock, state, sinks
        self.engine_cycles = EngineCycles()

    def observe_stage(self, engine: str, stage: str, at: float) -> None:
        """The trading engine entered ``stage`` (a STAGE_CHANGE); spans for the outputs."""
        with self._lock:
            if self._state.tracing:
                self._sinks.hand_on(self.engine_cycles.observe(engine, stage, at), EVERYTHING)

    def log_bus_event(self, engine: str, event_type: str, data: dict[str, Any], at: float) -> None:
        """A message of the engine's event bus, for the event log: a line in the span of
        the engine's current stage (after observe_stage for a STAGE_CHANGE)."""
        with self._lock:
            if self._state.logging:
                line = self.engine_cycles.log_line(engine, event_type, data, at)
                self._sinks.hand_on([line], EVERYTHING)


class JobInputs:
    """The training backend's start handshakes: accepted (202), started, timed out."""

    def __init__(self, lock: threading.Lock, state: State, sinks: Sinks) -> None:
        self._lock, self._state, self._sinks = lock, state, sinks
        self.handshakes = Handshakes()  # read by snapshot() under the lock

    def accepted(self, job: str, at: float) -> None:
        with self._lock:
            self.handshakes.accepted(job, at)

    def started(self, job: str, at: float) -> None:
        with self._lock:
            delay = self.handshakes.start(job, at)
            if delay is not None and self._state.tracing:
                self._sinks.hand_on([Observed(ACK_METRIC, delay, ())], EVERYTHING)

    def expire(self, now: float) -> None:
        with self._lock:
            self.handshakes.expire(now)

    def awaiting(self) -> bool:
        """Whether a job awaits its start or one timed out (the backend poller then reads
        the log tail)."""
        with self._lock:
            return bool(self.handshakes.pending or self.handshakes.late)
