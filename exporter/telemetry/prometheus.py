"""A prometheus-client Collector that builds every family fresh from a snapshot at scrape
time (the dcgm-exporter shape: the pipeline lock is held only to copy the state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter.core.outputs import Histogram
from exporter.pipeline import Pipeline, View
from exporter.telemetry.catalogue import metrics_for
from exporter.telemetry.metric import Metric as CatalogueEntry
from exporter.telemetry.metric import RenderErrors, Type, rendered_samples


def _buckets(hist: Histogram) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*hist.bounds, float("inf")), hist.counts, strict=True):
        running += count
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    return out


class CatalogueCollector(Collector):
    """Renders catalogue entries from a snapshot of the pipeline; a sample that cannot be
    rendered is left out and counted (:class:`~exporter.telemetry.metric.RenderErrors`)."""

    def __init__(
        self,
        snapshot: Callable[[], View],
        metrics: tuple[CatalogueEntry, ...],
        failed: RenderErrors,
        rendering: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        self._snapshot = snapshot
        self._metrics = metrics
        self._failed = failed
        self._rendering = rendering  # tells ingestion a scrape is under way

    def collect(self) -> Iterator[Metric]:
        with self._rendering():  # the encoder consumes the families as they are yielded
            view = self._snapshot()
            for metric in self._metrics:
                yield self._family(metric, view)

    def _family(self, metric: CatalogueEntry, view: View) -> Metric:
        labels = metric.prometheus_labels
        samples = rendered_samples(metric, view, self._failed)
        if metric.type is Type.HISTOGRAM:
            histograms = HistogramMetricFamily(metric.name, metric.help, labels=labels)
            for label_values, hist in samples:
                histograms.add_metric(list(label_values), _buckets(hist), hist.total)
            return histograms
        kind = CounterMetricFamily if metric.type is Type.COUNTER else GaugeMetricFamily
        family = kind(metric.name, metric.help, labels=labels)
        for label_values, value in samples:
            family.add_metric(list(label_values), value)
        return family


def catalogue_registry(pipeline: Pipeline, own_process: bool = False) -> CollectorRegistry:
    """A registry of the pipeline's catalogue and, with ``own_process`` (``runwatch serve``),
    prometheus-client's collectors of runwatch's own process (``process_*``, ``python_gc_*``,
    ``python_info``), as every exporter has them; ``replay`` prints the files' alone."""
    registry = CollectorRegistry(auto_describe=False)
    if own_process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    metrics = metrics_for(pipeline)
    collector = CatalogueCollector(
        pipeline.snapshot, metrics, RenderErrors(pipeline.stats, metrics), pipeline.rendering
    )
    registry.register(collector)
    return registry
