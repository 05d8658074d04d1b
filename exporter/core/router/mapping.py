"""An event-router mapping: how any JSON event stream with a type field becomes telemetry.

A mapping says which field names an event's type, which types are known (by
category), which events are counted with labels taken from their fields,
which pairs open and close a span (joined by a correlation key), which set a
gauge, which numbers of an event go into a histogram, and which ordered steps make a
flow. It is parsed from YAML text (:mod:`exporter.sources.files.router_mapping` reads the
file) and checked whole before anything runs: a mistake is refused with its file, line and reason
(:class:`MappingError`), never discovered at run time. The format is documented
in ``builtin.yaml`` (the mapping for the event router's own catalogue) and the README.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
SERIES_SUFFIXES = r"_(total|bucket|count|sum|created|info)$"  # what a family name may not end in
# Families every mapping has (exporter.telemetry.router_metrics); a rule may not reuse them.
FIXED_FAMILIES = frozenset({
    "router_events_total", "router_spans_open", "router_span_duration_seconds",
    "router_span_unmatched_ends_total", "router_flows_open", "router_flows_completed_total",
    "router_flow_step_seconds", "router_flow_duration_seconds",
})  # fmt: skip


def counter_family(name: str) -> str:
    """The /metrics name of the counter rule ``name``."""
    return f"router_{name}_total"


def gauge_family(name: str) -> str:
    """The /metrics name of the gauge (or histogram) rule ``name``."""
    return f"router_{name}"


MAX_BUCKETS = 32


class MappingError(Exception):
    """A mapping that cannot be used; the message is ``FILE:LINE: reason``."""


@dataclass(frozen=True, slots=True)
class CounterRule:
    """``router_<name>_total{event_type, <labels>}``: the events of ``events`` counted."""

    name: str
    help: str
    events: frozenset[str]
    labels: tuple[tuple[str, str], ...]  # (label, field)


@dataclass(frozen=True, slots=True)
class SpanRule:
    """A span from ``start`` to the first of ``end`` or ``fail`` (error) with the same key."""

    name: str
    start: str
    end: frozenset[str]
    fail: frozenset[str]
    key: str  # the field whose value joins a start to its end


@dataclass(frozen=True, slots=True)
class GaugeRule:
    """``router_<name>{<label>}``: the value ``set`` gives the event's type; with ``value``
    the number in that field of the event (an ELO, a quality score, a learning rate); or
    with ``state`` a 1/0 series per state the key has been in (1 for the latest)."""

    name: str
    help: str
    label: str
    key: str  # the field giving the label's value
    set: tuple[tuple[str, float], ...]  # (event type, value); empty with ``state``
    events: frozenset[str]  # the types that set it
    state: str | None  # the field naming the new state
    value: str | None = None  # the field holding the number


@dataclass(frozen=True, slots=True)
class HistogramRule:
    """``router_<name>{<labels>}``: a histogram of the number in field ``value`` of the
    events of ``events`` (a score, a duration, a size the event reports)."""

    name: str
    help: str
    events: frozenset[str]
    value: str
    labels: tuple[tuple[str, str], ...]  # (label, field)
    buckets: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class FlowRule:
    """Events of ``steps`` in order for one key value; latencies between them."""

    name: str
    key: str
    steps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Mapping:
    type_field: str
    time_field: str | None
    payload_field: str | None
    categories: dict[str, str]  # known event type (upper case) -> category
    names: dict[str, str]  # known event type (upper case) -> as spelt under events: its label
    counters: tuple[CounterRule, ...]
    spans: tuple[SpanRule, ...]
    gauges: tuple[GaugeRule, ...]
    flows: tuple[FlowRule, ...]
    histograms: tuple[HistogramRule, ...] = ()


def parse_mapping(text: str, origin: str) -> Mapping:
    try:
        document = yaml.load(text, _LineLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise MappingError(f"{origin}:{line}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"{origin}: not valid YAML: {exc}") from None
    except _KeyProblem as problem:
        raise MappingError(f"{origin}:{problem.line}: {problem.reason}") from None
    except RecursionError:
        raise MappingError(f"{origin}: nested too deep") from None
    return _Checker(origin).mapping(document)


class _KeyProblem(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line, self.reason = line, reason


class _Lines(dict[str, Any]):
    """A YAML mapping that remembers its own line and each key's."""

    line: int
    key_lines: dict[str, int]


class _LineList(list[Any]):
    line: int


class _LineLoader(yaml.SafeLoader):
    # yaml types a mapping's keys as any Hashable; this loader refuses all but strings
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> _Lines:  # type: ignore[override]
        self.flatten_mapping(node)
        out = _Lines()
        out.line, out.key_lines = node.start_mark.line + 1, {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise _KeyProblem(line, f"keys must be strings, not {key!r}")
            if key in out:
                raise _KeyProblem(line, f"{key!r} given twice")
            out[key] = self.construct_object(value_node, deep=True)
            out.key_lines[key] = line
        return out

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> _LineList:
        out = _LineList(self.construct_object(child, deep=True) for child in node.value)
        out.line = node.start_mark.line + 1
        return out


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_sequence)


class _Checker:
    """Builds the Mapping, refusing the first thing wrong with its line."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.categories: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.families: set[str] = set(FIXED_FAMILIES)
        self.rule_names: set[tuple[str, str]] = set()

    def fail(self, line: int, reason: str) -> MappingError:
        return MappingError(f"{self.origin}:{line}: {reason}")

    def mapping(self, document: Any) -> Mapping:
        if not isinstance(document, _Lines):
            raise self.fail(1, "a mapping must be a YAML mapping with at least type_field, events")
        self.keys(document, required={"type_field", "events"}, optional={
            "time_field", "payload_field", "counters", "spans", "gauges", "histograms",
            "flows"})  # fmt: skip
        self.known_types(document)
        return Mapping(
            type_field=self.text(document, "type_field"),
            time_field=self.text(document, "time_field", optional=True),
            payload_field=self.text(document, "payload_field", optional=True),
            categories=self.categories,
            names=self.names,
            counters=tuple(self.counter(rule) for rule in self.rules(document, "counters")),
            spans=tuple(self.span(rule) for rule in self.rules(document, "spans")),
            gauges=tuple(self.gauge(rule) for rule in self.rules(document, "gauges")),
            flows=tuple(self.flow(rule) for rule in self.rules(document, "flows")),
            histograms=tuple(self.histogram(rule) for rule in self.rules(document, "histograms")),
        )

    def known_types(self, document: _Lines) -> None:
        events, line = document["events"], document.key_lines["events"]
        if not isinstance(events, _Lines) or not events:
            raise self.fail(line, "events must map each category to a list of event types")
        for category, types in events.items():
            at = events.key_lines[category]
            if not NAME.match(category):
                raise self.fail(at, f"category {category!r} must match {NAME.pattern}")
            for event_type, spelling in zip(self.type_list(types, at, known=False), types,
                                            strict=True):  # fmt: skip
                if event_type in self.categories:
                    raise self.fail(at, f"{event_type} is listed twice (also under "
                                        f"{self.categories[event_type]})")  # fmt: skip
                self.categories[event_type] = category
                self.names[event_type] = spelling.strip()

    def rules(self, document: _Lines, section: str) -> list[_Lines]:
        rules = document.get(section, _LineList())
        if not isinstance(rules, _LineList):
            raise self.fail(document.key_lines[section], f"{section} must be a list of rules")
        for rule in rules:
            if not isinstance(rule, _Lines):
                raise self.fail(rules.line, f"each entry of {section} must be a mapping")
        return rules

    def counter(self, rule: _Lines) -> CounterRule:
        self.keys(rule, required={"name", "events"}, optional={"help", "labels"})
        name = self.rule_name(rule, "counters", counter_family)
        labels = self.labels(rule, "labels", reserved={"event_type"}, optional=True)
        return CounterRule(name, self.text(rule, "help", optional=True) or f"{name} events.",
                           self.types(rule, "events"), labels)  # fmt: skip

    def span(self, rule: _Lines) -> SpanRule:
        self.keys(rule, required={"name", "start", "key"}, optional={"end", "fail"})
        name = self.rule_name(rule, "spans", None)
        start = self.one_type(rule, "start")
        end = self.types(rule, "end", optional=True)
        fail = self.types(rule, "fail", optional=True)
        if not end and not fail:
            raise self.fail(rule.line, f"span {name} needs end or fail event types")
        if start in end | fail or end & fail:
            raise self.fail(rule.line, f"span {name}: an event type can be only one of "
                                       "start, end and fail")  # fmt: skip
        return SpanRule(name, start, end, fail, self.text(rule, "key"))

    def gauge(self, rule: _Lines) -> GaugeRule:
        self.keys(rule, required={"name", "key"},
                  optional={"help", "set", "events", "state", "value"})  # fmt: skip
        name = self.rule_name(rule, "gauges", gauge_family)
        ((label, key),) = self.labels(rule, "key", reserved=set(), exactly_one=True)
        given = [kind for kind in ("set", "state", "value") if kind in rule]
        if len(given) > 1:
            raise self.fail(rule.key_lines[given[1]], f"gauge {name}: {' and '.join(given)} "
                                                      "exclude each other")  # fmt: skip
        number = self.text(rule, "value", optional=True)
        if number is not None:
            events = self.types(rule, "events")
            return GaugeRule(name, self.text(rule, "help", optional=True) or name, label, key,
                             (), events, None, number)  # fmt: skip
        state = self.text(rule, "state", optional=True)
        if state is not None:
            if label == "state":
                raise self.fail(rule.key_lines["key"], "label 'state' is taken by state")
            events = self.types(rule, "events")
            return GaugeRule(name, self.text(rule, "help", optional=True) or name, label, key,
                             (), events, state)  # fmt: skip
        if "events" in rule:
            raise self.fail(rule.key_lines["events"], f"gauge {name}: events go with state; "
                                                      "use set: {TYPE: value}")  # fmt: skip
        values = self.set_values(rule)
        return GaugeRule(name, self.text(rule, "help", optional=True) or name, label, key,
                         values, frozenset(t for t, _ in values), None)  # fmt: skip

    def histogram(self, rule: _Lines) -> HistogramRule:
        self.keys(rule, required={"name", "events", "value", "buckets"},
                  optional={"help", "labels"})  # fmt: skip
        name = self.rule_name(rule, "histograms", gauge_family)
        labels = self.labels(rule, "labels", reserved={"le"}, optional=True)
        buckets = rule["buckets"]
        line = rule.key_lines["buckets"]
        if (
            not isinstance(buckets, list)
            or not 0 < len(buckets) <= MAX_BUCKETS
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in buckets)
            or not all(abs(b) < 1e300 for b in buckets)
            or any(a >= b for a, b in itertools.pairwise(buckets))
        ):
            raise self.fail(line, f"histogram {name}: buckets must be 1 to {MAX_BUCKETS} "
                                  "finite numbers in increasing order")  # fmt: skip
        return HistogramRule(name, self.text(rule, "help", optional=True) or name,
                             self.types(rule, "events"), self.text(rule, "value"), labels,
                             tuple(float(b) for b in buckets))  # fmt: skip

    def flow(self, rule: _Lines) -> FlowRule:
        self.keys(rule, required={"name", "key", "steps"}, optional=set())
        name = self.rule_name(rule, "flows", None)
        steps = rule["steps"]
        ordered = self.type_list(steps, rule.key_lines["steps"], known=True)
        if len(ordered) < 2 or len(set(ordered)) != len(ordered):
            raise self.fail(rule.key_lines["steps"], f"flow {name} needs two or more "
                                                     "different steps")  # fmt: skip
        return FlowRule(name, self.text(rule, "key"), tuple(ordered))

    # -- pieces --

    def keys(self, node: _Lines, required: set[str], optional: set[str]) -> None:
        for key in node:
            if key not in required | optional:
                allowed = ", ".join(sorted(required | optional))
                raise self.fail(node.key_lines[key], f"unknown key {key!r} (expected {allowed})")
        missing = sorted(required - set(node))
        if missing:
            raise self.fail(node.line, f"missing {', '.join(missing)}")

    def text(self, node: _Lines, key: str, optional: bool = False) -> Any:
        value = node.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            line = node.key_lines.get(key, node.line)
            raise self.fail(line, f"{key} must be a non-empty string")
        return value

    def rule_name(self, rule: _Lines, section: str, family_of: Callable[[str], str] | None) -> str:
        """The rule's name, checked; ``family_of`` gives the metric it declares, if any."""
        name = rule["name"]
        line = rule.key_lines["name"]
        if not isinstance(name, str) or not NAME.match(name):
            raise self.fail(line, f"name {name!r} must match {NAME.pattern}")
        if (section, name) in self.rule_names:
            raise self.fail(line, f"{section}: {name} is defined twice")
        self.rule_names.add((section, name))
        if family_of is not None:
            family = family_of(name)
            if re.search(SERIES_SUFFIXES, name):
                raise self.fail(line, f"name {name!r} ends like a series of another kind "
                                      f"({SERIES_SUFFIXES})")  # fmt: skip
            if family in self.families:
                raise self.fail(line, f"{family} is already a metric of this mapping")
            self.families.add(family)
        return name

    def type_list(self, value: Any, line: int, known: bool) -> list[str]:
        if not isinstance(value, list) or not value:
            raise self.fail(line, "expected a non-empty list of event types")
        return [self.event_type(item, getattr(value, "line", line), known) for item in value]

    def event_type(self, value: Any, line: int, known: bool) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(line, f"{value!r} is not an event type name")
        canonical = value.strip().upper()
        if known and canonical not in self.categories:
            raise self.fail(line, f"{value} is not one of the event types under events")
        return canonical

    def types(self, rule: _Lines, key: str, optional: bool = False) -> frozenset[str]:
        if key not in rule and optional:
            return frozenset()
        value = rule.get(key)
        line = rule.key_lines.get(key, rule.line)
        if isinstance(value, str):
            value = [value]
        return frozenset(self.type_list(value, line, known=True))

    def one_type(self, rule: _Lines, key: str) -> str:
        return self.event_type(rule[key], rule.key_lines[key], known=True)

    def labels(self, rule: _Lines, key: str, reserved: set[str], optional: bool = False,
               exactly_one: bool = False) -> tuple[tuple[str, str], ...]:  # fmt: skip
        value = rule.get(key)
        line = rule.key_lines.get(key, rule.line)
        if value is None and optional:
            return ()
        if not isinstance(value, _Lines) or (exactly_one and len(value) != 1):
            shape = "one label: field" if exactly_one else "label: field pairs"
            raise self.fail(line, f"{key} must be a mapping of {shape}")
        pairs = []
        for label, field_name in value.items():
            at = value.key_lines[label]
            if not LABEL.match(label) or label.startswith("__") or label in reserved:
                raise self.fail(at, f"{label!r} cannot be a label name")
            if not isinstance(field_name, str) or not field_name:
                raise self.fail(at, f"label {label} needs a field name")
            pairs.append((label, field_name))
        return tuple(pairs)

    def set_values(self, rule: _Lines) -> tuple[tuple[str, float], ...]:
        value = rule.get("set")
        line = rule.key_lines.get("set", rule.line)
        if not isinstance(value, _Lines) or not value:
            raise self.fail(line, "a gauge needs set: {EVENT_TYPE: value} or state: FIELD")
        pairs = []
        for event_type, number in value.items():
            at = value.key_lines[event_type]
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise self.fail(at, f"{event_type}: {number!r} is not a number")
            pairs.append((self.event_type(event_type, at, known=True), float(number)))
        return tuple(pairs)
