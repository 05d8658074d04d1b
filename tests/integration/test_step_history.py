"""The step history: every logged step in a real Prometheus at its event time, by remote
write from `runwatch serve` and by backfill (`runwatch replay --history openmetrics` into
the real promtool, whose blocks a real Prometheus loads); thinning above the step-rate cap,
and a receiver that refuses or is down, counted."""

from __future__ import annotations

import math
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.events import validate
from exporter.core.outputs import StepValues
from exporter.core.state import Limits, State
from tests.integration.test_dashboards import boards, fill, targets
from tests.processes import Prometheus
from tests.support import ROOT, RUNWATCH, event, free_port, jsonl, wait_for

STEPS_PER_SECOND = 20


def steps(run_id: str, start: float, count: int, rate: float = STEPS_PER_SECOND) -> list[dict]:
    """A run logging ``count`` steps at ``rate`` a second from ``start``: loss and lr."""
    return [
        event("run_start", run_id, ts=start - 1, name=run_id),
        *(event("metric_update", run_id, ts=start + i / rate, step=i,
                metrics={"loss": 1 / (i + 1), "lr": 0.001}) for i in range(count)),
    ]  # fmt: skip


def raw_samples(prometheus: Prometheus, selector: str) -> list[tuple[float, float]]:
    """Every sample Prometheus holds for ``selector`` (a range selector, not a query_range
    that would sample at its own steps), as (time, value)."""
    result = httpx.get(prometheus.url + "/api/v1/query",
                       params={"query": f"{selector}[1d]"}).json()["data"]["result"]  # fmt: skip
    return [(float(t), float(v)) for series in result for t, v in series["values"]]


def test_serve_writes_every_logged_step_at_its_event_time(bin_dir, tmp_path, serve) -> None:
    port = free_port()
    prometheus = Prometheus(bin_dir / "prometheus", f"127.0.0.1:{port}", tmp_path,
                            flags=("--web.enable-remote-write-receiver",))  # fmt: skip
    try:
        server = serve("--remote-write-url", prometheus.url + "/api/v1/write", port=port)
        start = round(time.time() - 10, 3)
        run = steps("hist", start, 200)  # 10 s at 20 steps/s: a scrape would see 1 in 300
        assert httpx.post(server.url + "/v1/events", json=run).status_code == 202
        loss = 'training_step_metric{run_id="hist", key="loss", job="runwatch"}'
        got = wait_for(lambda: len(raw_samples(prometheus, loss)) == 200
                       and raw_samples(prometheus, loss), timeout=30, what="200 steps")  # fmt: skip
        expected = [(round(e["timestamp"], 3), e["metrics"]["loss"]) for e in run[1:]]
        assert [(round(t, 3), v) for t, v in got] == expected
        # labelled as Prometheus scrapes runwatch: the boards' $job / $instance find both
        labels = httpx.get(prometheus.url + "/api/v1/series", params={"match[]": loss}).json()
        assert labels["data"][0]["instance"] == f"127.0.0.1:{port}"
        wait_for(lambda: prometheus.value('training_step{run_id="hist"}') == 199,
                 what="the scrape of the run's step")  # fmt: skip
        # the board's LOSS panel: at step resolution, the history, the last $steps steps
        (expr,) = [e for t, e in targets(boards()["runwatch-training.json"]) if t == "LOSS"]
        now = time.time()
        for last, expected_points in (("1000", 200), ("100", 101)):
            query = fill(expr, "hist").replace("$steps", last).replace("1h", "1m")
            answer = httpx.get(prometheus.url + "/api/v1/query_range", params={
                "query": query, "start": start, "end": now, "step": 1 / STEPS_PER_SECOND,
            }).json()  # fmt: skip
            assert answer["status"] == "success", answer
            (series,) = [s for s in answer["data"]["result"] if s["metric"]["key"] == "loss"]
            distinct = {float(v) for _, v in series["values"]}
            assert len(distinct) >= expected_points * 0.9, (last, len(distinct))
        # the step of each sample, at the same timestamps: what draws a curve by step
        step_of = dict(raw_samples(prometheus, 'training_history_step{run_id="hist"}'))
        assert [step_of[t] for t, _ in got] == list(range(200))
        # steps logged in one millisecond (a loop with nothing in it): all kept, in order
        same = [event("metric_update", "burst", ts=start, step=i, metrics={"loss": 3.0 - i})
                for i in range(3)]  # fmt: skip
        burst = [event("run_start", "burst", ts=start - 1), *same]
        assert httpx.post(server.url + "/v1/events", json=burst).status_code == 202
        selector = 'training_step_metric{run_id="burst", key="loss"}'
        kept = wait_for(lambda: len(raw_samples(prometheus, selector)) == 3
                        and raw_samples(prometheus, selector), what="the 3 steps")  # fmt: skip
        assert [v for _, v in kept] == [3.0, 2.0, 1.0]
        assert [round(t - start, 3) for t, _ in kept] == [0.0, 0.001, 0.002]
        assert server.sample("runwatch_remote_write_samples_total") == 600 + 6
        assert dropped(server, "out_of_order") == dropped(server, "failed") == 0
    finally:
        prometheus.stop()


class Receiver:
    """A remote-write receiver answering every request with ``status``."""

    def __init__(self, status: int) -> None:
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                self.send_response(status)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"no\n")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/api/v1/write"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()


def dropped(server, reason: str) -> float:
    return server.sample(f'runwatch_remote_write_dropped_samples_total{{reason="{reason}"}}') or 0


def test_a_refusing_or_absent_receiver_costs_counted_samples_not_ingestion(serve) -> None:
    refusing = Receiver(400)
    try:
        server = serve("--remote-write-url", refusing.url)
        run = steps("refused", time.time(), 10)
        httpx.post(server.url + "/v1/events", json=run)
        # 10 steps: 2 keys and the step each
        wait_for(lambda: dropped(server, "rejected") == 30, what="30 rejected samples")
        assert refusing.requests == 1  # a 4xx is not retried
    finally:
        refusing.stop()
    absent = serve("--remote-write-url", f"http://127.0.0.1:{free_port()}/api/v1/write")
    run = steps("absent", time.time(), 10)
    started = time.monotonic()
    assert httpx.post(absent.url + "/v1/events", json=run).status_code == 202
    assert time.monotonic() - started < 5  # ingestion never waits on the receiver
    assert absent.sample('runwatch_events_ingested_total{source="http"}') == 11
    wait_for(lambda: dropped(absent, "failed") == 30, timeout=60, what="retries given up")


def test_remote_write_needs_an_http_url(tmp_path) -> None:
    result = subprocess.run([*RUNWATCH, "serve", "--remote-write-url", "prometheus:9090"],
                            capture_output=True, text=True, cwd=ROOT, timeout=30)  # fmt: skip
    assert result.returncode == 2 and "--remote-write-url" in result.stderr


def test_a_replayed_file_backfills_into_prometheus(bin_dir, tmp_path: Path) -> None:
    start = round(time.time() - 3 * 3600, 3)  # older than a receiver's head would take
    path = tmp_path / "old.jsonl"
    run = steps("old", start, 500)
    path.write_bytes(jsonl(*run))
    history = subprocess.run(
        [*RUNWATCH, "replay", str(path), "--history", "openmetrics", "--history-instance",
         "trainer:9464"], capture_output=True, cwd=ROOT, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert history.startswith(b"# HELP training_step_metric") and history.endswith(b"# EOF\n")
    (tmp_path / "history.om").write_bytes(history)
    data = tmp_path / "tsdb"
    created = subprocess.run(
        [bin_dir / "promtool", "tsdb", "create-blocks-from", "openmetrics",
         tmp_path / "history.om", data], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    prometheus = Prometheus(bin_dir / "prometheus", "127.0.0.1:1", tmp_path,
                            flags=("--storage.tsdb.retention.time=10y",))  # fmt: skip
    try:
        loss = 'training_step_metric{run_id="old", key="loss", instance="trainer:9464"}'
        got = wait_for(lambda: raw_samples(prometheus, loss), what="the backfilled steps")
        expected = [(round(e["timestamp"], 3), e["metrics"]["loss"]) for e in run[1:]]
        assert [(round(t, 3), v) for t, v in got] == expected
    finally:
        prometheus.stop()


def test_replay_history_is_thinned_to_the_cap_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "fast.jsonl"
    path.write_bytes(jsonl(*steps("fast", 1_700_000_000.0, 1000, rate=1000)))  # 1 s, 1000 steps
    result = subprocess.run(
        [*RUNWATCH, "replay", str(path), "--history", "openmetrics",
         "--max-history-steps-per-second", "50"], capture_output=True, text=True, cwd=ROOT,
        timeout=60, check=True,
    )  # fmt: skip
    samples = [line for line in result.stdout.splitlines() if 'key="loss"' in line]
    assert len(samples) == 50
    assert "1900 values thinned out" in result.stderr  # 950 steps x 2 keys


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 20, allow_nan=False), min_size=1, max_size=400),
    st.integers(1, 30),
)
def test_the_step_rate_cap_holds_for_any_timing(offsets: list[float], cap: int) -> None:
    """Whatever the timing, no second of event time keeps more than the cap, every step is
    either kept or counted, and a run under the cap keeps every step."""
    state = State(Limits(max_history_steps_per_second=cap, max_clock_skew_seconds=math.inf))
    state.history = True
    base = 1_700_000_000.0
    state.apply(validate({"event_type": "run_start", "run_id": "r", "timestamp": base}))
    kept: list[float] = []
    for index, offset in enumerate(sorted(offsets)):
        update = {"event_type": "metric_update", "run_id": "r", "timestamp": base + offset,
                  "metrics": {"loss": index}}  # fmt: skip
        out = state.apply(validate(update))
        kept += [o.timestamp for o in out if isinstance(o, StepValues)]
    per_second: dict[int, int] = {}
    for ts in kept:
        per_second[int(ts)] = per_second.get(int(ts), 0) + 1
    assert max(per_second.values()) <= cap
    assert len(kept) + state.dropped["step_rate"] == len(offsets)
    busiest = max(sum(1 for o in offsets if int(base + o) == s) for s in per_second)
    if busiest <= cap:
        assert len(kept) == len(offsets)


def test_the_by_step_panel_pairs_each_runs_values_with_their_steps(bin_dir, tmp_path) -> None:
    """The training board's BY STEP panel on a real Prometheus holding three runs' backfilled
    history (the same timestamps; one logging every other step; val_loss every 50 steps):
    its two queries sent as Grafana sends them for two of the runs, the answers taken through
    the panel's transformations and XY chart as Grafana 13.2 takes them: a series per run
    picked, each point a value and the step logged at its timestamp, in logging order."""
    from tests.integration.test_dashboards import by_step_panel, xychart_series
    from tests.stack import substitute

    start = round(time.time() - 3 * 3600, 3)  # backfilled: older than a receiver's head

    def run(run_id: str, every: int, scale: float) -> list[dict]:
        def metrics(step: int) -> dict[str, float]:
            sparse = {"val_loss": scale / (step + 2)} if step % 50 == 0 else {}
            return {"loss": scale / (step + 1), **sparse}

        return [event("run_start", run_id, ts=start - 1, name=run_id),
                *(event("metric_update", run_id, ts=start + i / STEPS_PER_SECOND,
                        step=every * i, metrics=metrics(every * i))
                  for i in range(300))]  # fmt: skip

    runs = [*run("alpha", 1, 1.0), *run("beta", 2, 2.0), *run("gamma", 1, 3.0)]
    (tmp_path / "runs.jsonl").write_bytes(jsonl(*sorted(runs, key=lambda e: e["timestamp"])))
    history = subprocess.run(
        [*RUNWATCH, "replay", str(tmp_path / "runs.jsonl"), "--history", "openmetrics",
         "--history-instance", "trainer:9464"], capture_output=True, cwd=ROOT, timeout=60,
        check=True,
    ).stdout  # fmt: skip
    (tmp_path / "history.om").write_bytes(history)
    created = subprocess.run(
        [bin_dir / "promtool", "tsdb", "create-blocks-from", "openmetrics",
         tmp_path / "history.om", tmp_path / "tsdb"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    prometheus = Prometheus(bin_dir / "prometheus", "127.0.0.1:1", tmp_path,
                            flags=("--storage.tsdb.retention.time=10y",))  # fmt: skip
    try:
        panel = by_step_panel()
        wait_for(lambda: raw_samples(prometheus, "training_history_step"), what="the backfill")
        end = time.time()
        # the variables as Grafana fills them: multi-value ones as a regex alternation, one
        # key per repeated panel, $__range the dashboard's range (4 h) in seconds
        variables = {"job": "runwatch", "instance": "(trainer:9464)", "run": "(alpha|beta)",
                     "__range": f"{4 * 3600}s"}  # fmt: skip
        for key, steps_of in (("loss", lambda every: range(0, 300 * every, every)),
                              ("val_loss", lambda every: range(0, 300 * every, 50))):  # fmt: skip
            answers = {}
            for target in panel["targets"]:
                query = substitute(target["expr"], {**variables, "key": key})
                answer = httpx.get(prometheus.url + "/api/v1/query",
                                   params={"query": query, "time": end}).json()  # fmt: skip
                assert answer["status"] == "success", answer
                assert answer["data"]["resultType"] == "matrix"
                answers[target["refId"]] = answer["data"]["result"]
            offset = 2 if key == "val_loss" else 1
            assert xychart_series(panel, answers) == {
                name: [(step, scale / (step + offset)) for step in steps_of(every)]
                for name, every, scale in (("alpha", 1, 1.0), ("beta", 2, 2.0))
            }, key
    finally:
        prometheus.stop()
