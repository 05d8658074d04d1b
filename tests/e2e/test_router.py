"""Event-router sources against a real runwatch, Prometheus, SQLite database and OTLP
receiver: a bad mapping at start, ``router check``, a replayed trace with a mapping of one's
own, the JSONL trace and the SQLite queue. The mapping and the reducer in-process are in
tests/unit/test_router.py."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import orjson

from tests.support import ROOT, RUNWATCH, routed, wait_for


def lines(*events: dict) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


# -- the mapping and the router command --


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
