"""The OTLP output: catalogue metrics as OTel instruments, spans and the event log (log
records), over gRPC or HTTP.

Off unless an endpoint is configured. The standard ``OTEL_*`` variables apply
(service name, resource attributes, headers, timeouts, certificates, metric
export interval); an explicit ``--otlp-endpoint`` overrides the endpoint only.
Metric names and attributes follow ``--otlp-naming`` (semantic conventions, or
names that translate to exactly those on ``/metrics``: see
:mod:`exporter.telemetry.metric`); the catalogue's labels are attributes in both
(``run_id``, not ``training.run_id``). Span attributes use ``training.*``.

Spans and log records from a file whose delivery is tracked carry their line's
receipt (:mod:`exporter.pipeline.delivery`), settled when the collector accepts
or loses them; those of lines read again after a restart are counted as sent again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from itertools import chain
from typing import Any, cast

from opentelemetry.metrics import CallbackOptions, Histogram, Observation
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from exporter import __version__
from exporter.core.outputs import FinishedSpan, LogLine, Observed, Output
from exporter.core.state import Run
from exporter.pipeline import Emit, Pipeline, View
from exporter.pipeline.self_stats import Stats
from exporter.telemetry.catalogue import metrics_for
from exporter.telemetry.log_records import LogWriter
from exporter.telemetry.metric import (
    Metric,
    RenderErrors,
    RunSampler,
    Sample,
    Type,
    checked_samples,
    rendered_samples,
)
from exporter.telemetry.otlp_settings import OtlpSettings
from exporter.telemetry.run_cache import RunBlocks
from exporter.telemetry.shipper import (
    LogQueue,
    Outcomes,
    Sent,
    Shipper,
    SpanQueue,
    ready,
    whole,
)
from exporter.telemetry.spans import SpanWriter

log = logging.getLogger(__name__)

SNAPSHOT_REUSE_SECONDS = 0.5


def _exporters(settings: OtlpSettings) -> tuple[SpanExporter, MetricExporter, LogRecordExporter]:
    base = settings.endpoint.rstrip("/") if settings.endpoint else None
    return _grpc_exporters(base) if settings.protocol == "grpc" else _http_exporters(base)


def _grpc_exporters(base: str | None) -> tuple[SpanExporter, MetricExporter, LogRecordExporter]:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return (
        OTLPSpanExporter(endpoint=base),
        OTLPMetricExporter(endpoint=base),
        OTLPLogExporter(endpoint=base),
    )


def _http_exporters(base: str | None) -> tuple[SpanExporter, MetricExporter, LogRecordExporter]:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return (
        OTLPSpanExporter(endpoint=base and base + "/v1/traces"),
        OTLPMetricExporter(endpoint=base and base + "/v1/metrics"),
        OTLPLogExporter(endpoint=base and base + "/v1/logs"),
    )


def _shipper(signal: str, exporter: SpanExporter | LogRecordExporter, stats: Stats,
             max_queue: int) -> Shipper[Sent[Any]]:  # fmt: skip
    """A Shipper sending one signal's batches to its OTLP exporter, counted under it, and
    settling the receipts its items carry."""
    succeeded = (SpanExportResult.SUCCESS, LogRecordExportResult.SUCCESS)

    def send(batch: list[Sent[Any]]) -> Outcomes[Sent[Any]]:
        accepted = exporter.export([item for item, _ in batch]) in succeeded
        return whole(batch, None if accepted else "export_failed")

    def sent(items: list[Sent[Any]]) -> None:
        stats.count(stats.otlp_exported, signal, len(items))
        _settle(items, accepted=True)

    def dropped(reason: str, items: list[Sent[Any]]) -> None:
        stats.count(stats.otlp_dropped, (signal, reason), len(items))
        _settle(items, accepted=False)

    return Shipper(send, sent, dropped, name=f"runwatch-{signal}", max_queue=max_queue, ready=ready)


def _settle(items: list[Sent[Any]], accepted: bool) -> None:
    for _, receipt in items:
        if receipt is not None:
            receipt.settle(accepted)


class _CountingMetricExporter(MetricExporter):
    """Counts the data points each export delivered or lost."""

    def __init__(self, inner: MetricExporter, stats: Stats) -> None:
        # The reader asks the exporter it is given for these; forward the OTLP exporter's
        # (set from OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE and friends).
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._stats = stats

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        points = sum(
            len(metric.data.data_points)
            for resource in metrics_data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        )
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis)
        except Exception:  # a failed export is counted, never raised into the reader thread
            result = MetricExportResult.FAILURE
        if result is MetricExportResult.SUCCESS:
            self._stats.count(self._stats.otlp_exported, "metrics", points)
        else:
            self._stats.count(self._stats.otlp_dropped, ("metrics", "export_failed"), points)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis)


def _join_observations(
    rows: Sequence[tuple[list[Observation], ...]],
) -> tuple[list[Observation], ...]:
    return tuple(list(chain.from_iterable(column)) for column in zip(*rows, strict=True))


class _RunObservations:
    """The observations of the entries that sample runs, for every instrument: one pass
    over the runs per collection (per snapshot), each run's kept until it changes."""

    def __init__(self, naming: str, failed: RenderErrors) -> None:
        self._naming = naming
        self._failed = failed
        self._instruments: list[list[Metric]] = []  # their entries that sample runs
        self._cache: RunBlocks[tuple[list[Observation], ...], tuple[list[Observation], ...]]
        self._cache = RunBlocks(self._of_run, _join_observations)
        # the view they were taken from, and by instrument the blocks' observations
        self._taken: tuple[View, list[tuple[list[Observation], ...]]] | None = None
        self._lock = threading.Lock()  # the reader's thread, and a flush at exit

    def add(self, metrics: list[Metric]) -> int | None:
        """An instrument's entries that sample runs; its index, None when it has none."""
        if not metrics:
            return None
        self._instruments.append(metrics)
        return len(self._instruments) - 1

    def observations(self, metric: Metric, samples: Iterable[Sample]) -> list[Observation]:
        naming = self._naming
        return [Observation(value, metric.otel_attributes(label_values, naming))
                for label_values, value in samples]  # fmt: skip

    def of(self, view: View, instrument: int) -> tuple[list[Observation], ...]:
        """The instrument's observations of every run, a list per block of runs."""
        with self._lock:
            if self._taken is None or self._taken[0] is not view:
                blocks = self._cache.blocks(list(view.state.runs.values()))
                columns = list(zip(*blocks, strict=True)) or [() for _ in self._instruments]
                self._taken = (view, columns)
            return self._taken[1][instrument]

    def _of_run(self, run: Run) -> tuple[list[Observation], ...]:
        out = []
        for metrics in self._instruments:
            observed: list[Observation] = []
            for metric in metrics:
                of_run = partial(cast(RunSampler, metric.sample).of_run, run)
                observed += self.observations(metric, checked_samples(metric, of_run, self._failed))
            out.append(observed)
        return tuple(out)


class OtlpOutput:
    """Registers the catalogue as OTel instruments and writes spans; an OutputSink."""

    def __init__(self, pipeline: Pipeline, settings: OtlpSettings) -> None:
        span_exporter, metric_exporter, log_exporter = _exporters(settings)
        resource = Resource.create({"service.version": __version__})
        unnamed = str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service")
        if settings.service_name or unnamed:
            resource = resource.merge(Resource({SERVICE_NAME: settings.service_name or "runwatch"}))
        given = OTELResourceDetector().detect().attributes  # OTEL_RESOURCE_ATTRIBUTES
        if settings.instance and SERVICE_INSTANCE_ID not in given:
            # Prometheus's OTLP receiver and remote write make it the `instance` label (the
            # SDK's own default is a random UUID, a new series set at every restart)
            resource = resource.merge(Resource({SERVICE_INSTANCE_ID: settings.instance}))
        self._pipeline = pipeline
        self._failed = RenderErrors(pipeline.stats, metrics_for(pipeline))
        readers = []
        if settings.metrics:  # off when Prometheus scrapes /metrics and OTLP carries traces
            readers.append(PeriodicExportingMetricReader(
                _CountingMetricExporter(metric_exporter, pipeline.stats),
                export_interval_millis=settings.export_interval_seconds * 1000,
            ))  # fmt: skip
        # shut down by close() within a bound, not by an atexit hook that waits on a collector
        self.meter_provider = MeterProvider(
            resource=resource, metric_readers=readers, shutdown_on_exit=False
        )
        meter = self.meter_provider.get_meter("runwatch", __version__)
        self._naming = settings.naming
        self._runs = _RunObservations(settings.naming, self._failed)
        self._histograms: dict[str, tuple[Metric, Histogram]] = {}  # by /metrics name
        groups: dict[str, list[Metric]] = {}  # semconv: several families share one name
        for metric in metrics_for(pipeline):
            groups.setdefault(metric.otel_name_for(self._naming), []).append(metric)
        for name, members in groups.items():
            first = members[0]
            description = "; ".join(dict.fromkeys(m.help for m in members))
            if first.type is Type.HISTOGRAM:
                instrument = meter.create_histogram(
                    name,
                    unit=first.unit,
                    description=description,
                    explicit_bucket_boundaries_advisory=list(first.buckets),
                )
                self._histograms.update((m.name, (m, instrument)) for m in members)
            elif first.type is Type.COUNTER:
                meter.create_observable_counter(
                    name, [self._callback(members)], first.unit, description
                )
            else:
                meter.create_observable_gauge(
                    name, [self._callback(members)], first.unit, description
                )
        stats, queue = pipeline.stats, settings.max_queue
        self._span_queue = SpanQueue(_shipper("spans", span_exporter, stats, queue),
                                     span_exporter.shutdown)  # fmt: skip
        self._spans = SpanWriter(resource, self._span_queue)
        self.logs = settings.logs
        self.traces = settings.traces
        self._log_queue = LogQueue(_shipper("logs", log_exporter, stats, queue),
                                   log_exporter.shutdown)  # fmt: skip
        self._logs = LogWriter(resource, self._log_queue)
        stats.declare(stats.otlp_resent, [s for s, on in (("spans", self.traces),
                                                          ("logs", self.logs)) if on])  # fmt: skip

    @property
    def delivers_from_files(self) -> bool:
        """Whether it sends what lines make (spans, log records), whose delivery the file
        cursors can follow."""
        return self.traces or self.logs

    def handle(self, outputs: Sequence[Output], emit: Emit) -> None:
        """Record histogram observations; write finished spans and log lines when
        ``emit.spans`` (off for what the collector accepted before a restart), with the
        line's receipt; those of a line read again are counted as sent again."""
        for output in outputs:
            if isinstance(output, Observed):
                metric, instrument = self._histograms[output.metric]
                instrument.record(output.value, metric.otel_attributes(output.labels, self._naming))
            elif not emit.spans:
                continue
            elif isinstance(output, FinishedSpan):
                if self.traces:
                    self._span_queue.receipt = emit.receipt
                    self._spans.write(output)
                    self._count_again(emit, "spans")
            elif isinstance(output, LogLine) and self.logs:
                self._log_queue.receipt = emit.receipt
                self._logs.write(output)
                self._count_again(emit, "logs")

    def _count_again(self, emit: Emit, signal: str) -> None:
        if not emit.fresh:
            stats = self._pipeline.stats
            stats.count(stats.otlp_resent, signal)

    def flush(self) -> None:
        """Export everything now: the spans and log records queued and a collection of
        every metric."""
        self._spans.provider.force_flush()
        self._logs.provider.force_flush()
        self.meter_provider.force_flush()

    def shutdown(self) -> None:
        self._spans.provider.shutdown()
        self._logs.provider.shutdown()
        self.meter_provider.shutdown()

    def _flush_and_shut_down(self) -> None:
        self.flush()
        self.shutdown()

    def close(self, within: float) -> bool:
        """Flush and shut down, giving up after ``within`` seconds (an endpoint that hangs
        or refuses must not hold up an exit); whether it finished."""
        closing = threading.Thread(target=self._flush_and_shut_down, name="runwatch-otlp-close",
                                   daemon=True)  # fmt: skip
        closing.start()
        closing.join(within)
        if closing.is_alive():
            log.warning("the OTLP endpoint did not take the last export within %g s; "
                        "%d spans and %d log records queued or being sent are lost", within,
                        self._span_queue.shipper.unsent,
                        self._log_queue.shipper.unsent)  # fmt: skip
            return False
        return True

    def _callback(
        self, metrics: list[Metric]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        others = [m for m in metrics if type(m.sample) is not RunSampler]
        runs = self._runs.add([m for m in metrics if type(m.sample) is RunSampler])

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            # One snapshot serves every instrument of a collection (they run back to back).
            view = self._pipeline.snapshot(max_age=SNAPSHOT_REUSE_SECONDS)
            out: list[Observation] = []
            for metric in others:
                out += self._runs.observations(metric, rendered_samples(metric, view,
                                                                        self._failed))  # fmt: skip
            if runs is not None:
                return chain(out, *self._runs.of(view, runs))
            return out

        return observe
