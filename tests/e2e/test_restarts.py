"""Restarts that cost nothing, on a real ``runwatch serve``: ``kill -9`` while the collector
refuses, or while lines are written, loses no span or log record, and whatever is sent
twice is identical and counted (``runwatch_otlp_resent_total``); one step Prometheus
refuses (too old, out of order) does not cost the steps that share its remote-write
request, nor does a plain restart that reads the files again."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.integration.test_step_history import dropped, raw_samples
from tests.processes import Prometheus, Server
from tests.support import event, free_port, jsonl, wait_for

QUIET = ["--no-nvml", "--no-system", "--no-otlp-metrics"]
RESENT = 'runwatch_otlp_resent_total{signal="%s"}'


def runs(first: int, last: int) -> bytes:
    """Runs r<first>..r<last - 1>: two lines, two spans (run, stage), two log records each."""
    return jsonl(*(e for i in range(first, last) for e in (
        event("stage_change", run_id=f"r{i}", ts=1_700_000_000.0 + i, new_stage="s"),
        event("run_complete", run_id=f"r{i}", ts=1_700_000_000.5 + i, status="completed"),
    )))  # fmt: skip


def saved(state: Path) -> dict[str, Any]:
    """The one cursor of the state file."""
    (cursor,) = orjson.loads(state.read_bytes())["files"]
    return cursor


def log_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """A log record but for its observed time (when runwatch read its line)."""
    return record["time"], record["body"], record["trace_id"], record["span_id"]


def assert_copies_identical(spans: list[dict[str, Any]]) -> None:
    first: dict[str, dict[str, Any]] = {}
    for span in spans:
        assert first.setdefault(span["span_id"], span) == span, "a span sent twice differs"


def test_kill_9_while_the_collector_refuses_loses_no_span(
    serve, tmp_path: Path, otlp_receiver
) -> None:
    events, state = tmp_path / "events.jsonl", tmp_path / "state.json"
    events.write_bytes(runs(0, 400))
    args = ("--events", str(events), "--state-file", str(state),
            "--otlp-endpoint", otlp_receiver.url, *QUIET)  # fmt: skip
    otlp_receiver.fail_next = refusals = 1_000_000  # 503 to everything
    first = serve(*args)
    size = events.stat().st_size
    wait_for(lambda: saved(state)["offset"] == size, what="the whole file read, and saved")
    wait_for(lambda: otlp_receiver.fail_next <= refusals - 2, what="exports refused")
    assert saved(state)["delivered"] == 0  # nothing accepted: every line is to be sent again
    first.process.kill()
    first.process.wait()
    otlp_receiver.fail_next = 0
    second = serve(*args)
    wait_for(lambda: len(otlp_receiver.spans) >= 800 and len(otlp_receiver.logs) >= 800,
             timeout=30, what="every span and log record")  # fmt: skip
    assert len({s["span_id"] for s in otlp_receiver.spans}) == 800
    assert len({log_key(r) for r in otlp_receiver.logs}) == 800
    assert second.sample(RESENT % "spans") == 800  # none was accepted, all sent again
    assert second.sample(RESENT % "logs") == 800
    wait_for(lambda: saved(state)["delivered"] == size, what="all delivered, and saved")
    second.stop()
    assert len(otlp_receiver.spans) == 800 and len(otlp_receiver.logs) == 800  # none twice


def test_kill_9_while_lines_are_written_sends_twice_only_what_it_counts(
    serve, tmp_path: Path, otlp_receiver
) -> None:
    events, state = tmp_path / "events.jsonl", tmp_path / "state.json"
    events.write_bytes(b"")
    args = ("--events", str(events), "--state-file", str(state),
            "--otlp-endpoint", otlp_receiver.url, *QUIET)  # fmt: skip

    def write(first: int, last: int) -> None:
        with events.open("ab") as out:
            for start in range(first, last, 20):
                out.write(runs(start, min(start + 20, last)))
                out.flush()
                time.sleep(0.005)

    port = free_port()  # a restart listens where it did: the same service.instance.id
    first = serve(*args, port=port)
    writer = threading.Thread(target=write, args=(0, 3000))
    writer.start()
    wait_for(lambda: len(otlp_receiver.spans) >= 1000, what="spans flowing")
    first.process.kill()  # while lines are still written and spans sent
    first.process.wait()
    writer.join()
    before = len(otlp_receiver.spans), len(otlp_receiver.logs)
    second = serve(*args, port=port)
    exported = 'runwatch_otlp_exported_total{signal="%s"}'

    def all_in() -> bool:
        spans, logs = otlp_receiver.spans, otlp_receiver.logs
        return (len({s["span_id"] for s in spans}) == 6000
                and len({log_key(r) for r in logs}) == 6000
                and second.sample(exported % "spans") == len(spans) - before[0]
                and second.sample(exported % "logs") == len(logs) - before[1])  # fmt: skip

    wait_for(all_in, timeout=60, what="every span and log record, the second's all delivered")
    assert_copies_identical(otlp_receiver.spans)
    twice = Counter(s["span_id"] for s in otlp_receiver.spans)
    assert max(twice.values()) <= 2
    assert len(otlp_receiver.spans) - 6000 <= second.sample(RESENT % "spans")
    assert len(otlp_receiver.logs) - 6000 <= second.sample(RESENT % "logs")


def test_without_otlp_the_state_file_says_what_it_always_said(serve, tmp_path: Path) -> None:
    events, state = tmp_path / "events.jsonl", tmp_path / "state.json"
    events.write_bytes(runs(0, 10))
    server = serve("--events", str(events), "--state-file", str(state), *QUIET)
    size = events.stat().st_size
    wait_for(lambda: saved(state)["offset"] == size, what="the file read, and saved")
    assert saved(state)["delivered"] == size  # with no collector, every line read is done
    assert RESENT % "spans" not in server.metrics()


def test_an_old_step_does_not_cost_another_runs_current_steps(
    bin_dir: Path, tmp_path: Path, serve
) -> None:
    port = free_port()
    prometheus = Prometheus(bin_dir / "prometheus", f"127.0.0.1:{port}", tmp_path,
                            flags=("--web.enable-remote-write-receiver",))  # fmt: skip
    try:
        server = serve("--remote-write-url", prometheus.url + "/api/v1/write", *QUIET, port=port)
        wait_for(lambda: prometheus.value('up{job="runwatch"}') == 1,
                 what="a scrape: Prometheus's newest sample is now")  # fmt: skip
        now = time.time()
        old = now - 3 * 3600
        batch = [
            event("run_start", "old", ts=old - 1),
            event("metric_update", "old", ts=old, step=1, metrics={"loss": 2.0}),
            event("run_start", "current", ts=now - 10),
            *(event("metric_update", "current", ts=now - 5 + i / 10, step=i,
                    metrics={"loss": 1 / (i + 1)}) for i in range(50)),
        ]  # fmt: skip
        assert httpx.post(server.url + "/v1/events", json=batch).status_code == 202
        current = 'training_step_metric{run_id="current", key="loss"}'
        wait_for(lambda: len(raw_samples(prometheus, current)) == 50, timeout=30,
                 what="the 50 current steps stored")  # fmt: skip
        # the old step's value and step number; the current ones', and their steps
        wait_for(lambda: dropped(server, "out_of_bounds") == 2, what="the old one dropped")
        assert server.sample("runwatch_remote_write_samples_total") == 100
        assert dropped(server, "rejected") == 0
    finally:
        prometheus.stop()


def test_a_plain_restart_reading_a_file_again_costs_no_new_step(
    bin_dir: Path, tmp_path: Path, serve
) -> None:
    prometheus = Prometheus(bin_dir / "prometheus", f"127.0.0.1:{free_port()}", tmp_path,
                            flags=("--web.enable-remote-write-receiver",))  # fmt: skip
    events = tmp_path / "events.jsonl"
    now = time.time()

    def steps(run_id: str, start: float) -> bytes:
        return jsonl(event("run_start", run_id, ts=start - 1), *(
            event("metric_update", run_id, ts=start + i / 10, step=i, metrics={"loss": i})
            for i in range(20)))  # fmt: skip

    def stored(run_id: str) -> int:
        return len(raw_samples(prometheus, f'training_step_metric{{run_id="{run_id}"}}'))

    try:
        events.write_bytes(steps("before", now - 60))
        args = ("--events", str(events), "--history-instance", "runwatch",
                "--remote-write-url", prometheus.url + "/api/v1/write", *QUIET)  # fmt: skip
        first = serve(*args)
        wait_for(lambda: stored("before") == 20, timeout=30, what="the first run's steps")
        first.stop()
        with events.open("ab") as out:
            out.write(steps("after", now - 30))  # a run the first serve never saw
        second = serve(*args)  # no state file: every step of the file is sent again
        wait_for(lambda: stored("after") == 20, timeout=30, what="the new run's steps")
        # the old run's steps, older than the series' last: refused, each in its own request
        wait_for(lambda: dropped(second, "out_of_order") == 40, what="the steps sent before")
        assert second.sample("runwatch_remote_write_samples_total") == 40  # values and steps
        assert stored("before") == 20
    finally:
        prometheus.stop()


def judged(server: Server, *runs: str) -> dict[str, str | None]:
    """Each run's status on /metrics (running, crashed or ended)."""
    series = 'training_run_status{run_id="%s",status="%s"}'
    statuses = ("running", "crashed", "ended")
    return {run: next((s for s in statuses if server.sample(series % (run, s)) == 1), None)
            for run in runs}  # fmt: skip


def sleeper() -> subprocess.Popen[bytes]:
    """A stand-in training process: alive until killed."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def test_a_restart_judges_the_runs_it_recovers_by_their_pid_files(serve, tmp_path: Path) -> None:
    """Processes that die, and PID files that go, while runwatch is down: the restarted
    serve judges the runs it recovers from the event file as a running one would."""
    events, state, pids = tmp_path / "events.jsonl", tmp_path / "state.json", tmp_path / "pids"
    pids.mkdir()
    now = time.time()
    names = ("reused", "closed", "gone", "ended_live")
    processes = {name: sleeper() for name in names}
    paths = {name: pids / f"{name}.pid" for name in names} | {"reused": pids / "training.pid"}

    def write_pid(name: str, process: subprocess.Popen[bytes]) -> None:
        pid = {"pid": process.pid, "run_id": name, "started_at": datetime.now(UTC).isoformat()}
        paths[name].write_bytes(orjson.dumps(pid))

    for name in names:
        write_pid(name, processes[name])
    events.write_bytes(jsonl(*(event("stage_change", run_id=name, ts=now, new_stage="training")
                               for name in names)))  # fmt: skip
    args = ("--events", str(events), "--state-file", str(state), "--pid-file",
            str(pids / "*.pid"), "--pid-interval", "0.1", *QUIET)  # fmt: skip

    try:
        first = serve(*args)
        wait_for(lambda: all(first.sample(f'training_process_up{{run_id="{name}"}}') == 1
                             for name in names), what="every process up")  # fmt: skip
        paths["ended_live"].unlink()  # the seed's clean close (no run_complete), seen live
        wait_for(lambda: judged(first, "ended_live") == {"ended_live": "ended"},
                 what="a clean end")  # fmt: skip
        first.process.kill()  # runwatch goes down; meanwhile:
        first.process.wait()
        processes["reused"].kill()  # dies; the next run takes its PID file's path
        processes["next"] = sleeper()
        paths["next"] = paths["reused"]
        write_pid("next", processes["next"])
        with events.open("ab") as out:
            out.write(jsonl(event("stage_change", run_id="next", ts=now + 1, new_stage="s")))
        paths["closed"].unlink()  # closed cleanly (the process lives on)
        processes["gone"].kill()  # dies, and its PID file is cleaned away
        paths["gone"].unlink()
        second = serve(*args)
        expected = {"reused": "crashed", "next": "running", "closed": "ended",
                    "gone": "crashed", "ended_live": "ended"}  # fmt: skip
        deadline = time.monotonic() + 10
        while judged(second, *expected) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # later checks change nothing
        assert judged(second, *expected) == expected
    finally:
        for process in processes.values():
            process.kill()
            process.wait()
