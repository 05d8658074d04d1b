"""The compose stack started natively: each real program with the project's own config file,
changed only where compose's service names and container paths must become this machine's
addresses and folders (docs/stack.md, "The stack in the tests", lists every substitution).

A substitution names the text it replaces and fails when that text is not in the shipped
file, so a config that moves on without its test breaks the test instead of silently
running something else."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import ROOT, free_port, wait_for


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
                 timeout: float = 60.0) -> None:  # fmt: skip
        self.log = log
        self.what = what
        self.process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
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


def prometheus(bin_dir: Path, tmp: Path, alertmanager_address: str, collector_metrics: str,
               *, port: int | None = None, flags: tuple[str, ...] = ()) -> tuple[Program, str]:
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
        "host: 0.0.0.0\n                port: 8888": f"host: 127.0.0.1\n                port: {telemetry}",
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
