"""The OTLP path, decoded from the wire: spans (tree, names, times, status, stable ids),
metric names, restarts that emit no span twice, and a collector that is down."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.core.trace_ids import trace_id_for
from tests.support import NS, ROOT, RUN, RUNWATCH, T0, event, jsonl, wait_for


def replay(path: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RUNWATCH, "replay", str(path), "--otlp-endpoint", endpoint, *args],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )


def test_replay_exports_one_trace_per_run_with_event_times(tmp_path, otlp_receiver) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(*RUN))
    replay(path, otlp_receiver.url)
    spans = {s["name"]: s for s in otlp_receiver.spans}
    assert set(spans) == {"run", "stage ranking", "stage training", "target t1", "target t2"}
    root = spans["run"]
    assert {s["trace_id"] for s in spans.values()} == {f"{trace_id_for('run_1'):032x}"}
    assert root["parent_span_id"] == ""
    assert spans["stage ranking"]["parent_span_id"] == root["span_id"]
    assert spans["stage training"]["parent_span_id"] == root["span_id"]
    assert spans["target t1"]["parent_span_id"] == spans["stage ranking"]["span_id"]
    assert (root["start"], root["end"]) == (T0 * NS, (T0 + 10) * NS)
    assert (spans["target t1"]["start"], spans["target t1"]["end"]) == (
        (T0 + 2) * NS,
        (T0 + 4) * NS,
    )
    error_code, unset = 2, 0
    assert root["status"] == error_code and root["status_message"] == "run failed"
    assert spans["target t1"]["status"] == unset
    assert spans["target t2"]["status"] == error_code
    name, when, attributes = spans["target t1"]["events"][0]
    assert (name, when) == ("exception", (T0 + 3) * NS)
    assert attributes["exception.type"] == "ValueError"
    assert attributes["training.error.recoverable"] is True
    assert root["attributes"]["training.run_id"] == "run_1"
    assert root["resource"]["service.name"] == "runwatch"

    first = sorted((s["name"], s["span_id"]) for s in otlp_receiver.spans)
    otlp_receiver.spans.clear()
    replay(path, otlp_receiver.url)
    assert sorted((s["name"], s["span_id"]) for s in otlp_receiver.spans) == first


def test_the_grpc_protocol_delivers_the_same_trace(tmp_path, otlp_receiver, grpc_receiver) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(*RUN))
    replay(path, otlp_receiver.url)
    replay(path, grpc_receiver.url, "--otlp-protocol", "grpc")
    over_http = sorted((s["name"], s["span_id"], s["parent_span_id"]) for s in otlp_receiver.spans)
    over_grpc = sorted((s["name"], s["span_id"], s["parent_span_id"]) for s in grpc_receiver.spans)
    assert over_grpc == over_http and len(over_grpc) == 5


def test_otlp_metrics_carry_the_catalogue_names_and_labels(tmp_path, otlp_receiver) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(*RUN))
    replay(path, otlp_receiver.url)
    metrics = {
        metric.name: metric
        for request in otlp_receiver.metric_requests
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert {
        "training.run.progress.ratio",
        "training.errors",
        "training.target.duration",
        "training.metric",
        "runwatch.events.ingested",
    } <= set(metrics)
    assert metrics["training.target.duration"].unit == "s"
    assert metrics["training.errors"].sum.is_monotonic
    loss = metrics["training.metric"].gauge.data_points[0]
    assert {a.key: a.value.string_value for a in loss.attributes} == {
        "run_id": "run_1",
        "key": "loss",
    }
    assert loss.as_double == 0.3


def test_a_restart_with_a_state_file_emits_no_finished_span_twice(
    serve, tmp_path: Path, otlp_receiver
) -> None:
    events, state = tmp_path / "events.jsonl", tmp_path / "cursor.json"
    events.write_bytes(jsonl(*RUN))
    args = (
        "--events",
        str(events),
        "--state-file",
        str(state),
        "--otlp-endpoint",
        otlp_receiver.url,
    )
    first = serve(*args)
    wait_for(lambda: len(otlp_receiver.spans) == 5, what="first run's spans")
    first.stop()
    assert state.exists()
    otlp_receiver.spans.clear()
    with events.open("ab") as out:
        out.write(
            jsonl(
                event("stage_change", run_id="run_2", ts=T0 + 20, new_stage="x"),
                event("run_complete", run_id="run_2", ts=T0 + 21, status="completed"),
            )
        )
    second = serve(*args)
    wait_for(lambda: len(otlp_receiver.spans) == 2, what="second run's spans")
    second.stop()
    assert {s["attributes"]["training.run_id"] for s in otlp_receiver.spans} == {"run_2"}
    assert second.log.read_text().count("Traceback") == 0


@pytest.fixture(params=["refused", "hanging"])
def dead_collector(request: pytest.FixtureRequest) -> Iterator[str]:
    """An OTLP endpoint that refuses connections, or accepts them and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        if request.param == "hanging":
            listener.listen(64)  # the kernel completes handshakes; nobody ever reads
            yield url
        else:
            listener.close()
            yield url


def test_a_dead_collector_costs_counted_drops_not_ingestion(serve, dead_collector) -> None:
    server = serve(
        "--otlp-endpoint",
        dead_collector,
        env={"OTEL_EXPORTER_OTLP_TIMEOUT": "1", "OTEL_METRIC_EXPORT_INTERVAL": "200"},
    )
    for value in RUN:
        assert httpx.post(server.url + "/v1/events", json=value, timeout=5).status_code == 202
    assert server.sample('training_run_status{run_id="run_1",status="failed"}') == 1
    wait_for(
        lambda: (
            (
                server.sample('runwatch_otlp_dropped_total{reason="export_failed",signal="spans"}')
                or 0
            )
            >= 5
        ),
        timeout=60,
        what="span drops counted",
    )
    wait_for(
        lambda: (
            (
                server.sample(
                    'runwatch_otlp_dropped_total{reason="export_failed",signal="metrics"}'
                )
                or 0
            )
            > 0
        ),
        timeout=60,
        what="metric drops counted",
    )
    started = time.monotonic()
    assert httpx.get(server.url + "/metrics", timeout=5).status_code == 200
    assert time.monotonic() - started < 1, "a scrape must not wait on the collector"


def _metrics_by_name(receiver) -> dict:
    return {
        metric.name: metric
        for request in receiver.metric_requests
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def _attributes(point) -> dict:
    return {a.key: a.value.string_value for a in point.attributes}


def test_gpu_metrics_go_out_under_semantic_conventions(otlp_receiver, serve) -> None:
    interval = {"OTEL_METRIC_EXPORT_INTERVAL": "200"}
    serve("--fake-gpus", "1", "--gpu-interval", "0.1", "--system-interval", "0.1",
          "--otlp-endpoint", otlp_receiver.url, env=interval)  # fmt: skip
    metrics = wait_for(
        lambda: (
            (m := _metrics_by_name(otlp_receiver)).get("hw.gpu.utilization")
            and "system.cpu.utilization" in m
            and m
        ),
        what="GPU metrics over OTLP",
    )
    tasks = {_attributes(p)["hw.gpu.task"]: _attributes(p)
             for p in metrics["hw.gpu.utilization"].gauge.data_points}  # fmt: skip
    assert set(tasks) == {"general", "encoder", "decoder"}
    general = tasks["general"]
    assert general["hw.type"] == "gpu" and general["hw.id"] == general["uuid"]
    assert general["uuid"].startswith("GPU-") and general["gpu"] == "0"
    assert metrics["hw.energy"].unit == "J" and metrics["hw.energy"].sum.is_monotonic
    assert metrics["hw.temperature"].unit == "Cel"
    errors = {_attributes(p)["error.type"] for p in metrics["hw.errors"].sum.data_points}
    assert errors == {"corrected", "uncorrected", "pcie_replay", "xid"}  # XID 13 at start
    assert {"system.cpu.utilization", "system.memory.usage", "runwatch.source.up"} <= set(metrics)
    mode = metrics["system.cpu.utilization"].gauge.data_points[0]
    assert "cpu.mode" in _attributes(mode)


def test_prometheus_naming_sends_the_scraped_names(otlp_receiver, serve) -> None:
    serve("--fake-gpus", "1", "--gpu-interval", "0.1", "--otlp-endpoint", otlp_receiver.url,
          "--otlp-naming", "prometheus", env={"OTEL_METRIC_EXPORT_INTERVAL": "200"})  # fmt: skip
    metrics = wait_for(
        lambda: (
            (m := _metrics_by_name(otlp_receiver)).get("gpu_utilization_ratio")
            and m["gpu_utilization_ratio"].gauge.data_points
            and m
        ),
        what="GPU metrics over OTLP",
    )
    assert "hw.gpu.utilization" not in metrics and "gpu_energy_joules" in metrics
    point = metrics["gpu_utilization_ratio"].gauge.data_points[0]
    assert set(_attributes(point)) == {"gpu", "uuid", "gpu_instance"}  # no hw.* extras
    assert "runwatch.events.ingested" in metrics  # already translates: unchanged


def test_no_otlp_metrics_sends_spans_only(tmp_path, otlp_receiver) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(*RUN))
    result = replay(path, otlp_receiver.url, "--no-otlp-metrics")
    assert result.returncode == 0, result.stderr
    assert len(otlp_receiver.spans) == 5 and otlp_receiver.metric_requests == []
