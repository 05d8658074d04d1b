"""The push path: OTLP metrics into VictoriaMetrics (OTLP→Prometheus naming) arrive under
exactly the names that /metrics shows, so one dashboard serves both paths."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.simulate.synthetic import synthetic_router_cycle
from tests.process_tree import start_tree
from tests.support import ROOT, RUN, RUNWATCH, free_port, jsonl, wait_for


@pytest.fixture
def victoria_metrics(bin_dir: Path, tmp_path: Path) -> Iterator[str]:
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
            yield url
        finally:
            vm.terminate()
            vm.wait(timeout=30)


def names_in(exposition: str, prefixes: tuple[str, ...]) -> set[str]:
    return {
        sample.name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name.startswith(prefixes)
    }


def pushed_names(url: str, prefixes: tuple[str, ...]) -> set[str]:
    httpx.get(url + "/internal/force_flush")
    names = httpx.get(url + "/api/v1/label/__name__/values").json()["data"]
    return {name for name in names if name.startswith(prefixes)}


def series_labels(url: str, selector: str) -> list[dict[str, str]]:
    return httpx.get(url + "/api/v1/series", params={"match[]": selector}).json()["data"]


def test_pushed_metric_names_equal_the_scraped_ones(victoria_metrics: str, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(*RUN))
    router = tmp_path / "router.jsonl"  # a pipeline pass of the built-in router mapping
    router.write_bytes(jsonl(*synthetic_router_cycle(0, 1_700_000_000.0, 30.0),
                             *synthetic_router_cycle(1, 1_700_001_000.0, 30.0)))  # fmt: skip
    replay = [*RUNWATCH, "replay", str(path), "--router-events", str(router)]
    scraped = subprocess.run(
        [*replay, "--otlp-endpoint", victoria_metrics + "/opentelemetry"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    ).stdout
    prefixes = ("training_", "runwatch_", "router_")
    expected = names_in(scraped, prefixes)
    assert {"router_host_up", "router_flow_step_seconds_bucket"} <= expected
    wait_for(lambda: pushed_names(victoria_metrics, prefixes) >= expected, timeout=30,
             what="pushed names")  # fmt: skip
    assert pushed_names(victoria_metrics, prefixes) == expected
    labels = series_labels(victoria_metrics, 'training_metric{key="loss"}')
    assert labels[0]["run_id"] == "run_1"


def test_prometheus_naming_pushes_gpu_and_system_metrics_as_scraped(
    victoria_metrics: str, serve, tmp_path: Path
) -> None:
    tree = start_tree(tmp_path)
    try:
        server = serve(
            "--fake-gpus", "2", "--gpu-pcie-throughput", "--gpu-interval", "0.2",
            "--system-interval", "0.2",
            "--pid-file", str(tree.pid_file), "--otlp-naming", "prometheus",
            "--otlp-endpoint", victoria_metrics + "/opentelemetry",
            env={"OTEL_METRIC_EXPORT_INTERVAL": "300"},
        )  # fmt: skip
        # runwatch's own process_* are scraped only: they describe the exporter, not the run
        prefixes = ("gpu_", "system_", "training_run_process")
        wait_for(lambda: "training_run_process_memory_usage_bytes{" in (text := server.metrics())
                 and "system_cpu_utilization_ratio{" in text, what="samples")  # fmt: skip
        expected = names_in(server.metrics(), prefixes)
        assert {"gpu_utilization_ratio", "gpu_energy_joules_total", "system_cpu_utilization_ratio",
                "gpu_pcie_throughput_bytes_per_second",
                "training_run_process_cpu_time_seconds_total"} <= expected  # fmt: skip
        wait_for(lambda: pushed_names(victoria_metrics, prefixes) >= expected, timeout=30,
                 what="pushed names")  # fmt: skip
        assert pushed_names(victoria_metrics, prefixes) == expected
        (temperature, *_) = series_labels(victoria_metrics, 'gpu_temperature_celsius{gpu="1"}')
        assert temperature["uuid"].startswith("GPU-") and "hw_id" not in temperature
        (cpu, *_) = series_labels(victoria_metrics, "training_run_process_cpu_time_seconds_total")
        assert cpu["run_id"] == tree.run_id and cpu["cpu_mode"] in ("user", "system")
    finally:
        tree.kill()
