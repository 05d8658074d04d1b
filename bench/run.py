"""runwatch's ingest benchmarks, side by side in one run; writes its section of
bench/RESULTS.md (the GPU and system sampling costs are bench/gpu.py's).

1. Ingest: ``runwatch replay`` and mtail (``--one_shot``, with bench/mtail/runwatch.mtail)
   on the same file of 1,000,000 events, alternating, several rounds: events per
   second, CPU seconds per million events, peak RSS. The ratio is what to quote.
2. Freshness: while ``runwatch serve`` follows a file, the delay from writing a line
   to its value showing on /metrics (polled as fast as it answers).

    python bench/run.py [--events 1000000] [--rounds 5] [--samples 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import generate
from bench.results import write_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Measure:
    wall: float
    cpu: float
    peak_rss_mb: float  # the largest single process
    peak_tree_rss_mb: float  # all its processes together, sampled every 20 ms


TREE_SAMPLE_SECONDS = 0.05
"""How often the tree's RSS is sampled. The sampling reads a few files of the tree's own
processes in /proc; psutil's ``children()`` read every process's on the machine, every
20 ms a tenth of a core taken from the tool measured (from runwatch's two processes more
than from mtail)."""


def tree_rss(pid: int) -> int:
    """The RSS of ``pid``'s descendants together (not ``pid``: GNU time), in bytes, from
    /proc (Linux): the children of each process's main thread, which is where both tools
    fork; what has exited meanwhile counts 0."""
    total, pending = 0, _children(pid)
    page = os.sysconf("SC_PAGE_SIZE")
    while pending:
        child = pending.pop()
        try:
            with open(f"/proc/{child}/statm") as statm:
                total += int(statm.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        pending += _children(child)
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(c) for c in children.read().split()]
    except OSError:
        return []


def measure(command: list[str]) -> Measure:
    """Run a command to completion under GNU time: wall, CPU (user + system, children
    included), peak RSS; and the peak RSS of its whole process tree, sampled.

    GNU time rather than wait4 from here: a child forked from this Python process would
    inherit its peak RSS across exec and report at least that much.
    """
    with tempfile.NamedTemporaryFile("r") as timing:
        process = subprocess.Popen(
            ["/usr/bin/time", "-f", "%e %U %S %M", "-o", timing.name, *command],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        tree_peak = 0
        while process.poll() is None:
            tree_peak = max(tree_peak, tree_rss(process.pid))
            time.sleep(TREE_SAMPLE_SECONDS)
        stderr = process.stderr.read().decode()
        if process.returncode != 0:
            raise SystemExit(f"{command[0]} failed: {stderr[-2000:]}")
        wall, user, system, peak_kb = timing.read().split()[-4:]
    return Measure(float(wall), float(user) + float(system), int(peak_kb) / 1024, tree_peak / 2**20)


def ingest(events_file: Path, count: int, rounds: int, mtail: Path) -> dict[str, list[Measure]]:
    commands = {
        "runwatch replay": [sys.executable, "-m", "exporter", "replay", str(events_file)],
        "mtail --one_shot": [str(mtail), "--one_shot", "--one_shot_format", "prometheus",
                             "--progs", str(HERE / "mtail"), "--logs", str(events_file),
                             "--logtostderr"],
    }  # fmt: skip
    return alternate(commands, rounds)


def alternate(commands: dict[str, list[str]], rounds: int) -> dict[str, list[Measure]]:
    """Each command run to completion in turn, ``rounds`` times: side by side, so a noisy
    machine slows both alike."""
    results: dict[str, list[Measure]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            results[name].append(measure(command))
    return results


def components(*names: str) -> Path:
    """The folder of the real programs a benchmark runs (mtail, Prometheus), installed from
    Debian into the cache by scripts/install-components."""
    installed = subprocess.run([str(ROOT / "scripts" / "install-components"), *names],
                               check=True, capture_output=True, text=True)  # fmt: skip
    return Path(installed.stdout.split()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def freshness(samples: int, directory: Path) -> list[float]:
    """Seconds from appending a progress line to seeing its value on /metrics."""
    path = directory / "live.jsonl"
    path.write_bytes(b"")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--events", str(path),
         "--listen", f"127.0.0.1:{port}", "--log-level", "warning"],
        cwd=ROOT,
    )  # fmt: skip
    delays = []
    try:
        with httpx.Client() as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if client.get(url + "/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            with path.open("ab", buffering=0) as out:
                for i in range(samples):
                    pct = round(1 + (i % 9000) / 100, 2)
                    line = orjson.dumps({"event_type": "progress", "run_id": "fresh",
                                         "timestamp": time.time(), "stage": f"s{i}",
                                         "progress_pct": pct}) + b"\n"  # fmt: skip
                    needle = f'stage="s{i}"}} {pct / 100!r}'
                    written = time.perf_counter()
                    out.write(line)
                    while needle not in client.get(url + "/metrics").text:
                        if time.perf_counter() - written > 10:
                            raise SystemExit(f"line {i} never showed on /metrics")
                    delays.append(time.perf_counter() - written)
                    time.sleep(0.01)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return delays


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(count: int, size: int, results: dict[str, list[Measure]], delays: list[float]) -> str:
    rows, best = [], {}
    for name, runs in results.items():
        wall = statistics.median(m.wall for m in runs)
        cpu = statistics.median(m.cpu for m in runs)
        rss = max(m.peak_rss_mb for m in runs)
        tree = max(m.peak_tree_rss_mb for m in runs)
        best[name] = (count / wall, cpu * 1_000_000 / count)
        rows.append(f"| {name} | {count / wall:,.0f} | {wall:.2f} | "
                    f"{cpu * 1_000_000 / count:.2f} | {rss:.0f} | {tree:.0f} |")  # fmt: skip
    (rw_rate, rw_cpu), (mt_rate, mt_cpu) = best["runwatch replay"], best["mtail --one_shot"]
    delays_ms = [d * 1000 for d in delays]
    return f"""Written by `python bench/run.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.
Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()},
{platform.system()} {platform.release()}.

## Ingest: {count:,} events ({size / 1e6:.0f} MB, one run, the seed mix)

Each tool read the same file from start to end and printed its metrics, alternating,
{len(next(iter(results.values())))} rounds; medians of wall time and CPU time, peak RSS the
maximum. mtail runs `bench/mtail/runwatch.mtail` (events by type, progress by run and
stage); runwatch computes its whole catalogue, parsing in a forked worker process while
the main process reduces (`exporter/sources/files/parallel.py`), so its CPU time covers both.

| tool | events/s | wall s | CPU s / 1M events | peak RSS MB, largest process | all |
|---|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

**runwatch / mtail: {rw_rate / mt_rate:.2f}x the events per second, \
{mt_cpu / rw_cpu:.2f}x less CPU per event.**

## Freshness: write to /metrics ({len(delays)} lines)

`runwatch serve` following a file; each line's value polled on /metrics until it shows.

| p50 ms | p95 ms | p99 ms | max ms |
|---:|---:|---:|---:|
| {percentile(delays_ms, 0.5):.1f} | {percentile(delays_ms, 0.95):.1f} | \
{percentile(delays_ms, 0.99):.1f} | {max(delays_ms):.1f} |
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (5)")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    bin_dir = components("mtail")
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-") as tmp:
        events_file = Path(tmp) / "events.jsonl"
        count = generate(str(events_file), args.events)
        results = ingest(events_file, count, args.rounds, bin_dir / "mtail")
        delays = freshness(args.samples, Path(tmp))
        text = report(count, events_file.stat().st_size, results, delays)
    write_section("bench/run.py", text)
    print(text)


if __name__ == "__main__":
    main()
