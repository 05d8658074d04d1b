"""End to end: a real Prometheus scrapes a live ``runwatch serve`` while events are written."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import event, jsonl, wait_for


def append(path: Path, *events: dict) -> None:
    with path.open("ab") as out:
        out.write(jsonl(*events))


def test_prometheus_sees_a_run_as_it_happens(
    serve, prometheus, bin_dir: Path, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    t0 = 1_700_000_000
    append(events, event("run_start", run_id="exp1", ts=t0, name="resnet"))
    server = serve("--events", str(events))
    prom = prometheus(f"127.0.0.1:{server.port}")
    wait_for(lambda: prom.value('training_run_info{run_id="exp1"}') == 1, what="first scrape")

    append(
        events,
        event("stage_change", run_id="exp1", ts=t0 + 1, new_stage="ranking"),
        event("progress", run_id="exp1", ts=t0 + 2, stage="ranking", progress_pct=37.5),
        event(
            "error",
            run_id="exp1",
            ts=t0 + 3,
            error_message="fold 3",
            error_type="IOError",
            recoverable=True,
        ),
        event(
            "metric_update",
            run_id="exp1",
            ts=t0 + 4,
            step=10,
            metrics={"loss": 0.75, "learning_rate": 0.001, "my_custom_key": 42},
        ),
        event(
            "checkpoint_saved",
            run_id="exp1",
            ts=t0 + 5,
            checkpoint_id="ckpt_1",
            step=10,
            is_best=True,
            metrics={"loss": 0.75},
        ),
        event("checkpoint_saved", run_id="exp1", ts=t0 + 6, checkpoint_id="ckpt_2", step=20),
    )
    wait_for(
        lambda: prom.value('training_run_progress_ratio{run_id="exp1",stage="ranking"}') == 0.375,
        what="progress in Prometheus",
    )
    assert prom.query('training_run_stage{run_id="exp1"} == 1') == {"run_id=exp1,stage=ranking": 1}
    assert prom.query('training_run_status{run_id="exp1"} == 1') == {
        "run_id=exp1,status=running": 1
    }
    assert prom.value('training_errors_total{run_id="exp1",error_type="IOError"}') == 1
    assert prom.query('training_metric{run_id="exp1"}') == {
        "key=learning_rate,run_id=exp1": 0.001,
        "key=loss,run_id=exp1": 0.75,
        "key=my_custom_key,run_id=exp1": 42,
    }
    assert prom.query('training_checkpoint_best{run_id="exp1"} == 1') == {
        "checkpoint_id=ckpt_1,run_id=exp1": 1
    }
    assert prom.value('training_step{run_id="exp1"}') == 10

    append(events, event("run_complete", run_id="exp1", ts=t0 + 9, status="failed"))
    wait_for(
        lambda: (
            prom.query('training_run_status{run_id="exp1"} == 1')
            == {"run_id=exp1,status=failed": 1}
        ),
        what="failed status",
    )
    assert prom.value('training_run_duration_seconds{run_id="exp1"}') == 9
    assert prom.value('training_stage_duration_seconds{run_id="exp1",stage="ranking"}') == 8
    assert prom.value("sum(training_events_total)") == 8
    assert prom.value('up{job="runwatch"}') == 1
    lint = subprocess.run([bin_dir / "promtool", "check", "metrics"],
                          input=server.metrics().encode(), capture_output=True)  # fmt: skip
    assert (lint.returncode, lint.stdout, lint.stderr) == (0, b"", b"")
