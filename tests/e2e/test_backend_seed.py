"""Against a backend built to seed 003 alone (tests/seed_backend.py): jobs started through
runwatch's pass-through are seen accepted, a job that never starts is counted, and the
backend's log tail is read once per line."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.seed_backend import SeedBackend
from tests.support import free_port, wait_for


@pytest.fixture
def seed_backend() -> Iterator[type[SeedBackend]]:
    started: list[SeedBackend] = []

    def start(**options: bool) -> SeedBackend:
        backend = SeedBackend(**options)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.stop()


def serve_seed(serve, backend: SeedBackend, *args: str):
    return serve("--backend-url", backend.url, "--backend-interval", "0.2", "--no-nvml",
                 "--no-system", *args)  # fmt: skip


def test_a_start_through_runwatch_starts_the_handshake_clock(serve, seed_backend) -> None:
    backend = seed_backend()
    server = serve_seed(serve, backend)
    wait_for(lambda: server.sample('trading_bridge_websocket_connected{channel="backend"}') == 1,
             what="the backend's /ws followed")  # fmt: skip
    answer = httpx.post(server.url + "/start_training", json={"symbol": "BTCUSDT"}, timeout=10)
    assert answer.status_code == 202  # the backend's own answer, passed through
    job_id = answer.json()["job_id"]
    assert answer.json()["status"] == "accepted" and f"start_training {job_id}" in backend.log[-1]
    wait_for(lambda: server.sample("training_job_ack_seconds_count") == 1, what="the ack")
    assert server.sample("training_job_ack_timeouts_total") == 0
    assert server.sample(f'training_run_status{{run_id="{job_id}",status="running"}}') == 1


def test_a_job_that_never_starts_is_counted_with_its_log(serve, seed_backend) -> None:
    backend = seed_backend(never_start=True)
    server = serve_seed(serve, backend, "--backend-ack-timeout", "0.5")
    answer = httpx.post(server.url + "/start_training", json={"symbol": "ETHUSDT"}, timeout=10)
    job_id = answer.json()["job_id"]
    wait_for(lambda: server.sample("training_job_ack_timeouts_total") == 1, what="a timeout")
    failure = f"ERROR worker for {job_id} failed to spawn: CUDA unavailable"
    wait_for(lambda: failure in server.log.read_text(), what="the backend's log in runwatch's")
    backend.log.append("INFO later line")
    httpx.post(server.url + "/start_training", json={"symbol": "X"}, timeout=10)  # waits again
    wait_for(lambda: "INFO later line" in server.log.read_text(), what="the next lines")
    # the second job's failure is logged by the backend after its own wait: every line is
    # read once the backend's log stops growing
    wait_for(lambda: server.sample("training_backend_log_lines_total") == len(backend.log),
             what="every line of the backend's log read")  # fmt: skip
    text = server.log.read_text()
    assert text.count(failure) == 1 and text.count("backend log: INFO backend up") == 1


def test_a_backend_that_is_down_gets_a_502_not_a_hang(serve) -> None:
    server = serve("--backend-url", f"http://127.0.0.1:{free_port()}", "--no-nvml", "--no-system")
    answer = httpx.post(server.url + "/start_training", json={}, timeout=40)
    assert answer.status_code == 502 and "unreachable" in answer.json()["error"]
