"""The goodput account of a live run: the worked timeline of docs/goodput.md played at a
twentieth of its speed by real training scripts through the SDK (its phases, a checkpoint,
a ``kill -9`` and a resume with ``resume_or_create``), read from a real ``runwatch
serve``'s /metrics. Each cause must be the scripted run's, within a second of the full-size
timeline (0.05 s here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.core.events import parse_line
from exporter.core.state import ProcessObservation, State
from tests.support import ROOT, wait_for
from tests.unit.test_goodput import T0, figures, scripted_run

SPEED = 20.0  # the live run takes 1/20 of the scripted run's time

SCRIPT = """
import os, signal, sys, time
from runwatch_sdk import FileTransport, TrainingMonitor
events, checkpoints, start, attempt = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
SPEED = 20.0

def until(at):  # sleep until `at` seconds of the scripted timeline (no drift)
    time.sleep(max(0.0, start + at / SPEED - time.time()))

def open_run(at):
    until(at)
    return TrainingMonitor.resume_or_create("worked", checkpoints, total_steps=40,
                                            transport=FileTransport(events))

if attempt == "first":
    monitor = open_run(0)
    until(30)
    monitor.log_metrics({"loss": 1.0}, step=0)
    at = 30
    for step in range(1, 21):
        with monitor.phase("data_loading"):
            until(at + 0.5)
        at += 2
        until(at)
        monitor.log_metrics({"loss": 1.0}, step=step)
    with monitor.phase("checkpoint_save"):
        until(74)
        open(os.path.join(checkpoints, "c20.pt"), "w").write("weights")
    monitor.save_checkpoint(os.path.join(checkpoints, "c20.pt"), step=20)
    with monitor.phase("evaluation"):
        until(134)
    at = 134
    for step in range(21, 31):
        at += 2
        until(at)
        monitor.log_metrics({"loss": 1.0}, step=step)
    until(155)
    os.kill(os.getpid(), signal.SIGKILL)  # 1 s into step 31
else:
    monitor = open_run(275)
    until(290)
    monitor.log_metrics({"loss": 1.0}, step=21)
    at = 290
    for step in range(22, 51):
        at += 20 if step == 30 else 2
        until(at)
        monitor.log_metrics({"loss": 1.0}, step=step)
    until(369)
    monitor.complete()
"""


def expected() -> dict[str, float]:
    """The scripted run's figures, its crash seen by the PID file as runwatch sees the live
    one's (the attempt ends at its last step), at the live run's speed."""
    lines = scripted_run()
    crash = next(i for i, line in enumerate(lines) if b"crashed" in line)
    state = State()
    for line in lines[:crash]:
        state.apply(parse_line(line))
    state.observe_process(ProcessObservation("r", False, T0, T0 + 156.0))
    for line in lines[crash + 1 :]:
        state.apply(parse_line(line))
    ledger = state.runs["r"].goodput
    return {
        **{cause: seconds / SPEED for cause, seconds in figures(ledger).items()},
        "wall_clock": ledger.elapsed / SPEED,
        "restarts": ledger.restarts,
        "lost_steps": ledger.lost_steps,
    }


def live(server, run_id: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    def one(name: str, **labels: str) -> float:
        text = ",".join(f'{k}="{v}"' for k, v in {**labels, "run_id": run_id}.items())
        value = server.sample(f"training_{name}{{{text}}}")
        assert value is not None, f"training_{name}{{{text}}} is not on /metrics"
        return value

    figures = {
        cause: one("badput_seconds_total", cause=cause)
        for cause in expected()
        if cause not in ("goodput", "at_risk", "wall_clock", "restarts", "lost_steps")
    }
    return {
        **figures,
        "goodput": one("goodput_seconds_total"),
        "at_risk": one("work_at_risk_seconds"),
        "wall_clock": one("wall_clock_seconds_total"),
        "restarts": one("restarts_total"),
        "lost_steps": one("lost_steps_total"),
    }  # fmt: skip


def test_a_live_run_with_a_kill_and_a_resume_gives_the_scripted_figures(
    serve, tmp_path: Path
) -> None:
    events, checkpoints, pids = tmp_path / "events.jsonl", tmp_path / "ckpt", tmp_path / "pids"
    events.touch()
    server = serve("--events", str(events), "--pid-file", str(pids / "*.pid"),
                   "--pid-interval", "0.1", "--no-nvml", "--no-system")  # fmt: skip
    env = {**os.environ, "RUNWATCH_PID_DIR": str(pids), "RUNWATCH_QUIET": "1",
           "RUNWATCH_LOCAL_DIR": str(tmp_path / "local")}  # fmt: skip
    start = time.time() + 1.0

    def attempt(name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", SCRIPT, str(events), str(checkpoints),
                                 repr(start), name], cwd=ROOT, env=env)  # fmt: skip

    first = attempt("first")
    assert first.wait(timeout=30) == -9
    run_id = json.loads(events.read_text().splitlines()[0])["run_id"]
    status = f'training_run_status{{run_id="{run_id}",status="crashed"}}'
    wait_for(lambda: server.sample(status) == 1.0, what="the kill -9 seen as a crash")
    assert time.time() < start + 275 / SPEED - 1, "too slow to resume on schedule"
    second = attempt("second")
    assert second.wait(timeout=30) == 0
    done = f'training_run_status{{run_id="{run_id}",status="completed"}}'
    wait_for(lambda: server.sample(done) == 1.0, what="the resumed run's end")
    want, got = expected(), live(server, run_id)
    assert got == pytest.approx(want, abs=1.0 / SPEED), {
        key: round(got[key] - want[key], 3) for key in want
    }
