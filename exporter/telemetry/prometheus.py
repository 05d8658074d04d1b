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

from exporter.pipeline import View
from exporter.state import Histogram
from exporter.telemetry.catalogue import METRICS
from exporter.telemetry.metric import Metric as CatalogueEntry
from exporter.telemetry.metric import Type


def _buckets(hist: Histogram) -> list[tuple[str, float]]:
    out, running = [], 0
    for bound, count in zip((*hist.bounds, float("inf")), hist.counts, strict=True):
        running += count
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    return out


class CatalogueCollector(Collector):
    """Renders :data:`~exporter.telemetry.catalogue.METRICS` from a locked view of the state."""

    def __init__(self, view: Callable[[], AbstractContextManager[View]]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        with self._view() as view:  # built under the lock, yielded after it is released
            families = [self._family(metric, view) for metric in METRICS]
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


def catalogue_registry(view: Callable[[], AbstractContextManager[View]]) -> CollectorRegistry:
    """A registry holding only the catalogue (no process or platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CatalogueCollector(view))
    return registry
