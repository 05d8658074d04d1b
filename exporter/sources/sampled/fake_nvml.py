"""A simulated NVML with the interface of ``pynvml`` (nvidia-ml-py), for tests and demos.

It answers the calls :mod:`exporter.sources.sampled.nvml` makes, with pynvml's own
constants, return shapes and exception classes, so the source cannot tell it
from the real library. Readings move with time (a utilisation wave, energy
integrating power, temperature following load); processes, XID events, MIG
devices, unsupported readings, lost GPUs, failing or hanging calls and a
missing driver can all be configured. ``runwatch demo --fake-gpus N`` and
``runwatch serve --fake-gpus N`` use it, like dcgm-exporter's ``--use-fake-gpus``.
"""

from __future__ import annotations

import functools
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

import pynvml

F = TypeVar("F", bound=Callable[..., Any])
MIB = 1 << 20


@dataclass
class FakeProcess:
    pid: int
    memory: int  # bytes of GPU memory
    sm_utilization: int = 60  # percent
    mig_device: int | None = None  # which MIG device of the GPU it runs on


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    memory_total: int = 80 << 30
    power_limit_watts: float = 700.0
    mig_devices: int = 0  # > 0: MIG on, with this many equal instances
    processes: list[FakeProcess] = field(default_factory=list)
    # NVML function name -> NVML_ERROR_* code it raises (e.g. NOT_SUPPORTED, GPU_IS_LOST)
    failures: dict[str, int] = field(default_factory=dict)
    lost: bool = False  # every call about this GPU raises GPU_IS_LOST


@dataclass(frozen=True)
class _Handle:
    index: int
    mig: int | None = None  # MIG device index within the GPU


def _api(method: F) -> F:
    """Apply the configured failures and hangs before the call, as the real library might."""

    @functools.wraps(method)
    def call(self: FakeNvml, *args: Any) -> Any:
        self._enter(method.__name__, args[0] if args and isinstance(args[0], _Handle) else None)
        return method(self, *args)

    return call  # type: ignore[return-value]


class FakeNvml:
    """``FakeNvml([FakeGpu(), FakeGpu()])`` stands where the ``pynvml`` module would."""

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        driver_version: str = "550.54.15",
        init_error: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        startup_xids: dict[int, list[int]] | None = None,
    ) -> None:
        self.gpus = gpus
        self.driver_version = driver_version
        self.init_error = init_error
        self.hangs: dict[str, threading.Event] = {}  # function name -> released when set
        self.startup_xids = dict(startup_xids or {})  # GPU -> XIDs raised once it registers
        self.calls: dict[str, int] = {}
        self._clock = clock
        self._start = clock()
        self._initialised = False
        self._xids: queue.Queue[SimpleNamespace] = queue.Queue()
        self._registered: set[int] = set()
        self._energy: dict[int, tuple[float, float]] = {}  # GPU -> (millijoules, at)

    # --- control, for tests -------------------------------------------------------------

    def inject_xid(self, gpu: int, xid: int) -> None:
        """Raise an XID critical error on a GPU (seen if the GPU registered for events)."""
        if gpu in self._registered:
            self._xids.put(
                SimpleNamespace(
                    device=_Handle(gpu),
                    eventType=pynvml.nvmlEventTypeXidCriticalError,
                    eventData=xid,
                    gpuInstanceId=0xFFFFFFFF,
                    computeInstanceId=0xFFFFFFFF,
                )
            )

    def hang(self, function: str) -> threading.Event:
        """Make calls to ``function`` block until the returned event is set."""
        self.hangs[function] = threading.Event()
        return self.hangs[function]

    # --- the NVML interface -------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] = self.calls.get("nvmlInit", 0) + 1
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self._initialised = True

    def nvmlShutdown(self) -> None:
        self._initialised = False

    @_api
    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver_version

    @_api
    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    @_api
    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    @_api
    def nvmlDeviceGetIndex(self, handle: _Handle) -> int:
        return handle.index

    @_api
    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        base = f"{handle.index:08x}-fake-4000-8000-{handle.index:012x}"
        return f"GPU-{base}" if handle.mig is None else f"MIG-{handle.mig:08x}-{base[9:]}"

    @_api
    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        gpu = self.gpus[handle.index]
        if handle.mig is None:
            return gpu.name
        return f"{gpu.name} MIG {self._mig_memory(gpu) >> 30}gb"

    @_api
    def nvmlDeviceGetPciInfo(self, handle: _Handle) -> SimpleNamespace:
        return SimpleNamespace(busId=f"00000000:{0x18 + handle.index:02X}:00.0".encode())

    @_api
    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if self.gpus[handle.index].mig_devices else 0
        return [mode, mode]

    @_api
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        return 7

    @_api
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        if index >= self.gpus[handle.index].mig_devices:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return _Handle(handle.index, index)

    @_api
    def nvmlDeviceGetGpuInstanceId(self, handle: _Handle) -> int:
        return self._mig_only(handle) + 1

    @_api
    def nvmlDeviceGetComputeInstanceId(self, handle: _Handle) -> int:
        self._mig_only(handle)
        return 0

    @_api
    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> SimpleNamespace:
        self._whole_gpu_only(handle)
        load = self._load(handle.index)
        return SimpleNamespace(gpu=round(100 * load), memory=round(60 * load))

    @_api
    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> SimpleNamespace:
        gpu = self.gpus[handle.index]
        if handle.mig is None:
            total = gpu.memory_total
            used = sum(p.memory for p in gpu.processes)
        else:
            total = self._mig_memory(gpu)
            used = sum(p.memory for p in gpu.processes if p.mig_device == handle.mig)
        used = min(total, used + 512 * MIB)
        return SimpleNamespace(total=total, free=total - used, used=used)

    @_api
    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        return round(32 + 48 * self._load(handle.index))

    @_api
    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return round(self._power_watts(handle.index) * 1000)

    @_api
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        return round(self.gpus[handle.index].power_limit_watts * 1000)

    @_api
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        index, now = handle.index, self._clock()
        millijoules, at = self._energy.get(index, (0.0, self._start))
        millijoules += self._power_watts(index) * (now - at) * 1e3
        self._energy[index] = (millijoules, now)
        return round(millijoules)

    @_api
    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock_type: int) -> int:
        top = 1980 if clock_type == pynvml.NVML_CLOCK_SM else 2619
        return round(top * (0.4 + 0.6 * self._load(handle.index)))

    @_api
    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        load = self._load(handle.index)
        if load < 0.05:
            return pynvml.nvmlClocksEventReasonGpuIdle
        if self._power_watts(handle.index) > 0.9 * self.gpus[handle.index].power_limit_watts:
            return pynvml.nvmlClocksEventReasonSwPowerCap
        return pynvml.nvmlClocksEventReasonNone

    @_api
    def nvmlDeviceGetFanSpeed(self, handle: _Handle) -> int:
        return round(30 + 50 * self._load(handle.index))

    @_api
    def nvmlDeviceGetPcieReplayCounter(self, handle: _Handle) -> int:
        return 0

    @_api
    def nvmlDeviceGetTotalEccErrors(self, handle: _Handle, error_type: int, counter: int) -> int:
        corrected = error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
        return int(self._elapsed() // 60) if corrected else 0

    @_api
    def nvmlDeviceGetRemappedRows(self, handle: _Handle) -> tuple[int, int, int, int]:
        return (0, 0, 0, 0)

    @_api
    def nvmlDeviceGetEncoderUtilization(self, handle: _Handle) -> list[int]:
        return [0, 167_000]

    @_api
    def nvmlDeviceGetDecoderUtilization(self, handle: _Handle) -> list[int]:
        return [0, 167_000]

    @_api
    def nvmlDeviceGetPcieThroughput(self, handle: _Handle, counter: int) -> int:
        return round(2_000_000 * self._load(handle.index))  # KB/s

    @_api
    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=p.pid, usedGpuMemory=p.memory) for p in self._processes(handle)]

    @_api
    def nvmlDeviceGetProcessUtilization(self, handle: _Handle, last_seen: int) -> list[Any]:
        self._whole_gpu_only(handle)
        now_us = int(time.time() * 1e6)
        samples = [
            SimpleNamespace(
                pid=p.pid,
                timeStamp=now_us,
                smUtil=p.sm_utilization,
                memUtil=p.sm_utilization // 2,
                encUtil=0,
                decUtil=0,
            )
            for p in self._processes(handle)
        ]
        if not samples or now_us <= last_seen:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return samples

    @_api
    def nvmlEventSetCreate(self) -> object:
        return object()

    @_api
    def nvmlDeviceRegisterEvents(self, handle: _Handle, event_types: int, event_set: Any) -> None:
        self._registered.add(handle.index)
        for xid in self.startup_xids.pop(handle.index, []):
            self.inject_xid(handle.index, xid)

    @_api
    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> SimpleNamespace:
        try:
            return self._xids.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT) from None

    @_api
    def nvmlEventSetFree(self, event_set: Any) -> None:
        return None

    # --- simulation ---------------------------------------------------------------------

    def _enter(self, function: str, handle: _Handle | None) -> None:
        self.calls[function] = self.calls.get(function, 0) + 1
        if not self._initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if function in self.hangs:
            self.hangs[function].wait()
        if handle is not None:
            gpu = self.gpus[handle.index]
            if gpu.lost:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            if function in gpu.failures:
                raise pynvml.NVMLError(gpu.failures[function])

    def _elapsed(self) -> float:
        return self._clock() - self._start

    def _load(self, index: int) -> float:
        """A slow wave between 0 and 1, out of phase from one GPU to the next."""
        return 0.5 + 0.5 * math.sin(self._elapsed() / 20 + index * 1.3)

    def _power_watts(self, index: int) -> float:
        return self.gpus[index].power_limit_watts * (0.1 + 0.85 * self._load(index))

    def _processes(self, handle: _Handle) -> list[FakeProcess]:
        return [p for p in self.gpus[handle.index].processes if p.mig_device == handle.mig]

    def _mig_memory(self, gpu: FakeGpu) -> int:
        return gpu.memory_total // max(1, gpu.mig_devices)

    def _mig_only(self, handle: _Handle) -> int:
        if handle.mig is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle.mig

    def _whole_gpu_only(self, handle: _Handle) -> None:
        """NVML gives no utilisation for MIG devices, nor for a GPU with MIG on."""
        if handle.mig is not None or self.gpus[handle.index].mig_devices:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


def fake_nvml(count: int, pids: Sequence[int] = ()) -> FakeNvml:
    """``count`` H100-like GPUs, each running the given processes with some memory; GPU 0
    reports one XID 13 (graphics engine exception) at start, so XID panels have data."""
    gpus = [
        FakeGpu(processes=[FakeProcess(pid, (6 + 2 * index) << 30) for pid in pids])
        for index in range(count)
    ]
    return FakeNvml(gpus, startup_xids={0: [13]})
