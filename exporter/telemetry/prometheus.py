"""A prometheus-client Collector that builds every family fresh from state at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter.pipeline import Pipeline, View
from exporter.state import Histogram
from exporter.telemetry.catalogue import metrics_for
from exporter.telemetry.metric import Metric as CatalogueEntry
from exporter.telemetry.metric import Type


def _buckets(hist: Histogram) -> list[tuple[str, float]]:
    out, running = [], 0
    for bound, count in zip((*hist.bounds, float("inf")), hist.counts, strict=True):
        running += count
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    return out


class CatalogueCollector(Collector):
    """Renders catalogue entries from a locked view of the state."""

    def __init__(
        self,
        view: Callable[[], AbstractContextManager[View]],
        metrics: tuple[CatalogueEntry, ...],
    ) -> None:
        self._view = view
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        with self._view() as view:  # built under the lock, yielded after it is released
            families = [self._family(metric, view) for metric in self._metrics]
        yield from families

    @staticmethod
    def _family(metric: CatalogueEntry, view: View) -> Metric:
        labels = metric.prometheus_labels
        if metric.type is Type.COUNTER:
            family = CounterMetricFamily(metric.name, metric.help, labels=labels)
        elif metric.type is Type.GAUGE:
            family = GaugeMetricFamily(metric.name, metric.help, labels=labels)
        else:
            family = HistogramMetricFamily(metric.name, metric.help, labels=labels)
            for label_values, hist in metric.sample(view):
                family.add_metric(list(label_values), _buckets(hist), hist.total)
            return family
        for label_values, value in metric.sample(view):
            family.add_metric(list(label_values), value)
        return family


def catalogue_registry(pipeline: Pipeline) -> CollectorRegistry:
    """A registry holding only the pipeline's catalogue (no process or platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CatalogueCollector(pipeline.view, metrics_for(pipeline)))
    return registry
