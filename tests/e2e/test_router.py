"""Event-router mappings: the mapping file, the reducer, and the JSONL-trace and SQLite
sources against a real runwatch, Prometheus, SQLite database and OTLP receiver."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import orjson
import pytest

from exporter.core.events import Rejected
from exporter.core.outputs import FinishedSpan, Observed
from exporter.core.router.mapping import FIXED_FAMILIES, MappingError, parse_mapping
from exporter.core.router.reducer import RouterLimits, RouterState
from exporter.sources.files.router_mapping import load_mapping
from exporter.sources.peers.router import line_sink
from exporter.telemetry.router_metrics import ROUTER_METRICS
from tests.conftest import ROOT, RUNWATCH, wait_for

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


def routed(event_type: str, ts: float, **payload: object) -> dict:
    return {"event_type": event_type, "timestamp": ts, "source": "test", "payload": payload}


def lines(*events: dict) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


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


def test_serve_refuses_a_bad_mapping_at_start(tmp_path: Path) -> None:
    mapping = tmp_path / "bad.yaml"
    mapping.write_text("type_field: t\nevents: {a: [X]}\ncounters:\n  - name: c\n")
    done = subprocess.run(
        [*RUNWATCH, "serve", "--router-mapping", str(mapping), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == f"runwatch: router mapping {mapping}:4: missing events"


def test_router_check_lists_the_metrics_or_says_what_is_wrong(tmp_path: Path) -> None:
    def check(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*RUNWATCH, "router", "check", *args], capture_output=True,
                              text=True, timeout=60, cwd=ROOT)  # fmt: skip

    builtin = check()
    assert builtin.returncode == 0
    assert builtin.stdout.startswith("built-in mapping: ok: 35 event types in 8 categories")
    assert "  router_host_up{host}  " in builtin.stdout
    bad = tmp_path / "m.yaml"
    bad.write_text("type_field: t\nevents: {a: [X]}\nflows: [{name: f, key: k, steps: [X, Y]}]\n")
    refused = check(str(bad))
    assert refused.returncode == 2
    assert refused.stderr == (f"runwatch: router mapping {bad}:3: Y is not one of the event "
                              "types under events\n")  # fmt: skip


CUSTOM = """\
type_field: meta.kind      # nested, lower-case types, no payload object
time_field: meta.at
events:
  jobs: [job.begin, job.end, job.crash]
counters:
  - {name: jobs_by_queue, events: [job.begin], labels: {queue: queue}}
spans:
  - {name: job, start: job.begin, end: [job.end], fail: [job.crash], key: id}
"""


def test_replay_maps_a_trace_with_a_mapping_of_ones_own(tmp_path: Path) -> None:
    mapping = tmp_path / "jobs.yaml"
    mapping.write_text(CUSTOM)
    trace = tmp_path / "jobs.jsonl"
    trace.write_bytes(lines(
        {"meta": {"kind": "job.begin", "at": 10}, "id": 1, "queue": "gpu"},
        {"meta": {"kind": "job.begin", "at": 11}, "id": 2, "queue": "cpu"},
        {"meta": {"kind": "JOB.END", "at": 40}, "id": 1},
        {"meta": {"kind": "job.crash", "at": 45}, "id": 2},
        {"meta": {"kind": "job.retry", "at": 46}, "id": 2},
    ))  # fmt: skip
    done = subprocess.run(
        [*RUNWATCH, "replay", "--router-events", str(trace), "--router-mapping", str(mapping)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=True,
    )  # fmt: skip
    exposition = done.stdout
    for line in (
        'router_events_total{category="jobs",event_type="job.begin"} 2.0',
        'router_events_total{category="jobs",event_type="job.end"} 1.0',
        'router_jobs_by_queue_total{event_type="job.begin",queue="gpu"} 1.0',
        'router_span_duration_seconds_sum{outcome="job.end",span="job"} 30.0',
        'router_span_duration_seconds_sum{outcome="job.crash",span="job"} 34.0',
        'router_spans_open{span="job"} 0.0',
        'runwatch_events_rejected_total{reason="unknown_event_type",source="router"} 1.0',
    ):
        assert line in exposition.splitlines(), line


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


# -- the sources, end to end --


def test_a_router_trace_reaches_prometheus_through_rotation_and_garbage(
    serve, prometheus, tmp_path: Path
) -> None:
    trace = tmp_path / "router.jsonl"
    trace.write_bytes(lines(routed("TRAINING_STARTED", 1000, config="hex8"),
                            routed("HOST_ONLINE", 1000, host="node-1"),
                            routed("HOST_ONLINE", 1000, host="node-2")))  # fmt: skip
    server = serve("--router-events", str(trace), "--no-nvml", "--no-system")
    prom = prometheus(server.url.removeprefix("http://"))
    with trace.open("ab") as out:
        out.write(b"not json\n\xff\xfe\n" + lines({"event_type": "BRAND_NEW"}))
        out.write(lines(routed("HOST_OFFLINE", 1001, host="node-2")))
    trace.rename(tmp_path / "router.jsonl.1")
    trace.write_bytes(lines(routed("TRAINING_COMPLETED", 1600, config="hex8"),
                            routed("REGRESSION_DETECTED", 1601, config="hex8")))  # fmt: skip

    def settled() -> bool:
        return prom.value('router_events_total{event_type="REGRESSION_DETECTED"}') == 1

    wait_for(settled, what="the rotated trace in Prometheus")
    assert prom.query("router_host_up") == {"host=node-1": 1.0, "host=node-2": 0.0}
    assert prom.value('router_events_total{category="cluster"} and '
                      'router_events_total{event_type="HOST_ONLINE"}') == 2  # fmt: skip
    assert prom.value('router_regressions_total{config="hex8"}') == 1
    assert prom.value('router_spans_open{span="training"}') == 0
    assert (
        prom.value('router_span_duration_seconds_sum{span="training",outcome="training_completed"}')
        == 600
    )
    rejected = prom.query('runwatch_events_rejected_total{source="router"} > 0')
    assert rejected == {"reason=invalid_json,source=router": 1,
                        "reason=invalid_utf8,source=router": 1,
                        "reason=unknown_event_type,source=router": 1}  # fmt: skip
    assert prom.value('runwatch_file_rotations_total{kind="rotated"}') == 1


def _queue(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS events (event_id INTEGER PRIMARY KEY AUTOINCREMENT, "
               "event_type TEXT NOT NULL, payload TEXT, source TEXT, created_at REAL)")  # fmt: skip
    return db


def _publish(db: sqlite3.Connection, event_type: str, ts: float, **payload: object) -> None:
    db.execute(
        "INSERT INTO events (event_type, payload, source, created_at) VALUES (?,?,?,?)",
        (event_type, orjson.dumps({**payload, "timestamp": ts}).decode(), "test", ts),
    )


def test_an_sqlite_queue_is_polled_read_only_through_locks(
    otlp_receiver, serve, tmp_path: Path
) -> None:
    path = tmp_path / "events.db"
    server = serve("--router-sqlite", str(path), "--router-interval", "0.2", "--no-nvml",
                   "--no-system", "--otlp-endpoint", otlp_receiver.url,
                   env={"OTEL_METRIC_EXPORT_INTERVAL": "600000"})  # fmt: skip
    up = 'runwatch_source_up{source="router"}'
    wait_for(lambda: server.sample(up) == 0, what="the router source down: no database yet")
    db = _queue(path)
    _publish(db, "DATA_SYNC_STARTED", 100, sync_id="s1")  # history: state, not spans
    _publish(db, "DATA_SYNC_STARTED", 110, sync_id="s2")
    db.execute("INSERT INTO events (event_type, payload) VALUES ('HOST_ONLINE', '{broken')")
    wait_for(lambda: server.sample('router_spans_open{span="data_sync"}') == 2,
             what="the rows there at start", timeout=90)  # fmt: skip
    assert server.sample(up) == 1
    assert server.sample('runwatch_events_rejected_total{reason="invalid_json",source="router"}'
                         ) == 1  # fmt: skip

    db.execute("BEGIN EXCLUSIVE")  # a writer holding the database: polls wait, then count
    _publish(db, "DATA_SYNC_COMPLETED", 160, sync_id="s1")
    locked = 'runwatch_source_errors_total{reason="database_locked",source="router"}'
    wait_for(lambda: server.sample(locked) >= 1, what="a locked poll counted")
    assert server.sample('router_spans_open{span="data_sync"}') == 2
    db.execute("COMMIT")
    _publish(db, "DATA_SYNC_FAILED", 170, sync_id="s2")
    wait_for(lambda: server.sample('router_spans_open{span="data_sync"}') == 0,
             what="the rows written meanwhile")  # fmt: skip
    # only the spans that ended after start are exported: both, with their event times
    spans = wait_for(lambda: len(otlp_receiver.spans) == 2 and otlp_receiver.spans)
    by_key = {s["attributes"]["router.key"]: s for s in spans}
    assert by_key["s1"]["name"] == "router data_sync"
    assert (by_key["s1"]["start"], by_key["s1"]["end"]) == (100 * 10**9, 160 * 10**9)
    assert by_key["s1"]["status"] == 0 and by_key["s2"]["status"] == 2
    assert by_key["s2"]["status_message"] == "DATA_SYNC_FAILED"
    assert server.sample(up) == 1


def test_a_missing_table_keeps_the_source_down_and_says_why(serve, tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE unrelated (x)").connection.commit()
    server = serve("--router-sqlite", str(path), "--router-interval", "0.2", "--no-nvml",
                   "--no-system")  # fmt: skip
    wait_for(lambda: server.sample('runwatch_source_up{source="router"}') == 0)
    wait_for(lambda: "no such table: events" in server.log.read_text(), what="the reason")
    assert server.log.read_text().count("no such table") == 1


def test_a_wal_queue_is_read_while_a_writer_holds_its_transaction(serve, tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    db = _queue(path)
    db.execute("PRAGMA journal_mode=WAL")
    _publish(db, "HOST_ONLINE", 100, host="n1")
    server = serve("--router-sqlite", str(path), "--router-interval", "0.2", "--no-nvml",
                   "--no-system")  # fmt: skip
    up = 'router_host_up{host="n1"}'
    wait_for(lambda: server.sample(up) == 1, what="the committed row")
    db.execute("BEGIN IMMEDIATE")  # readers of a WAL database see the last commit meanwhile
    _publish(db, "HOST_OFFLINE", 110, host="n1")
    reads = 'runwatch_source_last_success_timestamp_seconds{source="router"}'
    before = server.sample(reads)
    wait_for(lambda: server.sample(reads) > before, what="a poll during the transaction")
    assert server.sample(up) == 1
    db.execute("COMMIT")
    wait_for(lambda: server.sample(up) == 0, what="the row once committed")
    locked = 'runwatch_source_errors_total{reason="database_locked",source="router"}'
    assert server.sample(locked) == 0


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
    from tests.integration.test_exposition import exposition

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
