"""The compose stack started natively: each real program with the project's own config file,
changed only where compose's service names and container paths must become this machine's
addresses and folders (docs/stack.md, "The stack in the tests", lists every substitution).

A substitution names the text it replaces and fails when that text is not in the shipped
file, so a config that moves on without its test breaks the test instead of silently
running something else."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.integration.test_dashboards import EMPTY_WHILE_HEALTHY, boards, from_tempo, targets
from tests.support import ROOT, free_port, wait_for


def substituted(path: Path, replacements: Mapping[str, str]) -> str:
    """The shipped file's text with each key replaced; every key must occur in it."""
    text = path.read_text()
    for old, new in replacements.items():
        assert old in text, f"{path.relative_to(ROOT)} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


class Program:
    """A started program, its log kept for the failure message."""

    def __init__(self, command: list[Any], log: Path, ready_url: str, what: str,
                 timeout: float = 60.0, env: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.log = log
        self.what = what
        self.process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                        env=env, cwd=ROOT)  # fmt: skip
        try:
            wait_for(lambda: self._ready(ready_url), timeout=timeout, what=what)
        except AssertionError:
            self.stop()
            raise AssertionError(f"{what} did not start: {self.tail()}") from None

    def _ready(self, url: str) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.what} exited {self.process.returncode}: {self.tail()}")
        return httpx.get(url, timeout=2).status_code == 200

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def alertmanager(bin_dir: Path, tmp: Path, receiver_url: str) -> tuple[Program, str]:
    """Alertmanager on alertmanager/ (copied whole: its templates), posting to ``receiver_url``
    where the shipped file posts to the alert-log service."""
    folder = tmp / "alertmanager"
    shutil.copytree(ROOT / "alertmanager", folder)
    config = folder / "alertmanager.yml"
    config.write_text(substituted(config, {"http://alert-log:9095/alerts": receiver_url}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    program = Program(
        [bin_dir / "prometheus-alertmanager", f"--config.file={config}",
         f"--storage.path={tmp / 'alertmanager-data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        tmp / "alertmanager.log", url + "/-/ready", "Alertmanager",
    )  # fmt: skip
    return program, url


def prometheus(
    bin_dir: Path,
    tmp: Path,
    alertmanager_address: str,
    collector_metrics: str,
    *,
    port: int | None = None,
    flags: tuple[str, ...] = (),
) -> tuple[Program, str]:
    """Prometheus on prometheus/ (its rules beside it) with compose's flags, and ``flags``."""
    folder = tmp / "prometheus"
    shutil.copytree(ROOT / "prometheus", folder)
    config = folder / "prometheus.yml"
    config.write_text(substituted(config, {
        '"alertmanager:9093"': f'"{alertmanager_address}"',
        '"otel-collector:8888"': f'"{collector_metrics}"',
    }))  # fmt: skip
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    compose_flags = [f for f in compose["services"]["prometheus"]["command"]
                     if not f.startswith("--config.file")]  # fmt: skip
    program = Program(
        [bin_dir / "prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", *compose_flags, *flags],
        tmp / "prometheus.log", url + "/-/ready", "Prometheus",
    )  # fmt: skip
    return program, url


def collector(bin_dir: Path, tmp: Path, config_name: str, *, traces_to: str, logs_to: str,
              metrics_to: str) -> tuple[Program, str, str]:  # fmt: skip
    """The collector on otel-collector/<config_name>: its OTLP/HTTP address, its own metrics'
    address. ``traces_to`` replaces Tempo's OTLP/gRPC address, ``logs_to`` Loki's OTLP base
    URL, ``metrics_to`` the remote-write URL."""
    grpc, http, telemetry = free_port(), free_port(), free_port()
    shipped = ROOT / "otel-collector" / config_name
    remote_write = yaml.safe_load(shipped.read_text())["exporters"]["prometheus_remote_write"]
    config = tmp / config_name
    config.write_text(substituted(shipped, {
        "0.0.0.0:4317": f"127.0.0.1:{grpc}",
        "0.0.0.0:4318": f"127.0.0.1:{http}",
        "host: 0.0.0.0\n                port: 8888":
            f"host: 127.0.0.1\n                port: {telemetry}",
        "tempo:4317": traces_to,
        "http://loki:3100/otlp": logs_to,
        remote_write["endpoint"]: metrics_to,
    }))  # fmt: skip
    program = Program([bin_dir / "otelcol-runwatch", f"--config={config}"],
                      tmp / f"{config_name}.log", f"http://127.0.0.1:{telemetry}/metrics",
                      "the collector")  # fmt: skip
    return program, f"http://127.0.0.1:{http}", f"127.0.0.1:{telemetry}"


def compose_command(service: str, replacements: Mapping[str, str]) -> list[str]:
    """A service's command line as compose.yaml gives it, its service addresses replaced."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    command = [str(part) for part in compose["services"][service]["command"]]
    text = "\n".join(command)
    for old, new in replacements.items():
        assert old in text, f"compose.yaml's {service} command no longer contains {old!r}"
        text = text.replace(old, new)
    return text.split("\n")


def query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query's result; a query Prometheus refuses fails the test."""
    response = httpx.get(prometheus_url + "/api/v1/query", params={"query": promql}).json()
    assert response["status"] == "success", (promql, response)
    return response["data"]["result"]


def label_values(prometheus_url: str, expr: str) -> list[str]:
    """What Grafana's ``label_values(selector, label)`` variable query offers."""
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", expr)
    assert match, expr
    series = httpx.get(prometheus_url + "/api/v1/series",
                       params={"match[]": match[1]}).json()["data"]  # fmt: skip
    return sorted({s[match[2]] for s in series if match[2] in s})


def substitute(expr: str, values: dict[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):  # $instance before $in...
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return expr


def grafana_variables(prometheus_url: str, board: dict[str, Any], run: str) -> dict[str, str]:
    """The board's variables as Grafana fills them on opening it: each query variable's
    options from Prometheus, the first for a single value, every option ("All", as a regex
    alternation) for a multi-value one, ``run`` for the run; Grafana's own interval
    variables for a 15 s scrape interval."""
    values = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
    for variable in board["templating"]["list"]:
        name = variable["name"]
        if variable["type"] == "query":
            options = label_values(prometheus_url, substitute(variable["query"], values))
            assert options, f"{board['uid']}: variable {name} offers nothing"
            if name == "run":
                assert run in options, options
                values[name] = run
            elif variable.get("includeAll") or variable.get("multi"):
                values[name] = "(" + "|".join(re.escape(o).replace("\\", "\\\\")
                                              for o in options) + ")"  # fmt: skip
            else:
                values[name] = options[0]
        elif variable["type"] in ("custom", "textbox"):
            values[name] = str(variable.get("current", {}).get("value", variable.get("query")))
    return values


def every_panel_answers(prometheus_url: str, run: str) -> None:
    """Every PromQL panel of every board returns data, its variables filled as Grafana
    fills them (the span-metric panels aside: Tempo writes those)."""
    missing: set[tuple[str, str, str]] = set()
    for name, board in boards().items():
        values = wait_for(lambda board=board: grafana_variables(prometheus_url, board, run),
                          timeout=60, what=f"{name}'s variables")  # fmt: skip
        missing |= {
            (name, title, substitute(expr, values))
            for title, expr in targets(board)
            if (name, title) not in EMPTY_WHILE_HEALTHY and not from_tempo(expr)
        }
    assert len(missing) > 60

    def answered() -> bool:
        missing.difference_update([q for q in list(missing) if query(prometheus_url, q[2])])
        return not missing

    try:
        wait_for(answered, timeout=120, what="every panel's data")
    except AssertionError:
        raise AssertionError(f"panels with no data: {sorted(missing)}") from None
