"""What the metric windows (the view's and ``/api/runs/{id}/metrics``'s history) cost
ingestion; writes its section of bench/RESULTS.md.

The same lines, ``metric_update`` events of one run with three keys, applied by a fresh
``Pipeline`` as ``runwatch serve`` applies a POSTed body (``ingest_lines``), with the windows
kept (what ``serve`` does) and without (what ``replay`` does), alternating, in one process;
medians of the wall time. Then a run of 2,000,000 steps fills its window past the
per-run budget: the rows and values it holds, and its halvings.

    python bench/metric_window.py [--events 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_section
from bench.run import cpu_model
from exporter.pipeline import Pipeline

T0 = 1_790_000_000.0


def lines(count: int) -> list[bytes]:
    start = orjson.dumps({"event_type": "run_start", "run_id": "r", "name": "r", "timestamp": T0})
    steps = [orjson.dumps({"event_type": "metric_update", "run_id": "r",
                           "timestamp": T0 + i * 0.01, "step": i,
                           "metrics": {"loss": 1 / i, "lr": 3e-4, "accuracy": 1 - 1 / i}})
             for i in range(1, count + 1)]  # fmt: skip
    return [start, *steps]


def ingest(batch: list[bytes], windows: bool) -> float:
    pipeline = Pipeline()
    if windows:
        pipeline.keep_windows()
    started = time.perf_counter()
    for first in range(0, len(batch), 10_000):  # as POSTed bodies of 10,000 events
        pipeline.ingest_lines(batch[first : first + 10_000], "http")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    batch = lines(args.events)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for windows in (False, True):
            times[windows].append(ingest(batch, windows))
    off, on = statistics.median(times[False]), statistics.median(times[True])

    filled = Pipeline()
    filled.keep_windows()
    long_run = lines(2_000_000)
    for first in range(0, len(long_run), 10_000):
        filled.ingest_lines(long_run[first : first + 10_000], "http")
    rows = filled.window_rows("r", None)
    assert rows is not None
    state = filled.snapshot().state
    text = "\n".join([
        f"Written by `python bench/metric_window.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {cpu_model()}, Python {platform.python_version()}.",
        "",
        "## The metric windows: their cost to ingestion, and a window past its budget",
        "",
        f"{args.events:,} `metric_update` events of one run (three keys) applied as POSTed "
        f"bodies of 10,000, windows kept or not, alternating, {args.rounds} rounds, medians.",
        "",
        "| windows | events/s | µs per event |",
        "|---|---:|---:|",
        f"| off (`replay`) | {args.events / off:,.0f} | {off / args.events * 1e6:.2f} |",
        f"| on (`serve`) | {args.events / on:,.0f} | {on / args.events * 1e6:.2f} |",
        "",
        f"**Keeping the windows costs {(on / off - 1) * 100:.0f}% more time per event "
        f"({(on - off) / args.events * 1e6:.2f} µs).** A run of 2,000,000 steps keeps "
        f"{len(rows):,} rows (one in {rows.stride} steps, the latest kept), "
        f"{state.window_values:,} values against the per-run budget of "
        f"{state.limits.max_window_values_per_run:,}; "
        f"{state.dropped['metric_window']:,} rows thinned out, counted.",
    ])  # fmt: skip
    write_section("bench/metric_window.py", text)
    print(text)


if __name__ == "__main__":
    main()
