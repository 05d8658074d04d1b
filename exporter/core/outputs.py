"""What the reducers hand on to the outputs: spans, histograms, observations, step values
and event-log lines. Plain data, shared by every reducer (runs, engine cycles,
handshakes, the router) and every output (Prometheus, OTLP, remote write), so that none
of them imports another's reducer for its types."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

MAX_SPAN_EVENTS = 128
"""Events (errors, progress messages, custom events) kept per span, as the OTel SDK does."""


@dataclass(slots=True)
class OpenSpan:
    """A span that has started; it is emitted as a FinishedSpan when it ends."""

    kind: str  # "run", "stage" or "target"
    name: str  # run id, stage or target; with kind and start it makes the span id
    start: float
    parent: OpenSpan | None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    cost: int = 0  # bytes charged to its run's text budget (the reducer's bookkeeping)


@dataclass(frozen=True, slots=True)
class FinishedSpan:
    run_id: str  # the trace key: a run id, or an engine cycle's
    span: OpenSpan
    end: float
    error: str | None  # status description when the span ends in error
    key_attribute: str = "training.run_id"  # the span attribute that carries the trace key


@dataclass(slots=True)
class Histogram:
    """Cumulative-free bucket counts; rendered cumulatively by the outputs."""

    bounds: tuple[float, ...]
    counts: list[int]
    total: float = 0.0
    count: int = 0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls(bounds, [0] * (len(bounds) + 1))

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def copy(self) -> Histogram:
        return Histogram(self.bounds, self.counts.copy(), self.total, self.count)


@dataclass(frozen=True, slots=True)
class Observed:
    """A value for a histogram of the catalogue (by its /metrics name); OTel records it."""

    metric: str
    value: float
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StepValues:
    """The values logged at one step, at the event's time: the step history (remote write,
    OpenMetrics backfill), built only while ``State.history`` is set."""

    run_id: str
    timestamp: float
    values: dict[str, float]
    step: int | None  # the event's, when it gave one


@dataclass(frozen=True, slots=True)
class LogLine:
    """An event as a line of the event log (OTLP logs), with the span it belongs to, whose
    trace and span ids it carries; built only while ``State.logging`` is set."""

    trace_key: str  # as FinishedSpan.run_id: the trace the span is in
    span: OpenSpan | None
    timestamp: float
    severity: str  # event_log.INFO, WARN or ERROR
    body: str
    attributes: dict[str, Any]


Output = FinishedSpan | Observed | StepValues | LogLine
