"""The mission's path as compose wires it, every program real and on its shipped config:
``runwatch demo`` with compose's command line (fake GPUs, the reference trading bridge and
backend) plus a training run instrumented with the SDK in a child process → the
OpenTelemetry Collector (otel-collector/config.yaml, built from otel-collector/builder.yaml)
→ Prometheus 3 (prometheus/prometheus.yml and its rules) → Alertmanager
(alertmanager/alertmanager.yml) → a webhook.

Checked from outside: every panel query of every board returns data from that Prometheus,
which scrapes no runwatch (every series came through the collector), with the boards'
variables filled in as Grafana fills them; the run's trace and its event log leave the
collector for Tempo's and Loki's addresses (stand-in receivers here: Tempo, Loki and Grafana
are AGPL programs these machines do not build) with the run → stage → target spans at the
events' times and the log lines carrying their trace ids; the crash pages someone."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.core.trace_ids import trace_id_hex
from tests.integration.test_alerting import Webhook
from tests.integration.test_dashboards import boards, targets
from tests.receivers import GrpcTraceReceiver, OtlpReceiver
from tests.stack import (
    Program,
    alertmanager,
    collector,
    compose_command,
    every_panel_answers,
    prometheus,
    query,
)
from tests.support import RUNWATCH, free_port, wait_for

pytestmark = pytest.mark.timeout(300)  # the stack starts within the first test's time

RUN_ID = "stack_sdk_run"
CHILD = """
    import sys, time
    from runwatch_sdk import HttpTransport, TrainingMonitor
    monitor = TrainingMonitor("stack", {"model": "tiny", "learning_rate": 1e-3},
                              transport=HttpTransport(sys.argv[1]), run_id=sys.argv[2],
                              total_steps=1000)
    monitor.stage("preparing")
    monitor.progress(50.0, "reading the data")
    monitor.stage("training")
    for index, name in enumerate(["alpha", "beta"], start=1):
        with monitor.target(name, index=index, total=2) as result:
            for step in range(1, 21):
                monitor.log_metrics({"loss": 1.0 / step, "learning_rate": 1e-3}, step=step)
            result["best_auc"] = 0.7 + index / 10
        best = monitor.save_checkpoint(f"ckpt_{name}.pt", metrics={"loss": 0.05})
    monitor.mark_best_checkpoint(best)
    monitor.error("fold 3 had no positives", error_type="ValueError", recoverable=True)
    monitor.transport.close()
    print("ready", flush=True)
    time.sleep(600)  # until kill -9: a crash
"""


@dataclass
class Stack:
    prometheus: str
    runwatch: str
    tempo: GrpcTraceReceiver
    loki: OtlpReceiver
    webhook: Webhook
    child: subprocess.Popen


@pytest.fixture(scope="module")
def stack(bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    webhook, tempo, loki = Webhook(), GrpcTraceReceiver(), OtlpReceiver()
    programs: list[Program] = []
    child: subprocess.Popen | None = None
    try:
        am, am_url = alertmanager(bin_dir, tmp, webhook.url)
        programs.append(am)
        prometheus_port = free_port()
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        otelcol, otlp_http, otelcol_metrics = collector(
            bin_dir, tmp, "config.yaml", traces_to=tempo.url.removeprefix("http://"),
            logs_to=loki.url, metrics_to=prometheus_url + "/api/v1/write",
        )  # fmt: skip
        programs.append(otelcol)
        prom, _ = prometheus(bin_dir, tmp, am_url.removeprefix("http://"), otelcol_metrics,
                             port=prometheus_port)  # fmt: skip
        programs.append(prom)
        bridge_port, runwatch_port = free_port(), free_port()
        bridge_url = f"http://127.0.0.1:{bridge_port}"
        programs.append(Program(
            [sys.executable, "-m", "exporter.simulate.reference_bridge",
             "--listen", f"127.0.0.1:{bridge_port}"],
            tmp / "bridge.log", bridge_url + "/", "the reference bridge",
        ))  # fmt: skip
        command = compose_command("runwatch", {
            "--web.listen-address=:19464": f"--web.listen-address=127.0.0.1:{runwatch_port}",
            "http://reference-bridge:8765": bridge_url,
            "http://otel-collector:4318": otlp_http,
            "http://prometheus:9090": prometheus_url,
        })  # fmt: skip
        pids = tmp / "pids"
        speed = ["--event-interval", "0.02", "--gpu-interval", "0.5", "--system-interval", "0.5",
                 "--bridge-interval", "0.5", "--backend-interval", "0.5", "--pid-interval", "0.5",
                 "--pid-file", str(pids / "*.pid")]  # fmt: skip
        runwatch_url = f"http://127.0.0.1:{runwatch_port}"
        environment = {
            **os.environ,
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=compose",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "RUNWATCH_PID_DIR": str(pids),
        }
        programs.append(
            Program(
                [*RUNWATCH, *command, *speed],
                tmp / "runwatch.log",
                runwatch_url + "/healthz",
                "runwatch demo",
                env=environment,
            )
        )
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), runwatch_url, RUN_ID],
            env=environment, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        yield Stack(prometheus_url, runwatch_url, tempo, loki, webhook, child)
    finally:
        if child is not None and child.poll() is None:
            child.kill()
        for program in reversed(programs):
            program.stop()
        webhook.stop()
        tempo.stop()
        loki.stop()


def test_no_runwatch_is_scraped_every_series_came_through_the_collector(stack: Stack) -> None:
    def scraped() -> list[dict[str, Any]]:
        found = httpx.get(stack.prometheus + "/api/v1/targets").json()["data"]["activeTargets"]
        return found if all(t["health"] == "up" for t in found) else []

    targets_ = wait_for(scraped, timeout=60, what="Prometheus's targets scraped")
    assert {t["labels"]["job"] for t in targets_} == {"otel-collector"}
    build = wait_for(
        lambda: query(stack.prometheus, "runwatch_build_info"), timeout=60, what="build info"
    )
    labels = build[0]["metric"]
    # service.name and service.instance.id, as the boards' $job and $instance read them
    assert (labels["job"], labels["instance"]) == ("runwatch", "runwatch:19464"), labels
    assert labels["deployment_environment"] == "compose"  # OTEL_RESOURCE_ATTRIBUTES


def test_every_board_query_returns_data_with_grafanas_variables(stack: Stack) -> None:
    wait_for(lambda: query(stack.prometheus, f'training_checkpoint_best{{run_id="{RUN_ID}"}}'),
             timeout=90, what="the SDK run's best checkpoint in Prometheus")  # fmt: skip
    every_panel_answers(stack.prometheus, RUN_ID)


def test_the_crash_pages_someone_through_alertmanager(stack: Stack) -> None:
    stack.child.send_signal(signal.SIGKILL)
    stack.child.wait(timeout=10)
    crashed = wait_for(lambda: stack.webhook.alert("RunwatchRunCrashed", "firing"), timeout=120,
                       what="the crash notification")  # fmt: skip
    _, notification, alert = crashed
    assert alert["labels"]["run_id"] == RUN_ID and alert["labels"]["severity"] == "critical"
    assert notification["receiver"] == "runwatch-page"
    status = query(stack.prometheus, f'training_run_status{{run_id="{RUN_ID}", status="crashed"}}')
    assert status and status[0]["value"][1] == "1", json.dumps(status)
    assert time.time() - crashed[0] < 600


def test_the_run_trace_leaves_for_tempo_with_spans_at_event_times(stack: Stack) -> None:
    trace = trace_id_hex(RUN_ID)

    def spans() -> list[dict[str, Any]]:
        found = [s for s in stack.tempo.spans if s["trace_id"] == trace]
        return found if {s["name"] for s in found} >= {"target alpha", "target beta"} else []

    # after the crash (the test before): every span of the run has ended and been sent
    found = wait_for(spans, timeout=60, what="the run's stage and target spans at Tempo")
    by_id = {s["span_id"]: s for s in found}
    for target in (s for s in found if s["name"].startswith("target ")):
        stage = by_id[target["parent_span_id"]]
        assert stage["attributes"]["training.stage"] == "training", stage
        run = by_id[stage["parent_span_id"]]  # run -> stage -> target
        assert run["parent_span_id"] == "" and run["attributes"]["training.run_id"] == RUN_ID
        assert run["status"] == 2  # ERROR: the run crashed
        assert run["start"] <= stage["start"] <= target["start"] <= target["end"]
    # the spans start at the events' own times: those the event log carries for them
    records = {
        r["span_id"]: r
        for r in stack.loki.logs
        if r["trace_id"] == trace and r["attributes"].get("event_type") == "target_start"
    }
    for target in (s for s in found if s["name"].startswith("target ")):
        assert records[target["span_id"]]["time"] == target["start"]


def test_the_event_log_leaves_for_loki_with_trace_ids(stack: Stack) -> None:
    trace = trace_id_hex(RUN_ID)

    def records() -> list[dict[str, Any]]:
        found = [r for r in stack.loki.logs if r["attributes"].get("training.run_id") == RUN_ID]
        kinds = {r["attributes"].get("event_type") for r in found}
        return found if {"error", "checkpoint_saved", "target_complete"} <= kinds else []

    found = wait_for(records, timeout=60, what="the SDK run's event log at Loki")
    assert all(r["trace_id"] == trace for r in found)
    assert all(r["resource"]["service.name"] == "runwatch" for r in found)  # Loki's stream label
    error = next(r for r in found if r["attributes"]["event_type"] == "error")
    assert "fold 3 had no positives" in error["body"]
    # each board's LogQL filters on attributes the records carry (dots as underscores)
    carried = {key.replace(".", "_") for r in found for key in r["attributes"]}
    for name, board in boards().items():
        for title, expr in targets(board, "loki"):
            filters = set(re.findall(r"\|\s*(\w+)\s*=~?", expr))
            assert filters <= carried | {"service_name"}, (name, title, filters - carried)
