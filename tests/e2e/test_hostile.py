"""Hostile input, tried on a real ``runwatch serve`` as a user would meet it: one bad value
must never take down /metrics, one bad line never costs its neighbours, one bad peer never
stalls the rest, and every refusal is counted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.peers import HttpPeer, WebSocketPeer, answer, drip, endless, frames_once, hang
from tests.pipelines import poisoned_pipeline
from tests.support import RUNWATCH, event, jsonl, wait_for

QUIET = ["--no-nvml", "--no-system"]


def lint(bin_dir: Path, exposition: str) -> tuple[int, bytes, bytes]:
    result = subprocess.run(
        [bin_dir / "promtool", "check", "metrics"], input=exposition.encode(), capture_output=True
    )
    return result.returncode, result.stdout, result.stderr


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


# -- 1. one value that cannot be rendered ---------------------------------------------------------


def test_a_400_digit_step_is_refused_and_every_scrape_stays_200(serve, bin_dir) -> None:
    server = serve(*QUIET)
    line = orjson.dumps(event("metric_update", metrics={"loss": 1.0})).replace(
        b'"metrics"', b'"step": ' + b"9" * 400 + b', "metrics"'
    )
    posted = httpx.post(server.url + "/v1/events", content=line)
    assert posted.status_code == 400
    assert posted.json()["rejections"][0]["reason"] == "number_too_large"
    httpx.post(server.url + "/v1/events", json=event("metric_update", metrics={"loss": 2.0}))
    for _ in range(3):
        response = httpx.get(server.url + "/metrics")
        assert response.status_code == 200
    assert 'training_metric{key="loss",run_id="run_1"} 2.0' in response.text
    assert 'runwatch_events_rejected_total{reason="number_too_large",source="http"} 1.0' in (
        response.text
    )
    assert lint(bin_dir, response.text) == (0, b"", b"")


# -- 2. a line nested past the parser's limit -----------------------------------------------------


def test_a_deeply_nested_line_costs_only_itself_in_a_file(serve, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    server = serve(*QUIET, "--events", str(path))
    valid = [event("target_complete", target=f"t{i}", ts=1_700_000_000 + i) for i in range(1000)]
    poisoned = b'{"event_type": "run_start", "run_id": "run_1", "junk": ' + deep(2000) + b"}\n"
    with path.open("ab") as out:  # one write, read as one chunk
        out.write(jsonl(*valid[:500]) + poisoned + jsonl(*valid[500:]))
    completions = 'training_target_completions_total{run_id="run_1",status="success"}'
    wait_for(lambda: server.sample(completions) == 1000, what="all 1000 valid lines")
    rejected = 'runwatch_events_rejected_total{reason="too_deeply_nested",source="jsonl"}'
    assert server.sample(rejected) == 1


@pytest.mark.parametrize("shape", ["array", "ndjson"])
def test_a_deeply_nested_item_costs_only_itself_in_a_post(serve, shape: str) -> None:
    server = serve(*QUIET)
    valid = [event("target_complete", target=f"t{i}", ts=1_700_000_000 + i) for i in range(100)]
    poisoned = b'{"event_type": "run_start", "run_id": "run_1", "config": {"a": ' + deep(2000)
    poisoned += b"}}"
    items = (
        [orjson.dumps(v) for v in valid[:50]] + [poisoned] + [orjson.dumps(v) for v in valid[50:]]
    )
    body = b"[" + b",".join(items) + b"]" if shape == "array" else b"\n".join(items)
    posted = httpx.post(server.url + "/v1/events", content=body)
    assert posted.status_code == 400
    assert (posted.json()["accepted"], posted.json()["rejected"]) == (100, 1)
    assert posted.json()["rejections"][0] == {
        "index": 50, "reason": "too_deeply_nested",
        "detail": "JSON nested deeper than the parser allows",
    }  # fmt: skip
    completions = 'training_target_completions_total{run_id="run_1",status="success"}'
    assert server.sample(completions) == 100


@pytest.mark.parametrize(
    ("bad", "reason"),
    [(b'{"event_type": "metric_update", "run_id": "run_1", "metrics": {"loss": NaN}}', None),
     (b'{"event_type": "stage_change", "run_id": "x\\ud800", "new_stage": "s"}', "invalid_utf8"),
     (b'{"event_type": "metric_update", "run_id": "run_1", "metr', "invalid_json")],
    ids=["bare NaN", "lone surrogate", "cut short"],
)  # fmt: skip
def test_an_array_item_the_strict_decoder_refuses_costs_only_itself(serve, bad, reason) -> None:
    """An array with a bare NaN (Python's json.dumps writes it), a lone surrogate or a cut
    item is split item by item: the others are applied, the item applied or refused alone."""
    server = serve(*QUIET)
    valid = [orjson.dumps(event("target_complete", target=f"t{i}", ts=1_700_000_000 + i))
             for i in range(4)]  # fmt: skip
    if reason == "invalid_json":  # a body cut short: the cut item is its end
        body = b"[" + b",".join([*valid, bad])
    else:
        body = b"[" + b",".join([*valid[:2], bad, *valid[2:]]) + b"]"
    posted = httpx.post(server.url + "/v1/events", content=body).json()
    assert posted["accepted"] == 4 + (reason is None)
    assert [r["reason"] for r in posted.get("rejections", [])] == ([reason] if reason else [])
    completions = 'training_target_completions_total{run_id="run_1",status="success"}'
    assert server.sample(completions) == 4


# -- 3 and 11. files rewritten in place -----------------------------------------------------------


def test_a_file_rewritten_in_one_write_with_more_bytes_is_read_again(serve, tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(*(event("target_complete", target=f"a{i}") for i in range(10))))
    server = serve(*QUIET, "--events", str(path))
    completions = 'training_target_completions_total{run_id="run_1",status="success"}'
    wait_for(lambda: server.sample(completions) == 10, what="the first ten")
    # a restarted writer: open("w") and one write, longer than what was read
    path.write_bytes(jsonl(*(event("target_complete", target=f"b{i}") for i in range(30))))
    wait_for(lambda: server.sample(completions) == 40, what="all thirty new lines")
    assert (
        server.sample('runwatch_events_rejected_total{reason="invalid_json",source="jsonl"}') == 0
    )
    assert server.sample('runwatch_file_rotations_total{kind="truncated"}') == 1


# -- 4 and 12. WebSocket followers ----------------------------------------------------------------


def test_a_training_frame_nested_2000_deep_costs_one_frame(serve) -> None:
    frames = [orjson.dumps(event("target_complete", target=f"t{i}")).decode() for i in range(37)]
    frames.insert(
        2, '{"event_type": "run_start", "run_id": "run_1", "x": ' + "[" * 2000 + "]" * 2000 + "}"
    )
    peer = WebSocketPeer(frames_once({"/ws/training": frames}))
    try:
        server = serve(*QUIET, "--bridge-url", peer.url)
        completions = 'training_target_completions_total{run_id="run_1",status="success"}'
        wait_for(lambda: server.sample(completions) == 37, what="the 37 valid frames")
        deep_refused = 'runwatch_events_rejected_total{reason="too_deeply_nested",source="bridge"}'
        assert server.sample(deep_refused) == 1
        assert server.sample('trading_bridge_websocket_connected{channel="training"}') == 1
        assert peer.connections == 2  # /ws/events and /ws/training, each connected once
    finally:
        peer.stop()


def test_a_follower_whose_handler_raises_goes_on_and_reports_it() -> None:
    from exporter.pipeline.self_stats import Stats
    from exporter.sources.peers.websocket import WebSocketFollower

    peer = WebSocketPeer(frames_once({"/ws": ["one", "boom", "two"]}))
    received: list[str] = []
    failures: list[Exception] = []

    def handle(message: str | bytes) -> None:
        if message == "boom":
            raise RuntimeError("a handler bug")
        received.append(str(message))

    stats = Stats()
    follower = WebSocketFollower(peer.url.replace("http", "ws") + "/ws", "c", stats, handle,
                                 failures.append, open_timeout=2)  # fmt: skip
    follower.start()
    try:
        wait_for(lambda: received == ["one", "two"], what="the messages around the bad one")
        assert [str(f) for f in failures] == ["a handler bug"]
        assert stats.websocket_connected["c"] == 1
    finally:
        follower.stop()
        peer.stop()
    assert stats.websocket_connected["c"] == 0


def test_a_websocket_flood_is_all_counted_while_scrapes_answer(serve) -> None:
    flood = [orjson.dumps({"type": f"T{i % 5}"}).decode() for i in range(50_000)]
    peer = WebSocketPeer(frames_once({"/ws/events": flood}))
    try:
        server = serve(*QUIET, "--bridge-url", peer.url)
        deadline = time.monotonic() + 60
        while peer.sent < 50_000 and time.monotonic() < deadline:
            assert httpx.get(server.url + "/metrics", timeout=5).status_code == 200
        total = lambda: sum(  # noqa: E731
            server.sample(f'trading_events_total{{event_type="T{i}"}}') or 0 for i in range(5)
        )
        wait_for(lambda: total() == 50_000, timeout=30, what="every flooded message counted")
    finally:
        peer.stop()


# -- 5. a big POST and a scrape never wait on each other -----------------------------------------


def test_a_post_being_applied_does_not_hold_up_metrics(tmp_path: Path) -> None:
    import uvicorn

    from exporter.app.server import create_app
    from exporter.pipeline import Pipeline

    release, applying = threading.Event(), threading.Event()

    class SlowPipeline(Pipeline):
        def ingest_lines(self, lines, source, spans_from=0):  # type: ignore[no-untyped-def]
            applying.set()
            release.wait(30)
            return super().ingest_lines(lines, source, spans_from)

    pipeline = SlowPipeline()
    config = uvicorn.Config(create_app(pipeline), host="127.0.0.1", port=0, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the app")
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    poster = threading.Thread(
        target=httpx.post, args=(url + "/v1/events",), kwargs={"json": event("run_start")}
    )
    poster.start()
    try:
        assert applying.wait(10)
        assert httpx.get(url + "/metrics", timeout=5).status_code == 200  # while it applies
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
    finally:
        release.set()
        poster.join(10)
        server.should_exit = True
        thread.join(10)
    assert "run_1" in pipeline.state.runs


# -- 6, 7, 8. a hostile trading bridge ------------------------------------------------------------


def test_a_100_mb_bridge_answer_is_cut_off_and_counted(serve) -> None:
    taken = [0]
    peer = HttpPeer({"/api/positions": endless(b"[", 100 << 20, taken),
                     "/api/state": answer(200, b'{"status": "running"}')})  # fmt: skip
    try:
        server = serve(*QUIET, "--bridge-url", peer.url, "--bridge-interval", "0.5",
                       "--max-response-bytes", str(1 << 20))  # fmt: skip
        too_large = 'runwatch_events_rejected_total{reason="response_too_large",source="bridge"}'
        wait_for(lambda: (server.sample(too_large) or 0) >= 2, what="two polls cut off")
        assert server.sample('trading_engine_status{status="running"}') == 1
    finally:
        peer.stop()
    assert taken[0] < 20 << 20  # never read whole: the 1 MiB limit and the socket buffers


def test_a_bridge_failing_every_endpoint_is_down(serve) -> None:
    peer = HttpPeer({}, default=answer(500))
    try:
        server = serve(*QUIET, "--bridge-url", peer.url, "--bridge-interval", "0.2")
        http_errors = 'runwatch_events_rejected_total{reason="http_error",source="bridge"}'
        wait_for(lambda: (server.sample(http_errors) or 0) >= 12, what="two failed polls")
        for _ in range(5):
            assert server.sample('runwatch_source_up{source="bridge"}') == 0
    finally:
        peer.stop()


def test_a_bridge_that_never_answers_is_down_and_timed_out(serve) -> None:
    release = threading.Event()
    peer = HttpPeer({}, default=hang(release))
    try:
        server = serve(*QUIET, "--bridge-url", peer.url, "--bridge-interval", "0.5",
                       "--bridge-timeout", "0.5")  # fmt: skip
        timeouts = 'runwatch_events_rejected_total{reason="timeout",source="bridge"}'
        wait_for(lambda: (server.sample(timeouts) or 0) >= 6, what="a poll timed out")
        assert server.sample('runwatch_source_up{source="bridge"}') == 0
    finally:
        release.set()
        peer.stop()


def test_the_bridge_timeout_bounds_a_whole_dripping_request(serve) -> None:
    peer = HttpPeer({"/api/metrics": drip(b'{"portfolio_value": 1.0}' + b" " * 100, 0.3),
                     "/api/state": answer(200, b'{"status": "running"}')})  # fmt: skip
    try:
        server = serve(*QUIET, "--bridge-url", peer.url, "--bridge-timeout", "1")
        timeouts = 'runwatch_events_rejected_total{reason="timeout",source="bridge"}'
        wait_for(lambda: server.sample(timeouts) == 1, what="the dripping request cut off")
        duration = server.sample('runwatch_source_sample_duration_seconds{source="bridge"}')
        assert duration is not None and duration < 5  # the drip alone would take 37 s
        assert server.sample('runwatch_source_up{source="bridge"}') == 1
    finally:
        peer.stop()


def test_a_backend_answering_50_mb_or_dripping_is_cut_off_and_counted(serve) -> None:
    taken = [0]
    peer = HttpPeer({"/": answer(200, b'{"status": "ok"}'),
                     "/jobs": endless(b"[", 50 << 20, taken)})  # fmt: skip
    try:
        server = serve(*QUIET, "--backend-url", peer.url, "--backend-interval", "0.5",
                       "--max-response-bytes", str(1 << 20))  # fmt: skip
        too_large = 'runwatch_events_rejected_total{reason="response_too_large",source="backend"}'
        wait_for(lambda: (server.sample(too_large) or 0) >= 1, what="the listing cut off")
        assert server.sample('runwatch_source_up{source="backend"}') == 1  # healthy, GET / ok
        peer.paths["/"] = drip(b'{"status": "ok"}', 0.5)  # now its health check drips
        timeouts = 'runwatch_events_rejected_total{reason="timeout",source="backend"}'
        wait_for(lambda: (server.sample(timeouts) or 0) >= 1, what="the health check cut off")
        wait_for(lambda: server.sample('runwatch_source_up{source="backend"}') == 0,
                 what="the backend reported down")  # fmt: skip
    finally:
        peer.stop()
    assert taken[0] < 20 << 20


# -- 9, 10. event paths that are not plain files --------------------------------------------------


def test_a_fifo_or_a_device_among_event_paths_is_refused_and_stalls_nothing(
    serve, tmp_path
) -> None:
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    real = tmp_path / "events.jsonl"
    real.write_bytes(jsonl(event("run_start", name="real")))
    server = serve(*QUIET, "--events", str(fifo), "--events", "/dev/zero", "--events", str(real))
    assert httpx.get(server.url + "/readyz").status_code == 200  # serve() waited for it
    assert server.sample('training_run_info{name="real",run_id="run_1",trace_id="' +
                         _trace("run_1") + '"}') == 1  # fmt: skip
    refused = 'runwatch_events_rejected_total{reason="not_a_regular_file",source="jsonl"}'
    assert server.sample(refused) == 2
    assert server.log.read_text().count("is not a regular file") == 2
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=10)  # no thread is stuck in open()


def _trace(run_id: str) -> str:
    from exporter.core.trace_ids import trace_id_hex

    return trace_id_hex(run_id)


def test_a_file_and_a_symlink_to_it_are_followed_once(serve, tmp_path: Path) -> None:
    real = tmp_path / "run-7.jsonl"
    real.write_bytes(jsonl(*(event("target_complete", target=f"t{i}") for i in range(10))))
    (tmp_path / "latest.jsonl").symlink_to(real.name)
    server = serve(*QUIET, "--events", str(tmp_path / "*.jsonl"))
    completions = 'training_target_completions_total{run_id="run_1",status="success"}'
    assert server.sample(completions) == 10
    with real.open("ab") as out:
        out.write(jsonl(event("target_complete", target="t10")))
    (tmp_path / "other.jsonl").write_bytes(jsonl(event("run_start", run_id="other")))
    wait_for(lambda: 'run_id="other"' in server.metrics(), what="a later file, read after it")
    assert server.sample(completions) == 11


# -- slow clients and bodies ----------------------------------------------------------------------


def test_stalled_clients_do_not_slow_scrapes_and_are_let_go(serve) -> None:
    server = serve(*QUIET, "--body-timeout", "1")
    port = server.port
    stalled = []
    for index in range(100):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if index % 2:  # half a request line, never finished
            sock.sendall(b"GET /metr")
        else:  # a POST promising a body that never comes
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        stalled.append(sock)
    try:
        for _ in range(10):
            assert httpx.get(server.url + "/metrics", timeout=5).status_code == 200
        answers = [s.recv(4096) for s in stalled[::2]]
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[:1]
        incomplete = 'runwatch_events_rejected_total{reason="body_incomplete",source="http"}'
        wait_for(lambda: server.sample(incomplete) == 50, what="the stalled bodies counted")
    finally:
        for sock in stalled:
            sock.close()


def test_chunked_bodies_are_taken_and_bounded(serve) -> None:
    server = serve(*QUIET, "--max-body-bytes", "10000")

    def chunks(total: int):  # type: ignore[no-untyped-def]
        line = orjson.dumps(event("progress", stage="s", progress_pct=1)) + b"\n"
        for _ in range(total // len(line)):
            yield line

    small = httpx.post(server.url + "/v1/events", content=chunks(5000))
    assert small.status_code == 202 and small.json()["accepted"] > 40
    large = httpx.post(server.url + "/v1/events", content=chunks(100_000))
    assert large.status_code == 413
    assert server.sample(
        'runwatch_events_rejected_total{reason="body_too_large",source="http"}'
    ) == 1  # fmt: skip


# -- PID files ------------------------------------------------------------------------------------


def test_pid_files_that_are_fifos_huge_or_pid_1_are_refused(serve, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.pid"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.pid"
    huge.write_bytes(b'{"pid": 5, "run_id": "x", "started_at": 1, "pad": "' + b"x" * (1 << 20))
    init = tmp_path / "init.pid"
    init.write_bytes(b'{"pid": 1, "run_id": "init", "started_at": "2026-01-01T00:00:00Z"}')
    good = tmp_path / "good.pid"
    good.write_bytes(orjson.dumps({"pid": os.getpid(), "run_id": "mine",
                                   "started_at": time.time() + 5}))  # fmt: skip
    args = [a for p in (fifo, huge, init, good) for a in ("--pid-file", str(p))]
    server = serve(*QUIET, *args, "--pid-interval", "0.1")
    wait_for(lambda: server.sample('training_process_up{run_id="mine"}') == 1, what="good one")
    invalid = 'runwatch_events_rejected_total{reason="pid_file_invalid",source="pid_file"}'
    wait_for(lambda: server.sample(invalid) == 3, what="three refused")
    assert 'run_id="init"' not in server.metrics()
    good.write_bytes(orjson.dumps({"pid": os.getpid(), "run_id": "mine2",
                                   "started_at": time.time() + 5}))  # fmt: skip
    wait_for(lambda: server.sample('training_process_up{run_id="mine2"}') == 1, what="a round")
    assert server.sample(invalid) == 3  # later rounds count nothing again


@pytest.mark.parametrize(
    ("flag", "extra"),
    [
        ("--basic-auth-password-file", ["--basic-auth-user", "u"]),
        ("--backend-authorization-file", ["--backend-url", "http://127.0.0.1:9"]),
    ],
)
def test_a_secret_file_that_is_a_fifo_is_refused_at_start(
    tmp_path: Path, flag: str, extra: list[str]
) -> None:
    """Read as every other file is: a FIFO would block the start forever, silently."""
    fifo = tmp_path / "secret"
    os.mkfifo(fifo)
    done = subprocess.run([*RUNWATCH, "serve", "--web.listen-address", "127.0.0.1:0",
                           "--no-nvml", "--no-system", *extra, flag, str(fifo)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"{flag}: {fifo} is not a regular file (a FIFO)" in done.stderr


# -- a value that escaped the bounds still costs only its sample ---------------------------------


def test_a_sample_that_cannot_be_rendered_is_left_out_of_the_scrape_and_counted(
    bin_dir, caplog
) -> None:
    from exporter.telemetry.exposition import Exposition

    pipeline = poisoned_pipeline()
    exposition = Exposition(pipeline)
    text = exposition.render()[0].decode()
    assert 'training_step{run_id="run_2"} 4.0' in text
    assert 'training_step{run_id="run_1"}' not in text
    assert 'training_metric{key="loss",run_id="run_1"} 0.5' in text
    exposition.render()  # a second scrape: the run unchanged, its text kept, not counted again
    pipeline.state.runs["run_1"].step = 10**401  # changed: rendered, left out, counted again
    pipeline.state._changed["run_1"] = None
    text = exposition.render()[0].decode()
    assert 'runwatch_render_errors_total{family="training_step"} 2.0' in text
    assert sum("training_step" in r.getMessage() for r in caplog.records) == 1
    assert lint(bin_dir, text) == (0, b"", b"")


def test_a_sample_that_cannot_be_rendered_is_left_out_of_the_otlp_export(otlp_receiver) -> None:
    from exporter.telemetry.otel import OtlpOutput
    from exporter.telemetry.otlp_settings import OtlpSettings

    pipeline = poisoned_pipeline()
    otlp = OtlpOutput(pipeline, OtlpSettings(otlp_receiver.url))
    otlp.flush()
    otlp.shutdown()
    points = {
        metric.name: [
            {a.key: a.value.string_value for a in p.attributes} for p in metric.gauge.data_points
        ]
        for request in otlp_receiver.metric_requests
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.HasField("gauge")
    }
    assert points["training.step"] == [{"run_id": "run_2"}]
    assert {"run_id": "run_1", "key": "loss"} in points["training.metric"]
    assert pipeline.stats.render_errors["training_step"] >= 1


@pytest.mark.parametrize("field", ["run_id", "key", "stage"])
def test_text_utf8_cannot_encode_is_refused_and_every_scrape_stays_200(
    serve, bin_dir, field: str
) -> None:
    """A lone surrogate escape reaches the second-chance parser (a bare NaN sends it there)."""
    escape = b'"x\\ud800"'
    line = {
        "run_id": b'{"event_type": "metric_update", "run_id": '
        + escape
        + b', "metrics": {"loss": NaN}}',
        "key": b'{"event_type": "metric_update", "run_id": "r", "metrics": {' + escape + b": NaN}}",
        "stage": b'{"event_type": "stage_change", "run_id": "r", "timestamp": NaN, '
        b'"new_stage": ' + escape + b"}",
    }[field]
    server = serve(*QUIET)
    posted = httpx.post(server.url + "/v1/events", content=line)
    assert posted.status_code == 400
    assert posted.json()["rejections"][0]["reason"] == "invalid_utf8"
    httpx.post(server.url + "/v1/events", json=event("metric_update", metrics={"loss": 2.0}))
    for _ in range(5):
        scrape, runs = httpx.get(server.url + "/metrics"), httpx.get(server.url + "/api/runs")
        assert (scrape.status_code, runs.status_code) == (200, 200)
    assert [run["run_id"] for run in runs.json()] == ["run_1"]
    assert server.sample('runwatch_events_rejected_total{reason="invalid_utf8",source="http"}') == 1
    assert lint(bin_dir, scrape.text) == (0, b"", b"")


# -- an OTLP endpoint that refuses forever, and shutting down ------------------------------------


def test_an_otlp_endpoint_answering_429_or_500_forever_costs_counted_drops(serve) -> None:
    peer = HttpPeer({"/v1/traces": answer(429), "/v1/metrics": answer(500)})
    try:
        server = serve(*QUIET, "--otlp-endpoint", peer.url,
                       env={"OTEL_EXPORTER_OTLP_TIMEOUT": "1",
                            "OTEL_METRIC_EXPORT_INTERVAL": "200"})  # fmt: skip
        runs = [e for i in range(300) for e in (
            event("stage_change", run_id=f"r{i}", new_stage="s"),
            event("run_complete", run_id=f"r{i}", status="completed"))]  # fmt: skip
        assert httpx.post(server.url + "/v1/events", json=runs, timeout=30).status_code == 202
        dropped = 'runwatch_otlp_dropped_total{reason="export_failed",signal="spans"}'
        wait_for(lambda: (server.sample(dropped) or 0) > 0, timeout=60, what="spans dropped")
        metrics = 'runwatch_otlp_dropped_total{reason="export_failed",signal="metrics"}'
        wait_for(lambda: (server.sample(metrics) or 0) > 0, timeout=60, what="points dropped")
        assert httpx.get(server.url + "/metrics", timeout=5).status_code == 200
        assert (server.sample('runwatch_otlp_exported_total{signal="spans"}') or 0) == 0
    finally:
        peer.stop()


def test_shutting_down_with_a_hanging_collector_is_bounded_and_a_second_signal_exits(
    serve, tmp_path: Path
) -> None:
    release = threading.Event()
    peer = HttpPeer({}, default=hang(release))
    try:
        first = serve(*QUIET, "--otlp-endpoint", peer.url)
        httpx.post(server_url(first) + "/v1/events", json=event("run_complete", status="failed"))
        first.process.send_signal(signal.SIGINT)
        first.process.wait(timeout=15)  # SHUTDOWN_SECONDS plus the server's own; was 22 s
        second = serve(*QUIET, "--otlp-endpoint", peer.url)
        httpx.post(server_url(second) + "/v1/events", json=event("run_complete", status="failed"))
        second.process.send_signal(signal.SIGINT)
        wait_for(lambda: "a second SIGINT or SIGTERM exits at once" in second.log.read_text(),
                 what="the shutdown under way")  # fmt: skip
        second.process.send_signal(signal.SIGINT)
        assert second.process.wait(timeout=3) == 128 + signal.SIGINT
    finally:
        release.set()
        peer.stop()


def server_url(server) -> str:  # type: ignore[no-untyped-def]
    return server.url


def test_sigterm_while_ingesting_then_a_restart_sends_no_span_twice(
    serve, tmp_path: Path, otlp_receiver
) -> None:
    events, state = tmp_path / "events.jsonl", tmp_path / "state.json"
    events.write_bytes(b"")
    args = ("--events", str(events), "--state-file", str(state), "--otlp-endpoint",
            otlp_receiver.url, *QUIET)  # fmt: skip

    def write_runs(first: int, last: int) -> None:
        with events.open("ab") as out:
            for i in range(first, last):
                out.write(
                    jsonl(
                        event("stage_change", run_id=f"r{i}", new_stage="s"),
                        event("run_complete", run_id=f"r{i}", status="completed"),
                    )
                )
                out.flush()

    first = serve(*args)
    writer = threading.Thread(target=write_runs, args=(0, 400))
    writer.start()
    wait_for(lambda: len(otlp_receiver.spans) >= 20, what="spans flowing")
    first.process.send_signal(signal.SIGTERM)  # while lines are still being written
    # ended by itself within 15 s, by that signal: its shutdown done, uvicorn raises it again
    assert first.process.wait(timeout=15) == -signal.SIGTERM
    writer.join()
    second = serve(*args)
    write_runs(400, 410)
    wait_for(lambda: any(s["attributes"].get("training.run_id") == "r409"
                         for s in otlp_receiver.spans), what="the last run's spans")  # fmt: skip
    second.stop()
    ids = [s["span_id"] for s in otlp_receiver.spans]
    assert len(ids) == len(set(ids)), "a span was sent twice"
    runs = {s["attributes"]["training.run_id"] for s in otlp_receiver.spans if s["name"] == "run"}
    assert {f"r{i}" for i in range(400, 410)} <= runs
