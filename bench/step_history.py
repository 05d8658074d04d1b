"""Step history at 1,000 steps a second: what a real Prometheus holds, how soon, at what
cost; writes its section of bench/RESULTS.md.

Three ``runwatch serve`` run side by side in one run, each fed the same run logging 1,000
steps a second (two keys, ``loss`` and ``lr``) over HTTP for ``--seconds``: history off,
history on at the default cap (100 steps a second per run), and history on with the cap
raised to 1,000. One Prometheus (``--web.enable-remote-write-receiver``) scrapes all three
and receives their remote writes. Measured: the fraction of the logged steps Prometheus
holds (its raw samples), the delay from a step's POST to Prometheus answering with it, and
each runwatch's CPU time and peak RSS, against history off.

    python bench/step_history.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_section
from bench.run import components, cpu_model, free_port, percentile

ROOT = Path(__file__).resolve().parent.parent
RATE = 1000  # steps a second
BATCH = 50  # steps per POST: 20 POSTs a second
VARIANTS = {  # name -> extra flags (the remote-write URL is added where history is on)
    "history off": None,
    "history on, cap 100/s": [],
    "history on, cap 1000/s": ["--max-history-steps-per-second", "1000"],
}


@dataclass
class Instance:
    name: str
    port: int
    process: subprocess.Popen
    run_id: str
    posted: list[tuple[float, float]] = field(default_factory=list)  # (step ts, wall time)
    delays: list[float] = field(default_factory=list)
    peak_rss: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_prometheus(binary: Path, targets: list[str], tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "5s"},
        "scrape_configs": [{"job_name": "runwatch", "static_configs": [{"targets": targets}]}],
    }))  # fmt: skip
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait(lambda: httpx.get(url + "/-/ready").status_code == 200)
    return process, url


def wait(condition: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit("timed out")


def feed(instance: Instance, start: float, seconds: float) -> None:
    """POST the run's steps as they happen: BATCH steps every BATCH/RATE seconds."""
    with httpx.Client(timeout=30) as client:
        client.post(
            instance.url + "/v1/events",
            json=[{"event_type": "run_start", "run_id": instance.run_id, "timestamp": start - 1}],
        )
        for first in range(0, int(seconds * RATE), BATCH):
            due = start + (first + BATCH) / RATE
            if due > time.time():
                time.sleep(due - time.time())
            batch = [{"event_type": "metric_update", "run_id": instance.run_id,
                      "timestamp": start + step / RATE, "step": step,
                      "metrics": {"loss": 1 / (step + 1), "lr": 0.001}}
                     for step in range(first, first + BATCH)]  # fmt: skip
            client.post(instance.url + "/v1/events", json=batch).raise_for_status()
            instance.posted.append((batch[-1]["timestamp"], time.time()))


def latest_sample(prometheus: str, run_id: str) -> float:
    query = f'timestamp(training_step_metric{{run_id="{run_id}", key="loss"}})'
    result = httpx.get(prometheus + "/api/v1/query", params={"query": query}).json()
    values = result["data"]["result"]
    return float(values[0]["value"][1]) if values else 0.0


def probe(instance: Instance, prometheus: str, done: threading.Event) -> None:
    """Every 2 s: the newest posted step, and how long until Prometheus answers with it
    (within 10 ms of it: thinning may keep a neighbour instead)."""
    while not done.wait(2):
        if not instance.posted:
            continue
        step_ts, wall = instance.posted[-1]
        deadline = time.time() + 30
        while latest_sample(prometheus, instance.run_id) < step_ts - 0.011:
            if time.time() > deadline:
                break
            time.sleep(0.01)
        else:
            instance.delays.append(time.time() - wall)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    bin_dir = components("prometheus")
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-") as tmp:
        ports = {name: free_port() for name in VARIANTS}
        prometheus, prom_url = start_prometheus(
            bin_dir / "prometheus", [f"127.0.0.1:{p}" for p in ports.values()], Path(tmp)
        )
        instances = []
        for index, (name, flags) in enumerate(VARIANTS.items()):
            command = [sys.executable, "-m", "exporter", "serve", "--listen",
                       f"127.0.0.1:{ports[name]}", "--no-nvml", "--no-system",
                       "--log-level", "warning"]  # fmt: skip
            if flags is not None:
                command += ["--remote-write-url", prom_url + "/api/v1/write", *flags]
            process = subprocess.Popen(command, cwd=ROOT)
            instances.append(Instance(name, ports[name], process, f"bench_{index}"))
        for instance in instances:
            wait(lambda i=instance: httpx.get(i.url + "/readyz").status_code == 200)
        processes = {i.name: psutil.Process(i.process.pid) for i in instances}
        cpu_before = {n: sum(p.cpu_times()[:2]) for n, p in processes.items()}
        start = time.time() + 1
        done = threading.Event()
        threads = [threading.Thread(target=feed, args=(i, start, args.seconds)) for i in instances]
        threads += [threading.Thread(target=probe, args=(i, prom_url, done))
                    for i in instances[1:]]  # fmt: skip
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads[: len(instances)]):
            for instance in instances:
                rss = processes[instance.name].memory_info().rss
                instance.peak_rss = max(instance.peak_rss, rss)
            time.sleep(0.5)
        done.set()
        for thread in threads:
            thread.join()
        cpu = {n: sum(p.cpu_times()[:2]) - cpu_before[n] for n, p in processes.items()}
        logged = int(args.seconds * RATE)
        held, thinned = {}, {}
        for instance in instances[1:]:
            last = instance.posted[-1][0]
            wait(lambda i=instance, t=last: latest_sample(prom_url, i.run_id) >= t - 0.011)
            series = f'training_step_metric{{run_id="{instance.run_id}", key="loss"}}'
            query = f"count_over_time({series}[10m])"
            result = httpx.get(prom_url + "/api/v1/query", params={"query": query}).json()
            held[instance.name] = int(float(result["data"]["result"][0]["value"][1]))
            for line in httpx.get(instance.url + "/metrics").text.splitlines():
                if line.startswith('runwatch_series_dropped_total{reason="step_rate"}'):
                    thinned[instance.name] = int(float(line.split()[-1])) // 2  # two keys
        for instance in instances:
            instance.process.terminate()
            instance.process.wait(timeout=30)
        prometheus.terminate()
        prometheus.wait(timeout=30)
    text = report(args.seconds, logged, instances, cpu, held, thinned)
    write_section("bench/step_history.py", text)
    print(text)


def report(seconds: float, logged: int, instances: list[Instance], cpu: dict[str, float],
           held: dict[str, int], thinned: dict[str, int]) -> str:  # fmt: skip
    base = instances[0]
    rows = []
    for instance in instances:
        name = instance.name
        kept = held.get(name)
        share = f"{kept / logged:.1%} ({kept:,})" if kept is not None else "—"
        delays = instance.delays
        delay = (f"{statistics.median(delays):.2f} / {percentile(delays, 0.95):.2f}"
                 if delays else "—")  # fmt: skip
        rows.append(
            f"| {name} | {share} | {thinned.get(name, 0):,} | {delay} | {cpu[name]:.1f} "
            f"({cpu[name] / cpu[base.name]:.2f}x) | {instance.peak_rss / 2**20:.0f} "
            f"({instance.peak_rss / base.peak_rss:.2f}x) |"
        )
    return "\n".join([
        f"Written by `python bench/step_history.py` on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC.",
        f"Machine: {psutil.cpu_count()} cores, {cpu_model()}, Python "
        f"{platform.python_version()}.",
        "",
        f"## Step history: 1,000 steps/s for {seconds:.0f} s ({logged:,} steps, 2 keys)",
        "",
        "Three `runwatch serve` side by side, fed the same run over HTTP; one Prometheus "
        "scraping all three and receiving their remote writes. Held: raw samples of "
        "`training_step_metric{key=\"loss\"}` in Prometheus. Delay: from the POST of the "
        "newest step to Prometheus answering with it, probed every 2 s (median / p95).",
        "",
        "| runwatch | steps Prometheus holds | steps thinned (counted) | delay s | CPU s "
        "(vs off) | peak RSS MB (vs off) |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ])  # fmt: skip


if __name__ == "__main__":
    main()
