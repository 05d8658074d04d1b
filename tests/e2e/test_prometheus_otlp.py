"""runwatch's OTLP straight into Prometheus 3, no collector: ``--otlp-endpoint
http://HOST:9090/api/v1/otlp --otlp-naming prometheus --no-otlp-traces --no-otlp-logs``
into a real Prometheus 3 started with the shipped prometheus.yml and rules and
``--web.enable-otlp-receiver``, its OTLP translation left at its default. Every family
/metrics shows arrives under the same name, the `instance` label is the address runwatch
serves on, and every board query and every alert selector finds its series."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.stack import every_panel_answers, prometheus, query
from tests.support import ROOT, RUNWATCH, free_port, wait_for

pytestmark = pytest.mark.timeout(300)  # Prometheus and the demo start in the first test

PREFIXES = ("training_", "trading_", "gpu_", "system_", "router_", "runwatch_")


@dataclass
class Direct:
    prometheus: str
    runwatch: str


@pytest.fixture(scope="module")
def direct(bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Direct]:
    tmp = tmp_path_factory.mktemp("prometheus-otlp")
    # no Alertmanager or collector here: their addresses point at closed ports
    prom, prometheus_url = prometheus(bin_dir, tmp, f"127.0.0.1:{free_port()}",
                                      f"127.0.0.1:{free_port()}",
                                      flags=("--web.enable-otlp-receiver",))  # fmt: skip
    port = free_port()
    runwatch_url = f"http://127.0.0.1:{port}"
    log = tmp / "runwatch.log"
    demo = subprocess.Popen(
        [*RUNWATCH, "demo", "--web.listen-address", f"127.0.0.1:{port}", "--fake-gpus", "2",
         "--gpu-pcie-throughput", "--otlp-endpoint", prometheus_url + "/api/v1/otlp",
         "--otlp-naming", "prometheus",
         "--no-otlp-traces", "--no-otlp-logs",
         "--event-interval", "0.02", "--gpu-interval", "0.5", "--system-interval", "0.5",
         "--bridge-interval", "0.5", "--backend-interval", "0.5"],
        cwd=ROOT, env={**os.environ, "OTEL_METRIC_EXPORT_INTERVAL": "1000"},
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: httpx.get(runwatch_url + "/healthz").status_code == 200, timeout=60,
                 what="runwatch demo")  # fmt: skip
        yield Direct(prometheus_url, runwatch_url)
    finally:
        demo.terminate()
        demo.wait(timeout=30)
        prom.stop()


def names(exposition: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(exposition)
            for sample in family.samples if sample.name.startswith(PREFIXES)}  # fmt: skip


def test_every_family_arrives_under_its_metrics_name(direct: Direct) -> None:
    # the unit edges: _ratio gauges (unit 1), _total counters, per-second rates, histograms
    edges = {
        "gpu_utilization_ratio",
        "gpu_temperature_celsius",
        "gpu_energy_joules_total",
        "gpu_pcie_throughput_bytes_per_second",
        "router_flow_step_seconds_bucket",
        "system_cpu_utilization_ratio",
        "training_run_progress_ratio",
    }

    def scraped() -> set[str]:
        found = names(httpx.get(direct.runwatch + "/metrics").text)
        return found if found >= edges else set()

    expected = wait_for(scraped, timeout=60, what="the demo's families on /metrics")

    def arrived() -> set[str]:
        data = httpx.get(direct.prometheus + "/api/v1/label/__name__/values").json()["data"]
        return {name for name in data if name.startswith(PREFIXES)}

    try:
        wait_for(lambda: arrived() >= expected, timeout=60, what="the pushed names")
    except AssertionError:
        raise AssertionError(
            f"not in Prometheus: {sorted(expected - arrived())}; "
            f"there instead: {sorted(arrived() - expected)}"
        ) from None
    # and nothing under another name: each name that arrived shows on /metrics (read after
    # it arrived; a family the demo shows only at times, such as the current target, may
    # take a few scrapes to show again)
    pushed, shown = arrived(), set()

    def all_shown() -> bool:
        shown.update(names(httpx.get(direct.runwatch + "/metrics").text))
        return pushed <= shown

    try:
        wait_for(all_shown, timeout=60, what="the pushed names on /metrics")
    except AssertionError:
        raise AssertionError(f"pushed, never on /metrics: {sorted(pushed - shown)}") from None


def test_the_series_carry_runwatchs_job_and_instance(direct: Direct) -> None:
    (build,) = wait_for(lambda: query(direct.prometheus, "runwatch_build_info"), timeout=60,
                        what="build info")  # fmt: skip
    address = direct.runwatch.removeprefix("http://")
    assert (build["metric"]["job"], build["metric"]["instance"]) == ("runwatch", address)


def test_every_board_query_returns_data(direct: Direct) -> None:
    def demo_run() -> str | None:
        runs = query(direct.prometheus, 'training_checkpoint_best{run_id=~"demo_.*"}')
        return runs[0]["metric"]["run_id"] if runs else None

    run = wait_for(demo_run, timeout=90, what="a demo run with checkpoints")
    every_panel_answers(direct.prometheus, run)


def test_every_alert_selector_finds_series(direct: Direct) -> None:
    from tests.integration.test_rules import rules

    selector = r"\b(?:training|trading|gpu|runwatch|system|router)_[a-z_]+(?:\{[^}]*\})?"
    selectors = {m.group(0) for rule in rules() for m in re.finditer(selector, rule["expr"])}
    assert len(selectors) >= 20
    missing = set(selectors)

    def found() -> bool:
        missing.difference_update([s for s in list(missing) if query(direct.prometheus, s)])
        return not missing

    try:
        wait_for(found, timeout=90, what="every alert selector's series")
    except AssertionError:
        raise AssertionError(f"alert selectors with no series: {sorted(missing)}") from None
