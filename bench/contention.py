"""Scrapes while big POSTs arrive: /metrics latency with 10 MB bodies posted back to back,
for this tree and an earlier commit, side by side in one run; writes its section of
bench/RESULTS.md.

Each round starts ``runwatch serve`` from one tree (the baseline is a ``git worktree`` of
``--baseline``, run with the same Python and packages), loads it with 100 runs, measures
the scrape latency at rest, then again while a client posts 10 MB NDJSON bodies back to
back, and the time each POST took. Trees alternate, so a noisy machine slows both alike.

    python bench/contention.py [--baseline ad8f7c8] [--rounds 2] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_section
from bench.run import cpu_model
from bench.trees import ROOT, baseline_worktree, serve

BODY_BYTES = 10 << 20


def load(runs: int = 100) -> bytes:
    """100 runs with stages, targets, step metrics and checkpoints: a scrape of about 1 MB."""
    lines = []

    def add(run: str, kind: str, **fields: object) -> None:
        lines.append(orjson.dumps({"event_type": kind, "run_id": run,
                                   "timestamp": 1_700_000_000.0, **fields}))  # fmt: skip

    for r in range(runs):
        run = f"run_{r}"
        add(run, "run_start", config={"lr": 0.1})
        for s in range(8):
            add(run, "progress", stage=f"stage_{s}", progress_pct=50)
        for t in range(50):
            add(run, "target_complete", target=f"t{t}", best_auc=0.5, duration_seconds=3)
        add(run, "metric_update", step=5, metrics={f"k{i}": i for i in range(20)})
        for c in range(10):
            add(run, "checkpoint_saved", checkpoint_id=f"c{c}", step=c, metrics={"loss": 1.0})
    return b"\n".join(lines)


def big_body() -> bytes:
    """About 10 MB of step metrics of one run, as NDJSON."""
    lines, size, step = [], 0, 0
    while size < BODY_BYTES:
        line = orjson.dumps({"event_type": "metric_update", "run_id": "posted",
                             "timestamp": 1_700_000_000.0 + step // 1000, "step": step,
                             "metrics": {"loss": 1.0 / (step + 1), "lr": 0.001}})  # fmt: skip
        lines.append(line)
        size += len(line) + 1
        step += 1
    return b"\n".join(lines)


def scrape_latencies(url: str, seconds: float, stop: threading.Event | None = None) -> list[float]:
    latencies = []
    with httpx.Client(timeout=60) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            started = time.perf_counter()
            response = client.get(url + "/metrics")
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    return latencies


def measure(tree: Path, seconds: float, body: bytes, log: Path) -> dict[str, list[float]]:
    args = ["--log-level", "warning", "--max-body-bytes", str(2 * BODY_BYTES)]
    with serve(tree, args, log) as served, httpx.Client(timeout=120) as client:
        url = served.url
        client.post(url + "/v1/events", content=load()).raise_for_status()
        idle = scrape_latencies(url, seconds / 2)
        posts: list[float] = []
        stop = threading.Event()

        def post_back_to_back() -> None:
            with httpx.Client(timeout=120) as poster:
                for number in range(1_000_000):
                    if stop.is_set():
                        break
                    # a run of its own for each body, so every event is applied
                    content = body.replace(b'"posted"', b'"p%06d"' % number)
                    started = time.perf_counter()
                    response = poster.post(url + "/v1/events", content=content)
                    posts.append(time.perf_counter() - started)
                    if response.json().get("rejected"):
                        raise SystemExit(f"events refused: {response.text[:500]}")

        poster = threading.Thread(target=post_back_to_back)
        poster.start()
        busy = scrape_latencies(url, seconds)
        stop.set()
        poster.join()
    if not posts:
        raise SystemExit("no POST completed while scraping")
    return {"idle": idle, "busy": busy, "posts": posts}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(baseline: str, results: dict[str, dict[str, list[float]]], body_size: int) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Written by `python bench/contention.py` on {now}.",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}.",
        "",
        f"## Scrapes while {body_size / 2**20:.1f} MB POSTs arrive back to back",
        "",
        "`runwatch serve` holding 100 runs (a scrape of about 1 MB); /metrics scraped every "
        "50 ms at rest, then while one client posts NDJSON bodies of step metrics back to "
        f"back, each a run of its own. `{baseline}` is the baseline commit given with "
        "--baseline; `this tree` is the working tree (what each changed: the notes below "
        "and docs/benchmarks.md). Trees alternated.",
        "",
        "| tree | scrapes | at rest p50 / p99 ms | during POSTs p50 / p99 / max ms | POSTs | "
        "POST p50 s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        idle, busy, posts = r["idle"], r["busy"], r["posts"]
        lines.append(
            f"| {name} | {len(busy)} | {1000 * percentile(idle, 0.5):.0f} / "
            f"{1000 * percentile(idle, 0.99):.0f} | {1000 * percentile(busy, 0.5):.0f} / "
            f"{1000 * percentile(busy, 0.99):.0f} / {1000 * max(busy):.0f} | {len(posts)} | "
            f"{statistics.median(posts) if posts else float('nan'):.2f} |"
        )
    names = list(results)
    if len(names) == 2:
        before, after = (percentile(results[n]["busy"], 0.99) for n in names)
        lines += ["", f"**Scrape p99 during POSTs: {before / after:.1f}x lower with this tree "
                      f"({1000 * before:.0f} ms -> {1000 * after:.0f} ms).**"]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="ad8f7c8", help="git commit to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="busy scraping per round")
    args = parser.parse_args()
    body = big_body()
    with (
        tempfile.TemporaryDirectory() as tmp,
        baseline_worktree(args.baseline, Path(tmp)) as worktree,
    ):
        log = Path(tmp) / "serve.log"
        trees = {args.baseline: worktree, "this tree": ROOT}
        merged: dict[str, dict[str, list[float]]] = {
            name: {"idle": [], "busy": [], "posts": []} for name in trees
        }
        for _ in range(args.rounds):
            for name, tree in trees.items():
                for key, values in measure(tree, args.seconds, body, log).items():
                    merged[name][key] += values
    text = report(args.baseline, merged, len(body))
    write_section("bench/contention.py", text)
    print(text)


if __name__ == "__main__":
    main()
