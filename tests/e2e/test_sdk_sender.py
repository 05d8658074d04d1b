"""The SDK's HTTP sender against a real ``runwatch serve``, from real training processes:
the training dashboard's own loop (no sleep), 5,000 metrics a second, a runwatch that is
down for the run's first seconds, a process that exits before runwatch comes back, a
batch sent twice; and a script and a serve with no settings at all finding each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import httpx

from tests.support import ROOT, RUNWATCH, free_port, wait_for

QUIET = ("--no-nvml", "--no-system")


def child(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """A training script in a process of its own, as a user runs it."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finished(process: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out, err


def test_the_seed_loop_with_no_sleep_arrives_whole(serve) -> None:
    server = serve(*QUIET)
    script = child("""
        from runwatch_sdk import TrainingMonitor
        with TrainingMonitor(run_name="experiment", config={"lr": 0.001},
                             dashboard_url="ws://127.0.0.1:PORT") as monitor:
            for step in range(1000):
                loss = 1.0 / (step + 1)
                monitor.log_metrics({"loss": loss}, step=step)
        transport = monitor.transport
        print(monitor.run_id, transport.sent, transport.dropped, transport.pending)
    """.replace("PORT", str(server.port)), {})  # fmt: skip
    out, _ = finished(script)
    run_id, sent, dropped, pending = out.split()
    assert (sent, dropped, pending) == ("1002", "0", "0")  # run_start, 1,000 steps, the end
    runs = httpx.get(server.url + "/api/runs").json()
    (run,) = [r for r in runs if r["run_id"] == run_id]
    assert (run["name"], run["config"], run["status"], run["step"]) == (
        "experiment",
        {"lr": 0.001},
        "completed",
        999,
    )
    assert server.sample('training_events_total{event_type="metric_update"}') == 1000


def test_5000_metrics_a_second_arrive_whole(serve) -> None:
    server = serve(*QUIET)
    script = child("""
        import time
        from runwatch_sdk import TrainingMonitor
        with TrainingMonitor(run_name="fast") as monitor:
            start = time.perf_counter()
            for step in range(10_000):  # two seconds at 5,000 a second
                while time.perf_counter() < start + step / 5000:
                    pass
                monitor.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        print(monitor.transport.sent, monitor.transport.dropped)
    """, {"RUNWATCH_URL": server.url})  # fmt: skip
    out, _ = finished(script)
    assert out.split() == ["10002", "0"]
    assert server.sample('training_events_total{event_type="metric_update"}') == 10_000
    assert server.sample("runwatch_events_duplicate_total") == 0


def test_a_runwatch_down_for_the_first_seconds_gets_everything_in_order(serve, tmp_path) -> None:
    port = free_port()
    script = child(
        """
        import time
        from runwatch_sdk import TrainingMonitor
        with TrainingMonitor(run_name="early", config={"seed": 1}) as monitor:
            print(monitor.run_id, flush=True)
            for step in range(3000):  # about three seconds, runwatch down for the first
                monitor.log_metrics({"loss": float(step)}, step=step)
                time.sleep(0.0005)
            monitor.save_checkpoint("last.pt", metrics={"loss": 2999.0})
        print(monitor.transport.sent, monitor.transport.dropped, monitor.transport.pending)
    """,
        {"RUNWATCH_URL": f"http://127.0.0.1:{port}", "RUNWATCH_LOCAL_DIR": str(tmp_path)},
    )
    run_id = script.stdout.readline().split()[0]
    spool = tmp_path / "spool"
    wait_for(lambda: any(spool.glob("*.jsonl")), what="the first batch spooled")
    server = serve(*QUIET, port=port)
    out, _ = finished(script)
    assert out.split() == ["3003", "0", "0"]
    runs = {r["run_id"]: r for r in httpx.get(server.url + "/api/runs").json()}
    run = runs[run_id]
    assert (run["name"], run["config"], run["status"], run["step"]) == (
        "early",
        {"seed": 1},
        "completed",
        2999,
    )
    assert run["metrics"] == {"loss": 2999.0}  # the last applied last: in order
    assert server.sample('training_events_total{event_type="metric_update"}') == 3000
    assert server.sample('runwatch_events_rejected_total{reason="out_of_order",source="http"}') == 0
    assert not list(spool.glob("*.jsonl"))  # delivered, removed


def test_a_batch_sent_twice_is_applied_once(serve) -> None:
    server = serve(*QUIET)
    body = "".join(json.dumps({"event_type": "metric_update", "run_id": "twice", "step": step,
                               "metrics": {"loss": 1.0}, "event_id": f"s1.{step + 1}"}) + "\n"
                   for step in range(5))  # fmt: skip
    for _ in range(2):  # the answer to the first was lost: the sender sends it again
        assert httpx.post(server.url + "/v1/events", content=body).status_code == 202
    assert server.sample('training_events_total{event_type="metric_update"}') == 5
    assert server.sample("runwatch_events_duplicate_total") == 5
    later = body.replace('"s1.', '"s1.1')  # the same sender's later events: s1.11 ... s1.15
    assert httpx.post(server.url + "/v1/events", content=later).status_code == 202
    assert server.sample('training_events_total{event_type="metric_update"}') == 10


def test_a_script_and_a_serve_with_no_settings_find_each_other(serve, tmp_path) -> None:
    """The default local folder (here RUNWATCH_LOCAL_DIR, for both, as a user's shell would
    hold /tmp/runwatch): the events file, the PID file, and a spool left by a script that
    exited while the runwatch it was told of was away."""
    local = {"RUNWATCH_LOCAL_DIR": str(tmp_path / "local"), "RUNWATCH_QUIET": ""}
    plain = child("""
        from runwatch_sdk import TrainingMonitor
        with TrainingMonitor(run_name="plain") as monitor:
            monitor.log_metrics({"loss": 0.5})
            monitor.log_metrics({"loss": 0.25, "note": "not a number"})
            monitor.log_metrics({"loss": 0.125, "note": "again"})
        print(monitor.run_id, monitor.values_left_out)
    """, local)  # fmt: skip
    out, err = finished(plain)
    plain_id, left_out = out.split()
    assert left_out == "2" and err.count("'note' is not a number") == 1
    events = tmp_path / "local" / "events.jsonl"
    assert err.splitlines()[0] == (f"runwatch: events go to {events} (runwatch serve follows "
                                   "it by default)")  # fmt: skip
    assert "'note' is not a number (str): left out" in err
    away = child("""
        from runwatch_sdk import TrainingMonitor, HttpTransport
        with TrainingMonitor(run_name="away", transport=HttpTransport(
                "http://127.0.0.1:PORT", close_timeout=0.5)) as monitor:
            monitor.log_metrics({"loss": 0.5}, step=3)
        print(monitor.run_id)
    """.replace("PORT", str(free_port())), local)  # fmt: skip
    away_id = finished(away)[0].split()[0]
    server = serve(*QUIET, env=local)  # no --events, no --pid-file

    def status(run_id: str) -> str | None:
        runs = {r["run_id"]: r for r in httpx.get(server.url + "/api/runs").json()}
        return runs[run_id]["status"] if run_id in runs else None

    wait_for(lambda: status(plain_id) == status(away_id) == "completed", what="both runs")
    runs = {r["run_id"]: r for r in httpx.get(server.url + "/api/runs").json()}
    assert runs[plain_id]["step"] == 2  # steps counted by the SDK: 0, 1, 2
    assert runs[away_id]["step"] == 3


def test_serve_warns_of_a_runwatch_variable_it_does_not_know(tmp_path) -> None:
    env = {**os.environ, "RUNWATCH_LISTN": "127.0.0.1:1", "RUNWATCH_URL": "http://x"}
    result = subprocess.run([*RUNWATCH, "serve", "--listen", "127.0.0.1:bad"], env=env,
                            capture_output=True, text=True, cwd=ROOT, timeout=30)  # fmt: skip
    assert (
        "RUNWATCH_LISTN is set but is no runwatch variable (did you mean RUNWATCH_LISTEN?)"
        in result.stderr
    )
    assert "RUNWATCH_URL" not in result.stderr  # the SDK's, in the same shell
