"""Router events, reduced by a mapping: counts, gauges, open spans and flows.

Pure, like :mod:`exporter.core.state`: time comes from the events (their
``time_field``), or from the caller when an event has none. An event is a
decoded JSON object; :meth:`RouterState.apply` counts it by type and returns
the spans that ended and the durations observed, for the OTLP output. It does so
in two halves: :meth:`~RouterState.plan` reads what the event's rules need without
changing anything (a parse worker can do it), :meth:`~RouterState.apply_plan`
changes the state. Every table is bounded; what is cut, and what could not be joined
(an event without its key field), is counted in ``dropped``.
"""

from __future__ import annotations

import copy
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exporter.core import event_log
from exporter.core.events import MAX_EPOCH_SECONDS, MAX_IDENTIFIER_CHARS, Refused, Rejected
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

Labels = tuple[str, ...]
Route = tuple[Any, Any, Any, Any]
"""(how a rule reads an event, read(event, argument); its argument; how it changes the
state, handle(rule, type, what was read, time, outputs); the rule)"""
EventPlan = tuple[str, float, list[Any], tuple[str, str] | None]
"""What reducing an event needs from it (:meth:`RouterState.plan`): its type as the mapping
spells it in upper case, its time, what each of its rules reads, its log line (severity,
body) when one was asked for. Built of lists, strings and numbers, so msgpack carries it."""


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
    _types: dict[str, tuple[tuple[str, str], list[Route]]] = field(default_factory=dict, repr=False)
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
        # Each known type -> the rules it concerns, so an event visits only those: what
        # each reads from the event (pure, so a worker process can do it) and how it
        # changes the state.
        routes: dict[str, list[Route]] = {}
        field_of, itself, key = self._field, _the_rule, _its_key
        for read, argument, handle, rules, types in (
            (self._read_labels, itself, self._count, mapping.counters, lambda r: r.events),
            (self._read_gauge, itself, self._gauge, mapping.gauges, lambda r: r.events),
            (self._read_histogram, itself, self._histogram, mapping.histograms,
             lambda r: r.events),
            (field_of, key, self._span, mapping.spans, lambda r: {r.start, *r.end, *r.fail}),
            (field_of, key, self._flow, mapping.flows, lambda r: r.steps),
        ):  # fmt: skip
            for rule in rules:
                for event_type in types(rule):
                    routes.setdefault(event_type, []).append((read, argument(rule), handle, rule))
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
        return self.apply_plan(self.plan(event, received_at, self.logging))

    def plan(self, event: Any, received_at: float, logging: bool = False) -> EventPlan:
        """What reducing ``event`` needs from it, read without changing the state (a parse
        worker's share of the work; see :meth:`apply_plan`): its type, its time, what each
        of its rules reads, and its log line when ``logging``. Raises Rejected."""
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
        at = self._time(event, received_at)
        routes = known[1]
        reads = []
        if routes:
            fields = _with_payload(event, mapping.payload_field)
            for read, argument, _, _ in routes:
                reads.append(read(fields, argument))
        line = None
        if logging:
            name, category = known[0]
            payload = event.get(mapping.payload_field) if mapping.payload_field else None
            merged = {**event, **payload} if isinstance(payload, dict) else event
            fields = {k: v for k, v in merged.items()
                      if k not in (mapping.type_field, mapping.payload_field)}  # fmt: skip
            line = event_log.router_line(name, category, fields)
        return canonical, at, reads, line

    def apply_plan(self, plan: EventPlan) -> list[Output]:
        """Reduce an event by its :meth:`plan`; returns the spans that ended and the
        durations observed (and its log line while ``logging``)."""
        canonical, at, reads, line = plan
        key, routes = self._types[canonical]
        self.events[key] += 1
        outputs: list[Output] = []
        for (_, _, handle, rule), read in zip(routes, reads, strict=True):
            handle(rule, canonical, read, at, outputs)
        if self.logging and line is not None:
            name, category = key
            attributes = {"event_type": name, "router.category": category}
            outputs.append(LogLine("", None, at, line[0], line[1], attributes))
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

    # What each kind of rule reads from an event (pure: see plan) ...

    def _read_labels(self, event: dict[str, Any], rule: CounterRule | HistogramRule) -> Labels:
        return tuple([self._field(event, field_name) for _, field_name in rule.labels])

    def _read_gauge(self, event: dict[str, Any], rule: GaugeRule) -> tuple[str, Any]:
        """The key ("" when it is missing), and the number (with ``value``) or the state
        (with ``state``)."""
        key = self._field(event, rule.key)
        if rule.value is not None:
            return key, self._number(event, rule.value)
        return key, None if rule.state is None else self._field(event, rule.state)

    def _read_histogram(
        self, event: dict[str, Any], rule: HistogramRule
    ) -> tuple[float | None, Labels]:
        return self._number(event, rule.value), self._read_labels(event, rule)

    def _number(self, event: dict[str, Any], name: str) -> float | None:
        """A field as a reading, or None when it is missing, not a number or not finite."""
        number = _lookup(event, name, self.mapping.payload_field)
        if isinstance(number, bool) or not isinstance(number, int | float):
            return None
        if not -MAX_GAUGE_VALUE <= number <= MAX_GAUGE_VALUE:  # NaN fails this too
            return None
        return float(number)

    # ... and how it changes the state (the apply side).

    def _missing_key(self, key: str) -> bool:
        if key:
            return False
        self.dropped["router_missing_key"] += 1
        return True

    def _count(
        self, rule: CounterRule, event_type: str, labels: Labels, at: float,
        outputs: list[Output],
    ) -> None:  # fmt: skip
        counter = self.counters[rule.name]
        series = (self.mapping.names[event_type], *labels)
        if series in counter or len(counter) < self.limits.max_series:
            counter[series] += 1
        else:
            self.dropped["router_series"] += 1

    def _gauge(
        self, rule: GaugeRule, event_type: str, read: tuple[str, Any], at: float,
        outputs: list[Output],
    ) -> None:  # fmt: skip
        key, reading = read
        if self._missing_key(key):
            return
        values = self.gauges[rule.name]
        if key not in values and len(values) >= self.limits.max_series:
            self.dropped["router_series"] += 1
            return
        if rule.value is not None:
            if reading is None:
                self.dropped["router_not_a_number"] += 1
            else:
                values[key] = reading
            return
        if rule.state is None:
            values[key] = dict(rule.set)[event_type]
            return
        if not reading:
            self.dropped["router_missing_key"] += 1
            return
        states = values.setdefault(key, {})
        if reading not in states and len(states) >= 32:  # states a key has been in
            self.dropped["router_series"] += 1
            return
        for seen in states:
            states[seen] = 0.0
        states[reading] = 1.0

    def _histogram(
        self, rule: HistogramRule, event_type: str, read: tuple[float | None, Labels],
        at: float, outputs: list[Output],
    ) -> None:  # fmt: skip
        number, labels = read
        if number is None:
            self.dropped["router_not_a_number"] += 1
            return
        labels = tuple(labels)  # a list once it has crossed from a worker
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

    def _span(
        self, rule: SpanRule, event_type: str, key: str, at: float, outputs: list[Output],
    ) -> None:  # fmt: skip
        if self._missing_key(key):
            return
        is_start = event_type == rule.start
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
        self, rule: FlowRule, event_type: str, key: str, at: float, outputs: list[Output],
    ) -> None:  # fmt: skip
        if self._missing_key(key):
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


def plan_each(
    router: RouterState,
    values: list[Any],
    received_at: float,
    failed: Callable[[Exception], Refused | None],
) -> list[EventPlan | Refused | None]:
    """The plan of each decoded value (or the Rejected a reader put in its place), with the
    log lines ``router.logging`` asks for; a value refused becomes its Refused, one whose
    planning raised what ``failed`` makes of the exception (None: counted already)."""
    plans: list[EventPlan | Refused | None] = []
    plan, logging = router.plan, router.logging
    for value in values:
        if type(value) is Rejected:
            plans.append(value.as_refused())
            continue
        try:
            plans.append(plan(value, received_at, logging))
        except Rejected as rejected:
            plans.append(rejected.as_refused())
        except Exception as exc:  # a reducer bug costs one event
            plans.append(failed(exc))
    return plans


def _the_rule(rule: Any) -> Any:
    """A rule's reader's argument: the rule itself ..."""
    return rule


def _its_key(rule: Any) -> str:
    """... or, for a key (one field), the field's name."""
    key: str = rule.key
    return key


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
