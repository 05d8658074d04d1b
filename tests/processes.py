"""Real processes the tests start and stop: a ``runwatch serve``, a Prometheus, the
reference trading bridge."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import ROOT, RUNWATCH, free_port, wait_for


class Server:
    """A ``runwatch serve`` subprocess."""

    def __init__(
        self,
        args: list[str],
        tmp: Path,
        env: dict[str, str] | None = None,
        scheme: str = "http",
        port: int | None = None,
        preexec_fn: Callable[[], None] | None = None,
        **client: Any,
    ) -> None:
        self.port = port or free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.client = client  # httpx options: verify, auth
        self.log = tmp / f"runwatch-{self.port}.log"
        self._log_file = self.log.open("wb")
        # a local folder of its own: no other test's default events are followed
        local = {"RUNWATCH_LOCAL_DIR": str(tmp / f"local-{self.port}")}
        self.process = subprocess.Popen(
            [*RUNWATCH, "serve", "--listen", f"127.0.0.1:{self.port}", *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **local, **(env or {})},
            cwd=ROOT,
            preexec_fn=preexec_fn,  # e.g. resource limits of the child alone
        )
        wait_for(self._ready, what=f"runwatch serve on {self.url}")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"runwatch exited: {self.log.read_text()}")
        return httpx.get(self.url + "/readyz", timeout=1, **self.client).status_code == 200

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=5, **self.client).text

    def sample(self, series: str) -> float | None:
        """The value of one exact series line on /metrics (name and labels as printed)."""
        for line in self.metrics().splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


class Prometheus:
    """A Prometheus scraping ``target`` as job runwatch every 500 ms, or run with the
    ``config`` given (a prometheus.yml as a mapping)."""

    def __init__(
        self,
        binary: Path,
        target: str,
        tmp: Path,
        config: dict[str, Any] | None = None,
        flags: tuple[str, ...] = (),
    ) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.config = tmp / "prometheus.yml"
        config = config or {
            "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
            "scrape_configs": [{"job_name": "runwatch", "static_configs": [{"targets": [target]}]}],
        }
        self.config.write_text(yaml.safe_dump(config))
        self.log = (tmp / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                *flags,
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


class Bridge:
    """``python -m exporter.simulate.reference_bridge`` on a fixed port, restartable."""

    def __init__(self, tmp: Path, tick: float, warmup: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = ["--tick", str(tick), "--warmup", str(warmup)]
        self._log = (tmp / f"bridge-{self.port}.log").open("ab")
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter.simulate.reference_bridge", "--listen",
             f"127.0.0.1:{self.port}", *self._args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        wait_for(lambda: httpx.get(self.url + "/api/state", timeout=1).status_code == 200,
                 what="reference bridge")  # fmt: skip

    def get(self, path: str) -> dict:
        return httpx.get(self.url + path, timeout=5).json()

    def faults(self, **faults: object) -> None:
        httpx.post(self.url + "/_faults", json=faults, timeout=5).raise_for_status()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.kill()
        self._log.close()
