"""Catalogue entries for router events (:mod:`exporter.core.router`).

The families every mapping has (events by type, spans, flows) are fixed, so
dashboards and alerts can rely on them; the counters and gauges a mapping
declares are built from it (:func:`rule_metrics`) and join the catalogue of a
pipeline that has that mapping (:func:`exporter.telemetry.catalogue.metrics_for`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from exporter.core.router.mapping import (
    CounterRule,
    GaugeRule,
    HistogramRule,
    Mapping,
    counter_family,
    gauge_family,
)
from exporter.core.router.reducer import (
    DURATION_BUCKETS,
    FLOW_DURATION_METRIC,
    FLOW_STEP_METRIC,
    SPAN_DURATION_METRIC,
    RouterState,
)
from exporter.pipeline import View
from exporter.telemetry.metric import Metric, Sample, Sampler, Type


def _router(read: Callable[[RouterState], Iterable[tuple[Any, Any]]]) -> Sampler:
    """Samples from the router state, none without a mapping; keys become label tuples."""

    def sample(view: View) -> Iterator[Sample]:
        if view.router is not None:
            for key, value in read(view.router):
                yield (key if isinstance(key, tuple) else (key,)), value

    return sample


G, C, H = Type.GAUGE, Type.COUNTER, Type.HISTOGRAM

ROUTER_METRICS: tuple[Metric, ...] = (
    Metric("router_events_total", "router.events", "", C, ("event_type", "category"),
           "Router events read, by type and the mapping's category (unknown types are "
           "runwatch_events_rejected_total{source=\"router\",reason=\"unknown_event_type\"}).",
           _router(lambda r: r.events.items())),
    Metric("router_spans_open", "router.spans.open", "", G, ("span",),
           "Spans started and not ended yet, by the mapping's span name.",
           _router(lambda r: ((name, len(open_)) for name, open_ in r.open_spans.items()))),
    Metric(SPAN_DURATION_METRIC, "router.span.duration", "s", H, ("span", "outcome"),
           "Time from a span's start event to its end, by outcome (the end event's type in "
           "lower case, or superseded when the start came again).",
           _router(lambda r: r.span_durations.items()), DURATION_BUCKETS),
    Metric("router_span_unmatched_ends_total", "router.span.unmatched_ends", "", C, ("span",),
           "End events with no open span for their key (the start was before runwatch read "
           "the stream, or never sent).", _router(lambda r: r.unmatched_ends.items())),
    Metric("router_flows_open", "router.flows.open", "", G, ("flow",),
           "Flows started (first step seen) and not at their last step yet.",
           _router(lambda r: ((name, len(open_)) for name, open_ in r.flows.items()))),
    Metric("router_flows_completed_total", "router.flows.completed", "", C, ("flow",),
           "Flows that reached their last step.", _router(lambda r: r.flows_completed.items())),
    Metric(FLOW_STEP_METRIC, "router.flow.step", "s", H, ("flow", "step"),
           "Time from a flow's previous step to this one, by the step's event type.",
           _router(lambda r: r.flow_steps.items()), DURATION_BUCKETS),
    Metric(FLOW_DURATION_METRIC, "router.flow.duration", "s", H, ("flow",),
           "Time from a flow's first step to its last.",
           _router(lambda r: r.flow_durations.items()), DURATION_BUCKETS),
)  # fmt: skip


def rule_metrics(mapping: Mapping) -> tuple[Metric, ...]:
    """The families the mapping's counters, gauges and histograms declare."""
    return (*map(_counter, mapping.counters), *map(_gauge, mapping.gauges),
            *map(_histogram, mapping.histograms))  # fmt: skip


def _counter(rule: CounterRule) -> Metric:
    labels = ("event_type", *(label for label, _ in rule.labels))
    return Metric(counter_family(rule.name), f"router.{rule.name}", "", Type.COUNTER, labels,
                  rule.help, _router(lambda r: r.counters[rule.name].items()))  # fmt: skip


def _gauge(rule: GaugeRule) -> Metric:
    if rule.state is None:
        labels: tuple[str, ...] = (rule.label,)
        sample = _router(lambda r: r.gauges[rule.name].items())
    else:
        labels = (rule.label, "state")
        sample = _router(lambda r: (((key, state), value)
                                    for key, states in r.gauges[rule.name].items()
                                    for state, value in states.items()))  # fmt: skip
    return Metric(gauge_family(rule.name), f"router.{rule.name}", "", Type.GAUGE, labels,
                  rule.help, sample)  # fmt: skip


def _histogram(rule: HistogramRule) -> Metric:
    return Metric(gauge_family(rule.name), f"router.{rule.name}", "", Type.HISTOGRAM,
                  tuple(label for label, _ in rule.labels), rule.help,
                  _router(lambda r: r.histograms[rule.name].items()), rule.buckets)  # fmt: skip
