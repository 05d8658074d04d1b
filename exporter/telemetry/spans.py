"""Finished spans from the reducer, as OTel spans with ids derived from the run.

The trace id is a hash of the run id and each span id a hash of (run id, kind,
name, start time), so replaying the same file gives the same trace, and a
restart that re-reads a file re-creates the ids of spans still open. Times come
from the events. Spans go to the exporter through :class:`SpanShipper`, a
bounded queue whose overflow and failed exports are counted, never silent.
"""

from __future__ import annotations

import collections
import hashlib
import threading

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from exporter.state import FinishedSpan, OpenSpan
from exporter.stats import Stats
from exporter.trace_ids import trace_id_for

SCOPE = "runwatch"


def span_id_for(run_id: str, span: OpenSpan) -> int:
    key = f"{run_id}\x00{span.kind}\x00{span.name}\x00{span.start!r}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") or 1


def span_name(span: OpenSpan) -> str:
    return "run" if span.kind == "run" else f"{span.kind} {span.name}"


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


class _PresetIds(IdGenerator):
    """Hands out the ids set just before each ``start_span`` (under the pipeline lock)."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


class SpanWriter:
    """Turns FinishedSpans into OTel spans on a tracer provider."""

    def __init__(self, resource: Resource, processor: SpanProcessor) -> None:
        self._ids = _PresetIds()
        self.provider = TracerProvider(
            resource=resource, id_generator=self._ids, shutdown_on_exit=False
        )
        self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer(SCOPE)

    def write(self, finished: FinishedSpan) -> None:
        span, run_id = finished.span, finished.run_id
        trace_id = trace_id_for(run_id)
        context = Context()
        if span.parent is not None:
            parent = SpanContext(
                trace_id, span_id_for(run_id, span.parent), False, TraceFlags(TraceFlags.SAMPLED)
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent), context)
        self._ids.trace_id = trace_id
        self._ids.span_id = span_id_for(run_id, span)
        attributes = {finished.key_attribute: run_id, **span.attributes}
        otel_span = self._tracer.start_span(
            span_name(span), context=context, attributes=attributes, start_time=_ns(span.start)
        )
        for timestamp, name, event_attributes in span.events:
            otel_span.add_event(name, event_attributes, timestamp=_ns(timestamp))
        if finished.error is not None:
            otel_span.set_status(Status(StatusCode.ERROR, finished.error))
        otel_span.end(end_time=_ns(max(finished.end, span.start)))


class SpanShipper(SpanProcessor):
    """A bounded span queue drained by one thread in batches; drops are counted.

    Used instead of the SDK's BatchSpanProcessor because that one drops on a full
    queue with only a log line, and runwatch promises every loss is counted.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        stats: Stats,
        max_queue: int = 8192,
        batch_size: int = 512,
        delay_seconds: float = 1.0,
    ) -> None:
        self._exporter = exporter
        self._stats = stats
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._delay = delay_seconds
        self._wake = threading.Event()
        self._stopping = False
        self._export_lock = threading.Lock()
        self._in_flight = 0  # spans in the export under way
        self._thread = threading.Thread(target=self._run, name="runwatch-spans", daemon=True)
        self._thread.start()

    def on_end(self, span: ReadableSpan) -> None:
        if len(self._queue) >= self._max_queue:
            try:
                self._queue.popleft()
                self._stats.count(self._stats.otlp_dropped, ("spans", "queue_full"))
            except IndexError:
                pass  # the shipping thread emptied it meanwhile
        self._queue.append(span)
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    @property
    def unsent(self) -> int:
        """Spans queued or in an export that has not returned yet."""
        return len(self._queue) + self._in_flight

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._drain()
        return True

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)
        self._drain()
        self._exporter.shutdown()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._delay)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        with self._export_lock:
            while self._queue:
                batch = []
                while self._queue and len(batch) < self._batch_size:
                    batch.append(self._queue.popleft())
                self._in_flight = len(batch)
                try:
                    result = self._exporter.export(batch)
                except Exception:  # an exporter bug must not kill the shipping thread
                    result = SpanExportResult.FAILURE
                self._in_flight = 0
                if result is SpanExportResult.SUCCESS:
                    self._stats.count(self._stats.otlp_exported, "spans", len(batch))
                else:
                    failed = ("spans", "export_failed")
                    self._stats.count(self._stats.otlp_dropped, failed, len(batch))
