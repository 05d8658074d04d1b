"""A real ``runwatch serve``: HTTP ingest, /api/runs, health, TLS and basic auth, PID files."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from exporter.core.trace_ids import trace_id_hex
from tests.support import event, jsonl, wait_for


def test_post_one_event_an_array_and_ndjson(serve) -> None:
    server = serve()
    one = httpx.post(server.url + "/v1/events", json=event("run_start", name="posted"))
    array = httpx.post(
        server.url + "/v1/events",
        json=[
            event("progress", ts=1_700_000_001, stage="ranking", progress_pct=25),
            event("metric_update", ts=1_700_000_002, metrics={"loss": 0.5}, step=7),
        ],
    )
    ndjson = httpx.post(
        server.url + "/v1/events",
        content=jsonl(
            event("checkpoint_saved", ts=1_700_000_003, checkpoint_id="c1", is_best=True),
            event("target_complete", ts=1_700_000_004, target="t", best_auc=0.9),
        ),
        headers={"content-type": "application/x-ndjson"},
    )
    assert [r.status_code for r in (one, array, ndjson)] == [202, 202, 202]
    assert ndjson.json() == {"accepted": 2, "rejected": 0}
    run = httpx.get(server.url + "/api/runs").json()[0]
    assert (run["name"], run["stage"], run["step"], run["metrics"]) == (
        "posted",
        "ranking",
        7,
        {"loss": 0.5},
    )
    assert run["checkpoints"][0]["is_best"] is True
    assert server.sample('runwatch_events_ingested_total{source="http"}') == 5


def test_bad_posts_get_json_errors_and_valid_neighbours_are_kept(serve) -> None:
    server = serve("--max-body-bytes", "2000")
    mixed = httpx.post(
        server.url + "/v1/events",
        content=jsonl(event("progress", stage="s", progress_pct=10))
        + b"{broken\n"
        + jsonl({**event("nope"), "event_type": 7}),
    )
    assert mixed.status_code == 400
    body = mixed.json()
    assert body["accepted"] == 1 and body["rejected"] == 2
    assert [r["reason"] for r in body["rejections"]] == ["invalid_json", "unknown_event_type"]
    empty = httpx.post(server.url + "/v1/events", content=b"  ")
    assert empty.status_code == 400 and "empty body" in empty.json()["error"]
    garbage = httpx.post(server.url + "/v1/events", content=b"\xff\xfe\x00garbage")
    assert garbage.status_code == 400 and garbage.json()["rejections"][0]["reason"] == (
        "invalid_utf8"
    )
    huge = httpx.post(server.url + "/v1/events", content=b"x" * 5000)
    assert huge.status_code == 413 and "limit" in huge.json()["error"]

    def chunks():
        for _ in range(10):
            yield b"y" * 500

    streamed = httpx.post(server.url + "/v1/events", content=chunks())  # no Content-Length
    assert streamed.status_code == 413
    assert (
        server.sample('runwatch_events_rejected_total{reason="body_too_large",source="http"}') == 2
    )
    assert server.sample('runwatch_events_rejected_total{reason="invalid_json",source="http"}') == 1
    assert server.sample('training_run_progress_ratio{run_id="run_1",stage="s"}') == 0.1
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}


def test_tls_and_basic_auth(serve, tmp_path: Path, self_signed_cert) -> None:
    cert, key = self_signed_cert
    tls = ssl.create_default_context(cafile=str(cert))
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    port_env = {"RUNWATCH_BASIC_AUTH_USER": "prom"}
    server = serve(
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--basic-auth-password-file",
        str(password),
        env=port_env,
        scheme="https",
        verify=tls,
        auth=("prom", "s3cret"),
    )
    url = server.url
    assert url.startswith("https://")
    assert httpx.get(url + "/metrics", verify=tls).status_code == 401
    assert httpx.get(url + "/metrics", verify=tls, auth=("prom", "wrong")).status_code == (401)
    ok = httpx.get(url + "/metrics", verify=tls, auth=("prom", "s3cret"))
    assert ok.status_code == 200 and "runwatch_build_info" in ok.text
    assert httpx.get(url + "/healthz", verify=tls).status_code == 200


def test_a_pid_file_process_that_dies_crashes_its_run(serve, tmp_path: Path) -> None:
    events, pid_file = tmp_path / "events.jsonl", tmp_path / "training.pid"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    started = time.time()
    pid_file.write_bytes(
        orjson.dumps({"pid": child.pid, "run_id": "live", "started_at": started + 0.5})
    )
    events.write_bytes(
        jsonl(event("stage_change", run_id="live", ts=started, new_stage="training"))
    )
    server = serve("--events", str(events), "--pid-file", str(pid_file), "--pid-interval", "0.1")
    wait_for(lambda: server.sample('training_process_up{run_id="live"}') == 1, what="up")
    assert server.sample('training_run_status{run_id="live",status="running"}') == 1
    child.send_signal(signal.SIGKILL)
    child.wait()
    wait_for(
        lambda: server.sample('training_run_status{run_id="live",status="crashed"}') == 1,
        what="crashed",
    )
    assert server.sample('training_process_up{run_id="live"}') == 0
    pid_file.write_bytes(b"{not json")
    wait_for(
        lambda: (
            server.sample(
                'runwatch_events_rejected_total{reason="pid_file_invalid",source="pid_file"}'
            )
            == 1
        ),
        what="garbage PID file counted",
    )


def test_a_reused_pid_is_not_mistaken_for_the_training_process(serve, tmp_path: Path) -> None:
    reused, current = tmp_path / "old.pid", tmp_path / "current.pid"
    # our own pid, but started an hour before this process was created: the pid was reused
    reused.write_bytes(
        orjson.dumps({"pid": os.getpid(), "run_id": "old", "started_at": time.time() - 3600})
    )
    current.write_bytes(
        orjson.dumps({"pid": os.getpid(), "run_id": "current", "started_at": time.time()})
    )
    server = serve("--pid-file", str(reused), "--pid-file", str(current), "--pid-interval", "0.1")
    wait_for(lambda: server.sample('training_process_up{run_id="current"}') == 1, what="check")
    assert server.sample('training_process_up{run_id="old"}') is None  # never alive: no run


def test_a_client_that_stalls_mid_body_blocks_nobody(serve) -> None:
    server = serve()
    stalled = socket.create_connection(("127.0.0.1", server.port))
    try:
        stalled.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'[{"event_type": "progress", "run_id": "r"'
        )
        posted = httpx.post(
            server.url + "/v1/events", json=event("run_start", name="other"), timeout=5
        )
        assert posted.status_code == 202
        info = (
            f'training_run_info{{name="other",run_id="run_1",trace_id="{trace_id_hex("run_1")}"}}'
        )
        assert server.sample(info) == 1
    finally:
        stalled.close()
    dropped = socket.create_connection(("127.0.0.1", server.port))
    dropped.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
    dropped.close()  # the client goes away mid-body
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    assert server.sample('runwatch_events_ingested_total{source="http"}') == 1
