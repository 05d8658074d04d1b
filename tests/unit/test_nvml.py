"""The NVML source against the fake NVML (pynvml's interface, constants and errors), and
against the real pynvml where the machine has no driver."""

from __future__ import annotations

import logging
import time

import pynvml
import pytest

from exporter.pipeline import Pipeline
from exporter.sources.attribution import no_runs
from exporter.sources.sampled.fake_nvml import FakeGpu, FakeNvml, FakeProcess
from exporter.sources.sampled.nvml import NvmlSource
from exporter.sources.sampled.sampling import PeriodicSampler, SourceUnavailable
from exporter.telemetry.exposition import Exposition
from tests.nvml_support import GIB, by_index, open_source
from tests.support import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_readings_arrive_in_base_units() -> None:
    clock = Clock()
    gpu = FakeGpu(processes=[FakeProcess(pid=4242, memory=2 * GIB)])
    source, errors = open_source(FakeNvml([gpu, FakeGpu()], clock=clock))
    try:
        sample = source.sample()
    finally:
        source.close()
    first = by_index(sample, 0)
    # at t=0 the fake's load is 0.5 on GPU 0: 50 % busy, 367.5 W of 700, 56 °C
    assert first.device.uuid.startswith("GPU-") and first.device.name == "NVIDIA H100 80GB HBM3"
    assert first.device.pci_bus_id == "00000000:18:00.0"  # bytes from NVML, decoded
    assert (first.utilization, first.memory_utilization) == (0.5, 0.3)
    assert (first.power, first.power_limit, first.temperature) == (367.5, 700.0, 56)
    assert first.memory_total == 80 * GIB
    assert first.memory_used == 2 * GIB + 512 * (1 << 20)
    assert first.memory_used + first.memory_free == first.memory_total
    assert first.sm_clock == pytest.approx(1980e6 * 0.7, rel=1e-3)
    assert first.fan_speed == 0.55 and first.processes == 1
    assert dict(first.ecc_errors) == {"corrected": 0.0, "uncorrected": 0.0}
    assert dict(first.clock_event_reasons)["gpu_idle"] is False
    assert first.pcie_throughput == ()  # opt-in only
    assert sample.driver_version == "550.54.15" and errors == []


def test_energy_is_a_counter_integrating_power() -> None:
    clock = Clock()
    source, _ = open_source(FakeNvml([FakeGpu()], clock=clock))
    try:
        first = by_index(source.sample(), 0).energy
        clock.now += 10
        reading = by_index(source.sample(), 0)
    finally:
        source.close()
    assert reading.energy - first == pytest.approx(10 * reading.power, rel=0.01)


def test_pcie_throughput_only_when_asked() -> None:
    nvml = FakeNvml([FakeGpu()], clock=Clock())
    source, _ = open_source(nvml, pcie_throughput=True)
    try:
        reading = by_index(source.sample(), 0)
    finally:
        source.close()
    assert dict(reading.pcie_throughput) == {"transmit": 1_000_000 * 1024.0,
                                             "receive": 1_000_000 * 1024.0}  # fmt: skip
    quiet = FakeNvml([FakeGpu()])
    source, _ = open_source(quiet)
    source.sample()
    source.close()
    assert "nvmlDeviceGetPcieThroughput" not in quiet.calls


def test_an_unsupported_reading_is_dropped_silently_and_not_asked_again(caplog) -> None:
    gpu = FakeGpu(failures={"nvmlDeviceGetFanSpeed": pynvml.NVML_ERROR_NOT_SUPPORTED})
    nvml = FakeNvml([gpu])
    source, errors = open_source(nvml)
    with caplog.at_level(logging.INFO):
        samples = [source.sample() for _ in range(3)]
    source.close()
    assert all(by_index(s, 0).fan_speed is None for s in samples)
    assert all(by_index(s, 0).temperature is not None for s in samples)
    assert nvml.calls["nvmlDeviceGetFanSpeed"] == 1
    assert errors == [] and "FanSpeed" not in caplog.text


def test_a_lost_gpu_drops_its_readings_counts_and_logs_once(caplog) -> None:
    lost = FakeGpu()
    source, errors = open_source(FakeNvml([lost, FakeGpu()]))
    lost.lost = True
    with caplog.at_level(logging.WARNING):
        samples = [source.sample() for _ in range(3)]
    source.close()
    for sample in samples:
        gone, fine = by_index(sample, 0), by_index(sample, 1)
        assert gone.temperature is None and gone.utilization is None and gone.energy is None
        assert fine.temperature is not None and fine.utilization is not None
    assert set(errors) == {"gpu_is_lost"} and len(errors) >= 3
    assert caplog.text.count("GPU is lost") == 1


def test_mig_devices_report_memory_and_processes_but_no_utilisation() -> None:
    gpu = FakeGpu(
        mig_devices=2,
        processes=[FakeProcess(1001, 3 * GIB, mig_device=0), FakeProcess(1002, 5 * GIB,
                                                                         mig_device=1)],
    )  # fmt: skip
    source, _ = open_source(FakeNvml([gpu, FakeGpu()]))
    sample = source.sample()
    source.close()
    instances = sorted(g.device.gpu_instance for g in sample.gpus if g.device.index == 0)
    assert instances == ["", "1", "2"]
    parent, first, second = by_index(sample, 0), by_index(sample, 0, "1"), by_index(sample, 0, "2")
    assert parent.utilization is None and parent.temperature is not None  # MIG on: no util
    assert first.device.uuid.startswith("MIG-") and "MIG" in first.device.name
    assert first.memory_total == 40 * GIB and first.memory_used == 3 * GIB + 512 * (1 << 20)
    assert (first.utilization, first.temperature, first.power) == (None, None, None)
    assert (first.processes, second.processes, parent.processes) == (1, 1, None)
    assert by_index(sample, 1).utilization is not None  # the other GPU is not in MIG mode


def test_xid_errors_are_counted_by_code() -> None:
    nvml = FakeNvml([FakeGpu(), FakeGpu()])
    source, _ = open_source(nvml)
    try:
        wait_for(lambda: nvml._registered == {0, 1}, what="XID registration")
        for gpu, xid in ((0, 79), (0, 79), (1, 48)):
            nvml.inject_xid(gpu, xid)
        counts = wait_for(
            lambda: {(d.index, x): n for d, x, n in source.sample().xid_errors} or None,
            what="XID counts",
        )
        wait_for(lambda: sum(n for *_, n in source.sample().xid_errors) == 3, what="all 3")
        counts = {(d.index, x): n for d, x, n in source.sample().xid_errors}
    finally:
        source.close()
    assert counts == {(0, 79): 2, (1, 48): 1}


def test_nvml_failing_at_start_is_a_clear_unavailable() -> None:
    source = NvmlSource(FakeNvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED), no_runs,
                        lambda reason: None)  # fmt: skip
    with pytest.raises(SourceUnavailable, match="Driver Not Loaded"):
        source.open()


def test_the_real_library_opens_or_says_why() -> None:
    """Here (no driver) nvmlInit raises LibraryNotFound; on a GPU machine it opens."""
    source = NvmlSource(pynvml, no_runs, lambda reason: None)
    try:
        source.open()
    except SourceUnavailable as exc:
        assert "NVML" in str(exc)
    else:
        try:
            assert source.sample().gpus
        finally:
            source.close()


def test_a_hung_nvml_call_never_delays_a_scrape_and_the_source_goes_down() -> None:
    nvml = FakeNvml([FakeGpu()])
    pipeline = Pipeline()
    sampler = PeriodicSampler(NvmlSource(nvml, no_runs, lambda r: None), pipeline.readings, 0.1)
    exposition = Exposition(pipeline)

    def scrape() -> bytes:
        return exposition.render()[0]

    sampler.start()
    try:
        wait_for(lambda: b"gpu_temperature_celsius{" in scrape(), what="sample")
        release = nvml.hang("nvmlDeviceGetTemperature")
        wait_for(lambda: nvml.calls["nvmlDeviceGetTemperature"] >= 1 and b'runwatch_source_up'
                 b'{source="nvml"} 0.0' in scrape(), what="stale")  # fmt: skip
        started = time.perf_counter()
        text = scrape()
        assert time.perf_counter() - started < 0.5
        assert b"gpu_temperature_celsius{" not in text  # no frozen values from a hung source
        release.set()
        wait_for(lambda: b'runwatch_source_up{source="nvml"} 1.0' in scrape(),
                 what="recovery")  # fmt: skip
    finally:
        for hang in nvml.hangs.values():
            hang.set()
        sampler.stop()


def test_a_sampler_whose_source_cannot_start_reports_down_and_logs_once(caplog) -> None:
    pipeline = Pipeline()
    nvml = FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    sampler = PeriodicSampler(NvmlSource(nvml, no_runs, lambda r: None), pipeline.readings, 0.05,
                              retry_open=0.05)  # fmt: skip
    with caplog.at_level(logging.INFO):
        sampler.start()
        wait_for(lambda: nvml.calls.get("nvmlInit", 0) >= 3, what="retries")
        nvml.init_error = None  # the driver comes up
        nvml.gpus.append(FakeGpu())
        wait_for(lambda: pipeline.readings.snapshot().sources["nvml"].up, what="up")
        sampler.stop()
    assert caplog.text.count("NVML Shared Library Not Found") == 1
    assert caplog.text.count("nvml source is up") == 1
