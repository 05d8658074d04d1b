"""What a hostile client can make ``runwatch serve`` hold at its default limits: the
audit's attacks on the budgets, for this tree and an earlier commit, side by side in one
run, then every budget filled at once on this tree; writes its section of bench/RESULTS.md.

Each case starts a fresh ``runwatch serve`` from each tree (the baseline a ``git
worktree`` of ``--baseline``, run with the same Python and packages), posts its events
to ``POST /v1/events`` in bodies under the default 16 MiB limit, then measures the
server's resident memory (growth over the idle server, and its peak), ``/metrics`` (size,
median of 3 scrapes) and ``/api/runs`` (size). Cases marked OTLP export spans to a local
endpoint that accepts everything, as a collector would, so open spans are held.

* checkpoint metrics: 100 runs x 50 checkpoints x 100 metric keys (5,000 events);
* checkpoint paths: 10 runs x 50 checkpoints with a 1 MB path each (500 MB posted);
* error messages (OTLP): 2 runs, 128 errors of 1 MB each in an open stage (256 MB);
* open targets (OTLP): 200,000 ``target_start`` without a completion;
* every budget at once (OTLP, this tree only): 100 runs, each with a 1 MB config, 50
  checkpoints of 100 keys and 2 KB paths, 100 metric keys, 500 open targets with
  errors of 1 MB; posted 4 times over, new runs each time, to see memory level off.

    python bench/worst_case.py [--baseline e10cab2]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_section
from bench.run import cpu_model
from bench.trees import ROOT, Served, baseline_worktree, serve

BODY_BYTES = 12 << 20  # under the default --max-body-bytes of 16 MiB
MB = "x" * 1_000_000  # a line of it stays under the default --max-line-bytes of 1 MiB


@dataclass
class Case:
    name: str
    events: Callable[[], Iterator[dict]]
    otlp: bool = False
    rounds: int = 1  # the attack posted again, to see whether memory keeps growing


@dataclass
class Measured:
    posted: int  # bytes
    rss_growth: int  # bytes over the idle server
    rss_growth_by_round: list[int]  # the same after each round
    rss_peak: int
    metrics_bytes: int
    scrape_seconds: float
    runs_bytes: int


class Clock:
    """Event times an hour ago, each a millisecond after the last: in order, and in the past
    for every tree's checks."""

    def __init__(self) -> None:
        self.now = time.time() - 3600

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def _event(clock: Clock, kind: str, run: str, **fields: object) -> dict:
    return {"event_type": kind, "run_id": run, "timestamp": clock(), **fields}


def checkpoint_metrics() -> Iterator[dict]:
    clock, keys = Clock(), {f"val/metric_{k}": 0.5 for k in range(100)}
    for r in range(100):
        for c in range(50):
            yield _event(clock, "checkpoint_saved", f"run_{r}", checkpoint_id=f"ckpt_{c}",
                         step=c, metrics=keys)  # fmt: skip


def checkpoint_paths() -> Iterator[dict]:
    clock = Clock()
    for r in range(10):
        for c in range(50):
            yield _event(clock, "checkpoint_saved", f"run_{r}", checkpoint_id=f"ckpt_{c}",
                         filepath=MB)  # fmt: skip


def error_messages() -> Iterator[dict]:
    clock = Clock()
    for r in range(2):
        yield _event(clock, "stage_change", f"run_{r}", new_stage="train")
        for _ in range(128):
            yield _event(clock, "error", f"run_{r}", error_message=MB, error_type="OOM")


def open_targets() -> Iterator[dict]:
    clock = Clock()
    for t in range(200_000):
        yield _event(clock, "target_start", "run_0", target=f"target_{t}")


def every_budget() -> Iterator[dict]:
    clock, attack = Clock(), next(ATTACKS)
    config = {f"param_{k}": "v" * 1000 for k in range(1000)}  # 1 MB, a line under 1 MiB
    keys = {f"val/metric_{k}": 0.5 for k in range(100)}
    for r in range(100):
        run = f"attack_{attack}_run_{r}"  # new runs each round: the old ones make room
        yield _event(clock, "run_start", run, config=config)
        yield _event(clock, "stage_change", run, new_stage="train")
        yield _event(clock, "metric_update", run, step=1,
                     metrics={f"train/k{k}": 1.0 for k in range(100)})  # fmt: skip
        for c in range(50):
            yield _event(clock, "checkpoint_saved", run, checkpoint_id=f"ckpt_{c}", step=c,
                         metrics=keys, filepath="p" * 2048)  # fmt: skip
        for t in range(500):
            yield _event(clock, "target_start", run, target=f"target_{t}")
            if t % 50 == 0:
                yield _event(clock, "error", run, target=f"target_{t}", error_message=MB)


CASES = [
    Case("checkpoint metrics", checkpoint_metrics),
    Case("checkpoint paths", checkpoint_paths),
    Case("error messages", error_messages, otlp=True),
    Case("open targets", open_targets, otlp=True),
]
EVERY_BUDGET = Case("every budget at once", every_budget, otlp=True, rounds=4)
ATTACKS = itertools.count()


def bodies(events: Iterator[dict]) -> Iterator[bytes]:
    body: list[bytes] = []
    size = 0
    for value in events:
        line = orjson.dumps(value)
        if size + len(line) > BODY_BYTES and body:
            yield b"\n".join(body)
            body, size = [], 0
        body.append(line)
        size += len(line) + 1
    if body:
        yield b"\n".join(body)


class AcceptingCollector:
    """An OTLP/HTTP endpoint that answers 200 to everything, as a healthy collector does."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def memory(pid: int) -> tuple[int, int]:
    """Resident and peak resident bytes of a process."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmRSS"].split()[0]) << 10, int(fields["VmHWM"].split()[0]) << 10)


def measure(case: Case, tree: Path, work: Path, collector: AcceptingCollector) -> Measured:
    args = ["--log-level", "error"]
    if case.otlp:
        args += ["--otlp-endpoint", collector.url, "--otlp-protocol", "http/protobuf"]
    with serve(tree, args, work / "serve.log") as served:
        return _attack(case, served)


def _attack(case: Case, served: Served) -> Measured:
    idle, _ = memory(served.pid)
    posted, grown = 0, []
    with httpx.Client(timeout=300) as client:
        for _ in range(case.rounds):
            for body in bodies(case.events()):
                answer = client.post(served.url + "/v1/events", content=body)
                if answer.status_code != 202:  # the budgets cut, they refuse nothing
                    raise SystemExit(f"{case.name}: {answer.status_code} {answer.text[:300]}")
                posted += len(body)
            grown.append(memory(served.pid)[0] - idle)
        took, size = [], 0
        for _ in range(3):
            started = time.perf_counter()
            size = len(client.get(served.url + "/metrics").content)
            took.append(time.perf_counter() - started)
        runs = len(client.get(served.url + "/api/runs").content)
    rss, peak = memory(served.pid)
    return Measured(posted, rss - idle, grown, peak, size, statistics.median(took), runs)


def row(case: str, tree: str, m: Measured) -> str:
    return (
        f"| {case} | {tree} | {m.posted / 1e6:,.0f} | {m.rss_growth / 1e6:,.1f} | "
        f"{m.rss_peak / 1e6:,.0f} | {m.metrics_bytes / 1e3:,.0f} | "
        f"{m.scrape_seconds * 1e3:,.0f} | {m.runs_bytes / 1e3:,.0f} |"
    )


def report(baseline: str, results: dict[str, dict[str, Measured]], every: Measured) -> str:
    rounds = len(every.rss_growth_by_round)
    lines = [
        f"Written by `python bench/worst_case.py --baseline {baseline}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {cpu_model()}, Python {platform.python_version()}.",
        "",
        "## A hostile client against the default limits",
        "",
        "Each case on a fresh `runwatch serve` per tree: posted, then resident memory grown "
        "over the idle server and its peak, `/metrics` (size, median of 3 scrapes), "
        "`/api/runs` (size).",
        "",
        "| case | tree | posted MB | RSS growth MB | peak RSS MB | /metrics KB | scrape ms "
        "| /api/runs KB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case, trees in results.items():
        for tree, measured in trees.items():
            lines.append(row(case, tree, measured))
    lines += ["", "Ratios, baseline / this tree:", ""]
    for case, trees in results.items():
        before, after = trees[baseline], trees["this tree"]
        lines.append(
            f"- {case}: RSS growth "
            f"{before.rss_growth / max(after.rss_growth, 1 << 20):,.0f}x less, /metrics "
            f"{before.metrics_bytes / after.metrics_bytes:,.1f}x, scrape "
            f"{before.scrape_seconds / after.scrape_seconds:,.1f}x, /api/runs "
            f"{before.runs_bytes / after.runs_bytes:,.1f}x smaller."
        )
    lines += [
        "",
        "## Every budget at once (this tree)",
        "",
        "100 runs (--max-runs), each filling its series budget, its text budget and its open "
        "targets; the ceiling docs/reliability.md states.",
        "",
        "| case | tree | posted MB | RSS growth MB | peak RSS MB | /metrics KB | scrape ms "
        "| /api/runs KB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        row(EVERY_BUDGET.name, "this tree", every),
        "",
        f"Posted {rounds} times, {every.posted / 1e6 / rounds:,.0f} MB "
        "each, new runs each time (the older ones making room): resident memory over the "
        "idle server after each round, MB: "
        + ", ".join(f"{grown / 1e6:,.0f}" for grown in every.rss_growth_by_round)
        + ".",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="e10cab2", help="git commit to compare with")
    args = parser.parse_args()
    collector = AcceptingCollector()
    results: dict[str, dict[str, Measured]] = {}
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            baseline_worktree(args.baseline, Path(tmp)) as worktree,
        ):
            work = Path(tmp)
            for case in CASES:
                results[case.name] = {}
                for name, tree in ((args.baseline, worktree), ("this tree", ROOT)):
                    results[case.name][name] = measure(case, tree, work, collector)
                    print(row(case.name, name, results[case.name][name]), flush=True)
            every = measure(EVERY_BUDGET, ROOT, work, collector)
    finally:
        collector.stop()
    text = report(args.baseline, results, every)
    write_section("bench/worst_case.py", text)
    print(text)


if __name__ == "__main__":
    main()
