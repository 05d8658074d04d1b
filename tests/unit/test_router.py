"""Event-router mappings in-process: the mapping file and its refusals, the reducer (spans,
flows, gauges, counters, histograms, bounds, times), and trace lines decoded to events. The
sources against a real runwatch, Prometheus, SQLite database and OTLP receiver are in
tests/e2e/test_router.py."""

from __future__ import annotations

import pytest

from exporter.core.events import Rejected
from exporter.core.outputs import FinishedSpan, Observed
from exporter.core.router.mapping import FIXED_FAMILIES, MappingError, parse_mapping
from exporter.core.router.reducer import RouterLimits, RouterState
from exporter.sources.files.router_mapping import load_mapping
from exporter.sources.peers.router import line_sink
from exporter.telemetry.router_metrics import ROUTER_METRICS
from tests.support import routed

# The event types of seed 004's catalogue tables (training, evaluation, model, data sync,
# cluster, curriculum and quality, daemon lifecycle, recovery).
SEED_TYPES = [
    "TRAINING_STARTED",
    "TRAINING_COMPLETED",
    "TRAINING_FAILED",
    "TRAINING_EARLY_STOPPED",
    "EVALUATION_COMPLETED",
    "EVALUATION_PROGRESS",
    "EVALUATION_STARTED",
    "MODEL_PROMOTED",
    "MODEL_UPDATED",
    "PROMOTION_FAILED",
    "REGRESSION_DETECTED",
    "REGRESSION_CRITICAL",
    "DATA_SYNC_STARTED",
    "DATA_SYNC_COMPLETED",
    "DATA_SYNC_FAILED",
    "NEW_GAMES_AVAILABLE",
    "HOST_ONLINE",
    "HOST_OFFLINE",
    "LEADER_ELECTED",
    "NODE_RECOVERED",
    "IDLE_RESOURCE_DETECTED",
    "CURRICULUM_REBALANCED",
    "CURRICULUM_ADVANCED",
    "ELO_VELOCITY_CHANGED",
    "ELO_SIGNIFICANT_CHANGE",
    "QUALITY_SCORE_UPDATED",
    "QUALITY_DEGRADED",
    "DAEMON_STATUS_CHANGED",
    "ALL_CRITICAL_DAEMONS_READY",
    "HYPERPARAMETER_UPDATED",
    "ADAPTIVE_PARAMS_CHANGED",
    "REPAIR_COMPLETED",
    "REPAIR_FAILED",
    "ORPHAN_GAMES_DETECTED",
    "TASK_ABANDONED",
]


BUILTIN = load_mapping(None)


# -- the mapping --


def test_builtin_mapping_knows_every_type_of_the_seed_catalogue() -> None:
    assert len(SEED_TYPES) == 35
    assert set(SEED_TYPES) == set(BUILTIN.categories)


BAD_MAPPINGS = [
    ("type_field: t\n", 1, "missing events"),
    ("type_field: t\nevents: {a: [X]}\nspanz: []\n", 3, "unknown key 'spanz'"),
    ("type_field: t\nevents:\n  a: [X, Y]\n  b: [Y]\n", 4, "Y is listed twice"),
    ("type_field: t\nevents: {a: [X, Y]}\nspans:\n  - name: s\n    start: X\n    key: k\n"
     "    end: [Z]\n", 7, "Z is not one of the event types"),
    ("type_field: t\nevents: {a: [X, Y]}\nspans:\n  - name: s\n    start: X\n    key: k\n", 4,
     "needs end or fail"),
    ("type_field: t\nevents: {a: [X]}\ncounters:\n  - name: Bad-Name\n    events: [X]\n", 4,
     "must match"),
    ("type_field: t\nevents: {a: [X]}\ncounters:\n  - name: c\n    events: [X]\n"
     "    labels: {event_type: f}\n", 6, "'event_type' cannot be a label name"),
    ("type_field: t\nevents: {a: [X]}\ngauges:\n  - name: g\n    key: {h: host}\n"
     "    set: {X: up}\n", 6, "'up' is not a number"),
    ("type_field: t\nevents: {a: [X]}\ngauges:\n  - name: spans_open\n    key: {h: h}\n"
     "    set: {X: 1}\n", 4, "router_spans_open is already a metric"),
    ("type_field: t\nevents: {a: [X, Y]}\nflows:\n  - name: f\n    key: k\n    steps: [X]\n",
     6, "two or more different steps"),
    ("type_field: t\nevents: {a: [X]}\ntype_field: u\n", 3, "'type_field' given twice"),
    ("type_field: t\nevents: {a: [X]}\ngauges:\n  - name: latency_bucket\n    key: {h: h}\n"
     "    set: {X: 1}\n", 4, "ends like a series of another kind"),
    ("type_field: t\nevents: {a: [X]\n", 3, "not valid YAML"),
]  # fmt: skip


def test_the_names_a_mapping_may_not_take_are_the_fixed_router_families() -> None:
    assert {metric.name for metric in ROUTER_METRICS} == FIXED_FAMILIES


@pytest.mark.parametrize(("text", "line", "reason"), BAD_MAPPINGS)
def test_a_bad_mapping_is_refused_with_its_line_and_reason(
    text: str, line: int, reason: str
) -> None:
    with pytest.raises(MappingError) as caught:
        parse_mapping(text, "m.yaml")
    assert str(caught.value).startswith(f"m.yaml:{line}: ")
    assert reason in str(caught.value)


# -- the reducer --


def test_spans_end_by_outcome_with_their_durations() -> None:
    state = RouterState(BUILTIN)
    assert state.apply(routed("TRAINING_STARTED", 100, config="a"), 0) == []
    state.apply(routed("TRAINING_STARTED", 110, config="b"), 0)
    done = state.apply(routed("training_completed", 160, config="a"), 0)  # any case
    failed = state.apply(routed("TRAINING_FAILED", 170, config="b"), 0)
    spans = [o for o in done + failed if isinstance(o, FinishedSpan)]
    assert [(s.span.name, s.span.start, s.end, s.error) for s in spans] == [
        ("training", 100, 160, None), ("training", 110, 170, "TRAINING_FAILED")]  # fmt: skip
    assert spans[0].span.attributes == {"router.key": "a", "router.span": "training"}
    assert Observed("router_span_duration_seconds", 60, ("training", "training_completed")) in done
    assert state.span_durations[("training", "training_failed")].total == 60
    assert len(state.open_spans["training"]) == 0
    # an end without its start, and a start that comes again before its end
    state.apply(routed("TRAINING_COMPLETED", 200, config="never-started"), 0)
    state.apply(routed("TRAINING_STARTED", 300, config="c"), 0)
    again = state.apply(routed("TRAINING_STARTED", 305, config="c"), 0)
    assert state.unmatched_ends["training"] == 1
    assert [o.error for o in again if isinstance(o, FinishedSpan)] == ["started again"]
    assert state.span_durations[("training", "superseded")].count == 1
    assert len(state.open_spans["training"]) == 1


def test_flows_measure_each_step_and_ignore_steps_out_of_order() -> None:
    state = RouterState(BUILTIN)
    state.apply(routed("TRAINING_COMPLETED", 1000, config="a"), 0)
    state.apply(routed("MODEL_PROMOTED", 1010, config="a"), 0)  # skipped a step: ignored
    state.apply(routed("EVALUATION_COMPLETED", 1100, config="a"), 0)
    out = state.apply(routed("MODEL_PROMOTED", 1130, config="a"), 0)
    state.apply(routed("EVALUATION_COMPLETED", 1200, config="z"), 0)  # no first step seen
    assert state.flow_steps[("promotion", "EVALUATION_COMPLETED")].total == 100
    assert state.flow_steps[("promotion", "MODEL_PROMOTED")].total == 30
    assert Observed("router_flow_duration_seconds", 130, ("promotion",)) in out
    (flow,) = [o for o in out if isinstance(o, FinishedSpan)]
    assert (flow.span.kind, flow.span.name, flow.span.start, flow.end) == (
        "router flow", "promotion", 1000, 1130)  # fmt: skip
    assert [(at, name) for at, name, _ in flow.span.events] == [
        (1000, "TRAINING_COMPLETED"), (1100, "EVALUATION_COMPLETED"), (1130, "MODEL_PROMOTED"),
    ]  # fmt: skip
    assert state.flows_completed["promotion"] == 1
    assert len(state.flows["promotion"]) == 0


def test_gauges_and_counters_take_labels_from_fields() -> None:
    state = RouterState(BUILTIN)
    state.apply(routed("HOST_ONLINE", 1, host="n1"), 0)
    state.apply(routed("HOST_ONLINE", 1, host="n2"), 0)
    state.apply(routed("HOST_OFFLINE", 2, host="n2"), 0)
    state.apply(routed("DAEMON_STATUS_CHANGED", 3, daemon="sync", status="running"), 0)
    state.apply(routed("DAEMON_STATUS_CHANGED", 4, daemon="sync", status="stopped"), 0)
    state.apply(routed("REGRESSION_CRITICAL", 5, config="a"), 0)
    state.apply({"event_type": "HOST_OFFLINE", "timestamp": 6}, 0)  # no host: not joined
    assert dict(state.gauges["host_up"]) == {"n1": 1.0, "n2": 0.0}
    assert state.gauges["daemon_status"]["sync"] == {"running": 0.0, "stopped": 1.0}
    assert state.counters["regressions"] == {("REGRESSION_CRITICAL", "a"): 1}
    assert state.dropped["router_missing_key"] == 1
    assert state.events[("HOST_OFFLINE", "cluster")] == 2


def test_bounds_cut_series_and_open_spans_and_count_the_cut() -> None:
    state = RouterState(BUILTIN, RouterLimits(max_series=2, max_open=2))
    for number in range(4):
        state.apply(routed("HOST_ONLINE", number, host=f"n{number}"), 0)
        state.apply(routed("TRAINING_STARTED", number, config=f"c{number}"), 0)
    assert list(state.gauges["host_up"]) == ["n0", "n1"]
    assert list(state.open_spans["training"]) == ["c2", "c3"]  # the oldest are dropped
    assert state.dropped["router_series"] == 2
    assert state.dropped["router_open"] == 2


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ([1, 2], "not_an_object"),
        ({"payload": {}}, "missing_field"),
        ({"event_type": 7}, "missing_field"),
        ({"event_type": "SOMETHING_NEW"}, "unknown_event_type"),
        ({"event_type": "HOST_ONLINE", "timestamp": "yesterday"}, "invalid_timestamp"),
        ({"event_type": "HOST_ONLINE", "timestamp": True}, "invalid_timestamp"),
        ({"event_type": "HOST_ONLINE", "timestamp": 1e300}, "invalid_timestamp"),
        ({"event_type": "HOST_ONLINE", "timestamp": -1}, "invalid_timestamp"),
        ({"event_type": "HOST_ONLINE", "timestamp": 10**400}, "invalid_timestamp"),
        (
            {"event_type": "HOST_ONLINE", "timestamp": "9999-12-31T00:00:00+00:00"},
            "invalid_timestamp",
        ),
    ],
)
def test_events_that_cannot_be_mapped_are_rejected_by_reason(event: object, reason: str) -> None:
    state = RouterState(BUILTIN)
    with pytest.raises(Rejected) as caught:
        state.apply(event, 0)
    assert caught.value.reason == reason
    assert sum(state.events.values()) == 0


def test_times_come_from_the_event_in_either_form_or_from_the_reader() -> None:
    state = RouterState(BUILTIN)
    state.apply({"event_type": "TRAINING_STARTED", "payload": {"config": "a",
                 "timestamp": "2026-01-01T00:00:00+00:00"}}, 0)  # fmt: skip
    state.apply({"event_type": "TRAINING_STARTED", "payload": {"config": "b"}}, 42.0)
    state.apply({"event_type": "TRAINING_STARTED", "timestamp": "2026-01-01T00:00:01",
                 "payload": {"config": "c"}}, 0)  # no offset: UTC  # fmt: skip
    starts = {key: span.start for key, span in state.open_spans["training"].items()}
    assert starts == {"a": 1767225600.0, "b": 42.0, "c": 1767225601.0}


def test_trace_lines_decode_to_events_or_their_rejections() -> None:
    delivered = []
    sink = line_sink(lambda values, at, spans_from: delivered.append((values, spans_from)))
    sink([b"", b'{"event_type": "HOST_ONLINE"}', b"   ", b"\xff\xfe", b"{trunc"], 2)
    ((values, spans_from),) = delivered
    assert values[0] == {"event_type": "HOST_ONLINE"}
    assert [v.reason for v in values[1:]] == ["invalid_json", "invalid_utf8", "invalid_json"]
    assert spans_from == 1  # the empty line before it is not an item


def test_value_gauges_take_numbers_from_the_payload() -> None:
    state = RouterState(load_mapping(None))
    cycle = [
        {"event_type": "MODEL_PROMOTED", "timestamp": 1.0,
         "payload": {"config": "hex8", "elo": 1510}},
        {"event_type": "EVALUATION_PROGRESS", "timestamp": 2.0,
         "payload": {"config": "hex8", "games_played": 50}},
        {"event_type": "HYPERPARAMETER_UPDATED", "timestamp": 3.0,
         "payload": {"config": "hex8", "learning_rate": 2e-4}},
        {"event_type": "QUALITY_SCORE_UPDATED", "timestamp": 4.0,
         "payload": {"config": "hex8", "quality_score": "high"}},  # not a number: counted
        {"event_type": "ELO_SIGNIFICANT_CHANGE", "timestamp": 5.0, "config": "hex8", "elo": 1490},
    ]  # fmt: skip
    for value in cycle:
        state.apply(value, 0.0)
    assert state.gauges["model_elo"] == {"hex8": 1490.0}  # the event's own field, latest
    assert state.gauges["evaluation_games_played"] == {"hex8": 50.0}
    assert state.gauges["learning_rate"] == {"hex8": 2e-4}
    assert state.gauges["quality_score"] == {} and state.dropped["router_not_a_number"] == 1


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        (
            "{name: g, key: {c: config}, events: [HOST_ONLINE], value: x, set: {HOST_ONLINE: 1}}",
            "set and value exclude each other",
        ),
        ("{name: g, key: {c: config}, value: x}", "a non-empty list of event types"),
    ],
)
def test_a_value_gauge_is_checked_with_its_line(rule: str, reason: str) -> None:
    text = f"type_field: type\nevents:\n  c: [HOST_ONLINE]\ngauges:\n  - {rule}\n"
    with pytest.raises(MappingError, match=f"m.yaml:5: .*{reason}"):
        parse_mapping(text, "m.yaml")


def test_histograms_take_numbers_from_the_payload_and_reach_both_outputs() -> None:
    from exporter.pipeline import Pipeline
    from tests.pipelines import exposition

    pipeline = Pipeline()
    pipeline.router = RouterState(load_mapping(None))
    drops = [35, 120, "much"]  # the last is no number: counted, not observed
    values = [
        {
            "event_type": "REGRESSION_DETECTED",
            "timestamp": float(i),
            "payload": {"config": "hex8", "elo_drop": drop},
        }
        for i, drop in enumerate(drops)
    ]
    pipeline.ingest_router(values, "router", 0.0)
    text = exposition(pipeline)
    assert 'router_regression_elo_drop_bucket{config="hex8",le="50.0"} 1.0' in text
    assert 'router_regression_elo_drop_count{config="hex8"} 2.0' in text
    assert 'router_regression_elo_drop_sum{config="hex8"} 155.0' in text
    assert pipeline.router.dropped["router_not_a_number"] == 1


@pytest.mark.parametrize(
    ("buckets", "reason"),
    [("[]", "buckets must be"), ("[2, 1]", "increasing"), ("[1, x]", "finite numbers")],
)
def test_a_histogram_rule_is_checked_with_its_line(buckets: str, reason: str) -> None:
    text = ("type_field: type\nevents:\n  c: [A]\nhistograms:\n"
            f"  - name: h\n    events: [A]\n    value: v\n    buckets: {buckets}\n")  # fmt: skip
    with pytest.raises(MappingError, match=f"m.yaml:8: .*{reason}"):
        parse_mapping(text, "m.yaml")
