"""Alerts reach a person: the shipped Alertmanager config passes ``amtool check-config`` and
routes as it says, and end to end, with the real programs, a training process killed with
SIGKILL pages through Alertmanager into a webhook: ``runwatch serve`` follows the run, an
evaluator runs prometheus/rules (Prometheus, or vmalert over VictoriaMetrics as in
compose.scale.yaml), and Alertmanager runs alertmanager/alertmanager.yml with only its
receiver address changed. The crash notification carries the documented labels and
annotations; the resolved one follows when the crashed run's retention ends, not before."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.processes import Prometheus
from tests.support import ROOT, free_port, wait_for

SHIPPED = ROOT / "alertmanager"
SHIPPED_RECEIVER_URL = "http://alert-log:9095/alerts"
RULES = ROOT / "prometheus" / "rules"
RETENTION = 30.0  # seconds the crashed run (and so its alert) is kept
CHILD = """
    import sys, time
    from runwatch_sdk import FileTransport, TrainingMonitor
    monitor = TrainingMonitor("crashing", transport=FileTransport(sys.argv[1]), run_id=sys.argv[2])
    monitor.stage("training")
    monitor.log_metrics({"loss": 0.5}, step=1)
    print("ready", flush=True)
    time.sleep(600)  # until kill -9
"""


class Webhook:
    """A webhook receiver: each notification Alertmanager posts, with when it arrived."""

    def __init__(self) -> None:
        self.notifications: list[tuple[float, dict[str, Any]]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def alert(self, alertname: str, status: str) -> tuple[float, dict, dict] | None:
        """The first (arrival time, notification, alert) with that alert in that status."""
        for at, notification in list(self.notifications):
            for alert in notification["alerts"]:
                if alert["labels"]["alertname"] == alertname and alert["status"] == status:
                    return at, notification, alert
        return None

    def stop(self) -> None:
        self._server.shutdown()


def shipped_config_for(tmp: Path, receiver_url: str) -> Path:
    """alertmanager/ copied, with the receivers' address (and nothing else) changed."""
    folder = tmp / "alertmanager"
    shutil.copytree(SHIPPED, folder)
    config = folder / "alertmanager.yml"
    text = config.read_text()
    assert text.count(SHIPPED_RECEIVER_URL) == 2  # both receivers post to the alert log
    config.write_text(text.replace(SHIPPED_RECEIVER_URL, receiver_url))
    return config


def start(command: list[Any], log: Path, ready: str, what: str) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_for(lambda: httpx.get(ready).status_code == 200, timeout=30, what=what)
    return process


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in reversed(started):  # vmalert before the VictoriaMetrics it writes to
        process.terminate()
        process.wait(timeout=30)


def test_the_shipped_config_passes_amtool(bin_dir: Path) -> None:
    checked = subprocess.run([bin_dir / "amtool", "check-config", SHIPPED / "alertmanager.yml"],
                             capture_output=True, text=True)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "4 inhibit rules" in checked.stdout and "1 templates" in checked.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=RunwatchRunCrashed", "severity=critical", "run_id=r"], "runwatch-page"),
        (["alertname=RunwatchGpuTooHot", "severity=critical", "gpu=0"], "runwatch-page"),
        (["alertname=RunwatchRunFailed", "severity=warning", "run_id=r"], "runwatch-log"),
        (["alertname=SomethingElse"], "runwatch-log"),
    ],
)
def test_alerts_route_by_severity(bin_dir: Path, labels: list[str], receiver: str) -> None:
    routed = subprocess.run(
        [bin_dir / "amtool", "config", "routes", "test",
         f"--config.file={SHIPPED / 'alertmanager.yml'}", *labels],
        capture_output=True, text=True,
    )  # fmt: skip
    assert routed.stdout.strip() == receiver, routed.stdout + routed.stderr


def prometheus_evaluator(
    bin_dir: Path, tmp: Path, target: str, alertmanager: str, _: list
) -> Callable[[str], Any]:
    """The shipped prometheus.yml, its addresses changed and its clocks at one second."""
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES / "*.yml")]
    config["scrape_configs"] = [{"job_name": "runwatch", "static_configs": [{"targets": [target]}]}]
    (managers,) = config["alerting"]["alertmanagers"]
    managers["static_configs"] = [{"targets": [alertmanager]}]
    prometheus = Prometheus(bin_dir / "prometheus", target, tmp, config)
    return prometheus.stop


def vmalert_evaluator(
    bin_dir: Path, tmp: Path, target: str, alertmanager: str, processes: list
) -> Callable[[], Any]:
    """compose.scale.yaml's evaluator: vmalert over VictoriaMetrics scraping runwatch."""
    scrape = tmp / "scrape.yml"
    scrape.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "runwatch", "static_configs": [{"targets": [target]}]}],
    }))  # fmt: skip
    vm = f"127.0.0.1:{free_port()}"
    processes.append(start(
        [bin_dir / "victoria-metrics", f"-httpListenAddr={vm}", f"-storageDataPath={tmp / 'vm'}",
         f"-promscrape.config={scrape}", "-search.latencyOffset=0s"],
        tmp / "vm.log", f"http://{vm}/health", "VictoriaMetrics",
    ))  # fmt: skip
    vmalert = f"127.0.0.1:{free_port()}"
    processes.append(start(
        [bin_dir / "vmalert", f"-rule={RULES}/*.yml", f"-datasource.url=http://{vm}",
         f"-remoteWrite.url=http://{vm}", f"-notifier.url=http://{alertmanager}",
         "-evaluationInterval=1s", "-rule.evalDelay=0s",  # a single node: no ingestion lag
         "-disableAlertgroupLabel", f"-httpListenAddr={vmalert}"],
        tmp / "vmalert.log", f"http://{vmalert}/health", "vmalert",
    ))  # fmt: skip
    return lambda: None


@pytest.mark.timeout(240)
@pytest.mark.parametrize("evaluator", [prometheus_evaluator, vmalert_evaluator],
                         ids=["prometheus", "vmalert"])  # fmt: skip
def test_a_killed_training_process_pages_and_resolves_after_its_retention(
    bin_dir: Path, tmp_path: Path, serve, processes, evaluator
) -> None:
    webhook = Webhook()
    alertmanager = f"127.0.0.1:{free_port()}"
    processes.append(start(
        [bin_dir / "prometheus-alertmanager",
         f"--config.file={shipped_config_for(tmp_path, webhook.url)}",
         f"--storage.path={tmp_path / 'am'}", f"--web.listen-address={alertmanager}",
         "--cluster.listen-address="],
        tmp_path / "alertmanager.log", f"http://{alertmanager}/-/ready", "Alertmanager",
    ))  # fmt: skip
    events = tmp_path / "events.jsonl"
    server = serve("--events", str(events), "--pid-file", str(tmp_path / "pids" / "*.pid"),
                   "--pid-interval", "0.1", "--finished-run-retention", f"{RETENTION}s",
                   "--no-nvml", "--no-system")  # fmt: skip
    target = server.url.removeprefix("http://")
    stop_evaluator = evaluator(bin_dir, tmp_path, target, alertmanager, processes)
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), str(events), "crash_e2e"],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdout.readline() == "ready\n"
        wait_for(lambda: server.sample('training_process_up{run_id="crash_e2e"}') == 1,
                 what="the run's PID file seen")  # fmt: skip
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        crashed = 'training_run_status{run_id="crash_e2e",status="crashed"}'
        wait_for(lambda: server.sample(crashed) == 1, what="the run crashed")
        crashed_at = time.time()

        at, notification, alert = wait_for(
            lambda: webhook.alert("RunwatchRunCrashed", "firing"), timeout=60, what="the page"
        )
        assert notification["receiver"] == "runwatch-page"
        assert notification["groupLabels"] == {"alertname": "RunwatchRunCrashed",
                                               "job": "runwatch", "instance": target,
                                               "run_id": "crash_e2e"}  # fmt: skip
        assert alert["labels"] == {"alertname": "RunwatchRunCrashed", "severity": "critical",
                                   "job": "runwatch", "instance": target, "run_id": "crash_e2e",
                                   "status": "crashed"}  # fmt: skip
        assert alert["annotations"] == {
            "summary": "Training run crash_e2e crashed.",
            "description": f"The process of run crash_e2e on {target} exited without run_complete.",
            "runbook_url": "https://github.com/runwatch/runwatch/blob/main/docs/alerts.md#runwatchruncrashed",
        }
        assert at - crashed_at < RETENTION  # paged well within the retention

        resolved_at, _, _ = wait_for(
            lambda: webhook.alert("RunwatchRunCrashed", "resolved"), timeout=150,
            what="the resolved notification",
        )  # fmt: skip
        assert resolved_at >= crashed_at + RETENTION  # the alert held for the retention
        assert server.sample(crashed) is None  # the run was forgotten
        assert server.sample('runwatch_runs_forgotten_total{reason="retention"}') == 1
        assert server.sample('runwatch_series_dropped_total{reason="max_runs"}') == 0
    finally:
        stop_evaluator()
        webhook.stop()


def test_the_alert_log_prints_one_line_per_alert(tmp_path: Path) -> None:
    """compose's receiver, run as compose runs it, fed the payload Alertmanager posts."""
    port = free_port()
    log = tmp_path / "alert-log.log"
    receiver = start([sys.executable, "-m", "exporter.simulate.alert_log",
                      "--listen", f"127.0.0.1:{port}"],
                     log, f"http://127.0.0.1:{port}/healthz", "the alert log")  # fmt: skip
    try:
        payload = {"version": "4", "status": "firing", "receiver": "runwatch-page", "alerts": [
            {"status": "firing", "labels": {"alertname": "RunwatchRunCrashed",
             "severity": "critical", "run_id": "r1", "instance": "runwatch:19464"},
             "annotations": {"summary": "Training run r1 crashed."}},
            {"status": "resolved", "labels": {"alertname": "RunwatchGpuTooHot", "gpu": "0"}},
        ]}  # fmt: skip
        answer = httpx.post(f"http://127.0.0.1:{port}/alerts", json=payload)
        assert answer.json() == {"received": 2}
        assert httpx.post(f"http://127.0.0.1:{port}/alerts", content=b"\xff{").status_code == 400
        assert httpx.post(f"http://127.0.0.1:{port}/alerts", json=[1]).status_code == 400

        def printed() -> list[str] | None:
            lines = [line for line in log.read_text().splitlines() if " | " in line]
            return lines if len(lines) >= 2 else None

        lines = wait_for(printed, what="a line per alert")
        assert lines == [
            "FIRING critical RunwatchRunCrashed run_id=r1 instance=runwatch:19464"
            " | Training run r1 crashed.",
            "RESOLVED - RunwatchGpuTooHot gpu=0 | ",
        ]
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(body=st.one_of(
    JSON.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"alerts": st.lists(JSON, max_size=3)}).map(
        lambda value: json.dumps(value).encode()),
    st.binary(max_size=64),
))  # fmt: skip
def test_the_alert_log_answers_any_body_without_failing(body: bytes) -> None:
    from fastapi.testclient import TestClient

    from exporter.simulate.alert_log import create_app

    answer = TestClient(create_app()).post("/alerts", content=body)
    assert answer.status_code in (200, 400), answer.text
