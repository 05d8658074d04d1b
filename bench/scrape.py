"""Scrape cost by runs held, most of them finished: /metrics of 10, 100 and 1,000 runs of
which 10 are live, for this tree and an earlier commit, side by side in one run; writes
its section of bench/RESULTS.md.

Each case starts ``runwatch serve`` from one tree, posts N runs (each: a config, a stage,
10 metric keys, 3 checkpoints; all but 10 completed), then 15 times: a new step for each
live run, then one scrape, timed at the client (plain, then gzip). Trees alternate per
case, so a noisy machine slows both alike.

    python bench/scrape.py [--baseline ad8f7c8] [--scrapes 15]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_section
from bench.run import cpu_model
from bench.trees import ROOT, baseline_worktree, serve

CASES = (10, 100, 1000)
LIVE = 10


def runs_body(runs: int, live: int, start: float) -> bytes:
    """``runs`` runs as NDJSON, the first ``live`` left running."""
    lines = []
    for r in range(runs):
        run, at = f"run_{r:04d}", start + r * 0.001
        events = [
            {"event_type": "run_start", "run_name": f"bench {r}",
             "config": {"lr": 0.001, "batch_size": 64, "model": "resnet50", "epochs": 90}},
            {"event_type": "progress", "stage": "training", "progress_pct": 40},
            {"event_type": "metric_update", "step": 100,
             "metrics": {f"key_{k}": 0.5 + k for k in range(10)}},
            *({"event_type": "checkpoint_saved", "checkpoint_id": f"ckpt_{c}", "step": 100 * c,
               "metrics": {"loss": 1.0 / (c + 1)}, "is_best": c == 2} for c in range(3)),
            *([{"event_type": "run_complete", "status": "completed"}] if r >= live else []),
        ]  # fmt: skip
        lines += [orjson.dumps({**e, "run_id": run, "timestamp": at}) for e in events]
    return b"\n".join(lines)


def step_body(live: int, step: int, at: float) -> bytes:
    step_of = {"event_type": "metric_update", "timestamp": at, "step": step,
               "metrics": {"key_0": 1.0 / step}}  # fmt: skip
    return b"\n".join(orjson.dumps({**step_of, "run_id": f"run_{r:04d}"}) for r in range(live))


def measure(tree: Path, runs: int, scrapes: int, log: Path) -> dict[str, float]:
    """Median scrape seconds (plain and gzip) and the exposition's size."""
    with serve(tree, ["--max-runs", str(runs + 10)], log) as served, httpx.Client() as client:
        start = time.time() - 3600
        response = client.post(served.url + "/v1/events", content=runs_body(runs, LIVE, start),
                               timeout=300)  # fmt: skip
        response.raise_for_status()
        client.get(served.url + "/metrics", timeout=60)  # the first render of every run
        timings: dict[str, list[float]] = {"plain": [], "gzip": []}
        size = 0
        for number in range(scrapes):
            for kind, encoding in (("plain", "identity"), ("gzip", "gzip")):
                at = time.time() - 60 + number
                client.post(
                    served.url + "/v1/events",
                    content=step_body(LIVE, 1000 + 2 * number + (kind == "gzip"), at),
                )
                began = time.perf_counter()
                with client.stream("GET", served.url + "/metrics", timeout=60,
                                   headers={"Accept-Encoding": encoding}) as scraped:  # fmt: skip
                    body = b"".join(scraped.iter_raw())  # as sent: not decompressed here
                timings[kind].append(time.perf_counter() - began)
                scraped.raise_for_status()
                size = len(body) if kind == "plain" else size
        return {"plain": statistics.median(timings["plain"]),
                "gzip": statistics.median(timings["gzip"]), "bytes": size}  # fmt: skip


def otel_collection(runs: int, collections: int) -> dict[str, float]:
    """Median seconds of one OTel collection (every instrument's callback, as the metric
    reader calls them) in this process: with each run's observations kept, and with them
    rendered anew each time (the cache emptied before each collection)."""
    from opentelemetry.metrics import CallbackOptions

    from exporter.core.state import Limits
    from exporter.pipeline import Pipeline
    from exporter.telemetry.catalogue import metrics_for
    from exporter.telemetry.otel import OtlpOutput, _join_observations
    from exporter.telemetry.otlp_settings import OtlpSettings
    from exporter.telemetry.run_cache import RunBlocks

    pipeline = Pipeline(Limits(max_runs=runs + 10))
    pipeline.ingest_lines(runs_body(runs, LIVE, time.time() - 3600).split(b"\n"), "http")
    output = OtlpOutput(pipeline, OtlpSettings("http://127.0.0.1:9", metrics=False))
    groups: dict[str, list] = {}
    for metric in metrics_for(pipeline):
        groups.setdefault(metric.otel_name_for("semconv"), []).append(metric)
    kept = [output._callback(members) for members in groups.values()]
    timings: dict[str, list[float]] = {"kept": [], "anew": []}
    for number in range(collections):
        for kind in ("kept", "anew"):
            at = time.time() - 60 + number
            steps = step_body(LIVE, 1000 + 2 * number + (kind == "anew"), at)
            pipeline.ingest_lines(steps.split(b"\n"), "http")
            if kind == "anew":
                output._runs._cache = RunBlocks(output._runs._of_run, _join_observations)
            pipeline._snapshot = None  # a collection takes a new snapshot, its callbacks share it
            began = time.perf_counter()
            for callback in kept:
                list(callback(CallbackOptions()))
            timings[kind].append(time.perf_counter() - began)
    output.close(1.0)
    return {kind: statistics.median(values) for kind, values in timings.items()}


def report(baseline: str, results: dict[str, dict[int, dict[str, float]]], scrapes: int,
           otel: dict[int, dict[str, float]]) -> str:  # fmt: skip
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Written by `python bench/scrape.py` on {now}.",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}.",
        "",
        "## Scrape cost by runs held (10 live, the rest finished)",
        "",
        f"`runwatch serve` holding N runs (each: a config, a stage, 10 metric keys, 3 "
        f"checkpoints); all but {LIVE} completed. Before each scrape each live run logs a "
        f"new step. Median of {scrapes} scrapes at the client, from the request to the last "
        "byte as sent (a gzip body is not decompressed by the client), plain and gzip. "
        f"`{baseline}` renders every run at every scrape; `this tree` keeps each run's "
        "text until the run changes. Trees alternated per case.",
        "",
        "| runs | /metrics KB | tree | scrape ms | gzip scrape ms |",
        "|---:|---:|---|---:|---:|",
    ]
    for runs in CASES:
        for name, by_runs in results.items():
            r = by_runs[runs]
            lines.append(f"| {runs:,} | {r['bytes'] / 1024:,.0f} | {name} | "
                         f"{1000 * r['plain']:.1f} | {1000 * r['gzip']:.1f} |")  # fmt: skip
    this = results["this tree"]
    lines += [
        "",
        f"**1,000 runs (10 live) against 10 runs, this tree: "
        f"{this[1000]['plain'] / this[10]['plain']:.1f}x plain, "
        f"{this[1000]['gzip'] / this[10]['gzip']:.1f}x gzip (target: within 3x). "
        f"1,000 runs against {baseline}: "
        f"{results[baseline][1000]['plain'] / this[1000]['plain']:.0f}x faster plain, "
        f"{results[baseline][1000]['gzip'] / this[1000]['gzip']:.0f}x gzip.**",
        "",
        "### The OTel collection path",
        "",
        f"One collection of every instrument's callback, in process (the metric reader's "
        f"work before the SDK aggregates), same runs, median of {scrapes}: each run's "
        "observations kept until it changes, against rendered anew each time.",
        "",
        "| runs | kept ms | anew ms |",
        "|---:|---:|---:|",
        *(f"| {runs:,} | {1000 * o['kept']:.1f} | {1000 * o['anew']:.1f} |"
          for runs, o in otel.items()),
        "",
        f"**1,000 runs against 10, kept: {otel[1000]['kept'] / otel[10]['kept']:.1f}x; "
        f"kept against anew at 1,000 runs: {otel[1000]['anew'] / otel[1000]['kept']:.0f}x "
        "faster.**",
    ]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="ad8f7c8", help="git commit to compare with")
    parser.add_argument("--scrapes", type=int, default=15)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        baseline_worktree(args.baseline, Path(tmp)) as worktree,
    ):
        log = Path(tmp) / "serve.log"
        trees = {args.baseline: worktree, "this tree": ROOT}
        results: dict[str, dict[int, dict[str, float]]] = {name: {} for name in trees}
        for runs in CASES:
            for name, tree in trees.items():
                results[name][runs] = measure(tree, runs, args.scrapes, log)
                print(name, runs, results[name][runs], flush=True)
    otel = {runs: otel_collection(runs, args.scrapes) for runs in CASES}
    text = report(args.baseline, results, args.scrapes, otel)
    write_section("bench/scrape.py", text)
    print(text)


if __name__ == "__main__":
    main()
