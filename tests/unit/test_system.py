"""The system source in-process, against the real psutil: the host's readings. Process
trees, ``runwatch serve`` and ``runwatch demo``: tests/e2e/test_system.py."""

from __future__ import annotations

import psutil
import pytest

from exporter.sources.attribution import no_runs
from exporter.sources.sampled.system import SystemSource
from tests.support import wait_for


def test_host_readings_agree_with_psutil() -> None:
    source = SystemSource(no_runs)
    source.open()
    host = wait_for(lambda: (h := source.sample().host).cpu_utilization and h,
                    what="CPU time to pass")  # fmt: skip
    assert host.memory_limit == psutil.virtual_memory().total
    assert host.cpu_count == psutil.cpu_count()
    assert sum(ratio for _, ratio in host.cpu_utilization) == pytest.approx(1.0)
    assert {mode for mode, _ in host.cpu_utilization} >= {"user", "system", "idle"}
    assert dict(host.memory_states)["used"] > 0 and host.memory_available > 0
    assert {d for d, _ in host.network_io} == {"transmit", "receive"}
    assert host.load_average is not None and len(host.load_average) == 3
