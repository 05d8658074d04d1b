"""Finished spans from the reducer, as OTel spans with ids derived from the run.

The trace id is a hash of the run id and each span id a hash of (run id, kind,
name, start time), so replaying the same file gives the same trace, and a
restart that re-reads a file re-creates the ids of spans still open. Times come
from the events. Spans go to the exporter through a
:class:`~exporter.telemetry.shipper.Shipper`, a bounded queue whose overflow and
failed exports are counted, never silent.
"""

from __future__ import annotations

import hashlib

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from exporter.core.outputs import FinishedSpan, OpenSpan
from exporter.core.trace_ids import trace_id_for

SCOPE = "runwatch"


def span_id_for(run_id: str, span: OpenSpan) -> int:
    key = f"{run_id}\x00{span.kind}\x00{span.name}\x00{span.start!r}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") or 1


def span_name(span: OpenSpan) -> str:
    return "run" if span.kind == "run" else f"{span.kind} {span.name}"


def context_of(trace_key: str, span: OpenSpan | None) -> Context:
    """A context whose current span is ``span``, in the trace of ``trace_key``: the parent
    of a child span, the span of a log record. Empty for no span."""
    if span is None:
        return Context()
    current = SpanContext(
        trace_id_for(trace_key), span_id_for(trace_key, span), False,
        TraceFlags(TraceFlags.SAMPLED),
    )  # fmt: skip
    return trace.set_span_in_context(NonRecordingSpan(current), Context())


def ns(seconds: float) -> int:
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
        context = context_of(run_id, span.parent)
        self._ids.trace_id = trace_id_for(run_id)
        self._ids.span_id = span_id_for(run_id, span)
        attributes = {finished.key_attribute: run_id, **span.attributes}
        otel_span = self._tracer.start_span(
            span_name(span), context=context, attributes=attributes, start_time=ns(span.start)
        )
        for timestamp, name, event_attributes in span.events:
            otel_span.add_event(name, event_attributes, timestamp=ns(timestamp))
        if finished.error is not None:
            otel_span.set_status(Status(StatusCode.ERROR, finished.error))
        otel_span.end(end_time=ns(max(finished.end, span.start)))
