"""The cost of the sampled sources, side by side in one run; writes its section of
bench/RESULTS.md.

1. One NVML sample, per GPU: ``NvmlSource.sample()`` over 8 fake GPUs (and over the
   real GPUs where NVML opens), 50 processes on each GPU attributed to a run.
2. One system sample (host plus a 50-process run tree).
3. One full scrape (the whole catalogue rendered) with those readings and a run.
4. ``runwatch serve``'s own CPU at the default 5 s intervals with 8 fake GPUs and the
   50-process run, against the same serve with ``--no-nvml --no-system``, alternating
   rounds, with a scrape every 15 s in both; and, where ``nvidia-smi`` exists, the CPU of
   running ``nvidia-smi --query-gpu=...`` once per interval instead.

    python bench/gpu.py [--duration 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_section
from exporter.sources.sampled.fake_nvml import fake_nvml

GPUS = 8
PROCESSES = 50
INTERVAL = 5.0
SCRAPE_EVERY = 15.0
QUERY = (
    "index,uuid,name,utilization.gpu,utilization.memory,memory.used,memory.total,"
    "temperature.gpu,power.draw,power.limit,clocks.sm,clocks.mem,fan.speed"
)


def start_run_tree(directory: Path) -> tuple[subprocess.Popen[bytes], list[int], Path]:
    """A root with PROCESSES - 1 sleeping children, and its PID file."""
    code = (
        "import subprocess, time\n"
        f"kids = [subprocess.Popen(['sleep', '3600']) for _ in range({PROCESSES - 1})]\n"
        "print(' '.join(str(k.pid) for k in kids), flush=True)\n"
        "time.sleep(3600)\n"
    )
    root = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert root.stdout is not None
    pids = [root.pid, *map(int, root.stdout.readline().split())]
    pid_file = directory / "run.pid"
    record = {"pid": root.pid, "run_id": "bench_run", "started_at": time.time()}
    pid_file.write_bytes(orjson.dumps(record))
    return root, pids, pid_file


def stop_tree(root: subprocess.Popen[bytes]) -> None:
    for child in psutil.Process(root.pid).children(recursive=True):
        child.kill()
    root.kill()
    root.wait()


def mean_seconds(call: Callable[[], object], repeat: int) -> float:
    call()  # warm
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - started) / repeat


def in_process_costs(pids: list[int]) -> dict[str, float]:

    from exporter.pipeline import Pipeline
    from exporter.simulate.synthetic import synthetic_run
    from exporter.sources.sampled.nvml import NvmlSource
    from exporter.sources.sampled.system import SystemSource
    from exporter.telemetry.exposition import Exposition

    roots = {pids[0]: "bench_run"}
    nvml = NvmlSource(fake_nvml(GPUS, pids), lambda: roots, lambda reason: None)
    nvml.open()
    system = SystemSource(lambda: roots)
    system.open()
    costs = {
        "nvml sample per GPU (fake)": mean_seconds(nvml.sample, 50) / GPUS,
        "system sample": mean_seconds(system.sample, 50),
    }
    pipeline = Pipeline()
    pipeline.ingest_lines([orjson.dumps(e) for e in synthetic_run("bench_run", 1.7e9)], "jsonl")
    for source, sample in (("nvml", nvml.sample()), ("system", system.sample())):
        pipeline.readings.register(source, INTERVAL)
        pipeline.readings.store(source, sample, 0.0, time.time())
    exposition = Exposition(pipeline)
    costs["full scrape"] = mean_seconds(lambda: exposition.render(), 50)
    costs["scrape bytes"] = len(exposition.render()[0])
    nvml.close()
    real = real_nvml_cost()
    if real is not None:
        costs["nvml sample per GPU (real)"] = real
    return costs


def real_nvml_cost() -> float | None:
    import pynvml

    from exporter.sources.sampled.nvml import NvmlSource
    from exporter.sources.sampled.sampling import SourceUnavailable

    source = NvmlSource(pynvml, dict, lambda reason: None)
    try:
        source.open()
    except SourceUnavailable:
        return None
    try:
        gpus = max(1, len({g.device.uuid for g in source.sample().gpus}))
        return mean_seconds(source.sample, 20) / gpus
    finally:
        source.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_child(port: int, pid_file: str, pids: list[int], sources: bool) -> None:
    """Run in a subprocess: runwatch serve, with the fake GPUs running the run's pids."""
    from exporter.app.config import resolve
    from exporter.app.runtime import Runtime
    from exporter.cli import SERVE, _parser

    argv = ["serve", "--listen", f"127.0.0.1:{port}", "--pid-file", pid_file,
            "--log-level", "warning"]  # fmt: skip
    argv += ["--fake-gpus", str(GPUS)] if sources else ["--no-nvml", "--no-system"]
    settings = resolve(_parser().parse_args(argv), SERVE)
    Runtime(settings, fake_gpu_pids=tuple(pids)).serve()


def serve_cpu_percent(pid_file: Path, pids: list[int], sources: bool, duration: float) -> float:
    port = free_port()
    command = [sys.executable, __file__, "--serve-child", str(port), str(pid_file),
               ",".join(map(str, pids)), "1" if sources else "0"]  # fmt: skip
    child = subprocess.Popen(command)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
        time.sleep(2 * INTERVAL)  # past start-up and the first samples
        process = psutil.Process(child.pid)
        before, started = process.cpu_times(), time.monotonic()
        while time.monotonic() - started < duration:
            httpx.get(url, timeout=5)
            time.sleep(min(SCRAPE_EVERY, duration - (time.monotonic() - started)))
        after, wall = process.cpu_times(), time.monotonic() - started
        return 100 * ((after.user + after.system) - (before.user + before.system)) / wall
    finally:
        child.terminate()
        child.wait(timeout=30)


def nvidia_smi_cpu_percent() -> float | None:
    """CPU of one nvidia-smi query per INTERVAL, as a share of a core; None without it."""
    if shutil.which("nvidia-smi") is None:
        return None
    runs = 5
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        subprocess.run(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader"],
                       capture_output=True, check=True)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return 100 * cpu / runs / INTERVAL


def report(costs: dict[str, float], with_sources: list[float], without: list[float],
           smi: float | None, duration: float) -> str:  # fmt: skip
    on, off = statistics.median(with_sources), statistics.median(without)
    real = costs.get("nvml sample per GPU (real)")
    smi_row = (f"| `nvidia-smi --query-gpu=...` once per {INTERVAL:.0f} s | {smi:.2f} % |"
               if smi is not None else
               "| `nvidia-smi --query-gpu=...` once per 5 s | not measured: no nvidia-smi "
               "on this machine |")  # fmt: skip
    return f"""## GPU and system sampling (`python bench/gpu.py`)

Written on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, Python \
{platform.python_version()}. {GPUS} fake GPUs, a run of {PROCESSES} processes (a root and
{PROCESSES - 1} children, from its PID file), each GPU listing all {PROCESSES} as compute
processes ({GPUS * PROCESSES} process entries per sample: a worst case).

| step | mean |
|---|---:|
| one NVML sample, per GPU (fake NVML) | {costs["nvml sample per GPU (fake)"] * 1e3:.2f} ms |
| one NVML sample, per GPU (real NVML) | \
{f"{real * 1e3:.2f} ms" if real is not None else "not measured: no GPU on this machine"} |
| one system sample (host + {PROCESSES}-process tree) | {costs["system sample"] * 1e3:.2f} ms |
| one full scrape ({costs["scrape bytes"] / 1024:.0f} KiB of exposition) | \
{costs["full scrape"] * 1e3:.2f} ms |

CPU of the whole `runwatch serve` process at the default {INTERVAL:.0f} s intervals, a
scrape every {SCRAPE_EVERY:.0f} s, medians of {len(with_sources)} alternating rounds of \
{duration:.0f} s:

| configuration | share of one core |
|---|---:|
| `--fake-gpus {GPUS}` with the system source and the {PROCESSES}-process run | {on:.2f} % |
| `--no-nvml --no-system` (same run, same scrapes) | {off:.2f} % |
| the sources' share | **{on - off:.2f} %** (target: under 1 %) |
{smi_row}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per CPU round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child:
        port, pid_file, pids, sources = args.serve_child
        serve_child(int(port), pid_file, [int(p) for p in pids.split(",")], sources == "1")
        return
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-gpu-") as tmp:
        root, pids, pid_file = start_run_tree(Path(tmp))
        try:
            costs = in_process_costs(pids)
            with_sources, without = [], []
            for _ in range(args.rounds):
                with_sources.append(serve_cpu_percent(pid_file, pids, True, args.duration))
                without.append(serve_cpu_percent(pid_file, pids, False, args.duration))
        finally:
            stop_tree(root)
    text = report(costs, with_sources, without, nvidia_smi_cpu_percent(), args.duration)
    write_section("bench/gpu.py", text)
    print(text)


if __name__ == "__main__":
    main()
