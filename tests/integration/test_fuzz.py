"""Property-based fuzzing of every input path (hypothesis; ``scripts/fuzz`` runs the long
session and the byte-level atheris harnesses).

Invariants, for any input: nothing raises out of a parser or a source but its documented
refusal; every valid event mixed with arbitrary bytes is applied exactly once; every
refusal is counted by a known reason; ``/metrics`` renders whole (no render errors) and
``promtool check metrics`` prints nothing. The POST property runs against a real
``runwatch serve``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import runpy
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from exporter.core.events import REJECT_REASONS, STATUS_ALIASES, parse_lines
from exporter.pipeline import Pipeline
from exporter.telemetry.exposition import Exposition
from tests.processes import Server
from tests.support import ROOT, read_as_written

FUZZ = ROOT / "fuzz"
TARGETS = runpy.run_path(str(FUZZ / "targets.py"))["TARGETS"]  # the atheris harnesses

# -- strategies -----------------------------------------------------------------------------------

idents = st.text(min_size=1, max_size=12)
counts = st.integers(min_value=0, max_value=2**53)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats() | st.text(max_size=12)
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
finite_json_values = st.recursive(  # what a valid event may carry in its config
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | finite
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
statuses = st.sampled_from(sorted(STATUS_ALIASES)).flatmap(
    lambda s: st.sampled_from([s, s.upper(), s.title()])
)


def optional(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.none() | strategy


EVENT_FIELDS: dict[str, dict[str, st.SearchStrategy]] = {
    "run_start": {"name": optional(idents),
                  "config": optional(st.dictionaries(st.text(max_size=8), finite_json_values,
                                                     max_size=4))},
    "progress": {"stage": idents, "progress_pct": st.floats(0, 100),
                 "targets_complete": optional(counts), "targets_total": optional(counts),
                 "message": optional(st.text(max_size=20))},
    "stage_change": {"new_stage": idents},
    "target_start": {"target": idents, "target_index": optional(counts),
                     "total_targets": optional(counts)},
    "target_complete": {"target": idents, "status": optional(idents),
                        "best_auc": optional(finite),
                        "duration_seconds": optional(st.floats(0, 1e12))},
    "run_complete": {"status": statuses, "total_targets": optional(counts),
                     "duration_seconds": optional(st.floats(0, 1e12))},
    "error": {"error_message": st.text(max_size=20), "error_type": optional(idents),
              "recoverable": optional(st.booleans()), "target": optional(idents)},
    "metric_update": {"metrics": st.dictionaries(idents, finite, max_size=4),
                      "step": optional(counts)},
    "checkpoint_saved": {"checkpoint_id": idents, "step": optional(counts),
                         "metrics": optional(st.dictionaries(idents, finite, max_size=3)),
                         "is_best": optional(st.booleans())},
    "status_change": {"new_status": statuses},
}  # fmt: skip


@st.composite
def valid_events(draw: st.DrawFn, run_id: str = "run_1", max_size: int = 20) -> list[dict]:
    """Events of one run in time order: each one the reducer applies."""
    kinds = draw(st.lists(st.sampled_from(sorted(EVENT_FIELDS)), max_size=max_size))
    events = []
    for index, kind in enumerate(kinds):
        fields = {k: draw(v) for k, v in EVENT_FIELDS[kind].items()}
        events.append({"event_type": kind, "run_id": run_id,
                       "timestamp": 1_700_000_000.0 + index,
                       **{k: v for k, v in fields.items() if v is not None}})  # fmt: skip
    return events


def line(value: dict) -> bytes:
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()  # any integer


@st.composite
def garbage_lines(draw: st.DrawFn) -> bytes:
    """A line that is never a valid event: random bytes, a valid line cut short or with a
    byte that is not UTF-8, hostile numbers and nesting."""
    base = line({"event_type": "metric_update", "run_id": "run_1", "timestamp": 1.0,
                 "metrics": {"loss": 1.0}, "step": 3})  # fmt: skip
    kinds = ["bytes", "cut", "utf8", "surrogate", "number", "nested", "json"]
    kind = draw(st.sampled_from(kinds))
    if kind == "bytes":
        raw = draw(st.binary(min_size=1, max_size=80))
        if raw.lstrip().startswith(b"{"):  # never a well-formed object by accident
            raw = b"}" + raw
    elif kind == "cut":
        raw = base[: draw(st.integers(1, len(base) - 1))]
    elif kind == "utf8":  # in a field runwatch reads (unknown fields are skipped unread)
        at = draw(st.integers(0, len(b"run_1")))
        raw = base.replace(b"run_1", b"run_1"[:at] + b"\xff" + b"run_1"[at:])
    elif kind == "surrogate":  # valid JSON, but text UTF-8 cannot encode; a bare NaN sends
        # the line to the second-chance parser, which once kept it
        if draw(st.booleans()):
            base = base.replace(b'"loss":1.0', b'"loss":NaN')
        escape = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\udbff\\u0041"]))
        field = draw(st.sampled_from([b'"run_1"', b'"loss"']))
        raw = base.replace(field, field[:-1] + escape + b'"', 1)
    elif kind == "number":
        number = draw(st.sampled_from([b"9" * 400, b"1e999", b"NaN", b"-1",
                                       str(2**53 + 1).encode(), b"Infinity"]))  # fmt: skip
        raw = base.replace(b'"step":3', b'"step":' + number)
    elif kind == "nested":
        depth = draw(st.integers(33, 3000))
        raw = base.replace(b'"step":3', b'"config":' + b"[" * depth + b"]" * depth)
        raw = raw.replace(b"metric_update", b"run_start")
    else:  # any JSON that is not an object
        raw = json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode()
    return raw.replace(b"\n", b" ") or b" "


def rendered(pipeline: Pipeline) -> str:
    text = Exposition(pipeline).render()[0].decode()
    assert not +pipeline.stats.render_errors, text  # nothing was left out
    return text


def rejected_by_reason(pipeline: Pipeline, source: str) -> Counter:
    return Counter({r: n for (s, r), n in pipeline.stats.rejected.items() if s == source and n})


# -- event lines ----------------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), max_size=20))
@example([b"[" * 5000 + b"]" * 5000, b'{"event_type":"run_start","x":' + b"[" * 3000])
@example([b'{"event_type":"metric_update","run_id":"x\\ud800","metrics":{"loss":NaN}}'])
def test_any_bytes_parse_to_an_event_or_a_known_refusal(lines: list[bytes]) -> None:
    parsed = parse_lines(lines, 200)
    assert len(parsed) == len(lines)
    for item in parsed:
        assert item is None or getattr(item, "reason", "ok") in (*REJECT_REASONS, "ok")


def interleave(data: st.DataObject, valid: list[bytes], garbage: list[bytes]) -> list[bytes]:
    """The garbage put anywhere among the valid items, which keep their order."""
    items = list(valid)
    for junk in garbage:
        items.insert(data.draw(st.integers(0, len(items))), junk)
    return items


@given(st.data())
def test_valid_events_among_garbage_are_each_applied_once(bin_dir, data: st.DataObject) -> None:
    valid = data.draw(valid_events(max_size=30))
    garbage = data.draw(st.lists(garbage_lines(), max_size=15))
    pipeline = Pipeline()
    pipeline.ingest_lines(interleave(data, [line(e) for e in valid], garbage), "jsonl")
    applied = Counter(e["event_type"] for e in valid)
    assert +pipeline.state.events_by_type == +applied
    assert pipeline.stats.ingested["jsonl"] == len(valid)
    refused = rejected_by_reason(pipeline, "jsonl")
    assert sum(refused.values()) == len(garbage)
    assert set(refused) <= set(REJECT_REASONS)
    assert_promtool_clean(bin_dir, rendered(pipeline))


def assert_promtool_clean(bin_dir: Path, text: str) -> None:
    lint = subprocess.run([bin_dir / "promtool", "check", "metrics"], input=text.encode(),
                          capture_output=True)  # fmt: skip
    assert (lint.returncode, lint.stdout, lint.stderr) == (0, b"", b""), text


@given(st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r")),
                max_size=30),
       st.lists(st.integers(1, 64), min_size=1, max_size=8), st.booleans())  # fmt: skip
@example([b""], [1], True)  # found: a CRLF cut between its \r and \n kept the \r
def test_a_file_reader_delivers_each_line_once_however_writes_are_cut(
    lines: list[bytes], cuts: list[int], crlf: bool
) -> None:
    data = b"".join(item + (b"\r\n" if crlf else b"\n") for item in lines)
    got: list[bytes] = []
    read_as_written(data, cuts, lambda ls, *_: got.extend(ls))
    assert got == lines


# -- POST bodies, on a real serve -----------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = Server(["--no-nvml", "--no-system", "--max-runs", "10000"],
                    tmp_path_factory.mktemp("fuzz-serve"))  # fmt: skip
    yield server
    server.stop()


_run_ids = itertools.count()


def _deep_config(depth: int) -> bytes:
    return (b'{"event_type": "run_start", "run_id": "r", "timestamp": 1, "config": {"a": '
            + b"[" * depth + b"]" * depth + b"}}")  # fmt: skip


garbage_values = (  # well-formed JSON texts that are not events
    (json_values.filter(lambda v: not isinstance(v, dict))
     | st.dictionaries(st.sampled_from(["event_type", "run_id", "timestamp", "x"]), json_values,
                       max_size=3)
     # a string type is an event (of a known or a custom type) wherever the rest is lenient
     .filter(lambda v: not isinstance(v.get("event_type"), str))
     ).map(lambda v: json.dumps(v).encode())
    | st.integers(33, 3000).map(_deep_config)
)  # fmt: skip


def _finite_json(text: bytes) -> bool:
    return not any(token in text for token in (b"NaN", b"Infinity"))


@given(st.data())
def test_a_posted_body_applies_its_valid_items_and_answers_why(
    live_server: Server, data: st.DataObject
) -> None:
    run_id = f"fuzz_{next(_run_ids)}"
    valid = [line(e) for e in data.draw(valid_events(run_id, max_size=15))]
    shape = data.draw(st.sampled_from(["array", "ndjson", "one"]))
    if shape == "array":  # well-formed JSON whose bad items are refused one by one
        garbage = data.draw(st.lists(garbage_values.filter(_finite_json), max_size=8))
        body = b"[" + b",".join(interleave(data, valid, garbage)) + b"]"
    elif shape == "ndjson":  # any line may be garbage
        garbage = data.draw(st.lists(garbage_lines(), max_size=8))
        body = b"\n".join(interleave(data, valid, garbage))
    else:
        valid, garbage = valid[:1], []
        body = valid[0] if valid else data.draw(garbage_lines())
    response = httpx.post(live_server.url + "/v1/events", content=body, timeout=30)
    assert response.status_code in (202, 400), response.text
    assert response.json().get("accepted", 0) == len(valid), (shape, response.json())
    if valid:
        runs = httpx.get(live_server.url + "/api/runs", timeout=30).json()
        (run,) = [r for r in runs if r["run_id"] == run_id]
        assert run["last_event"] == orjson.loads(valid[-1])["timestamp"]


def test_after_the_fuzzed_posts_metrics_are_whole_and_lint_clean(live_server, bin_dir) -> None:
    response = httpx.get(live_server.url + "/metrics", timeout=30)
    assert response.status_code == 200
    assert not re.search(r"runwatch_render_errors_total\{.*\} [1-9]", response.text)
    assert_promtool_clean(bin_dir, response.text)
    assert "Traceback" not in live_server.log.read_text()


# -- PID files, state files, config files, mappings -----------------------------------------------


@given(
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries(
        {"pid": json_scalars, "run_id": json_scalars, "started_at": json_scalars}
    ).map(lambda v: json.dumps(v).encode())
)
@example(b'{"pid": 1, "run_id": "r", "started_at": 1}')
@example(b'{"pid": ' + b"9" * 400 + b', "run_id": "r", "started_at": 1}')
def test_a_pid_file_is_a_record_or_refused(content: bytes) -> None:
    TARGETS["pid_file"](content)


@given(
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries(
        {
            "version": json_scalars,
            "files": st.lists(
                st.dictionaries(
                    st.sampled_from(["device", "inode", "head", "head_len", "offset"]), json_scalars
                ),
                max_size=3,
            ),
        }
    ).map(lambda v: json.dumps(v).encode())
)
def test_a_state_file_is_cursors_or_none(content: bytes) -> None:
    from exporter.sources.files.jsonl import CursorStore, FileReader

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.json"
        state.write_bytes(content)
        cursors = CursorStore(state).load()
        events = Path(tmp) / "events.jsonl"
        events.write_bytes(b"one\n")
        reader = FileReader(str(events), lambda ls, *_: None, 100)
        for cursor in cursors.values():
            reader.resume(cursor)  # a cursor that loaded is one a reader can use
        reader.close()


@given(
    st.dictionaries(st.text(max_size=25) | st.integers(), json_values, max_size=5)
    | json_values
    | st.text(max_size=200)
)
@example({"gpu_interval": "nan"})  # found: NaN and infinite intervals were accepted
@example({"max_clock_skew": "inf"})
@example({1: 2, "listen": 3})  # found: a key that is not a string broke the error message
@example("a: " + "[" * 2000 + "]" * 2000)  # found: deep YAML raised RecursionError
def test_a_config_file_is_settings_or_a_one_line_error(document: Any) -> None:
    from exporter.app.config import ConfigError, resolve
    from exporter.cli import SERVE, _parser

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runwatch.yaml"
        text = document if isinstance(document, str) else yaml.safe_dump(document)
        path.write_text(text)
        args = _parser().parse_args(["serve", "--config", str(path)])
        try:
            settings = resolve(args, SERVE)
        except ConfigError as error:
            assert "\n" not in str(error)  # printed on one line
            return
    for name in ("gpu_interval", "system_interval", "poll_interval", "bridge_timeout"):
        assert 0 < getattr(settings, name) < float("inf")


BUILTIN = (ROOT / "exporter/core/router/builtin.yaml").read_text()


@given(st.data())
@example(None)  # found: a mapping nested 2,000 deep raised RecursionError
def test_a_mapping_is_loaded_or_refused_with_its_line(data: st.DataObject | None) -> None:
    from exporter.core.router.mapping import MappingError, parse_mapping

    if data is None:
        text = "a: &a [" + "*a, " * 50 + "]\n" + "x: " + "[" * 2000 + "]" * 2000
    else:
        lines = BUILTIN.splitlines()
        for _ in range(data.draw(st.integers(0, 4))):
            at = data.draw(st.integers(0, len(lines) - 1))
            lines[at] = data.draw(st.sampled_from(["", "  - ", "events: 3", lines[0] + ":",
                                                   lines[at][: len(lines[at]) // 2]]))  # fmt: skip
        text = "\n".join(lines)
        if data.draw(st.booleans()):
            text = yaml.safe_dump(data.draw(json_values))
    try:
        parse_mapping(text, "fuzzed.yaml")
    except MappingError as error:
        assert str(error).startswith("fuzzed.yaml")


# -- the trading bridge and the training backend --------------------------------------------------


ENDPOINT_BODIES = st.fixed_dictionaries({
    "/api/metrics": json_values | st.dictionaries(
        st.sampled_from(["portfolio_value", "daily_pnl", "cash", "positions_count",
                         "trades_total", "cycles_total", "errors_total"]), json_scalars),
    "/api/state": json_values | st.fixed_dictionaries(
        {"status": json_scalars, "current_stage": json_scalars}),
    "/api/positions": json_values | st.lists(st.dictionaries(
        st.sampled_from(["symbol", "quantity", "qty", "market_value", "unrealized_pnl",
                         "current_price"]), json_scalars), max_size=5),
    "/api/trades/history": json_values | st.fixed_dictionaries({
        "trades": st.lists(st.dictionaries(st.sampled_from(["side", "quantity", "price"]),
                                           json_scalars), max_size=4),
        "decisions": st.lists(st.dictionaries(st.just("action"), json_scalars), max_size=4)}),
    "/api/cils/stats": json_values | st.dictionaries(st.text(max_size=5), st.dictionaries(
        st.sampled_from(["weight", "pulls", "mean_reward"]), json_scalars), max_size=4),
    "/api/risk/status": json_values | st.dictionaries(
        st.sampled_from(["drawdown_pct", "exposure_pct", "daily_pnl_pct", "trading_allowed"]),
        json_scalars),
})  # fmt: skip


@given(ENDPOINT_BODIES)
def test_any_bridge_answers_become_a_sample_that_renders_whole(bodies: dict) -> None:
    from pydantic import ValidationError

    from exporter.sources.peers.bridge import ENDPOINTS, BridgePoller

    pipeline = Pipeline()
    poller = BridgePoller("http://unused", 1.0, pipeline.stats, 3, 1 << 20)
    parsed = {}
    for path, body in bodies.items():
        with contextlib.suppress(ValidationError):  # counted by the poller, as it polls
            parsed[path] = ENDPOINTS[path](body)
    sample = poller._assemble(parsed)
    pipeline.readings.register("bridge", 5.0)
    pipeline.readings.store("bridge", sample, 0.01, time.time())
    rendered(pipeline)


@given(st.binary(max_size=100) | json_values.map(lambda v: json.dumps(v))
       | st.fixed_dictionaries({"type": st.sampled_from(["STAGE_CHANGE", "X"]) | json_scalars,
                                "timestamp": json_scalars,
                                "data": json_values}).map(lambda v: json.dumps(v)))  # fmt: skip
def test_any_event_bus_frame_is_counted_or_refused(frame: Any) -> None:
    from exporter.pipeline.self_stats import Stats
    from exporter.sources.peers.bridge import BusEvents

    stats, stages = Stats(), []
    BusEvents(stats, lambda stage, at: stages.append(at), lambda *event: None)(frame)
    handled = sum(stats.trading_events.values()) + sum(stats.rejected.values())
    assert handled == 1
    assert all(at >= 0 for at in stages)


BACKEND_TYPES = ["training.accepted", "training.started", "training.epoch",
                 "training.completed", "training.failed"]  # fmt: skip


@given(st.lists(
    st.binary(max_size=60) | st.fixed_dictionaries(
        {"type": st.sampled_from(BACKEND_TYPES) | json_scalars,
         "job_id": st.sampled_from(["j1", "j2"]) | json_scalars},
        optional={"timestamp": json_scalars | st.floats(1.7e9, 1.8e9), "epoch": json_scalars,
                  "fold": json_scalars, "metrics": json_values | st.dictionaries(
                      idents, json_scalars), "symbol": json_scalars, "error": json_scalars},
    ).map(lambda v: json.dumps(v)), max_size=10))  # fmt: skip
def test_any_backend_messages_become_runs_that_render_whole(frames: list[Any]) -> None:
    from exporter.sources.peers.backend import BackendEvents

    pipeline = Pipeline()
    events = BackendEvents(pipeline)
    for frame in frames:
        events(frame)
    rendered(pipeline)


# -- router events and SQLite rows ----------------------------------------------------------------


ROUTER_TYPES = [
    "TRAINING_STARTED",
    "TRAINING_COMPLETED",
    "HOST_ONLINE",
    "DAEMON_STATUS_CHANGED",
    "REGRESSION_DETECTED",
    "MODEL_PROMOTED",
    "EVALUATION_COMPLETED",
    "nope",
]
router_events = st.fixed_dictionaries(
    {"event_type": st.sampled_from(ROUTER_TYPES) | json_scalars},
    optional={"timestamp": json_scalars | st.floats(0, 2e10),
              "payload": st.dictionaries(st.sampled_from(
                  ["config", "host", "job_id", "status", "model_id", "daemon"]),
                  json_scalars | json_values, max_size=4) | json_values},
)  # fmt: skip


@given(st.lists(router_events | json_values, max_size=20))
def test_any_router_events_are_reduced_or_refused_and_render_whole(values: list[Any]) -> None:
    from exporter.core.router.reducer import RouterState
    from exporter.sources.files.router_mapping import load_mapping

    pipeline = Pipeline()
    pipeline.router = RouterState(load_mapping(None))
    pipeline.ingest_router(values, "router", 1_700_000_000.0)
    refused = rejected_by_reason(pipeline, "router")
    assert pipeline.stats.ingested["router"] + sum(refused.values()) == len(values)
    assert "processing_failed" not in refused
    rendered(pipeline)


sqlite_values = (st.none() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=30)
                 | st.binary(max_size=30) | json_values.map(json.dumps))  # fmt: skip


@given(st.lists(st.tuples(st.sampled_from(ROUTER_TYPES) | sqlite_values, sqlite_values,
                          sqlite_values), max_size=15))  # fmt: skip
def test_any_sqlite_rows_are_reduced_or_refused(rows: list[tuple]) -> None:
    from exporter.core.router.reducer import RouterState
    from exporter.sources.files.router_mapping import load_mapping
    from exporter.sources.peers.router import RouterTable

    pipeline = Pipeline()
    pipeline.router = RouterState(load_mapping(None))
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "queue.db"
        with sqlite3.connect(database) as connection:
            connection.execute("CREATE TABLE events (event_type, timestamp, payload)")
            connection.executemany("INSERT INTO events VALUES (?, ?, ?)", rows)
        table = RouterTable(str(database), "events", "payload",
                            lambda v, at, since: pipeline.ingest_router(v, "router", at, since),
                            lambda reason: None)  # fmt: skip
        assert table.sample().rows == len(rows)
    refused = rejected_by_reason(pipeline, "router")
    assert pipeline.stats.ingested["router"] + sum(refused.values()) == len(rows)
    assert "processing_failed" not in refused
    rendered(pipeline)


# -- what the long sessions found -----------------------------------------------------------------

FINDINGS = sorted((FUZZ / "findings").glob("*/*"))
SEEDS = sorted((FUZZ / "seeds").glob("*/*"))


@pytest.mark.parametrize("path", FINDINGS + SEEDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_atheris_finding_and_seed_passes_its_target(path: Path) -> None:
    TARGETS[path.parent.name](path.read_bytes())
