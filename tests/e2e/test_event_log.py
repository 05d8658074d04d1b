"""The event log through ``runwatch replay``: every event an OTLP log record, decoded from
the wire (HTTP and gRPC) by the test suite's receiver: its line, severity, attributes, the
event's time, and the trace and span ids of the span it belongs to, equal to the ids of the
spans themselves. Loki cannot run here; the boards' LogQL is checked against the attributes
the records carry, as Loki's OTLP endpoint names them (dots become underscores)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from exporter.pipeline import Pipeline
from tests.integration.test_dashboards import log_panels
from tests.pipelines import Capture, router_lines
from tests.support import NS, ROOT, RUN, RUNWATCH, T0, jsonl

INFO, WARN, ERROR = 9, 13, 17  # OTLP SeverityNumber


def replay(path: Path, endpoint: str, *args: str) -> None:
    subprocess.run([*RUNWATCH, "replay", str(path), "--otlp-endpoint", endpoint, *args],
                   capture_output=True, cwd=ROOT, timeout=60, check=True)  # fmt: skip


def test_every_event_is_a_log_record_in_the_span_it_belongs_to(tmp_path, otlp_receiver) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(*RUN))
    replay(path, otlp_receiver.url)
    spans = {s["name"]: s for s in otlp_receiver.spans}
    records = sorted(otlp_receiver.logs, key=lambda r: r["time"])
    assert [r["time"] for r in records] == [e["timestamp"] * NS for e in RUN]  # event times
    assert all(r["observed_time"] > r["time"] for r in records)  # read long after
    lines = [(r["severity_number"], r["severity"], r["body"]) for r in records]
    assert lines == [
        (INFO, "INFO", "run started name=exp"),
        (INFO, "INFO", "[TR] stage ranking"),
        (INFO, "INFO", "[TR] target t1 start"),
        (WARN, "WARN", "[TR] ValueError: fold 2 empty (target t1) [recoverable]"),
        (INFO, "INFO", "[TR] target t1 complete status=success auc=0.7"),
        (INFO, "INFO", "[TR] target t2 start"),
        (WARN, "WARN", "[TR] target t2 complete status=failed"),
        (INFO, "INFO", "[TRN] stage training"),
        (INFO, "INFO", "[TRN] step 1 loss=0.3"),
        (ERROR, "ERROR", "[TRN] run complete status=failed"),
    ]
    span_of = [r["span_id"] for r in records]
    assert span_of == [spans[name]["span_id"] for name in (
        "run", "stage ranking", "target t1", "target t1", "target t1", "target t2",
        "target t2", "stage training", "stage training", "stage training")]  # fmt: skip
    assert {r["trace_id"] for r in records} == {spans["run"]["trace_id"]}
    error = records[3]["attributes"]
    assert error == {"training.run_id": "run_1", "event_type": "error",
                     "training.stage": "ranking", "training.target": "t1"}  # fmt: skip
    assert "training.target" not in records[0]["attributes"]
    assert records[0]["resource"]["service.name"] == "runwatch"
    assert {r["scope"] for r in records} == {"runwatch"}


def test_the_grpc_protocol_delivers_the_same_log(tmp_path, otlp_receiver, grpc_receiver) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(*RUN))
    replay(path, otlp_receiver.url)
    replay(path, grpc_receiver.url, "--otlp-protocol", "grpc")

    def lines(records: list[dict]) -> list[tuple]:
        return sorted((r["time"], r["body"], r["trace_id"], r["span_id"]) for r in records)

    assert lines(grpc_receiver.logs) == lines(otlp_receiver.logs) and len(grpc_receiver.logs) == 10


def test_no_otlp_logs_sends_spans_only(tmp_path, otlp_receiver) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(*RUN))
    replay(path, otlp_receiver.url, "--no-otlp-logs")
    assert len(otlp_receiver.spans) == 5 and otlp_receiver.logs == []


def test_the_boards_filter_on_attributes_the_records_carry(tmp_path, otlp_receiver) -> None:
    """Each LogQL label filter of a logs panel names an attribute runwatch puts on its
    records (training, trading bus, router), as Loki stores it: dots as underscores."""
    carried = {"training.run_id", "event_type", "training.stage", "training.target",
               "trading.engine", "trading.stage", "router.category"}  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(*RUN))
    replay(path, otlp_receiver.url)
    assert {k for r in otlp_receiver.logs for k in r["attributes"]} <= carried
    bus = Pipeline()
    bus.add_sink(Capture(), logs=True)
    line = bus.trading.engine_cycles.log_line("http://bridge", "ORDER_FILLED", {"qty": 1}, T0)
    router = router_lines([{"event_type": "TRAINING_STARTED", "config": "c1"}])
    assert set(line.attributes) | set(router[0].attributes) <= carried
    panels = log_panels()
    assert {board for board, _, _ in panels} == {
        "runwatch-training.json", "runwatch-trading.json", "runwatch-router.json"}  # fmt: skip
    loki_names = {name.replace(".", "_") for name in carried}
    for board, title, expr in panels:
        assert expr.startswith('{service_name=~".+"}'), (board, expr)  # service.name, indexed
        filters = re.findall(r"\|\s*([a-z_]+)\s*(?:=~|!=|=)", expr)
        assert filters and set(filters) <= loki_names, (board, title, filters)
