"""The run API of a real ``runwatch serve`` fed by the SDK over HTTP, as a client written
against the training-dashboard format reads it: the run, its latest metrics, its
checkpoints, the host and GPUs, and the write side refused."""

from __future__ import annotations

import httpx
from runwatch_sdk import HttpTransport, TrainingMonitor

from tests.support import wait_for


def test_a_run_logged_through_the_sdk_reads_back_through_the_run_api(serve) -> None:
    server = serve("--fake-gpus", "2", "--system-interval", "0.2")
    monitor = TrainingMonitor("api-run", config={"lr": 0.01}, transport=HttpTransport(server.url))
    with monitor:
        for step in range(1, 51):
            monitor.log_metrics({"loss": 1.0 / step, "learning_rate": 0.01}, step)
        first = monitor.save_checkpoint("a.pt", metrics={"loss": 0.02})
        monitor.save_checkpoint("b.pt", metrics={"loss": 0.9})
        monitor.mark_best_checkpoint(first)
    api = f"{server.url}/api/runs/{monitor.run_id}"
    wait_for(lambda: httpx.get(api).json().get("status") == "completed", what="the run, ended")
    run = httpx.get(api).json()
    assert run["name"] == "api-run" and run["config"] == {"lr": 0.01}

    latest = httpx.get(api + "/metrics/latest").json()
    assert latest["step"] == 50 and latest["metrics"]["learning_rate"] == 0.01
    checkpoints = httpx.get(api + "/checkpoints").json()
    assert [(c["checkpoint_id"], c["is_best"]) for c in checkpoints] == [
        (first, True), ("ckpt_000002", False)]  # fmt: skip
    assert httpx.get(f"{server.url}/api/checkpoints/{first}").json()["run_id"] == monitor.run_id

    wait_for(lambda: httpx.get(f"{server.url}/api/system/status").json()["host"]["cpu_percent"]
             is not None, what="a host reading")  # fmt: skip
    status = httpx.get(f"{server.url}/api/system/status").json()
    assert [g["index"] for g in status["gpus"]] == [0, 1]
    assert 0 <= status["host"]["memory_percent"] <= 100
    assert httpx.get(f"{server.url}/api/system/history").json()["host"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"

    refused = httpx.delete(api)
    assert refused.status_code == 405 and "POST /v1/events" in refused.json()["error"]
    assert httpx.get(f"{server.url}/api/runs/nope").status_code == 404
