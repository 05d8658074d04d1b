"""The training backend source against the reference backend (real HTTP and WebSocket):
jobs become runs, the start handshake becomes telemetry, the REST fallback. Bad messages
and the handshakes in-process are in tests/unit/test_backend.py."""

from __future__ import annotations

import httpx
import orjson

from exporter.pipeline import Pipeline
from exporter.sources.peers.backend import BackendEvents, BackendPoller
from tests.support import wait_for


def serve_backend(serve, reference, *args: str):
    return serve("--backend-url", reference.url, "--backend-interval", "0.2", "--no-nvml",
                 "--no-system", *args)  # fmt: skip


def completed_runs(server) -> int:
    lines = server.metrics().splitlines()
    return sum(line.startswith("training_run_status{") and 'status="completed"} 1.0' in line
               for line in lines)  # fmt: skip


def test_jobs_become_runs_with_fold_and_epoch_spans_and_a_handshake_histogram(
    otlp_receiver, serve, bridge
) -> None:
    reference = bridge(tick=0.05, warmup=0)
    server = serve_backend(serve, reference, "--otlp-endpoint", otlp_receiver.url)
    wait_for(lambda: completed_runs(server) >= 2, timeout=30, what="two completed jobs")
    wait_for(lambda: server.sample("training_job_ack_seconds_count") >= 2, what="two acks")
    assert server.sample("training_job_ack_timeouts_total") == 0
    assert 'name="AAA 1h"' in server.metrics()  # symbol and timeframe: the run's name
    # JOBS counts the backend's own jobs, from its GET /jobs, by status
    wait_for(lambda: (server.sample('training_backend_jobs{status="completed"}') or 0) >= 2,
             what="the backend's completed jobs listed")  # fmt: skip
    assert server.sample('training_backend_jobs{status="other"}') == 0

    def whole_job() -> list[str] | None:  # a job runwatch saw from training.started on
        for run in otlp_receiver.spans:
            if run["name"] == "run" and run["attributes"].get("training.run.name") == "AAA 1h":
                return sorted(s["name"] for s in otlp_receiver.spans
                              if s["trace_id"] == run["trace_id"])  # fmt: skip
        return None

    names = wait_for(whole_job, timeout=30, what="a job traced from its start")
    epochs = [f"target epoch_{epoch}" for epoch in range(3) for _fold in range(2)]
    assert names == sorted(["run", "stage fold_0", "stage fold_1", *epochs])
    assert server.sample('runwatch_source_up{source="backend"}') == 1
    assert server.sample('trading_bridge_websocket_connected{channel="backend"}') == 1


def test_a_job_that_never_starts_counts_an_ack_timeout(serve, bridge) -> None:
    reference = bridge(tick=0.05, warmup=0)
    reference.faults(never_start=True)
    server = serve_backend(serve, reference, "--backend-ack-timeout", "0.5")
    wait_for(lambda: (server.sample("training_job_ack_timeouts_total") or 0) >= 1,
             what="an ack timeout")  # fmt: skip
    assert server.sample("training_jobs_awaiting_ack") == 0  # the timed-out job left the wait
    # the bridge may have started a job before the fault arrived: the waiting one is ours
    job_id = next(job["job_id"] for job in reference.get("/jobs")["jobs"]
                  if job["status"] == "accepted")  # fmt: skip
    accepted = server.sample(
        f'training_job_ack_timed_out_timestamp_seconds{{job_id="{job_id}"}}'
    )  # named
    assert accepted == reference.get(f"/jobs/{job_id}")["accepted_at"]
    assert server.sample('training_backend_jobs{status="waiting"}') >= 1


def test_a_failed_job_is_a_failed_run_with_its_error(serve, bridge) -> None:
    reference = bridge(tick=0.05, warmup=0)
    reference.faults(fail_jobs=True)
    server = serve_backend(serve, reference)
    failed = 'error_type="TrainingFailed",recoverable="false"'
    wait_for(lambda: failed in server.metrics() and 'status="failed"} 1.0' in server.metrics(),
             what="a failed run")  # fmt: skip


def test_the_rest_fallback_finishes_jobs_while_the_websocket_is_down(bridge) -> None:
    reference = bridge(tick=0.05, warmup=0)
    job = httpx.post(reference.url + "/start_training", json={"symbol": "BBB"}).json()
    assert job["status"] == "accepted"
    pipeline = Pipeline()
    events = BackendEvents(pipeline)
    events(orjson.dumps({"type": "training.started", "job_id": job["job_id"]}))
    poller = BackendPoller(reference.url, 2.0, 1 << 20, events, websocket_up=lambda: False)
    poller.open()
    try:
        wait_for(lambda: reference.get(f"/jobs/{job['job_id']}")["status"] == "completed",
                 timeout=30, what="the job to finish")  # fmt: skip
        poller.sample()
    finally:
        poller.close()
    assert pipeline.state.runs[job["job_id"]].status == "completed"
