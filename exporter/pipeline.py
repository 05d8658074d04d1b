"""The one place where sources meet the state: parse, reduce, hand outputs on.

Sources (file tailer, HTTP ingest, PID files) call in from their own threads or
the event loop; one lock serialises them with scrapes and OTel collections, so
the reducer itself stays single-threaded and free of locking.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from exporter.engine_cycles import EngineCycles
from exporter.events import Parsed, Refused, Rejected, parse_lines, validate
from exporter.handshake import ACK_METRIC, Handshakes
from exporter.readings import Readings, ReadingsCache
from exporter.router.reducer import RouterState
from exporter.state import Limits, Observed, Output, ProcessObservation, State
from exporter.stats import Stats

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class View:
    """What the outputs may read of the pipeline: taken under its lock (``Pipeline.view``)."""

    state: State
    stats: Stats
    readings: Readings  # the sampled sources' latest fresh samples
    handshakes: Handshakes  # the training backend's start handshakes
    router: RouterState | None  # router events reduced by a mapping, when one is configured


class OutputSink(Protocol):
    def handle(self, outputs: list[Output], emit_spans: bool) -> None:
        """Receive spans that ended and durations observed by one reduction."""


class Pipeline:
    def __init__(self, limits: Limits | None = None, max_line_bytes: int = 1 << 20) -> None:
        self.state = State(limits, tracing=False)
        self.stats = Stats()
        self.readings = ReadingsCache()  # written by the sampled sources' threads
        self.engine_cycles = EngineCycles()
        self.handshakes = Handshakes()
        self.router: RouterState | None = None  # set before the sources start
        self.max_line_bytes = max_line_bytes
        self._sinks: list[OutputSink] = []
        self._failed_sinks: set[OutputSink] = set()  # logged once each
        self._lock = threading.Lock()

    def add_sink(self, sink: OutputSink) -> None:
        """Send spans and durations to ``sink``; the reducer builds them from now on."""
        with self._lock:
            self._sinks.append(sink)
            self.state.tracing = True

    def ingest_lines(
        self, lines: list[bytes], source: str, spans_from: int = 0
    ) -> list[tuple[int, Refused]]:
        """Parse a batch of lines (outside the lock) and apply it; see :meth:`apply_parsed`."""
        return self.apply_parsed(parse_lines(lines, self.max_line_bytes), source, spans_from)

    def ingest_value(self, raw: Any, source: str) -> Refused | None:
        """One already-decoded JSON value (an element of a POSTed array)."""
        try:
            parsed: Parsed = validate(raw)
        except Rejected as rejected:
            parsed = rejected.as_refused()
        rejections = self.apply_parsed([parsed], source)
        return rejections[0][1] if rejections else None

    def apply_parsed(
        self, items: list[Parsed], source: str, spans_from: int = 0
    ) -> list[tuple[int, Refused]]:
        """Apply parsed lines under one lock; items before index ``spans_from`` emit no spans
        (they were exported before a restart). Returns the index and rejection of each item
        refused, by the parser or the reducer; all are counted."""
        rejections: list[tuple[int, Refused]] = []
        apply = self.state.apply
        with self._lock:
            for index, item in enumerate(items):
                if item is None:
                    continue
                if item.__class__ is Refused:
                    self.reject(source, item)
                    rejections.append((index, item))
                    continue
                try:
                    outputs = apply(item)
                except Rejected as rejected:
                    self.reject(source, rejected)
                    rejections.append((index, rejected.as_refused()))
                    continue
                if outputs:
                    self._hand_on(outputs, index >= spans_from)
        accepted = len(items) - items.count(None) - len(rejections)
        self.stats.count(self.stats.ingested, source, accepted)
        return rejections

    def ingest_router(
        self, values: list[Any], source: str, received_at: float, spans_from: int = 0
    ) -> None:
        """Decoded router events (or the Rejected of values that did not decode), reduced by
        the mapping under one lock; items before ``spans_from`` emit no spans."""
        router = self.router
        assert router is not None, "ingest_router needs pipeline.router"
        accepted = 0
        with self._lock:
            for index, value in enumerate(values):
                if isinstance(value, Rejected):  # refused by the reader already
                    self.reject(source, value)
                    continue
                try:
                    outputs = router.apply(value, received_at)
                except Rejected as rejected:
                    self.reject(source, rejected)
                    continue
                accepted += 1
                if outputs:
                    self._hand_on(outputs, index >= spans_from)
        self.stats.count(self.stats.ingested, source, accepted)

    def observe_process(self, observation: ProcessObservation) -> None:
        with self._lock:
            outputs = self.state.observe_process(observation)
            self._hand_on(outputs, True)

    def observe_engine_stage(self, engine: str, stage: str, at: float) -> None:
        """The trading engine entered ``stage`` (a STAGE_CHANGE); spans for the outputs."""
        with self._lock:
            if self.state.tracing:
                self._hand_on(self.engine_cycles.observe(engine, stage, at), True)

    def job_accepted(self, job: str, at: float) -> None:
        with self._lock:
            self.handshakes.accepted(job, at)

    def job_started(self, job: str, at: float) -> None:
        with self._lock:
            delay = self.handshakes.start(job, at)
            if delay is not None and self.state.tracing:
                self._hand_on([Observed(ACK_METRIC, delay, ())], True)

    def expire_handshakes(self, now: float) -> None:
        with self._lock:
            self.handshakes.expire(now)

    def reject(self, source: str, rejected: Rejected | Refused) -> None:
        self.stats.count(self.stats.rejected, (source, rejected.reason))

    @contextmanager
    def view(self) -> Iterator[View]:
        with self._lock:
            yield View(
                self.state, self.stats, self.readings.snapshot(), self.handshakes, self.router
            )

    def _hand_on(self, outputs: list[Output], emit_spans: bool) -> None:
        for sink in self._sinks:
            try:
                sink.handle(outputs, emit_spans)
            except Exception:  # an output's failure must not stop ingestion
                if sink not in self._failed_sinks:
                    self._failed_sinks.add(sink)
                    log.exception("output %r failed; ingestion goes on", sink)
