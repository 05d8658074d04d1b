"""The one place where sources meet the state: parse, reduce, hand outputs on.

Sources (file tailer, HTTP ingest, PID files, followers) call in from their own
threads; one lock serialises them, so the reducer itself stays single-threaded
and free of locking. The lock is never held for long: a batch is applied in
slices of :data:`APPLY_SLICE` items, and the outputs render from a
:meth:`Pipeline.snapshot`, copied under the lock and read outside it, so a big
POST and a scrape of a hundred runs never wait on each other for more than a
slice or a copy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import msgspec

from exporter.core.engine_cycles import EngineCycles
from exporter.core.events import (
    CustomEvent,
    Event,
    Parsed,
    Refused,
    Rejected,
    failure,
    naive_seconds,
    parse_lines,
    validate,
)
from exporter.core.handshake import ACK_METRIC, Handshakes
from exporter.core.outputs import Observed, Output
from exporter.core.router.reducer import RouterState
from exporter.core.state import Limits, ProcessObservation, State
from exporter.sources.files.delivery import Origin, Receipt
from exporter.sources.sampled.readings import Readings, ReadingsCache
from exporter.telemetry.self_stats import Stats

log = logging.getLogger(__name__)

APPLY_SLICE = 500
"""Items applied per hold of the pipeline lock (about a millisecond of reduction)."""
RENDER_PRIORITY_SECONDS = 0.05
"""Longest ingestion waits, between two slices, for a scrape that is rendering."""
BACKLOG_SECONDS = 1.0
"""A source that applied an event of a run this recently (wall clock) is reading a backlog
of it: an event of that run without a timestamp takes the run's latest time, not now."""


@dataclass(frozen=True, slots=True)
class View:
    """What the outputs may read of the pipeline: copies taken under its lock
    (:meth:`Pipeline.snapshot`) that nothing changes afterwards."""

    state: State
    stats: Stats
    readings: Readings  # the sampled sources' latest fresh samples
    handshakes: Handshakes  # the training backend's start handshakes
    router: RouterState | None  # router events reduced by a mapping, when one is configured


@dataclass(frozen=True, slots=True)
class Emit:
    """What the outputs of one reduction go out as, by how its line was read. After a
    restart, a line before the delivered offset only rebuilds the state; one before the
    read offset sends its spans and log records again (``fresh`` off) and nothing else
    (its step samples went out when it was first read); any other line sends everything."""

    spans: bool  # spans and log records go out
    fresh: bool  # read for the first time: step samples go out too
    receipt: Receipt | None = None  # the line's place in its file's ledger, when tracked


NOTHING = Emit(spans=False, fresh=False)
EVERYTHING = Emit(spans=True, fresh=True)
AGAIN = Emit(spans=True, fresh=False)


class OutputSink(Protocol):
    def handle(self, outputs: Sequence[Output], emit: Emit) -> None:
        """Receive spans that ended and durations observed by one reduction."""


class Pipeline:
    def __init__(
        self,
        limits: Limits | None = None,
        max_line_bytes: int = 1 << 20,
        strict_events: bool = False,
    ) -> None:
        self.state = State(limits, tracing=False)
        self.strict_events = strict_events  # refuse what LENIENCIES would complete
        self.stats = Stats()
        self.readings = ReadingsCache()  # written by the sampled sources' threads
        self.engine_cycles = EngineCycles()
        self.handshakes = Handshakes()
        self.router: RouterState | None = None  # set before the sources start
        self.max_line_bytes = max_line_bytes
        self._sinks: list[OutputSink] = []
        self._failed_sinks: set[OutputSink] = set()  # logged once each
        self._failed_inputs: set[str] = set()  # sources whose input raised, logged once each
        self._lock = threading.Lock()
        self._snapshot: tuple[float, View] | None = None  # (monotonic time taken, view)
        self._rendering = 0  # scrapes rendering now (see _slices)
        self._rendering_lock = threading.Lock()
        self._latest_run: dict[str, tuple[str, float]] = {}  # by source: the run of its
        # latest event, and when (monotonic) that slice was applied
        self._pid_runs: dict[str, bool] = {}  # run id -> alive, from the PID files

    def add_sink(
        self, sink: OutputSink, *, spans: bool = True, steps: bool = False, logs: bool = False
    ) -> None:
        """Send outputs to ``sink``: spans and durations, step values (the step history),
        log lines (the event log), as it asks; the reducers build those from now on."""
        with self._lock:
            self._sinks.append(sink)
            self.state.tracing |= spans or logs  # a log line carries its span's ids
            self.state.history |= steps
            self.state.logging |= logs
            if logs and self.router is not None:
                self.router.logging = True

    def ingest_lines(
        self, lines: list[bytes], source: str, spans_from: int = 0, origin: Origin | None = None
    ) -> list[tuple[int, Refused]]:
        """Parse a batch of lines (outside the lock) and apply it; see :meth:`apply_parsed`."""
        items = parse_lines(lines, self.max_line_bytes)
        return self.apply_parsed(items, source, spans_from, origin)

    def ingest_value(self, raw: Any, source: str) -> Refused | None:
        """One already-decoded JSON value (an element of a POSTed array)."""
        try:
            parsed: Parsed = validate(raw)
        except Rejected as rejected:
            parsed = rejected.as_refused()
        rejections = self.apply_parsed([parsed], source)
        return rejections[0][1] if rejections else None

    def ingest_event(self, event: Event, source: str) -> Refused | None:
        """An event built in code (a peer's message, translated), held to the same bounds
        and normalisations as a parsed one: a peer's strings may be of any length."""
        return self.ingest_value(msgspec.to_builtins(event), source)

    def apply_parsed(
        self,
        items: Sequence[Parsed],
        source: str,
        spans_from: int = 0,
        origin: Origin | None = None,
    ) -> list[tuple[int, Refused]]:
        """Apply parsed lines under one lock; items before index ``spans_from`` emit no spans
        (they were delivered before a restart), and ``origin`` says which of the others were
        read before it and where each line of a tracked file starts (see :class:`Emit`).
        Returns the index and rejection of each item refused, by the parser or the reducer;
        all are counted."""
        rejections: list[tuple[int, Refused]] = []
        apply = self.state.apply
        ahead = self.state.limits.max_time_ahead_seconds
        for indices in self._slices(len(items)):
            horizon = time.time() + ahead
            with self._lock:
                for index in indices:
                    item = items[index]
                    if item is None:
                        continue
                    if type(item) is Refused:  # isinstance costs a Struct 5x more
                        self.reject(source, item)
                        rejections.append((index, item))
                        continue
                    if item.run_id is None or not isinstance(item.timestamp, float):
                        try:
                            self._complete(item, source, items, range(indices.start, index))
                        except Rejected as rejected:
                            self.reject(source, rejected)
                            rejections.append((index, rejected.as_refused()))
                            continue
                    try:
                        if item.timestamp > horizon:  # type: ignore[operator]  # completed
                            at: float = item.timestamp  # type: ignore[assignment]
                            raise Rejected("in_the_future", f"{_utc(at)} is more "
                                           f"than {ahead:g} s ahead of runwatch's clock "
                                           "(--max-time-ahead)")  # fmt: skip
                        outputs = apply(item)
                    except Rejected as rejected:
                        self.reject(source, rejected)
                        rejections.append((index, rejected.as_refused()))
                        continue
                    except Exception as exc:  # a reducer bug costs one event
                        refused = self.input_failed(source, exc)
                        rejections.append((index, refused))
                        continue
                    if outputs:
                        self._hand_on(outputs, _emit(index, spans_from, origin))
                    if type(item) is CustomEvent and self.router is not None:
                        self._map_custom(item, _emit(index, spans_from, origin))
            latest = _latest_run_id(items, indices)
            if latest is not None:
                self._latest_run[source] = (latest, time.monotonic())
        accepted = len(items) - items.count(None) - len(rejections)
        self.stats.count(self.stats.ingested, source, accepted)
        return rejections

    def _complete(self, event: Event, source: str, items: Sequence[Parsed], before: range) -> None:
        """Apply the LENIENCIES an event needs, counting each; raises Rejected when
        ``strict_events`` is set or no run can be named. ``before``: the items of this slice
        before the event (earlier slices are in ``_latest_run``)."""
        if event.run_id is None:
            if self.strict_events:
                raise Rejected("missing_field", "run_id (--strict-events)")
            run_id = self._live_pid_run() or _latest_run_id(items, before)
            run_id = run_id or self._latest_run.get(source, (None,))[0]
            if run_id is None:
                raise Rejected(
                    "missing_field", "run_id, and no PID file or earlier event names one"
                )
            event.run_id = run_id
            self._lenient(source, "missing_run_id")
        if event.timestamp is None:
            if self.strict_events:
                raise Rejected("missing_field", "timestamp (--strict-events)")
            now = time.time()
            run = self.state.runs.get(event.run_id)
            skew = self.state.limits.max_clock_skew_seconds
            # The time of reading, unless that would put the event out of order with its
            # neighbours: in a backlog (a file read long after it was written), or when the
            # writer's clock is ahead of ours. A live run that logs every few seconds is
            # neither, and its clock moves on.
            if run is not None and (
                run.last_event - now > skew
                or (
                    now - run.last_event > skew and self._backlog(source, run.run_id, items, before)
                )
            ):
                event.timestamp = run.last_event
            else:
                event.timestamp = now
            self._lenient(source, "missing_timestamp")
        elif isinstance(event.timestamp, datetime):
            if self.strict_events:
                raise Rejected("invalid_timestamp", "no UTC offset (--strict-events)")
            event.timestamp = naive_seconds(event.timestamp)
            self._lenient(source, "naive_timestamp")

    def _backlog(self, source: str, run_id: str, items: Sequence[Parsed], before: range) -> bool:
        """Whether ``source`` is reading a backlog of ``run_id``: an earlier event of this
        slice, or a slice applied within BACKLOG_SECONDS, was the run's."""
        if _latest_run_id(items, before) == run_id:
            return True
        latest, at = self._latest_run.get(source, (None, 0.0))
        return latest == run_id and time.monotonic() - at < BACKLOG_SECONDS

    def _map_custom(self, event: CustomEvent, emit: Emit) -> None:
        """A core event of a type runwatch does not know that the router mapping lists:
        the mapping's rules apply to it too (its fields, and ``run_id``, as the event's), so
        a user declares extra types and the metrics of their numeric fields in one place."""
        router = self.router
        assert router is not None
        mapping = router.mapping
        if event.type_name.strip().upper() not in mapping.categories:
            return
        value: dict[str, Any] = {**event.fields, "run_id": event.run_id,
                                 mapping.type_field: event.type_name}  # fmt: skip
        timestamp = cast(float, event.timestamp)  # completed before it was applied
        if mapping.time_field is not None:
            value[mapping.time_field] = timestamp
        try:
            outputs = router.apply(value, timestamp)
        except Rejected:  # its fields broke a rule's expectations; the core event stands
            return
        if outputs:
            self._hand_on(outputs, emit)

    def _lenient(self, source: str, leniency: str) -> None:
        self.stats.count(self.stats.lenient, (source, leniency))

    def _live_pid_run(self) -> str | None:
        """The run of the one live PID-file process, if exactly one is alive."""
        live = [run_id for run_id, alive in self._pid_runs.items() if alive]
        return live[0] if len(live) == 1 else None

    def ingest_router(
        self, values: list[Any], source: str, received_at: float, spans_from: int = 0
    ) -> None:
        """Decoded router events (or the Rejected of values that did not decode), reduced by
        the mapping under one lock; items before ``spans_from`` emit no spans."""
        router = self.router
        assert router is not None, "ingest_router needs pipeline.router"
        accepted = 0
        for indices in self._slices(len(values)):
            with self._lock:
                for index in indices:
                    value = values[index]
                    if isinstance(value, Rejected):  # refused by the reader already
                        self.reject(source, value)
                        continue
                    try:
                        outputs = router.apply(value, received_at)
                    except Rejected as rejected:
                        self.reject(source, rejected)
                        continue
                    except Exception as exc:  # a reducer bug costs one event
                        self.input_failed(source, exc)
                        continue
                    accepted += 1
                    if outputs:
                        self._hand_on(outputs, EVERYTHING if index >= spans_from else NOTHING)
        self.stats.count(self.stats.ingested, source, accepted)

    def observe_process(self, observation: ProcessObservation) -> None:
        with self._lock:
            self._pid_runs[observation.run_id] = observation.alive and not observation.closed
            if len(self._pid_runs) > self.state.limits.max_runs:  # forget the oldest
                del self._pid_runs[next(iter(self._pid_runs))]
            outputs = self.state.observe_process(observation)
            self._hand_on(outputs, EVERYTHING)

    def observe_engine_stage(self, engine: str, stage: str, at: float) -> None:
        """The trading engine entered ``stage`` (a STAGE_CHANGE); spans for the outputs."""
        with self._lock:
            if self.state.tracing:
                self._hand_on(self.engine_cycles.observe(engine, stage, at), EVERYTHING)

    def log_bus_event(self, engine: str, event_type: str, data: dict[str, Any], at: float) -> None:
        """A message of the trading engine's event bus, for the event log: a line in the
        span of the engine's current stage (after observe_engine_stage for a STAGE_CHANGE)."""
        with self._lock:
            if self.state.logging:
                line = self.engine_cycles.log_line(engine, event_type, data, at)
                self._hand_on([line], EVERYTHING)

    def job_accepted(self, job: str, at: float) -> None:
        with self._lock:
            self.handshakes.accepted(job, at)

    def job_started(self, job: str, at: float) -> None:
        with self._lock:
            delay = self.handshakes.start(job, at)
            if delay is not None and self.state.tracing:
                self._hand_on([Observed(ACK_METRIC, delay, ())], EVERYTHING)

    def expire_runs(self, now: float) -> int:
        """Forget the finished runs past their retention (see State.expire)."""
        with self._lock:
            return self.state.expire(now)

    def expire_handshakes(self, now: float) -> None:
        with self._lock:
            self.handshakes.expire(now)

    def reject(self, source: str, rejected: Rejected | Refused) -> None:
        self.stats.count(self.stats.rejected, (source, rejected.reason))

    def input_failed(self, source: str, exc: Exception) -> Refused:
        """Count an input whose handling raised (see :func:`~exporter.core.events.failure`): one
        rejection, and the traceback logged once per source."""
        refused = failure(exc).as_refused()
        self.reject(source, refused)
        if source not in self._failed_inputs:
            self._failed_inputs.add(source)
            log.error("%s input could not be processed; it is counted as %s and skipped",
                      source, refused.reason, exc_info=exc)  # fmt: skip
        return refused

    def _slices(self, count: int) -> Iterator[range]:
        """The indices of a batch, a slice per hold of the lock. Between slices, while a
        scrape renders, ingestion steps aside (up to RENDER_PRIORITY_SECONDS a slice): the
        two share one interpreter, and a scrape has a timeout where a batch has none."""
        for first in range(0, count, APPLY_SLICE):
            if first and self._rendering:
                deadline = time.monotonic() + RENDER_PRIORITY_SECONDS
                while self._rendering and time.monotonic() < deadline:
                    time.sleep(0.001)
            yield range(first, min(first + APPLY_SLICE, count))

    @contextmanager
    def rendering(self) -> Iterator[None]:
        """Mark a scrape in progress, from its snapshot to its last byte (see _slices)."""
        with self._rendering_lock:
            self._rendering += 1
        try:
            yield
        finally:
            with self._rendering_lock:
                self._rendering -= 1

    def snapshot(self, max_age: float = 0.0) -> View:
        """What the outputs render: the state copied under the lock (a few milliseconds for
        a hundred runs), read outside it. A snapshot younger than ``max_age`` seconds is
        reused, so the instruments of one OTel collection share one copy."""
        taken = self._snapshot
        if taken is not None and time.monotonic() - taken[0] < max_age:
            return taken[1]
        readings = self.readings.snapshot()  # immutable samples, behind a lock of their own
        with self._lock:
            router = self.router.snapshot() if self.router is not None else None
            view = View(
                self.state.snapshot(), self.stats, readings, self.handshakes.snapshot(), router
            )
        self._snapshot = (time.monotonic(), view)
        return view

    def _hand_on(self, outputs: Sequence[Output], emit: Emit) -> None:
        for sink in self._sinks:
            try:
                sink.handle(outputs, emit)
            except Exception:  # an output's failure must not stop ingestion
                if sink not in self._failed_sinks:
                    self._failed_sinks.add(sink)
                    log.exception("output %r failed; ingestion goes on", sink)


def _emit(index: int, spans_from: int, origin: Origin | None) -> Emit:
    """How the outputs of line ``index`` of a batch go out."""
    if index < spans_from:
        return NOTHING
    if origin is None:
        return EVERYTHING
    fresh = index >= origin.fresh_from
    receipt = origin.receipt(index)
    if receipt is None:
        return EVERYTHING if fresh else AGAIN
    return Emit(spans=True, fresh=fresh, receipt=receipt)


def _latest_run_id(items: Sequence[Parsed], indices: range) -> str | None:
    """The run id of the last event among ``items[indices]`` that names one."""
    for index in reversed(indices):
        item = items[index]
        if isinstance(item, Event) and item.run_id is not None:
            return item.run_id
    return None


def _utc(seconds: float) -> str:
    """An event time as a person reads it (years past 9999 as epoch seconds)."""
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return f"{seconds:.0f} (epoch seconds)"
