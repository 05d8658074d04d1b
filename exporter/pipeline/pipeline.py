"""The one place where sources meet the state: parse, reduce, hand outputs on.

Sources (file tailer, HTTP ingest, PID files, followers) call in from their own
threads; one lock serialises them, so the reducers themselves stay single-threaded
and free of locking. The lock is never held for long: a batch is applied in
slices of :data:`~exporter.pipeline.priority.APPLY_SLICE` items, and the outputs render
from a :meth:`Pipeline.snapshot`, copied under the lock and read outside it, so a big
POST and a scrape of a hundred runs never wait on each other for more than a
slice or a copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import msgspec

from exporter.core.events import (
    CustomEvent,
    Event,
    Parsed,
    Refused,
    Rejected,
    parse_lines,
    validate,
)
from exporter.core.metric_window import WindowRows
from exporter.core.router.reducer import EventPlan, RouterState, plan_each
from exporter.core.state import Limits, ProcessObservation, State
from exporter.pipeline.completion import Completion
from exporter.pipeline.delivery import Origin
from exporter.pipeline.emit import EVERYTHING, NOTHING, OutputSink, Sinks, emit_for
from exporter.pipeline.peers import JobInputs, TradingInputs
from exporter.pipeline.priority import ScrapePriority
from exporter.pipeline.readings import ReadingsCache
from exporter.pipeline.rejections import Rejections
from exporter.pipeline.router_events import custom_event_outputs
from exporter.pipeline.self_stats import Stats
from exporter.pipeline.view import View


class Pipeline:
    def __init__(
        self,
        limits: Limits | None = None,
        max_line_bytes: int = 1 << 20,
        strict_events: bool = False,
    ) -> None:
        self._lock = threading.Lock()  # guards everything below but stats and readings
        self.state = State(limits, tracing=False)
        self._router: RouterState | None = None
        self.stats = Stats()  # counters with locks of their own
        self.readings = ReadingsCache()  # written by the sampled sources' threads
        self.rejections = Rejections(self.stats)
        self.max_line_bytes = max_line_bytes
        self._sinks = Sinks()
        self._completion = Completion(self.state, self.stats, strict_events)
        self._priority = ScrapePriority()
        self.trading = TradingInputs(self._lock, self.state, self._sinks)
        self.jobs = JobInputs(self._lock, self.state, self._sinks)
        self._snapshot: tuple[float, View] | None = None  # (monotonic time taken, view)

    def add_sink(
        self, sink: OutputSink, *, spans: bool = True, steps: bool = False, logs: bool = False
    ) -> None:
        """Send outputs to ``sink``: spans and durations, step values (the step history),
        log lines (the event log), as it asks; the reducers build those from now on."""
        with self._lock:
            self._sinks.add(sink)
            self.state.tracing |= spans or logs  # a log line carries its span's ids
            self.state.history |= steps
            self.state.logging |= logs
            if self._router is not None:
                self._router.tracing, self._router.logging = self.state.tracing, self.state.logging

    @property
    def router(self) -> RouterState | None:
        """Router events reduced by a mapping, when one is configured (set before the
        sources start); it builds spans and log lines when an output takes them."""
        return self._router

    @router.setter
    def router(self, router: RouterState | None) -> None:
        with self._lock:
            if router is not None:
                router.tracing, router.logging = self.state.tracing, self.state.logging
            self._router = router

    def ingest_lines(
        self, lines: list[bytes], source: str, spans_from: int = 0, origin: Origin | None = None
    ) -> list[tuple[int, Refused]]:
        """Parse a batch of lines (outside the lock, a slice at a time, stepping aside for a
        scrape between slices as applying does) and apply it; see :meth:`apply_parsed`."""
        items: list[Parsed] = []
        for indices in self._priority.slices(len(lines)):
            items += parse_lines(lines[indices.start : indices.stop], self.max_line_bytes)
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
        read before it and where each line of a tracked file starts (see
        :class:`~exporter.pipeline.emit.Emit`). Returns the index and rejection of each item
        refused, by the parser or the reducer; all are counted."""
        rejections: list[tuple[int, Refused]] = []
        apply = self.state.apply
        count_rejected = self.rejections.count
        ahead = self.state.limits.max_time_ahead_seconds
        for indices in self._priority.slices(len(items)):
            horizon = time.time() + ahead
            with self._lock:
                for index in indices:
                    item = items[index]
                    if item is None:
                        continue
                    if type(item) is Refused:  # isinstance costs a Struct 5x more
                        count_rejected(source, item)
                        rejections.append((index, item))
                        continue
                    try:
                        if item.run_id is None or type(item.timestamp) is not float:
                            self._completion.complete(item, source, items,
                                                      range(indices.start, index))  # fmt: skip
                        if item.timestamp > horizon:  # type: ignore[operator]  # completed
                            raise _in_the_future(item.timestamp, ahead)  # type: ignore[arg-type]
                        outputs = apply(item)
                    except Rejected as rejected:
                        count_rejected(source, rejected)
                        rejections.append((index, rejected.as_refused()))
                        continue
                    except Exception as exc:  # a reducer bug costs one event
                        rejections.append((index, self.rejections.failed(source, exc)))
                        continue
                    if outputs:
                        self._sinks.hand_on(outputs, emit_for(index, spans_from, origin))
                    if type(item) is CustomEvent and self.router is not None:
                        mapped = custom_event_outputs(self.router, item)
                        if mapped:
                            self._sinks.hand_on(mapped, emit_for(index, spans_from, origin))
            self._completion.applied(source, items, indices)
        accepted = len(items) - items.count(None) - len(rejections)
        self.stats.count(self.stats.ingested, source, accepted)
        return rejections

    def ingest_router(
        self, values: list[Any], source: str, received_at: float, spans_from: int = 0
    ) -> None:
        """Decoded router events (or the Rejected of values that did not decode), read by
        the mapping's rules outside the lock, then reduced; items before ``spans_from`` emit
        no spans."""
        router = self.router
        assert router is not None, "ingest_router needs pipeline.router"

        def failed(exc: Exception) -> None:  # counted (and logged) here
            self.rejections.failed(source, exc)

        self.apply_router_plans(plan_each(router, values, received_at, failed), source, spans_from)

    def apply_router_plans(
        self, plans: Sequence[EventPlan | Refused | None], source: str, spans_from: int = 0
    ) -> None:
        """Router events as planned (:meth:`~exporter.core.router.reducer.RouterState.plan`,
        here or by a parse worker), reduced under one lock a slice at a time; a Refused is
        counted, None was counted already."""
        router = self.router
        assert router is not None, "apply_router_plans needs pipeline.router"
        accepted = 0
        apply = router.apply_plan
        for indices in self._priority.slices(len(plans)):
            with self._lock:
                for index in indices:
                    plan = plans[index]
                    if plan is None:
                        continue
                    if type(plan) is Refused:
                        self.rejections.count(source, plan)
                        continue
                    try:
                        outputs = apply(plan)
                    except Exception as exc:  # a reducer bug costs one event
                        self.rejections.failed(source, exc)
                        continue
                    accepted += 1
                    if outputs:
                        self._sinks.hand_on(outputs, EVERYTHING if index >= spans_from else NOTHING)
        self.stats.count(self.stats.ingested, source, accepted)

    def observe_process(self, observation: ProcessObservation) -> None:
        """A PID file's process, as the PID-file watcher saw it on its clock."""
        with self._lock:
            self._completion.process_seen(
                observation.run_id, observation.alive and not observation.closed
            )
            self._sinks.hand_on(self.state.observe_process(observation), EVERYTHING)

    def observe_gpus(self, gpus: Mapping[str, int]) -> None:
        """GPUs attributed to each run's processes now (the NVML source's sample)."""
        with self._lock:
            self.state.observe_gpus(gpus)

    def expire_runs(self, now: float) -> int:
        """Forget the finished runs past their retention (see State.expire)."""
        with self._lock:
            return self.state.expire(now)

    def keep_windows(self) -> None:
        """Keep each run's metric values by step from now on, for the run API."""
        with self._lock:
            self.state.keep_windows()

    def window_rows(
        self, run_id: str, keys: Iterable[str] | None = None, since: int = 0
    ) -> WindowRows | None:
        """A copy of ``run_id``'s metric window from sequence number ``since`` (None when
        the run has none: windows not kept, or no step logged)."""
        with self._lock:
            windows = self.state.windows
            window = windows.get(run_id) if windows is not None else None
            return window.rows(keys, since) if window is not None else None

    def rendering(self) -> AbstractContextManager[None]:
        """Mark a scrape in progress, from its snapshot to its last byte: ingestion steps
        aside between slices meanwhile."""
        return self._priority.rendering()

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
                self.state.snapshot(), self.stats, readings, self.jobs.handshakes.snapshot(), router
            )
        self._snapshot = (time.monotonic(), view)
        return view


def _in_the_future(at: float, ahead: float) -> Rejected:
    return Rejected("in_the_future", f"{_utc(at)} is more than {ahead:g} s ahead of "
                    "runwatch's clock (--max-time-ahead)")  # fmt: skip


def _utc(seconds: float) -> str:
    """An event time as a person reads it (years past 9999 as epoch seconds)."""
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return f"{seconds:.0f} (epoch seconds)"
