"""The push path: OTLP metrics into VictoriaMetrics (OTLP→Prometheus naming) arrive under
exactly the names that /metrics shows, so one dashboard serves both paths."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ROOT, RUNWATCH, free_port, jsonl, wait_for
from .test_otlp import RUN


def test_pushed_metric_names_equal_the_scraped_ones(bin_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "vm.log").open("wb") as log:
        vm = subprocess.Popen(
            [
                bin_dir / "victoria-metrics",
                f"-httpListenAddr=127.0.0.1:{port}",
                f"-storageDataPath={tmp_path / 'vm'}",
                "-opentelemetry.usePrometheusNaming",
                "-search.latencyOffset=0s",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: httpx.get(url + "/health").status_code == 200, what="VM")
            path = tmp_path / "events.jsonl"
            path.write_bytes(jsonl(*RUN))
            scraped = subprocess.run(
                [*RUNWATCH, "replay", str(path), "--otlp-endpoint", url + "/opentelemetry"],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=60,
                check=True,
            ).stdout
            expected = {
                sample.name
                for family in text_string_to_metric_families(scraped)
                for sample in family.samples
            }

            def pushed() -> set[str]:
                httpx.get(url + "/internal/force_flush")
                names = httpx.get(url + "/api/v1/label/__name__/values").json()["data"]
                return {n for n in names if n.startswith(("training_", "runwatch_"))}

            wait_for(lambda: pushed() >= expected, timeout=30, what="pushed names")
            assert pushed() == expected
            labels = httpx.get(
                url + "/api/v1/series", params={"match[]": 'training_metric{key="loss"}'}
            ).json()["data"]
            assert labels[0]["run_id"] == "run_1"
        finally:
            vm.terminate()
            vm.wait(timeout=30)
