"""The training-script SDK: standard library only, events that runwatch accepts whole,
transports that never block or fail the training, seed 000's drop-in module."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from runwatch_sdk import FileTransport, HttpTransport, TrainingMonitor
from runwatch_sdk.training_events import (
    close_training_events,
    emit_error,
    emit_progress,
    emit_run_complete,
    emit_stage_change,
    emit_target_complete,
    emit_target_start,
    init_training_events,
)  # fmt: skip

from tests.support import ROOT, RUNWATCH, free_port, wait_for

SERVER_MODULES = ("exporter", "fastapi", "uvicorn", "msgspec", "prometheus_client", "opentelemetry",
                  "pydantic", "psutil", "httpx")  # fmt: skip


def replay(path: Path) -> str:
    result = subprocess.run([*RUNWATCH, "replay", str(path)], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def script_run(monitor: TrainingMonitor) -> None:
    with monitor:
        monitor.stage("training")
        for step in range(1, 4):
            monitor.log_metrics({"loss": 1.0 / step, "learning_rate": 1e-3, "note": "x"}, step)
        first = monitor.save_checkpoint("a.pt", metrics={"loss": 0.5})
        monitor.save_checkpoint("b.pt", metrics={"loss": 0.9})
        monitor.mark_best_checkpoint(first)
        with monitor.target("fold_1", index=0, total=1) as result:
            result["best_auc"] = 0.8


def test_the_sdk_imports_no_server_dependency() -> None:
    code = ("import sys, runwatch_sdk, runwatch_sdk.training_events; "
            f"print([m for m in {SERVER_MODULES!r} if m in sys.modules])")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, check=True).stdout.strip()  # fmt: skip
    assert loaded == "[]"


def test_a_monitored_run_is_accepted_whole_by_runwatch(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    monitor = TrainingMonitor("resnet", {"lr": 1e-3}, transport=FileTransport(path))
    script_run(monitor)
    text = replay(path)
    run = monitor.run_id
    assert f'training_run_status{{run_id="{run}",status="completed"}} 1.0' in text
    assert f'training_metric{{key="loss",run_id="{run}"}} 0.3333333333333333' in text
    assert f'training_checkpoint_best{{checkpoint_id="ckpt_000001",run_id="{run}"}} 1.0' in text
    assert f'training_checkpoint_best{{checkpoint_id="ckpt_000002",run_id="{run}"}} 0.0' in text
    assert (
        f'training_target_best_auc{{run_id="{run}",stage="training",target="fold_1"}} 0.8' in text
    )
    assert 'runwatch_events_ingested_total{source="jsonl"} 11.0' in text  # every event
    rejected = [line for line in text.splitlines() if line.startswith("runwatch_events_rejected")]
    assert rejected and all(line.endswith(" 0.0") for line in rejected)


def test_an_exception_fails_the_run_and_still_propagates(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with pytest.raises(ValueError, match="diverged"):  # noqa: SIM117
        with TrainingMonitor("x", transport=FileTransport(path)) as monitor:
            monitor.log_metrics({"loss": float("nan")}, 1)  # NaN goes out as null, not refused
            raise ValueError("loss diverged")
    text = replay(path)
    assert f'training_run_status{{run_id="{monitor.run_id}",status="failed"}} 1.0' in text
    assert 'error_type="ValueError",recoverable="false"' in text
    assert 'reason="non_finite_number",source="jsonl"} 0.0' in text


def test_several_processes_append_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    code = ("import sys; from runwatch_sdk import FileTransport, TrainingMonitor; "
            "m = TrainingMonitor(sys.argv[1], transport=FileTransport(sys.argv[2]))\n"
            "for i in range(300): m.log_metrics({'loss': i, 'pad': 'x' * 500}, i)\n"
            "m.complete(); m.close()")  # fmt: skip
    writers = [subprocess.Popen([sys.executable, "-c", code, f"w{i}", str(path)], cwd=ROOT)
               for i in range(4)]  # fmt: skip
    assert all(writer.wait(timeout=60) == 0 for writer in writers)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4 * 302
    assert all(json.loads(line)["event_type"] for line in lines)  # none torn or interleaved


def test_http_transport_delivers_to_runwatch(serve) -> None:
    server = serve("--no-nvml", "--no-system")
    monitor = TrainingMonitor("http-run", transport=HttpTransport(server.url))
    script_run(monitor)
    run = monitor.run_id
    wait_for(lambda: server.sample(f'training_run_status{{run_id="{run}",status="completed"}}')
             == 1, what="the run over HTTP")  # fmt: skip
    assert server.sample(f'training_checkpoint_best{{checkpoint_id="ckpt_000001",run_id="{run}"}}'
                         ) == 1  # fmt: skip


def test_past_its_bounds_the_http_transport_drops_metric_updates_never_the_lifecycle(
    tmp_path: Path,
) -> None:
    transport = HttpTransport(f"http://127.0.0.1:{free_port()}", max_queued=100,  # nobody
                              spool_dir=tmp_path, spool_bytes=4000)  # fmt: skip
    monitor = TrainingMonitor("offline", transport=transport)
    started = time.perf_counter()
    for step in range(500):
        monitor.log_metrics({"loss": 1.0}, step)
    assert time.perf_counter() - started < 1.0  # training did not wait on telemetry
    checkpoint = monitor.save_checkpoint("ckpt.pt")
    monitor.end()  # close: nothing reachable, so everything kept is spooled
    lines = [json.loads(line) for line in transport.spool_path.read_bytes().splitlines()]
    kinds = [line["event_type"] for line in lines]
    assert kinds[0] == "run_start" and kinds[-2:] == ["checkpoint_saved", "run_complete"]
    assert lines[-2]["checkpoint_id"] == checkpoint
    assert 0 < transport.dropped == 500 - kinds.count("metric_update")
    assert (transport.sent, transport.pending) == (0, len(lines))
    numbers = [int(line["event_id"].rpartition(".")[2]) for line in lines]
    assert numbers == sorted(numbers)  # in the order they were logged


def test_the_http_transport_catches_up_when_runwatch_appears(serve) -> None:
    port = free_port()
    transport = HttpTransport(f"http://127.0.0.1:{port}")
    monitor = TrainingMonitor("late", transport=transport)
    monitor.log_metrics({"loss": 0.5}, 1)
    wait_for(lambda: transport.failed_posts >= 1, what="a failed first send")  # backoff starts
    server = serve("--no-nvml", "--no-system", port=port)
    wait_for(lambda: server.sample(f'training_step{{run_id="{monitor.run_id}"}}') == 1,
             timeout=10, what="the buffered events after backoff")  # fmt: skip
    monitor.end()  # the run ends while runwatch is there: nothing is left to send at exit


def test_resume_or_create_continues_the_same_run(tmp_path: Path) -> None:
    path, checkpoints = tmp_path / "events.jsonl", tmp_path / "ckpt"
    first = TrainingMonitor.resume_or_create("job", checkpoints, transport=FileTransport(path))
    (checkpoints / "step_100.pt").write_bytes(b"weights")
    first.close()  # the process dies here: no run_complete
    second = TrainingMonitor.resume_or_create("job", checkpoints, transport=FileTransport(path))
    assert second.run_id == first.run_id
    assert second.latest_checkpoint == checkpoints / "step_100.pt"
    second.complete()
    second.close()
    assert f'training_run_status{{run_id="{first.run_id}",status="completed"}} 1.0' in replay(path)


def test_the_seed_000_functions_are_a_drop_in(tmp_path: Path, monkeypatch) -> None:
    events, pid = tmp_path / "events.jsonl", tmp_path / "training.pid"
    monkeypatch.setenv("RUNWATCH_EVENTS_FILE", str(events))
    monkeypatch.setenv("RUNWATCH_PID_FILE", str(pid))
    emit_progress("ranking", 5)  # before init: a no-op, not an error
    init_training_events("seed_run")
    written = json.loads(pid.read_text())
    assert written["run_id"] == "seed_run"
    assert datetime.fromisoformat(written["started_at"]).utcoffset() == timedelta(0)
    emit_stage_change("", "ranking")
    emit_target_start("t1", 0, 1)
    emit_progress("ranking", 50, current_target="t1", targets_complete=0, targets_total=1)
    emit_error("fold empty", "ValueError", recoverable=True, target="t1")
    emit_target_complete("t1", "success", best_auc=0.7, duration_seconds=1.5)
    emit_run_complete("completed", total_targets=1, successful_targets=1)
    close_training_events()
    assert not pid.exists()
    for line in events.read_text().splitlines():  # seed 000: ISO 8601 in UTC, with offset
        assert datetime.fromisoformat(json.loads(line)["timestamp"]).utcoffset() == timedelta(0)
    text = replay(events)
    assert 'training_run_status{run_id="seed_run",status="completed"} 1.0' in text
    assert 'training_target_best_auc{run_id="seed_run",stage="ranking",target="t1"} 0.7' in text
    assert 'runwatch_events_ingested_total{source="jsonl"} 6.0' in text


def span_tree(spans: list[dict]) -> list[tuple[str, str]]:
    """(span name, parent span name) pairs: the shape of a run's trace, ids aside."""
    names = {span["span_id"]: span["name"] for span in spans}
    return sorted((span["name"], names.get(span["parent_span_id"], "")) for span in spans)


def test_the_three_transports_give_the_same_trace_and_series(
    otlp_receiver, serve, tmp_path: Path
) -> None:
    from runwatch_sdk import OtelTransport

    from exporter.core.trace_ids import trace_id_hex

    # 1. file, followed by runwatch; 2. HTTP to the same runwatch; 3. OTel, no runwatch
    path = tmp_path / "events.jsonl"
    server = serve("--events", str(path), "--otlp-endpoint", otlp_receiver.url, "--no-nvml",
                   "--no-system", env={"OTEL_METRIC_EXPORT_INTERVAL": "200"})  # fmt: skip
    runs = {"file": "run_file", "http": "run_http", "otel": "run_otel"}
    script_run(TrainingMonitor("r", transport=FileTransport(path), run_id=runs["file"]))
    script_run(TrainingMonitor("r", transport=HttpTransport(server.url), run_id=runs["http"]))
    script_run(TrainingMonitor("r", transport=OtelTransport(otlp_receiver.url),
                               run_id=runs["otel"]))  # fmt: skip

    def trace(run_id: str) -> list[dict]:
        return [s for s in otlp_receiver.spans if s["trace_id"] == trace_id_hex(run_id)]

    wait_for(lambda: all(len(trace(r)) == 3 for r in runs.values()), what="three traces")
    trees = {kind: span_tree(trace(run)) for kind, run in runs.items()}
    assert trees["file"] == trees["http"] == trees["otel"]
    assert ("stage training", "run") in trees["otel"]

    def training_series(run_id: str) -> set[tuple[str, tuple]]:
        out = set()
        for request in otlp_receiver.metric_requests:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        data = getattr(metric, metric.WhichOneof("data"))
                        for point in data.data_points:
                            labels = {a.key: a.value.string_value for a in point.attributes}
                            if labels.get("run_id") == run_id:
                                labels.pop("run_id")
                                labels.pop("trace_id", None)
                                out.add((metric.name, tuple(sorted(labels.items()))))
        return out

    def same_series() -> bool:
        file, http, otel = (training_series(runs[kind]) for kind in ("file", "http", "otel"))
        return bool(otel) and file == http == otel

    wait_for(same_series, timeout=20, what="the same series from the three transports")


def test_an_idle_http_transport_costs_no_cpu() -> None:
    """A loop quiet for seconds (a slow step), runwatch away or not: the sender waits."""
    transport = HttpTransport(f"http://127.0.0.1:{free_port()}", close_timeout=0.5)
    monitor = TrainingMonitor("quiet", transport=transport)
    started = time.process_time()
    time.sleep(2.5)  # what is measured: the CPU the sender takes while the loop sleeps
    assert time.process_time() - started < 0.5
    monitor.end()
    transport.spool_path.unlink(missing_ok=True)
