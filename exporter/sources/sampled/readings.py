"""Sampled readings (GPUs, host, training processes, the trading bridge) and the cache
scrapes read them from.

Sampled sources (:mod:`exporter.sources.sampled.nvml`, :mod:`exporter.sources.sampled.system`)
run on their own clock and store one immutable sample each here; ``/metrics``
and the OTel callbacks only read the latest snapshot, so a slow or hung NVML
call never delays a scrape. A sample older than ``STALE_AFTER_INTERVALS``
intervals is no longer served and its source reports down: a hung source
disappears instead of showing frozen values.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: pydantic loads when a bridge is configured, not always
    from exporter.sources.peers.bridge_contract import (
        Arm,
        EngineMetrics,
        EngineState,
        Position,
        RiskStatus,
    )

STALE_AFTER_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU, or one MIG device of a GPU (then ``gpu_instance`` is set)."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str
    gpu_instance: str = ""  # "" for a whole GPU

    @property
    def labels(self) -> tuple[str, str, str]:
        return str(self.index), self.uuid, self.gpu_instance


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One device's readings in base units; None where NVML gave nothing."""

    device: GpuDevice
    utilization: float | None = None  # ratio of time a kernel ran
    memory_utilization: float | None = None  # ratio of time memory was read or written
    encoder_utilization: float | None = None
    decoder_utilization: float | None = None
    memory_used: float | None = None  # bytes
    memory_free: float | None = None
    memory_total: float | None = None
    temperature: float | None = None  # celsius
    power: float | None = None  # watts
    power_limit: float | None = None
    energy: float | None = None  # joules since the driver loaded
    sm_clock: float | None = None  # hertz
    memory_clock: float | None = None
    clock_event_reasons: tuple[tuple[str, bool], ...] = ()
    fan_speed: float | None = None  # ratio of the maximum
    pcie_replays: float | None = None
    ecc_errors: tuple[tuple[str, float], ...] = ()  # (corrected|uncorrected, count)
    remapped_rows: tuple[tuple[str, float], ...] = ()  # (corrected|uncorrected, rows)
    row_remap_pending: float | None = None
    row_remap_failed: float | None = None
    pcie_throughput: tuple[tuple[str, float], ...] = ()  # (transmit|receive, bytes/s)
    processes: int | None = None


@dataclass(frozen=True, slots=True)
class RunGpuUsage:
    """What one run's processes use of one device."""

    run_id: str
    device: GpuDevice
    memory: float  # bytes
    utilization: float | None  # summed SM utilisation of its processes, when NVML gives it
    processes: int


@dataclass(frozen=True, slots=True)
class GpuSample:
    driver_version: str
    gpus: tuple[GpuReading, ...]
    runs: tuple[RunGpuUsage, ...]
    xid_errors: tuple[tuple[GpuDevice, int, int], ...]  # (device, xid, count since start)


@dataclass(frozen=True, slots=True)
class HostReading:
    cpu_utilization: tuple[tuple[str, float], ...]  # (cpu.mode, ratio); empty on the first
    cpu_count: int
    load_average: tuple[float, float, float] | None
    memory_limit: float
    memory_available: float
    memory_states: tuple[tuple[str, float], ...]  # (used|free|buffers|cached, bytes)
    disk_io: tuple[tuple[str, float], ...]  # (read|write, bytes since boot)
    network_io: tuple[tuple[str, float], ...]  # (transmit|receive, bytes since boot)


@dataclass(frozen=True, slots=True)
class RunProcesses:
    """A run's process tree (PID-file process and its descendants), summed."""

    run_id: str
    processes: int
    cpu_time: tuple[tuple[str, float], ...]  # (user|system, seconds, reaped children too)
    memory_rss: float
    threads: int
    file_descriptors: int | None


@dataclass(frozen=True, slots=True)
class SystemSample:
    host: HostReading
    runs: tuple[RunProcesses, ...]


@dataclass(frozen=True, slots=True)
class TradingSample:
    """One poll of the trading bridge's REST endpoints; None where an endpoint failed."""

    metrics: EngineMetrics | None
    state: EngineState | None
    stages: tuple[str, ...]  # stages seen so far (bounded), for the 1/0 stage series
    statuses: tuple[str, ...]  # statuses seen so far (bounded)
    positions: tuple[Position, ...] | None
    trades: tuple[tuple[str, int, float], ...] | None  # (side, count, notional volume)
    decisions: tuple[tuple[str, int], ...] | None  # (action, count)
    arms: tuple[Arm, ...] | None
    risk: RiskStatus | None


BACKEND_JOB_STATUSES = ("waiting", "running", "completed", "failed", "cancelled", "other")


@dataclass(frozen=True, slots=True)
class BackendSample:
    """One poll of the training backend's REST side."""

    jobs: dict[str, int] | None  # GET /jobs by status (BACKEND_JOB_STATUSES); None if it failed


@dataclass(frozen=True, slots=True)
class SourceStatus:
    up: bool
    sample_seconds: float | None  # how long the last sample took
    sampled_at: float | None  # Unix time the last sample finished


@dataclass(frozen=True, slots=True)
class Readings:
    """What a scrape sees: each source's status and its latest fresh sample."""

    sources: dict[str, SourceStatus] = field(default_factory=dict)
    gpu: GpuSample | None = None
    system: SystemSample | None = None
    trading: TradingSample | None = None
    backend: BackendSample | None = None


@dataclass(slots=True)
class _Entry:
    interval: float
    sample: object = None
    sample_seconds: float | None = None
    sampled_at: float | None = None
    up: bool = False


class ReadingsCache:
    """Latest sample per source, written by sampler threads and read by scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def register(self, source: str, interval: float) -> None:
        """Make the source's status visible (down) before its first sample."""
        with self._lock:
            self._entries[source] = _Entry(interval)

    def store(self, source: str, sample: object, seconds: float, at: float) -> None:
        with self._lock:
            entry = self._entries[source]
            entry.sample, entry.sample_seconds, entry.sampled_at, entry.up = (
                sample,
                seconds,
                at,
                True,
            )

    def mark_down(self, source: str) -> None:
        with self._lock:
            entry = self._entries[source]
            entry.sample, entry.up = None, False

    def snapshot(self, now: float | None = None) -> Readings:
        now = time.time() if now is None else now
        sources: dict[str, SourceStatus] = {}
        samples: list[object] = []
        with self._lock:
            for name, entry in self._entries.items():
                fresh = (
                    entry.up
                    and entry.sampled_at is not None
                    and now - entry.sampled_at <= STALE_AFTER_INTERVALS * entry.interval
                )
                sources[name] = SourceStatus(fresh, entry.sample_seconds, entry.sampled_at)
                if fresh:
                    samples.append(entry.sample)
        gpu = next((s for s in samples if isinstance(s, GpuSample)), None)
        system = next((s for s in samples if isinstance(s, SystemSample)), None)
        trading = next((s for s in samples if isinstance(s, TradingSample)), None)
        backend = next((s for s in samples if isinstance(s, BackendSample)), None)
        return Readings(sources, gpu, system, trading, backend)
