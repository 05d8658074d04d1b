"""Router events, reduced by a mapping: counts, gauges, open spans and flows.

Pure, like :mod:`exporter.core.state`: time comes from the events (their
``time_field``), or from the caller when an event has none. An event is a
decoded JSON object; :meth:`RouterState.apply` counts it by type and returns
the spans that ended and the durations observed, for the OTLP output. Every
table is bounded; what is cut, and what could not be joined (an event without
its key field), is counted in ``dropped``.
"""

from __future__ import annotations

import copy
from collections import Counter, OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exporter.core import event_log
from exporter.core.events import MAX_EPOCH_SECONDS, MAX_IDENTIFIER_CHARS, Rejected
from exporter.core.outputs import FinishedSpan, Histogram, LogLine, Observed, OpenSpan, Output
from exporter.core.router.mapping import (
    CounterRule,
    FlowRule,
    GaugeRule,
    HistogramRule,
    Mapping,
    SpanRule,
    gauge_family,
)

SPAN_DURATION_METRIC = "router_span_duration_seconds"
FLOW_STEP_METRIC = "router_flow_step_seconds"
FLOW_DURATION_METRIC = "router_flow_duration_seconds"
DURATION_BUCKETS: tuple[float, ...] = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200,
                                       86400)  # fmt: skip
MAX_GAUGE_VALUE = 1e300  # a payload number past this (or not finite) is no reading
KEY_ATTRIBUTE = "router.key"  # the span attribute carrying the correlation key's value
DROP_REASONS = ("router_series", "router_open", "router_missing_key", "router_not_a_number")


@dataclass(frozen=True, slots=True)
class RouterLimits:
    max_series: int = 1000  # label sets per counter, keys per gauge
    max_open: int = 1000  # open spans per span rule, flows in progress per flow rule


@dataclass(slots=True)
class _FlowProgress:
    step: int  # index of the last step reached
    last_at: float
    span: OpenSpan  # from the first step; each step a span event


@dataclass(slots=True)
class RouterState:
    """The router telemetry of one mapping; ``apply`` is the only writer."""

    mapping: Mapping
    limits: RouterLimits = field(default_factory=RouterLimits)
    events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, category)
    counters: dict[str, Counter[tuple[str, ...]]] = field(default_factory=dict)
    gauges: dict[str, OrderedDict[str, Any]] = field(default_factory=dict)  # key -> value
    histograms: dict[str, dict[tuple[str, ...], Histogram]] = field(default_factory=dict)
    open_spans: dict[str, OrderedDict[str, OpenSpan]] = field(default_factory=dict)
    span_durations: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    unmatched_ends: Counter[str] = field(default_factory=Counter)
    flows: dict[str, OrderedDict[str, _FlowProgress]] = field(default_factory=dict)
    flows_completed: Counter[str] = field(default_factory=Counter)
    flow_steps: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    flow_durations: dict[str, Histogram] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)
    tracing: bool = True  # spans and observed durations, for an OTLP output
    logging: bool = False  # a LogLine per event, for an event-log output
    # each known type -> its (name, category) key of ``events``, and the rules it concerns
    _types: dict[str, tuple[tuple[str, str], list[tuple[Any, Any]]]] = field(
        default_factory=dict, repr=False
    )
    _canonical: dict[str, str] = field(default_factory=dict, repr=False)  # spelling -> type

    def __post_init__(self) -> None:
        # Every known series starts at 0, so rate() and increase() see the first event.
        mapping = self.mapping
        names = mapping.names
        self.events.update({(names[t], category): 0 for t, category in mapping.categories.items()})
        self.counters = {rule.name: Counter() for rule in mapping.counters}
        self.gauges = {rule.name: OrderedDict() for rule in mapping.gauges}
        self.histograms = {rule.name: {} for rule in mapping.histograms}
        self.open_spans = {rule.name: OrderedDict() for rule in mapping.spans}
        self.unmatched_ends.update(dict.fromkeys((rule.name for rule in mapping.spans), 0))
        self.flows = {rule.name: OrderedDict() for rule in mapping.flows}
        self.flows_completed.update(dict.fromkeys((rule.name for rule in mapping.flows), 0))
        self.dropped.update(dict.fromkeys(DROP_REASONS, 0))
        # Each known type -> the rules it concerns, so an event visits only those.
        routes: dict[str, list[tuple[Any, Any]]] = {}
        for handle, rules, types in (
            (self._count, mapping.counters, lambda r: r.events),
            (self._gauge, mapping.gauges, lambda r: r.events),
            (self._histogram, mapping.histograms, lambda r: r.events),
            (self._span, mapping.spans, lambda r: {r.start, *r.end, *r.fail}),
            (self._flow, mapping.flows, lambda r: r.steps),
        ):
            for rule in rules:
                for event_type in types(rule):
                    routes.setdefault(event_type, []).append((handle, rule))
        self._types = {canonical: ((names[canonical], category), routes.get(canonical, []))
                       for canonical, category in mapping.categories.items()}  # fmt: skip

    def snapshot(self) -> RouterState:
        """A copy the reducer will not change, for rendering outside the pipeline lock."""
        state = copy.copy(self)
        state.events = self.events.copy()
        state.counters = {name: counter.copy() for name, counter in self.counters.items()}
        state.gauges = {
            name: OrderedDict(
                (key, value.copy() if isinstance(value, dict) else value)
                for key, value in values.items()
            )
            for name, values in self.gauges.items()
        }
        state.histograms = {
            name: {labels: h.copy() for labels, h in histograms.items()}
            for name, histograms in self.histograms.items()
        }
        state.open_spans = {name: spans.copy() for name, spans in self.open_spans.items()}
        state.span_durations = {key: h.copy() for key, h in self.span_durations.items()}
        state.unmatched_ends = self.unmatched_ends.copy()
        state.flows = {name: flows.copy() for name, flows in self.flows.items()}
        state.flows_completed = self.flows_completed.copy()
        state.flow_steps = {key: h.copy() for key, h in self.flow_steps.items()}
        state.flow_durations = {key: h.copy() for key, h in self.flow_durations.items()}
        state.dropped = self.dropped.copy()
        return state

    def apply(self, event: Any, received_at: float) -> list[Output]:
        """Reduce one decoded event; raises Rejected (counted by the caller) for an event
        that is not an object, has no type, an unknown type or a bad timestamp."""
        if not isinstance(event, dict):
            raise Rejected("not_an_object", f"a JSON {type(event).__name__}, not an object")
        mapping = self.mapping
        event_type = event.get(mapping.type_field)
        if event_type is None:
            event_type = _lookup(event, mapping.type_field, mapping.payload_field)
        if type(event_type) is not str or not event_type:
            raise Rejected("missing_field", f"no {mapping.type_field} string")
        canonical = self._canonical.get(event_type)
        if canonical is None:
            canonical = event_type.strip().upper()
            if canonical in mapping.categories and len(self._canonical) < 1024:  # bounded
                self._canonical[event_type] = canonical
        known = self._types.get(canonical)
        if known is None:
            raise Rejected("unknown_event_type", f"{event_type[:64]!r} is not in the mapping")
        (name, category), routes = known  # name: for labels, as the mapping spells it
        at = self._time(event, received_at)
        self.events[known[0]] += 1
        outputs: list[Output] = []
        if routes:
            fields = _with_payload(event, mapping.payload_field)
            for handle, rule in routes:
                handle(rule, canonical, fields, at, outputs)
        if self.logging:
            payload = event.get(mapping.payload_field) if mapping.payload_field else None
            merged = {**event, **payload} if isinstance(payload, dict) else event
            fields = {k: v for k, v in merged.items()
                      if k not in (mapping.type_field, mapping.payload_field)}  # fmt: skip
            severity, body = event_log.router_line(name, category, fields)
            attributes = {"event_type": name, "router.category": category}
            outputs.append(LogLine("", None, at, severity, body, attributes))
        return outputs

    def _time(self, event: dict[str, Any], received_at: float) -> float:
        if self.mapping.time_field is None:
            return received_at
        value = event.get(self.mapping.time_field)
        if type(value) is float and 0 <= value <= MAX_EPOCH_SECONDS:  # the common case
            return value
        if value is None:
            value = _lookup(event, self.mapping.time_field, self.mapping.payload_field)
        if value is None:
            return received_at
        seconds: float | None = None
        try:
            if type(value) is float:
                seconds = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                seconds = float(value)
            elif isinstance(value, str):
                moment = datetime.fromisoformat(value)
                seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError):
            pass
        if seconds is not None and 0 <= seconds <= MAX_EPOCH_SECONDS:  # NaN fails this too
            return seconds
        raise Rejected("invalid_timestamp", f"{self.mapping.time_field}: {str(value)[:64]!r}")

    def _field(self, event: dict[str, Any], name: str) -> str:
        """A field as a label value: "" when absent or not a scalar; long values cut."""
        value = event.get(name)
        if type(value) is str and len(value) <= MAX_IDENTIFIER_CHARS:  # the common case
            return value
        if value is None:
            value = _lookup(event, name, self.mapping.payload_field)
        if type(value) is str:
            return value[:MAX_IDENTIFIER_CHARS]
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)[:MAX_IDENTIFIER_CHARS]
        return ""

    def _key(self, event: dict[str, Any], name: str) -> str | None:
        key = event.get(name)
        if type(key) is not str or len(key) > MAX_IDENTIFIER_CHARS:  # the common case skips
            key = self._field(event, name)
        if not key:
            self.dropped["router_missing_key"] += 1
            return None
        return key

    def _count(
        self, rule: CounterRule, event_type: str, event: dict[str, Any], at: float,
        outputs: list[Output],
    ) -> None:  # fmt: skip
        labels = tuple(self._field(event, field_name) for _, field_name in rule.labels)
        self._bounded_count(self.counters[rule.name], (self.mapping.names[event_type], *labels))

    def _bounded_count(self, counter: Counter[tuple[str, ...]], labels: tuple[str, ...]) -> None:
        if labels in counter or len(counter) < self.limits.max_series:
            counter[labels] += 1
        else:
            self.dropped["router_series"] += 1

    def _gauge(
        self, rule: GaugeRule, event_type: str, event: dict[str, Any], at: float,
        outputs: list[Output],
    ) -> None:  # fmt: skip
        key = self._key(event, rule.key)
        if key is None:
            return
        values = self.gauges[rule.name]
        if key not in values and len(values) >= self.limits.max_series:
            self.dropped["router_series"] += 1
            return
        if rule.value is not None:
            number = self._number(event, rule.value)
            if number is not None:
                values[key] = number
            return
        if rule.state is None:
            values[key] = dict(rule.set)[event_type]
            return
        state = self._field(event, rule.state)
        if not state:
            self.dropped["router_missing_key"] += 1
            return
        states = values.setdefault(key, {})
        if state not in states and len(states) >= 32:  # states a key has been in
            self.dropped["router_series"] += 1
            return
        for seen in states:
            states[seen] = 0.0
        states[state] = 1.0

    def _histogram(
        self, rule: HistogramRule, event_type: str, event: dict[str, Any], at: float,
        outputs: list[Output],
    ) -> None:  # fmt: skip
        number = self._number(event, rule.value)
        if number is None:
            return
        labels = tuple(self._field(event, name) for _, name in rule.labels)
        histograms = self.histograms[rule.name]
        histogram = histograms.get(labels)
        if histogram is None:
            if len(histograms) >= self.limits.max_series:
                self.dropped["router_series"] += 1
                return
            histogram = histograms[labels] = Histogram.empty(rule.buckets)
        histogram.observe(number)
        if self.tracing:
            outputs.append(Observed(gauge_family(rule.name), number, labels))

    def _number(self, event: dict[str, Any], name: str) -> float | None:
        """A field as a reading, or None (counted) when it is missing, not a number or not
        finite."""
        number = _lookup(event, name, self.mapping.payload_field)
        if isinstance(number, bool) or not isinstance(number, int | float):
            self.dropped["router_not_a_number"] += 1
            return None
        if not -MAX_GAUGE_VALUE <= number <= MAX_GAUGE_VALUE:  # NaN fails this too
            self.dropped["router_not_a_number"] += 1
            return None
        return float(number)

    def _span(
        self, rule: SpanRule, event_type: str, event: dict[str, Any], at: float,
        outputs: list[Output],
    ) -> None:  # fmt: skip
        is_start = event_type == rule.start
        key = self._key(event, rule.key)
        if key is None:
            return
        spans = self.open_spans[rule.name]
        opened = spans.pop(key, None)
        if is_start:
            if opened is not None:  # started again before it ended: the first one is over
                self._end_span(rule, key, opened, at, "superseded", "started again", outputs)
            attributes = {KEY_ATTRIBUTE: key, "router.span": rule.name} if self.tracing else {}
            spans[key] = OpenSpan("router", rule.name, at, None, attributes)
            if len(spans) > self.limits.max_open:
                spans.popitem(last=False)
                self.dropped["router_open"] += 1
        elif opened is None:
            self.unmatched_ends[rule.name] += 1
        else:
            error = self.mapping.names[event_type] if event_type in rule.fail else None
            outcome = self.mapping.names[event_type].lower()
            self._end_span(rule, key, opened, at, outcome, error, outputs)

    def _end_span(
        self, rule: SpanRule, key: str, span: OpenSpan, at: float, outcome: str,
        error: str | None, outputs: list[Output],
    ) -> None:  # fmt: skip
        seconds = max(0.0, at - span.start)
        _observe(self.span_durations, (rule.name, outcome), seconds)
        if self.tracing:
            outputs.append(Observed(SPAN_DURATION_METRIC, seconds, (rule.name, outcome)))
            trace_key = f"router {rule.name} {key} {span.start!r}"  # one trace per span
            outputs.append(FinishedSpan(trace_key, span, max(at, span.start), error,
                                        KEY_ATTRIBUTE))  # fmt: skip

    def _flow(
        self, rule: FlowRule, event_type: str, event: dict[str, Any], at: float,
        outputs: list[Output],
    ) -> None:  # fmt: skip
        key = self._key(event, rule.key)
        if key is None:
            return
        step = rule.steps.index(event_type)
        progress = self.flows[rule.name]
        if step == 0:  # a flow starts (again) for this key
            progress.pop(key, None)
            attributes = {KEY_ATTRIBUTE: key, "router.flow": rule.name} if self.tracing else {}
            span = OpenSpan("router flow", rule.name, at, None, attributes)
            if self.tracing:
                span.events.append((at, self.mapping.names[event_type], {}))
            progress[key] = _FlowProgress(0, at, span)
            if len(progress) > self.limits.max_open:
                progress.popitem(last=False)
                self.dropped["router_open"] += 1
            return
        current = progress.get(key)
        if current is None or current.step != step - 1:
            return  # a step out of order, or of a flow begun before runwatch read it
        seconds = max(0.0, at - current.last_at)
        step_name = self.mapping.names[event_type]
        _observe(self.flow_steps, (rule.name, step_name), seconds)
        current.step, current.last_at = step, at
        if self.tracing:
            outputs.append(Observed(FLOW_STEP_METRIC, seconds, (rule.name, step_name)))
            current.span.events.append((at, step_name, {}))
        if step == len(rule.steps) - 1:  # complete: its duration, and a span of it
            del progress[key]
            self.flows_completed[rule.name] += 1
            span = current.span
            total = max(0.0, at - span.start)
            _observe(self.flow_durations, rule.name, total)
            if self.tracing:
                outputs.append(Observed(FLOW_DURATION_METRIC, total, (rule.name,)))
                trace_key = f"router flow {rule.name} {key} {span.start!r}"
                outputs.append(FinishedSpan(trace_key, span, max(at, span.start), None,
                                            KEY_ATTRIBUTE))  # fmt: skip


def _with_payload(event: dict[str, Any], payload_field: str | None) -> dict[str, Any]:
    """The event with its payload's fields beneath its own, so a rule's field is one lookup
    (:func:`_lookup` finds the same value in either: an own field wins unless it is null,
    and the payload object stays under its name). The event as it is when it has no
    payload, or a null of its own (a null defers to the payload, which a merge would hide)."""
    payload = event.get(payload_field) if payload_field is not None else None
    if type(payload) is not dict or not payload or None in event.values():
        return event
    return {**payload, **event}


def _lookup(event: dict[str, Any], name: str, payload_field: str | None) -> Any:
    """``name`` (dotted for nested objects) in the event, else in its payload object."""
    value = event.get(name)
    if value is not None:
        return value
    if "." in name:
        value = _dotted(event, name)
    if value is None and payload_field is not None:
        payload = event.get(payload_field)
        if isinstance(payload, dict):
            value = payload.get(name)
            if value is None and "." in name:
                value = _dotted(payload, name)
    return value


def _dotted(obj: dict[str, Any], name: str) -> Any:
    value: Any = obj
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _observe(histograms: dict[Any, Histogram], key: Hashable, seconds: float) -> None:
    histogram = histograms.get(key)
    if histogram is None:
        histogram = histograms[key] = Histogram.empty(DURATION_BUCKETS)
    histogram.observe(seconds)
