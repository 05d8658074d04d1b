"""What the sampled sources read: GPUs (NVML) and the host and training processes
(psutil), as immutable samples in base units, stored in the
:class:`~exporter.pipeline.readings.ReadingsCache` and rendered by
:mod:`exporter.telemetry.hardware_metrics`."""

from __future__ import annotations

from dataclasses import dataclass


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
