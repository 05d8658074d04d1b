"""Catalogue entries for the sampled sources: GPUs (NVML), the host and run processes
(psutil), and GPU use per run. They read :class:`~exporter.pipeline.readings.Readings`, the
latest cached samples, never a source itself.

OTel names follow the semantic conventions where one exists (``hw.*``,
``system.*``, ``process.*``); see :mod:`exporter.telemetry.metric` for the two
OTLP namings. The README maps each GPU metric to its dcgm-exporter field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from exporter.pipeline import View
from exporter.sources.sampled.samples import (
    GpuReading,
    GpuSample,
    HostReading,
    RunProcesses,
    SystemSample,
)
from exporter.telemetry.metric import Metric, Sample, Sampler, Type

G, C = Type.GAUGE, Type.COUNTER
GPU = ("gpu", "uuid", "gpu_instance")
RUN_GPU = ("run_id", *GPU)
RUN = ("run_id",)


def _gpu_sample(view: View) -> GpuSample | None:
    return view.readings.latest(GpuSample)


def _gpus(view: View) -> Iterable[GpuReading]:
    sample = _gpu_sample(view)
    return sample.gpus if sample is not None else ()


def _per_gpu(value: Callable[[GpuReading], float | None]) -> Sampler:
    def sample(view: View) -> Iterator[Sample]:
        for gpu in _gpus(view):
            if (reading := value(gpu)) is not None:
                yield gpu.device.labels, reading

    return sample


def _per_gpu_key(items: Callable[[GpuReading], Iterable[tuple[str, Any]]]) -> Sampler:
    def sample(view: View) -> Iterator[Sample]:
        for gpu in _gpus(view):
            for key, value in items(gpu):
                yield (*gpu.device.labels, key), float(value)

    return sample


def _gpu_info(view: View) -> Iterator[Sample]:
    sample = _gpu_sample(view)
    if sample is None:
        return
    for gpu in sample.gpus:
        device = gpu.device
        yield (*device.labels, device.name, sample.driver_version, device.pci_bus_id), 1.0


def _xid_errors(view: View) -> Iterator[Sample]:
    sample = _gpu_sample(view)
    for device, xid, count in sample.xid_errors if sample is not None else ():
        yield (*device.labels, str(xid)), count


def _per_run_gpu(value: Callable[[Any], float | None]) -> Sampler:
    def sample(view: View) -> Iterator[Sample]:
        gpu = _gpu_sample(view)
        for usage in gpu.runs if gpu is not None else ():
            if (reading := value(usage)) is not None:
                yield (usage.run_id, *usage.device.labels), reading

    return sample


def _host(value: Callable[[HostReading], Any]) -> Sampler:
    def sample(view: View) -> Iterator[Sample]:
        system = view.readings.latest(SystemSample)
        if system is not None and (reading := value(system.host)) is not None:
            if isinstance(reading, tuple):
                yield from (((key,), float(v)) for key, v in reading)
            else:
                yield (), float(reading)

    return sample


def _load(minutes: int) -> Sampler:
    position = {1: 0, 5: 1, 15: 2}[minutes]
    return _host(lambda h: None if h.load_average is None else h.load_average[position])


def _per_run_processes(value: Callable[[RunProcesses], Any]) -> Sampler:
    def sample(view: View) -> Iterator[Sample]:
        system = view.readings.latest(SystemSample)
        for run in system.runs if system is not None else ():
            reading = value(run)
            if isinstance(reading, tuple):
                yield from (((run.run_id, key), float(v)) for key, v in reading)
            elif reading is not None:
                yield (run.run_id,), float(reading)

    return sample


def _task(task: str) -> tuple[tuple[str, str], ...]:
    return (("hw.gpu.task", task),)


HARDWARE_METRICS: tuple[Metric, ...] = (
    # --- GPUs, per device (a MIG device has gpu_instance set) ---
    Metric("gpu_info", "gpu.info", "", G, (*GPU, "name", "driver_version", "pci_bus_id"),
           "GPU metadata; always 1.", _gpu_info, hw_type="gpu"),
    Metric("gpu_utilization_ratio", "hw.gpu.utilization", "1", G, GPU,
           "Share of the last sample period in which a kernel ran.",
           _per_gpu(lambda g: g.utilization), semconv_attributes=_task("general"), hw_type="gpu"),
    Metric("gpu_memory_utilization_ratio", "gpu.memory.utilization.ratio", "1", G, GPU,
           "Share of the last sample period in which device memory was read or written.",
           _per_gpu(lambda g: g.memory_utilization), hw_type="gpu"),
    Metric("gpu_encoder_utilization_ratio", "hw.gpu.utilization", "1", G, GPU,
           "Video encoder utilisation.", _per_gpu(lambda g: g.encoder_utilization),
           semconv_attributes=_task("encoder"), hw_type="gpu"),
    Metric("gpu_decoder_utilization_ratio", "hw.gpu.utilization", "1", G, GPU,
           "Video decoder utilisation.", _per_gpu(lambda g: g.decoder_utilization),
           semconv_attributes=_task("decoder"), hw_type="gpu"),
    Metric("gpu_memory_used_bytes", "hw.gpu.memory.usage", "By", G, GPU,
           "Framebuffer memory in use.", _per_gpu(lambda g: g.memory_used), hw_type="gpu"),
    Metric("gpu_memory_free_bytes", "gpu.memory.free", "By", G, GPU,
           "Framebuffer memory free.", _per_gpu(lambda g: g.memory_free), hw_type="gpu"),
    Metric("gpu_memory_total_bytes", "hw.gpu.memory.limit", "By", G, GPU,
           "Framebuffer memory in all.", _per_gpu(lambda g: g.memory_total), hw_type="gpu"),
    Metric("gpu_temperature_celsius", "hw.temperature", "Cel", G, GPU,
           "GPU core temperature.", _per_gpu(lambda g: g.temperature), hw_type="gpu"),
    Metric("gpu_power_draw_watts", "hw.power", "W", G, GPU, "Power drawn by the board.",
           _per_gpu(lambda g: g.power), hw_type="gpu"),
    Metric("gpu_power_limit_watts", "gpu.power.limit", "W", G, GPU, "Enforced power limit.",
           _per_gpu(lambda g: g.power_limit), hw_type="gpu"),
    Metric("gpu_energy_joules_total", "hw.energy", "J", C, GPU,
           "Energy used since the driver was loaded.", _per_gpu(lambda g: g.energy),
           hw_type="gpu"),
    Metric("gpu_sm_clock_hertz", "gpu.sm_clock", "Hz", G, GPU, "SM clock.",
           _per_gpu(lambda g: g.sm_clock), hw_type="gpu"),
    Metric("gpu_memory_clock_hertz", "gpu.memory_clock", "Hz", G, GPU, "Memory clock.",
           _per_gpu(lambda g: g.memory_clock), hw_type="gpu"),
    Metric("gpu_clock_event_reasons", "gpu.clock_event_reasons", "", G, (*GPU, "reason"),
           "1 for each reason the clocks are held down now (throttling), 0 for the others.",
           _per_gpu_key(lambda g: g.clock_event_reasons), hw_type="gpu"),
    Metric("gpu_fan_speed_ratio", "gpu.fan_speed.ratio", "1", G, GPU,
           "Fan speed, share of its maximum.", _per_gpu(lambda g: g.fan_speed), hw_type="gpu"),
    Metric("gpu_pcie_replays_total", "hw.errors", "{error}", C, GPU,
           "PCIe replays (link-level retransmissions).", _per_gpu(lambda g: g.pcie_replays),
           semconv_attributes=(("error.type", "pcie_replay"),), hw_type="gpu"),
    Metric("gpu_ecc_errors_total", "hw.errors", "{error}", C, (*GPU, "error.type"),
           "ECC memory errors since the driver was loaded, corrected and uncorrected.",
           _per_gpu_key(lambda g: g.ecc_errors), hw_type="gpu"),
    Metric("gpu_xid_errors_total", "hw.errors", "{error}", C, (*GPU, "xid"),
           "XID critical errors seen since runwatch started, by XID code.", _xid_errors,
           semconv_attributes=(("error.type", "xid"),), hw_type="gpu"),
    Metric("gpu_remapped_rows", "gpu.remapped_rows", "{row}", G, (*GPU, "error.type"),
           "Memory rows remapped, after corrected and uncorrected errors.",
           _per_gpu_key(lambda g: g.remapped_rows), hw_type="gpu"),
    Metric("gpu_row_remap_pending", "gpu.row_remap.pending", "", G, GPU,
           "1 while a row remapping waits for a GPU reset.",
           _per_gpu(lambda g: g.row_remap_pending), hw_type="gpu"),
    Metric("gpu_row_remap_failed", "gpu.row_remap.failed", "", G, GPU,
           "1 once a row remapping has failed (the GPU needs service).",
           _per_gpu(lambda g: g.row_remap_failed), hw_type="gpu"),
    Metric("gpu_pcie_throughput_bytes_per_second", "gpu.pcie.throughput", "By/s", G,
           (*GPU, "network.io.direction"),
           "PCIe throughput over a 20 ms window (only with --gpu-pcie-throughput).",
           _per_gpu_key(lambda g: g.pcie_throughput), hw_type="gpu"),
    Metric("gpu_processes", "gpu.processes", "{process}", G, GPU,
           "Compute processes on the device.", _per_gpu(lambda g: g.processes), hw_type="gpu"),
    # --- GPU use per training run ---
    Metric("training_run_gpu_memory_bytes", "training.run.gpu.memory", "By", G, RUN_GPU,
           "GPU memory held by the run's processes (PID-file process and descendants).",
           _per_run_gpu(lambda u: u.memory)),
    Metric("training_run_gpu_utilization_ratio", "training.run.gpu.utilization.ratio", "1", G,
           RUN_GPU, "SM utilisation of the run's processes on the device (where NVML gives "
           "per-process utilisation; not under MIG).", _per_run_gpu(lambda u: u.utilization)),
    Metric("training_run_gpu_processes", "training.run.gpu.processes", "{process}", G, RUN_GPU,
           "The run's processes on the device.", _per_run_gpu(lambda u: u.processes)),
    # --- the host ---
    Metric("system_cpu_utilization_ratio", "system.cpu.utilization", "1", G, ("cpu.mode",),
           "Share of all CPUs' time in each mode over the last sample period.",
           _host(lambda h: h.cpu_utilization or None)),
    Metric("system_logical_cpus", "system.cpu.logical.count", "{cpu}", G, (),
           "Logical CPUs.", _host(lambda h: h.cpu_count)),
    Metric("system_cpu_load_average_1m", "system.cpu.load_average.1m", "{thread}", G, (),
           "Load average over 1 minute.", _load(1)),
    Metric("system_cpu_load_average_5m", "system.cpu.load_average.5m", "{thread}", G, (),
           "Load average over 5 minutes.", _load(5)),
    Metric("system_cpu_load_average_15m", "system.cpu.load_average.15m", "{thread}", G, (),
           "Load average over 15 minutes.", _load(15)),
    Metric("system_memory_usage_bytes", "system.memory.usage", "By", G,
           ("system.memory.state",), "Memory by state (used, free, buffers, cached).",
           _host(lambda h: h.memory_states)),
    Metric("system_memory_limit_bytes", "system.memory.limit", "By", G, (), "Memory in all.",
           _host(lambda h: h.memory_limit)),
    Metric("system_linux_memory_available_bytes", "system.linux.memory.available", "By", G, (),
           "Memory available to new work without swapping (MemAvailable).",
           _host(lambda h: h.memory_available)),
    Metric("system_disk_io_bytes_total", "system.disk.io", "By", C, ("disk.io.direction",),
           "Bytes read from and written to all disks.", _host(lambda h: h.disk_io or None)),
    Metric("system_network_io_bytes_total", "system.network.io", "By", C,
           ("network.io.direction",), "Bytes sent and received on all interfaces but lo.",
           _host(lambda h: h.network_io)),
    # --- each training run's processes ---
    Metric("training_run_process_cpu_time_seconds_total", "process.cpu.time", "s", C,
           ("run_id", "cpu.mode"),
           "CPU time of the run's processes, reaped children included.",
           _per_run_processes(lambda r: r.cpu_time)),
    Metric("training_run_process_memory_usage_bytes", "process.memory.usage", "By", G, RUN,
           "Resident memory of the run's processes, summed (shared pages count once each).",
           _per_run_processes(lambda r: r.memory_rss)),
    Metric("training_run_process_threads", "process.thread.count", "{thread}", G, RUN,
           "Threads of the run's processes.", _per_run_processes(lambda r: r.threads)),
    Metric("training_run_process_file_descriptors", "process.unix.file_descriptor.count",
           "{file_descriptor}", G, RUN, "Open file descriptors of the run's processes.",
           _per_run_processes(lambda r: r.file_descriptors)),
    Metric("training_run_processes", "training.run.processes", "{process}", G, RUN,
           "Live processes of the run: its PID-file process and descendants.",
           _per_run_processes(lambda r: r.processes)),
)  # fmt: skip
