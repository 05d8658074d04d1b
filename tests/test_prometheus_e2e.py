"""End to end: a real Prometheus scrapes a live ``runwatch serve`` while events are written."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import event, free_port, jsonl, wait_for


class Prometheus:
    def __init__(self, binary: Path, target: str, tmp: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = tmp / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 500ms, evaluation_interval: 500ms}\n"
            "scrape_configs:\n"
            "  - job_name: runwatch\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.log = (tmp / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: httpx.get(self.url + "/-/ready").status_code == 200, what="Prometheus")

    def query(self, promql: str) -> dict[str, float]:
        """Instant query; the result as {label set rendered: value}."""
        data = httpx.get(self.url + "/api/v1/query", params={"query": promql}).json()["data"]
        return {
            ",".join(
                f"{k}={v}"
                for k, v in sorted(r["metric"].items())
                if k not in ("job", "instance", "__name__")
            ): float(r["value"][1])
            for r in data["result"]
        }

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return next(iter(result.values())) if len(result) == 1 else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def prometheus(bin_dir: Path, tmp_path: Path) -> Iterator:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        started.append(Prometheus(bin_dir / "prometheus", target, tmp_path))
        return started[-1]

    yield start
    for instance in started:
        instance.stop()


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
