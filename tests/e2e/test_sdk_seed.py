"""Seed 002's SDK as its users write it: every method through a real ``runwatch serve``,
the seed's constructor calls, numpy values, NaN losses, lost events counted, the run's
lifecycle in real processes (kill -9, exit without closing, Ctrl-C, fork, DDP ranks)."""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from runwatch_sdk import FileTransport, HttpTransport, TrainingMonitor
from runwatch_sdk.monitor import transport_for

from tests.e2e.test_sdk import replay
from tests.support import ROOT, free_port, wait_for


def api_run(server, run_id: str) -> dict:
    runs = httpx.get(server.url + "/api/runs", timeout=5).json()
    return next(run for run in runs if run["run_id"] == run_id)


def run_script(code: str, *args: object, env: dict[str, str] | None = None):
    """``python -c CODE ARGS...`` in a fresh interpreter, as a user's script runs."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


# Each public method of TrainingMonitor, and what runwatch must show after it was called.
EXERCISED = {"log_metrics", "save_checkpoint", "mark_best_checkpoint", "set_status", "stage",
             "progress", "target", "error", "complete", "end", "close", "get_last_checkpoint",
             "resume_or_create", "validate_checkpoint", "phase", "send_phases"}  # fmt: skip


def test_every_public_method_is_exercised_below() -> None:
    public = {name for name, _ in inspect.getmembers(TrainingMonitor) if not name.startswith("_")}
    assert public == EXERCISED, "a new method needs a test through runwatch serve"


def test_each_method_produces_the_state_it_means_in_runwatch_serve(serve, tmp_path) -> None:
    server = serve("--no-nvml", "--no-system")
    monitor = TrainingMonitor.resume_or_create(
        "every-method", tmp_path / "ckpt", config={"lr": 0.1}, dashboard_url=server.url
    )
    run = monitor.run_id

    def state() -> dict:
        monitor.transport.flush()  # send now rather than at the next batch
        return api_run(server, run)

    assert wait_for(lambda: state()["config"] == {"lr": 0.1}, what="run_start")
    monitor.stage("training")
    wait_for(lambda: state()["stage"] == "training", what="stage")
    monitor.progress(40, message="epoch 2", targets_total=5)
    wait_for(lambda: state()["progress"]["training"] == 0.4, what="progress")
    monitor.log_metrics({"loss": np.float32(0.5), "acc": np.int64(1)}, step=np.int64(7))
    wait_for(lambda: state()["metrics"] == {"loss": 0.5, "acc": 1.0} and state()["step"] == 7,
             what="log_metrics with numpy values")  # fmt: skip
    with monitor.phase("evaluation"):  # sent with the next event (send_phases: now)
        time.sleep(0.05)
    monitor.send_phases()
    wait_for(lambda: (state()["goodput"] or {}).get("badput_seconds", {}).get("evaluation", 0)
             >= 0.05, what="a phase in the goodput account")  # fmt: skip
    first = monitor.save_checkpoint("a.pt", metrics={"loss": 0.5}, metadata={"epoch": 2})
    second = monitor.save_checkpoint("b.pt", metrics={"loss": 0.9})
    monitor.mark_best_checkpoint(first)
    wait_for(lambda: state()["best_checkpoint"] == first and len(state()["checkpoints"]) == 2,
             what="checkpoints and the best")  # fmt: skip
    assert monitor.get_last_checkpoint()["checkpoint_id"] == second
    # the star moves without the checkpoint being saved again (its time and metrics kept)
    assert [c["checkpoint_id"] for c in state()["checkpoints"]] == [first, second]
    assert server.sample(f'training_checkpoint_metric{{checkpoint_id="{first}",key="loss",'
                         f'run_id="{run}"}}') == 0.5  # fmt: skip
    assert monitor.validate_checkpoint(tmp_path / "missing.pt") is False
    wait_for(lambda: server.sample(f'training_run_checkpoints_invalid{{run_id="{run}"}}') == 1,
             what="the invalid checkpoint counted")  # fmt: skip
    assert server.sample(f'training_checkpoint_valid{{checkpoint_id="ckpt_000003",'
                         f'run_id="{run}"}}') == 0  # fmt: skip
    with monitor.target("fold_1", index=0, total=5) as result:
        result["best_auc"] = np.float64(0.75)
    wait_for(
        lambda: (
            state()["target_best_auc"]
            == [{"stage": "training", "target": "fold_1", "best_auc": 0.75}]
        ),
        what="target",
    )
    monitor.error("disk slow", "IOError", recoverable=True)
    wait_for(lambda: state()["errors"] == [{"error_type": "IOError", "recoverable": True,
                                            "count": 1}], what="error")  # fmt: skip
    monitor.set_status("interrupted")
    wait_for(lambda: state()["status"] == "interrupted", what="set_status")
    monitor.set_status("running")
    wait_for(lambda: state()["status"] == "running", what="set_status running again")
    monitor.complete("failed")
    wait_for(lambda: state()["status"] == "failed", what="complete")
    resumed = TrainingMonitor.resume_or_create("every-method", tmp_path / "ckpt",
                                               dashboard_url=server.url)  # fmt: skip
    assert resumed.run_id == run and resumed.is_resumed
    resumed.end()  # completed, and the transport closed (everything delivered)
    assert api_run(server, run)["status"] == "completed"
    monitor.close()
    assert monitor.transport.dropped == resumed.transport.dropped == 0


def test_the_seed_constructor_calls_run_as_written(serve, tmp_path, monkeypatch) -> None:
    server = serve("--no-nvml", "--no-system")
    # seed 002: dashboard_url="ws://localhost:8000", the dashboard's own address
    monitor = TrainingMonitor(run_name="my_experiment", config={"lr": 0.001, "batch_size": 128},
                              dashboard_url=f"ws://127.0.0.1:{server.port}")  # fmt: skip
    monitor.log_metrics({"loss": 0.42, "accuracy": 0.85}, step=1000)
    monitor.set_status("completed")
    monitor.close()
    assert api_run(server, monitor.run_id)["status"] == "completed"
    assert api_run(server, monitor.run_id)["metrics"] == {"loss": 0.42, "accuracy": 0.85}
    # with nothing named: RUNWATCH_URL, else RUNWATCH_EVENTS_FILE, else the documented file
    monkeypatch.setenv("RUNWATCH_EVENTS_FILE", str(tmp_path / "new" / "events.jsonl"))
    with TrainingMonitor(run_name="experiment") as monitor:
        for step in range(3):
            monitor.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    text = replay(tmp_path / "new" / "events.jsonl")  # the folder was created
    assert f'training_run_status{{run_id="{monitor.run_id}",status="completed"}} 1.0' in text
    monkeypatch.setenv("RUNWATCH_URL", server.url)
    sender = transport_for()
    assert isinstance(sender, HttpTransport)
    sender.close()  # its thread started: left open, it would be closed at exit
    monkeypatch.delenv("RUNWATCH_URL")
    monkeypatch.delenv("RUNWATCH_EVENTS_FILE")
    monkeypatch.delenv("RUNWATCH_LOCAL_DIR")
    assert transport_for().path == "/tmp/runwatch/events.jsonl"
    monkeypatch.setenv("RUNWATCH_LOCAL_DIR", str(tmp_path / "local"))
    assert transport_for().path == str(tmp_path / "local" / "events.jsonl")
    with pytest.raises(ValueError, match="http"):
        TrainingMonitor("x", dashboard_url="ftp://host")


def test_the_documented_sdk_example_runs_verbatim_on_a_fresh_machine(tmp_path: Path) -> None:
    section = (ROOT / "docs" / "sdk.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    events = tmp_path / "fresh" / "runwatch" / "events.jsonl"  # no such folder yet
    result = run_script(snippet, env={"RUNWATCH_EVENTS_FILE": str(events), "RUNWATCH_QUIET": ""})
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"runwatch: events go to {events} (give runwatch serve --events {events})\n"
    )  # once; not the local folder's, so serve must be told
    text = replay(events)
    assert re.search(r'training_run_status\{run_id="resnet50_[^"]+",status="completed"\} 1.0', text)
    assert re.search(r'training_target_best_auc\{run_id="resnet50_[^"]+",stage="training",'
                     r'target="fold_1"\} 0.81', text)  # fmt: skip
    # its step history keeps every loss, though the loop logs them in one millisecond
    history = subprocess.run([sys.executable, "-m", "exporter", "replay", str(events),
                              "--history", "openmetrics"], capture_output=True, text=True,
                             cwd=ROOT, timeout=60, check=True)  # fmt: skip
    assert not history.stderr
    losses = [line.split()[1] for line in history.stdout.splitlines()
              if line.startswith("training_step_metric{") and 'key="loss"' in line]  # fmt: skip
    steps = [line.split()[1] for line in history.stdout.splitlines()
             if line.startswith("training_history_step{")]  # fmt: skip
    assert (losses, steps) == (["2.3", "1.1", "0.7", "0.7"], ["0", "1", "2", "2"])


def test_a_nan_loss_arrives_as_nan_counted_per_key_with_the_other_keys(tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    with TrainingMonitor("diverging", transport=FileTransport(path)) as monitor:
        monitor.log_metrics({"loss": 0.7, "learning_rate": 0.1}, step=1)
        monitor.log_metrics({"loss": float("nan"), "learning_rate": 0.2, "grad": math.inf}, 2)
        monitor.log_metrics({"loss": np.float32("nan")}, step=3)
    text = replay(path)
    run = monitor.run_id
    assert f'training_metric{{key="loss",run_id="{run}"}} NaN' in text
    assert f'training_metric{{key="learning_rate",run_id="{run}"}} 0.2' in text  # not lost
    assert f'training_metric{{key="grad",run_id="{run}"}} +Inf' in text
    assert f'training_metric_non_finite_total{{key="loss",run_id="{run}"}} 2.0' in text
    assert f'training_metric_non_finite_total{{key="grad",run_id="{run}"}} 1.0' in text
    assert f'training_step{{run_id="{run}"}} 3.0' in text
    rejected = [line for line in text.splitlines() if line.startswith("runwatch_events_rejected")]
    assert all(line.endswith(" 0.0") for line in rejected)


def test_an_unreachable_runwatch_at_exit_costs_a_bounded_wait_and_leaves_a_spool(
    tmp_path: Path,
) -> None:
    code = f"""
        import time
        from runwatch_sdk import HttpTransport, TrainingMonitor
        transport = HttpTransport("http://127.0.0.1:{free_port()}", close_timeout=1.5)
        monitor = TrainingMonitor("offline", transport=transport)
        for step in range(21):
            monitor.log_metrics({{"loss": 1.0}}, step)
        started = time.monotonic()
        monitor.end()
        print(transport.dropped, transport.pending, round(time.monotonic() - started))
    """
    result = run_script(code, env={"RUNWATCH_LOCAL_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    dropped, pending, waited = result.stdout.split()
    assert (dropped, pending) == ("0", "23")  # run_start, 21 updates, run_complete
    assert int(waited) <= 7  # close_timeout, plus at most one request's timeout
    (spool,) = (tmp_path / "spool").glob("*.jsonl")
    assert "23 events not delivered to http://127.0.0.1" in result.stderr
    assert f"are kept in {spool}" in result.stderr
    text = replay(spool)  # an event file like any other
    assert re.search(r'training_run_status\{run_id="offline_[^"]+",status="completed"\} 1.0', text)
    assert re.search(r'training_step\{run_id="offline_[^"]+"\} 20.0', text)


def test_close_delivers_everything_buffered(serve) -> None:
    server = serve("--no-nvml", "--no-system")
    transport = HttpTransport(server.url)
    monitor = TrainingMonitor("burst", transport=transport)
    for step in range(998):  # fills the buffer of 1,000 in one go
        monitor.log_metrics({"loss": 1.0}, step)
    monitor.end()
    assert (transport.sent, transport.dropped) == (1000, 0)
    assert api_run(server, monitor.run_id)["step"] == 997
    second = TrainingMonitor("next run", transport=transport)  # one transport, several runs
    second.end()
    assert (transport.sent, transport.dropped) == (1002, 0)
    assert api_run(server, second.run_id)["status"] == "completed"


def test_basic_auth_and_tls_reach_a_protected_runwatch(serve, tmp_path, self_signed_cert) -> None:
    cert, key = self_signed_cert
    tls = ssl.create_default_context(cafile=str(cert))
    (tmp_path / "password").write_text("s3cret\n")
    server = serve("--tls-cert-file", str(cert), "--tls-key-file", str(key),
                   "--basic-auth-user", "trainer", "--basic-auth-password-file",
                   str(tmp_path / "password"), "--no-nvml", "--no-system", scheme="https",
                   verify=tls, auth=("trainer", "s3cret"))  # fmt: skip
    good = HttpTransport(server.url, username="trainer", password="s3cret", ca_file=cert)
    monitor = TrainingMonitor("secure", transport=good)
    monitor.end()
    assert (good.sent, good.dropped) == (2, 0)
    wrong = HttpTransport(server.url, username="trainer", password="nope", ca_file=cert,
                          close_timeout=0.5)  # fmt: skip
    TrainingMonitor("refused", transport=wrong).end()
    assert (wrong.sent, wrong.dropped, wrong.pending) == (0, 0, 2) and wrong.failed_posts >= 1
    wrong.spool_path.unlink()  # kept for a later try with the right password
    runs = httpx.get(server.url + "/api/runs", verify=tls, auth=("trainer", "s3cret"))
    assert [run["name"] for run in runs.json()] == ["secure"]


def test_a_forked_child_sends_its_own_events(serve) -> None:
    server = serve("--no-nvml", "--no-system")
    code = f"""
        import os
        from runwatch_sdk import HttpTransport, TrainingMonitor
        transport = HttpTransport("{server.url}")
        parent = TrainingMonitor("parent", transport=transport, run_id="parent_run")
        pid = os.fork()
        if pid == 0:  # a data-loader worker, a multiprocessing child
            child = TrainingMonitor("child", transport=transport, run_id="child_run")
            child.end()
            os._exit(0 if transport.sent == 2 else 1)
        assert os.waitpid(pid, 0)[1] == 0
        parent.end()
        print(transport.sent, transport.dropped)
    """
    result = run_script(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "0"]
    assert api_run(server, "child_run")["status"] == "completed"
    assert api_run(server, "parent_run")["status"] == "completed"


SCRIPT = """
    import os, sys, time
    from runwatch_sdk import FileTransport, TrainingMonitor
    monitor = TrainingMonitor("job", transport=FileTransport(sys.argv[1]), run_id=sys.argv[2])
    monitor.stage("training")
    monitor.log_metrics({{"loss": 0.5}}, step=1)
    {ending}
"""


@pytest.mark.parametrize(
    ("ending", "status"),
    [
        ("pass  # exits without with, complete or close", "ended"),
        ("raise RuntimeError('CUDA out of memory')  # uncaught", "failed"),
        ("raise KeyboardInterrupt", "interrupted"),
        ("with monitor:\n        raise KeyboardInterrupt  # Ctrl-C inside with", "interrupted"),
        ("TrainingMonitor('job', transport=FileTransport(sys.argv[1]))  # a cell re-run",
         "interrupted"),
        ("print('ready', flush=True); time.sleep(600)  # then kill -9", "crashed"),
    ],
)  # fmt: skip
def test_how_a_real_process_ends_is_how_its_run_ends(serve, tmp_path, ending, status) -> None:
    events = tmp_path / "events.jsonl"
    run = f"run_{abs(hash(ending))}"
    server = serve("--events", str(events), "--pid-file", str(tmp_path / "pids" / "*.pid"),
                   "--pid-interval", "0.1", "--no-nvml", "--no-system")  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT).format(ending=ending), str(events), run],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    if status == "crashed":
        assert child.stdout.readline() == "ready\n"
        wait_for(lambda: server.sample(f'training_process_up{{run_id="{run}"}}') == 1,
                 what="the PID file seen")  # fmt: skip
        child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    wait_for(lambda: server.sample(f'training_run_status{{run_id="{run}",status="{status}"}}')
             == 1, what=f"the run {status}")  # fmt: skip
    if status != "crashed":  # a clean end removes the PID file
        assert not (tmp_path / "pids" / f"{run}.pid").exists()
        time.sleep(0.5)  # several PID checks: the exited process is no crash
        assert server.sample(f'training_run_status{{run_id="{run}",status="crashed"}}') == 0


def test_only_rank_zero_reports_under_ddp(tmp_path) -> None:
    events = tmp_path / "events.jsonl"
    for rank in ("1", "0"):
        code = SCRIPT.format(ending="monitor.end()")
        result = run_script(code, events, f"ddp_{rank}", env={"RANK": rank})
        assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert {line["run_id"] for line in lines} == {"ddp_0"}
    assert not list((tmp_path / "pids").glob("ddp_1*"))


def test_crash_recovery_as_the_seed_writes_it(tmp_path) -> None:
    events, checkpoints = tmp_path / "events.jsonl", tmp_path / "checkpoints"
    code = """
        import sys
        from runwatch_sdk import FileTransport, TrainingMonitor
        monitor = TrainingMonitor.resume_or_create(run_name="my_experiment",
            checkpoint_dir=sys.argv[2], transport=FileTransport(sys.argv[1]))
        if monitor.is_resumed:
            last_checkpoint = monitor.get_last_checkpoint()
            start_step = last_checkpoint['step']
        else:
            start_step = 0
        for step in range(start_step, start_step + 100):
            monitor.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        monitor.save_checkpoint(f"{sys.argv[2]}/model_{step}.pt", metrics={"loss": 0.1},
                                metadata={"optimizer_state": "adam"}, step=step)
        print(monitor.run_id, monitor.is_resumed, start_step)
        if not monitor.is_resumed:
            import os; os._exit(1)  # crashes: no run_complete
    """
    first, second = (run_script(code, events, checkpoints) for _ in range(2))
    run_id, resumed, start = second.stdout.split()
    assert first.stdout.split() == [run_id, "False", "0"]
    assert (resumed, start) == ("True", "99")
    monitor = TrainingMonitor.resume_or_create("my_experiment", checkpoints,
                                               transport=FileTransport(events))  # fmt: skip
    last = monitor.get_last_checkpoint()
    assert last["filepath"].endswith("model_198.pt") and last["step"] == 198
    assert (
        last["metadata"] == {"optimizer_state": "adam"} and last["checkpoint_id"] == "ckpt_000002"
    )
    monitor.end()
    text = replay(events)
    assert f'training_run_status{{run_id="{run_id}",status="completed"}} 1.0' in text
    assert f'training_checkpoint_step{{checkpoint_id="ckpt_000001",run_id="{run_id}"}} 99.0' in text


def test_the_seed_resume_snippet_runs_unchanged_with_a_real_torch_checkpoint(tmp_path) -> None:
    """The crash-recovery snippet as printed (``load_state_dict(last_checkpoint['model'])``)
    after a real crash, and the checkpoint check: a torn file is found invalid."""
    events, checkpoints = tmp_path / "events.jsonl", tmp_path / "checkpoints"
    code = """
        import os, sys, torch
        from runwatch_sdk import FileTransport, TrainingMonitor
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        monitor = TrainingMonitor.resume_or_create(run_name="my_experiment",
            checkpoint_dir=sys.argv[2], transport=FileTransport(sys.argv[1]))
        if monitor.is_resumed:
            last_checkpoint = monitor.get_last_checkpoint()
            model.load_state_dict(last_checkpoint['model'])
            optimizer.load_state_dict(last_checkpoint['optimizer'])
            start_step = last_checkpoint['step']
        else:
            start_step = 0
        for step in range(start_step, start_step + 20):
            loss = model(torch.ones(1, 4)).pow(2).sum()
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            monitor.log_metrics({"loss": loss}, step=step)
        path = f"{sys.argv[2]}/model_{step}.pt"
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step}, path)
        monitor.save_checkpoint(path, metrics={"loss": loss}, step=step)
        print(monitor.validate_checkpoint(path), start_step,
              float(model.weight.sum()))
        if not monitor.is_resumed:
            os._exit(1)  # a crash: no run_complete
        with open(path, "r+b") as torn:
            torn.truncate(100)  # a checkpoint cut short (a full disk)
        print(monitor.validate_checkpoint(path))
    """
    first = run_script(code, events, checkpoints)
    assert first.returncode == 1 and first.stdout.split()[:2] == ["True", "0"], first.stderr
    second = run_script(code, events, checkpoints)
    assert second.returncode == 0, second.stderr
    valid, start, _, torn = second.stdout.split()
    assert (valid, start, torn) == ("True", "19", "False")
    assert "is not valid: torch.load failed" in second.stderr
    # a checkpoint found invalid is never resumed from: the one before it is
    monitor = TrainingMonitor.resume_or_create("my_experiment", checkpoints,
                                               transport=FileTransport(events))  # fmt: skip
    last = monitor.get_last_checkpoint()
    assert last["checkpoint_id"] == "ckpt_000001" and last["step"] == 19 and "model" in last
    monitor.mark_best_checkpoint("ckpt_123")  # unknown: said, and the best is unchanged
    monitor.end()
    text = replay(events)
    run = re.search(r'training_run_status\{run_id="(my_experiment_[^"]+)"', text).group(1)
    assert f'training_run_checkpoints_invalid{{run_id="{run}"}} 1.0' in text
    assert f'training_checkpoint_valid{{checkpoint_id="ckpt_000001",run_id="{run}"}} 1.0' in text
    assert f'training_checkpoint_valid{{checkpoint_id="ckpt_000002",run_id="{run}"}} 0.0' in text


def test_a_monitored_run_gets_its_process_series(serve, tmp_path) -> None:
    """From the PID file the SDK writes; NVML's per-process GPU readings are attributed
    through the same pid (tests/unit/test_nvml.py)."""
    events = tmp_path / "events.jsonl"
    server = serve("--events", str(events), "--pid-file", str(tmp_path / "pids" / "*.pid"),
                   "--pid-interval", "0.1", "--system-interval", "0.2", "--no-nvml")  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT).format(ending="time.sleep(600)"),
         str(events), "attributed"], cwd=ROOT)  # fmt: skip
    try:
        wait_for(lambda: server.sample('training_run_processes{run_id="attributed"}') == 1,
                 what="the run's process tree sampled")  # fmt: skip
        assert (
            server.sample('training_run_process_memory_usage_bytes{run_id="attributed"}') or 0
        ) > 1e6
    finally:
        child.kill()
        child.wait()
