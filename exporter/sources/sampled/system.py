"""The system source (psutil): the host's CPU, load, memory, disk and network, and each
training run's process tree (CPU time, RSS, threads, file descriptors).

A run's tree is its PID-file process and every descendant
(:mod:`exporter.sources.attribution`). CPU time counts live processes plus the
children they have reaped, so the sum only falls if a process exits before its
parent reaps it. A process that vanishes mid-read or is not ours to read is left
out of that sample, as is a zombie (exited, not yet reaped).
"""

from __future__ import annotations

from collections.abc import Iterable

import psutil

from exporter.sources.attribution import RunRoots, run_trees
from exporter.sources.sampled.samples import HostReading, RunProcesses, SystemSample

SYSTEM_SOURCE = "system"
# psutil cpu_times fields -> OTel cpu.mode values (guest time is already in user on Linux)
CPU_MODES: dict[str, str] = {
    "user": "user", "nice": "nice", "system": "system", "idle": "idle", "iowait": "iowait",
    "irq": "interrupt", "softirq": "interrupt", "steal": "steal",
}  # fmt: skip
MEMORY_STATES = ("used", "free", "buffers", "cached")


class SystemSource:
    """A SampledSource over psutil."""

    name = SYSTEM_SOURCE

    def __init__(self, run_roots: RunRoots) -> None:
        self._run_roots = run_roots
        self._last_cpu: dict[str, float] | None = None

    def open(self) -> None:
        self._last_cpu = _cpu_by_mode()

    def close(self) -> None:
        return None

    def sample(self) -> SystemSample:
        return SystemSample(self._host(), self._runs())

    def _host(self) -> HostReading:
        cpu = _cpu_by_mode()
        utilization: tuple[tuple[str, float], ...] = ()
        if self._last_cpu is not None:
            deltas = {mode: max(0.0, cpu[mode] - self._last_cpu.get(mode, 0.0)) for mode in cpu}
            total = sum(deltas.values())
            if total > 0:
                utilization = tuple((mode, delta / total) for mode, delta in deltas.items())
        self._last_cpu = cpu
        memory = psutil.virtual_memory()
        disk = psutil.disk_io_counters()
        network = [c for nic, c in psutil.net_io_counters(pernic=True).items() if nic != "lo"]
        return HostReading(
            cpu_utilization=utilization,
            cpu_count=psutil.cpu_count() or 0,
            load_average=psutil.getloadavg() if hasattr(psutil, "getloadavg") else None,
            memory_limit=float(memory.total),
            memory_available=float(memory.available),
            memory_states=tuple(
                (state, float(getattr(memory, state)))
                for state in MEMORY_STATES
                if hasattr(memory, state)
            ),
            disk_io=()
            if disk is None
            else (("read", float(disk.read_bytes)), ("write", float(disk.write_bytes))),
            network_io=(
                ("transmit", float(sum(c.bytes_sent for c in network))),
                ("receive", float(sum(c.bytes_recv for c in network))),
            ),
        )

    def _runs(self) -> tuple[RunProcesses, ...]:
        return tuple(
            reading
            for run_id, members in sorted(run_trees(self._run_roots()).items())
            if (reading := _run_processes(run_id, members)) is not None
        )


def _cpu_by_mode() -> dict[str, float]:
    times = psutil.cpu_times()._asdict()
    out: dict[str, float] = {}
    for field, mode in CPU_MODES.items():
        if field in times:
            out[mode] = out.get(mode, 0.0) + times[field]
    return out


def _run_processes(run_id: str, members: Iterable[psutil.Process]) -> RunProcesses | None:
    count = threads = 0
    fds: int | None = 0
    user = system = rss = 0.0
    for process in members:
        try:
            with process.oneshot():
                if process.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped
                    continue
                times = process.cpu_times()
                memory = process.memory_info()
                process_threads = process.num_threads()
                process_fds = process.num_fds() if hasattr(process, "num_fds") else None
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        count += 1
        user += times.user + times.children_user
        system += times.system + times.children_system
        rss += memory.rss
        threads += process_threads
        fds = None if fds is None or process_fds is None else fds + process_fds
    if not count:
        return None
    return RunProcesses(run_id, count, (("user", user), ("system", system)), rss, threads, fds)
