"""The NVML source: per-GPU readings, XID errors and GPU use per training run.

Talks to anything with the interface of ``pynvml`` (nvidia-ml-py): the real
library, or :class:`~exporter.sources.sampled.fake_nvml.FakeNvml`. Rules:

- A reading NVML does not support on a model (NOT_SUPPORTED, FUNCTION_NOT_FOUND)
  is dropped for that device and never asked again. Any other failure (a GPU
  lost mid-run, a timeout) drops that reading from the sample, is counted in
  ``runwatch_source_errors_total{source="nvml",reason}`` and logged once per
  device and reason.
- Under MIG each MIG device reports its memory and processes; utilisation is
  not available from NVML under MIG (neither per device nor per process), and
  temperature, power, energy, clocks, ECC and PCIe stay with the parent GPU.
- XID errors come from NVML events on a thread of their own and are counted
  by code since runwatch started.
- GPU memory and SM utilisation of each process are summed per run through
  :mod:`exporter.sources.attribution`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml

from exporter.sources.attribution import RunRoots, run_trees, runs_by_pid
from exporter.sources.sampled.samples import GpuDevice, GpuReading, GpuSample, RunGpuUsage
from exporter.sources.sampled.sampling import SourceUnavailable

log = logging.getLogger(__name__)

NVML_SOURCE = "nvml"
UNSUPPORTED = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
CLOCK_EVENT_REASONS: tuple[tuple[str, int], ...] = (
    ("gpu_idle", pynvml.nvmlClocksEventReasonGpuIdle),
    ("applications_clocks_setting", pynvml.nvmlClocksEventReasonApplicationsClocksSetting),
    ("sw_power_cap", pynvml.nvmlClocksEventReasonSwPowerCap),
    ("hw_slowdown", pynvml.nvmlClocksEventReasonHwSlowdown),
    ("sync_boost", pynvml.nvmlClocksEventReasonSyncBoost),
    ("sw_thermal_slowdown", pynvml.nvmlClocksEventReasonSwThermalSlowdown),
    ("hw_thermal_slowdown", pynvml.nvmlClocksEventReasonHwThermalSlowdown),
    ("hw_power_brake_slowdown", pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown),
    ("display_clock_setting", pynvml.nvmlClocksEventReasonDisplayClockSetting),
)
XID_WAIT_MS = 500
PCIE_KB = 1024  # NVML reports PCIe throughput in KB/s


_ERROR_NAMES = {
    getattr(pynvml, name): name.removeprefix("NVML_ERROR_").lower()
    for name in dir(pynvml)
    if name.startswith("NVML_ERROR_")
}


def error_reason(code: int) -> str:
    """NVML_ERROR_GPU_IS_LOST -> 'gpu_is_lost': a bounded label value for a failure."""
    return _ERROR_NAMES.get(code, "unknown")


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class _GpuProcess:
    device: GpuDevice
    pid: int
    memory: float  # bytes
    utilization: float | None  # SM ratio, where NVML gives per-process samples


@dataclass
class _Device:
    handle: Any
    info: GpuDevice
    mig: bool  # a MIG device
    mig_parent: bool = False  # a GPU with MIG on: its processes are listed per MIG device
    unsupported: set[str] = field(default_factory=set)
    last_process_sample_us: int = 0


class NvmlSource:
    """A SampledSource over an NVML module; see the module docstring for its rules."""

    name = NVML_SOURCE

    def __init__(
        self,
        nvml: Any,
        run_roots: RunRoots,
        count_error: Callable[[str], None],
        pcie_throughput: bool = False,
        on_run_gpus: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        """``on_run_gpus``: given each sample's count of GPUs per run (for the runs' lost
        GPU-seconds in their goodput account)."""
        self._nvml = nvml
        self._on_run_gpus = on_run_gpus
        self._run_roots = run_roots
        self._count_error = count_error
        self._pcie_throughput = pcie_throughput
        self._devices: list[_Device] = []
        self._driver_version = ""
        self._logged: set[tuple[str, str]] = set()
        self._xids: Counter[tuple[GpuDevice, int]] = Counter()
        self._xid_lock = threading.Lock()
        self._xid_stop = threading.Event()
        self._xid_thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        nvml = self._nvml
        try:
            nvml.nvmlInit()
            self._driver_version = _text(nvml.nvmlSystemGetDriverVersion())
            count = nvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            raise SourceUnavailable(f"NVML cannot start: {exc}") from None
        self._devices = []
        for index in range(count):
            try:
                self._devices.extend(self._enumerate(index))
            except pynvml.NVMLError as exc:
                log.warning("GPU %d skipped: NVML: %s", index, exc)
        migs = sum(device.mig for device in self._devices)
        log.info("NVML %s: %d GPUs, %d MIG devices", self._driver_version, count, migs)
        self._xid_stop.clear()
        self._xid_thread = threading.Thread(
            target=self._watch_xids, name="runwatch-xid", daemon=True
        )
        self._xid_thread.start()

    def close(self) -> None:
        self._xid_stop.set()
        if self._xid_thread is not None:
            self._xid_thread.join(timeout=2 * XID_WAIT_MS / 1000 + 1)
        with contextlib.suppress(pynvml.NVMLError):
            self._nvml.nvmlShutdown()

    def _enumerate(self, index: int) -> list[_Device]:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        pci = _text(nvml.nvmlDeviceGetPciInfo(handle).busId)
        gpu = GpuDevice(
            index, _text(nvml.nvmlDeviceGetUUID(handle)), _text(nvml.nvmlDeviceGetName(handle)), pci
        )
        devices = [_Device(handle, gpu, mig=False)]
        try:
            mig_on = nvml.nvmlDeviceGetMigMode(handle)[0] == pynvml.NVML_DEVICE_MIG_ENABLE
        except pynvml.NVMLError:  # not a MIG-capable GPU
            mig_on = False
        if not mig_on:
            return devices
        devices[0].mig_parent = True
        try:
            slots = nvml.nvmlDeviceGetMaxMigDeviceCount(handle)
        except pynvml.NVMLError as exc:
            log.warning("GPU %d: MIG is on but its devices cannot be listed: %s", index, exc)
            return devices
        for slot in range(slots):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                info = GpuDevice(
                    index,
                    _text(nvml.nvmlDeviceGetUUID(mig)),
                    _text(nvml.nvmlDeviceGetName(mig)),
                    pci,
                    gpu_instance=str(nvml.nvmlDeviceGetGpuInstanceId(mig)),
                )
            except pynvml.NVMLError:  # an empty slot
                continue
            devices.append(_Device(mig, info, mig=True))
        return devices

    # --- sampling -----------------------------------------------------------------------

    def sample(self) -> GpuSample:
        processes: list[_GpuProcess] = []
        readings = []
        for device in self._devices:
            device_processes = self._processes(device)
            processes.extend(device_processes)
            count = None if device.mig_parent else len(device_processes)
            readings.append(self._reading(device, count))
        with self._xid_lock:
            xids = tuple(
                (device, xid, n)
                for (device, xid), n in sorted(
                    self._xids.items(), key=lambda item: (item[0][0].uuid, item[0][1])
                )
            )
        runs = self._per_run(processes)
        if self._on_run_gpus is not None and runs:
            gpus: dict[str, int] = {}
            for usage in runs:  # one RunGpuUsage per run and device
                gpus[usage.run_id] = gpus.get(usage.run_id, 0) + 1
            self._on_run_gpus(gpus)
        return GpuSample(self._driver_version, tuple(readings), runs, xids)

    def _reading(self, device: _Device, processes: int | None) -> GpuReading:
        nvml, read = self._nvml, self._read
        memory = read(device, "memory", nvml.nvmlDeviceGetMemoryInfo)
        memory_fields: dict[str, Any] = {}
        if memory is not None:
            memory_fields = {
                "memory_used": memory.used,
                "memory_free": memory.free,
                "memory_total": memory.total,
            }
        if device.mig:  # the rest is the parent GPU's, or not given under MIG
            return GpuReading(device.info, processes=processes, **memory_fields)
        utilization = read(device, "utilization", nvml.nvmlDeviceGetUtilizationRates)
        encoder = read(device, "encoder", nvml.nvmlDeviceGetEncoderUtilization)
        decoder = read(device, "decoder", nvml.nvmlDeviceGetDecoderUtilization)
        reasons = read(device, "clock_events", nvml.nvmlDeviceGetCurrentClocksEventReasons)
        remapped = read(device, "remapped_rows", nvml.nvmlDeviceGetRemappedRows)
        return GpuReading(
            device.info,
            utilization=None if utilization is None else utilization.gpu / 100,
            memory_utilization=None if utilization is None else utilization.memory / 100,
            encoder_utilization=None if encoder is None else encoder[0] / 100,
            decoder_utilization=None if decoder is None else decoder[0] / 100,
            temperature=read(
                device, "temperature", nvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU
            ),
            power=_scaled(read(device, "power", nvml.nvmlDeviceGetPowerUsage), 1e-3),
            power_limit=_scaled(
                read(device, "power_limit", nvml.nvmlDeviceGetEnforcedPowerLimit), 1e-3
            ),
            energy=_scaled(read(device, "energy", nvml.nvmlDeviceGetTotalEnergyConsumption), 1e-3),
            sm_clock=_scaled(
                read(device, "sm_clock", nvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM), 1e6
            ),
            memory_clock=_scaled(
                read(device, "memory_clock", nvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
                1e6,
            ),
            clock_event_reasons=()
            if reasons is None
            else tuple((name, bool(reasons & bit)) for name, bit in CLOCK_EVENT_REASONS),
            fan_speed=_scaled(read(device, "fan", nvml.nvmlDeviceGetFanSpeed), 1e-2),
            pcie_replays=read(device, "pcie_replays", nvml.nvmlDeviceGetPcieReplayCounter),
            ecc_errors=self._ecc(device),
            remapped_rows=()
            if remapped is None
            else (("corrected", remapped[0]), ("uncorrected", remapped[1])),
            row_remap_pending=None if remapped is None else float(bool(remapped[2])),
            row_remap_failed=None if remapped is None else float(bool(remapped[3])),
            pcie_throughput=self._pcie(device),
            processes=processes,
            **memory_fields,
        )

    def _ecc(self, device: _Device) -> tuple[tuple[str, float], ...]:
        out = []
        for kind, error_type in (
            ("corrected", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
            ("uncorrected", pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
        ):
            count = self._read(
                device,
                f"ecc_{kind}",
                self._nvml.nvmlDeviceGetTotalEccErrors,
                error_type,
                pynvml.NVML_VOLATILE_ECC,
            )
            if count is not None:
                out.append((kind, float(count)))
        return tuple(out)

    def _pcie(self, device: _Device) -> tuple[tuple[str, float], ...]:
        if not self._pcie_throughput:
            return ()
        out = []
        for direction, counter in (
            ("transmit", pynvml.NVML_PCIE_UTIL_TX_BYTES),
            ("receive", pynvml.NVML_PCIE_UTIL_RX_BYTES),
        ):
            kilobytes = self._read(
                device, f"pcie_{direction}", self._nvml.nvmlDeviceGetPcieThroughput, counter
            )
            if kilobytes is not None:
                out.append((direction, float(kilobytes * PCIE_KB)))
        return tuple(out)

    def _processes(self, device: _Device) -> list[_GpuProcess]:
        if device.mig_parent:
            return []
        running = self._read(device, "processes", self._nvml.nvmlDeviceGetComputeRunningProcesses)
        if not running:
            return []
        utilization = self._process_utilization(device)
        return [
            _GpuProcess(device.info, p.pid, float(p.usedGpuMemory or 0), utilization.get(p.pid))
            for p in running
        ]

    def _process_utilization(self, device: _Device) -> dict[int, float]:
        """Mean SM utilisation per pid over the samples NVML kept since the last call."""
        if "process_utilization" in device.unsupported:
            return {}
        try:
            samples = self._nvml.nvmlDeviceGetProcessUtilization(
                device.handle, device.last_process_sample_us
            )
        except pynvml.NVMLError as exc:
            if exc.value != pynvml.NVML_ERROR_NOT_FOUND:  # NOT_FOUND: no samples since
                self._failed(device, "process_utilization", exc)
            return {}
        sums: dict[int, list[float]] = {}
        for sample in samples:
            device.last_process_sample_us = max(device.last_process_sample_us, sample.timeStamp)
            sums.setdefault(sample.pid, []).append(sample.smUtil / 100)
        return {pid: sum(values) / len(values) for pid, values in sums.items()}

    def _per_run(self, processes: list[_GpuProcess]) -> tuple[RunGpuUsage, ...]:
        if not processes:
            return ()
        owner = runs_by_pid(run_trees(self._run_roots()))
        by_run: dict[tuple[str, GpuDevice], list[_GpuProcess]] = {}
        for process in processes:
            if (run_id := owner.get(process.pid)) is not None:
                by_run.setdefault((run_id, process.device), []).append(process)
        return tuple(
            _run_usage(run_id, device, members)
            for (run_id, device), members in sorted(
                by_run.items(), key=lambda item: (item[0][0], item[0][1].uuid)
            )
        )

    def _read(self, device: _Device, reading: str, function: Callable[..., Any], *args: Any) -> Any:
        if reading in device.unsupported:
            return None
        try:
            return function(device.handle, *args)
        except pynvml.NVMLError as exc:
            self._failed(device, reading, exc)
            return None

    def _failed(self, device: _Device, reading: str, exc: pynvml.NVMLError) -> None:
        if exc.value in UNSUPPORTED:
            device.unsupported.add(reading)
            return
        reason = error_reason(exc.value)
        self._count_error(reason)
        if (device.info.uuid, reason) not in self._logged:
            self._logged.add((device.info.uuid, reason))
            log.warning(
                "GPU %s (%s): %s reading failed: %s; dropped while it fails (logged once)",
                device.info.index,
                device.info.uuid,
                reading,
                exc,
            )

    # --- XID events ---------------------------------------------------------------------

    def _watch_xids(self) -> None:
        nvml = self._nvml
        try:
            event_set = nvml.nvmlEventSetCreate()
        except pynvml.NVMLError as exc:
            log.warning("XID errors not watched: NVML events: %s", exc)
            return
        by_uuid: dict[str, GpuDevice] = {}
        for device in self._devices:
            if device.mig:
                continue
            try:
                nvml.nvmlDeviceRegisterEvents(
                    device.handle, pynvml.nvmlEventTypeXidCriticalError, event_set
                )
                by_uuid[device.info.uuid] = device.info
            except pynvml.NVMLError as exc:
                log.info("GPU %d: XID events not available: %s", device.info.index, exc)
        try:
            while by_uuid and not self._xid_stop.is_set():
                try:
                    data = nvml.nvmlEventSetWait_v2(event_set, XID_WAIT_MS)
                    if not data.eventType & pynvml.nvmlEventTypeXidCriticalError:
                        continue
                    gpu = by_uuid.get(_text(nvml.nvmlDeviceGetUUID(data.device)))
                except pynvml.NVMLError as exc:
                    if exc.value != pynvml.NVML_ERROR_TIMEOUT:
                        self._count_error(error_reason(exc.value))
                        self._xid_stop.wait(XID_WAIT_MS / 1000)  # no busy loop on a broken set
                    continue
                if gpu is not None:
                    with self._xid_lock:
                        self._xids[(gpu, int(data.eventData))] += 1
        finally:
            with contextlib.suppress(pynvml.NVMLError):
                nvml.nvmlEventSetFree(event_set)


def _run_usage(run_id: str, device: GpuDevice, members: list[_GpuProcess]) -> RunGpuUsage:
    utilizations = [p.utilization for p in members if p.utilization is not None]
    return RunGpuUsage(
        run_id,
        device,
        memory=sum(p.memory for p in members),
        utilization=min(1.0, sum(utilizations)) if utilizations else None,
        processes=len(members),
    )


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor
