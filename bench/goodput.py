"""What the goodput account costs: a training script marking a phase every step (the SDK's
``monitor.phase``), and runwatch applying the steps that carry it; writes its section of
bench/RESULTS.md.

The script side, in one process, alternating: a loop of ``log_metrics`` alone, and the same
loop with ``with monitor.phase("data_loading"): pass`` before each step, the monitor's
transport discarding the events (the cost measured is the SDK's, not the disk's or the
network's). The runwatch side: ``metric_update`` events of one run applied as POSTed bodies
(``ingest_lines``), with and without ``phase_seconds``, alternating; and the account's own
share of applying a step, a ``Ledger.mark`` per step against the whole ``State.apply``.

    python bench/goodput.py [--steps 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runwatch_sdk import TrainingMonitor

from bench.results import write_section
from bench.run import cpu_model
from exporter.core.events import parse_line
from exporter.core.goodput import Ledger
from exporter.core.state import State
from exporter.pipeline import Pipeline

T0 = 1_790_000_000.0


class Discard:
    """A transport that drops every event: the SDK's own cost, nothing after it."""

    def send(self, event: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def script(steps: int, phases: bool) -> float:
    monitor = TrainingMonitor("bench", transport=Discard(), pid_file=False)
    loss = {"loss": 0.5}
    started = time.perf_counter()
    if phases:
        for step in range(steps):
            with monitor.phase("data_loading"):
                pass
            monitor.log_metrics(loss, step=step)
    else:
        for step in range(steps):
            monitor.log_metrics(loss, step=step)
    elapsed = time.perf_counter() - started
    monitor.complete()
    return elapsed


def lines(count: int, phases: bool) -> list[bytes]:
    extra = {"phase_seconds": {"data_loading": 0.002}} if phases else {}
    start = orjson.dumps({"event_type": "run_start", "run_id": "r", "timestamp": T0})
    return [start, *(orjson.dumps({"event_type": "metric_update", "run_id": "r",
                                   "timestamp": T0 + i * 0.01, "step": i,
                                   "metrics": {"loss": 1 / i, "lr": 3e-4}, **extra})
                     for i in range(1, count + 1))]  # fmt: skip


def ingest(batch: list[bytes]) -> float:
    pipeline = Pipeline()
    started = time.perf_counter()
    for first in range(0, len(batch), 10_000):
        pipeline.ingest_lines(batch[first : first + 10_000], "http")
    return time.perf_counter() - started


def ledger_share(batch: list[bytes]) -> tuple[float, float]:
    """Seconds for State.apply of the parsed steps, and for Ledger.mark of the same."""
    events = [parse_line(line) for line in batch]
    state = State(tracing=False)
    started = time.perf_counter()
    for event in events:
        state.apply(event)
    applied = time.perf_counter() - started
    ledger = Ledger(T0, T0)
    marks = [(float(e.timestamp), e.step) for e in events[1:]]  # type: ignore[attr-defined]
    started = time.perf_counter()
    for ts, step in marks:
        ledger.mark(ts, {}, step, progress=True)
    return applied, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ["RUNWATCH_QUIET"] = "1"
    n = args.steps
    sdk: dict[bool, list[float]] = {False: [], True: []}
    server: dict[bool, list[float]] = {False: [], True: []}
    shares: list[tuple[float, float]] = []
    batches = {phases: lines(n, phases) for phases in (False, True)}
    for _ in range(args.rounds):
        for phases in (False, True):
            sdk[phases].append(script(n, phases))
            server[phases].append(ingest(batches[phases]))
        shares.append(ledger_share(batches[False]))
    bare, marked = statistics.median(sdk[False]), statistics.median(sdk[True])
    plain, carried = statistics.median(server[False]), statistics.median(server[True])
    applied = statistics.median(s[0] for s in shares)
    marking = statistics.median(s[1] for s in shares)
    us = 1e6 / n
    text = "\n".join([
        f"Written by `python bench/goodput.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {cpu_model()}, Python {platform.python_version()}.",
        "",
        "## The goodput account: a phase marked every step, and the steps that carry it",
        "",
        f"{n:,} steps, {args.rounds} rounds alternating, medians.",
        "",
        "| | µs per step |",
        "|---|---:|",
        f"| SDK: `log_metrics` (transport discarding) | {bare * us:.2f} |",
        f"| SDK: `with monitor.phase(...)` + `log_metrics` | {marked * us:.2f} |",
        f"| runwatch: a POSTed `metric_update` applied | {plain * us:.2f} |",
        f"| runwatch: the same with `phase_seconds` | {carried * us:.2f} |",
        f"| runwatch: `State.apply` of a step (parsed) | {applied * us:.2f} |",
        f"| of which the account (`Ledger.mark`) | {marking * us:.2f} |",
        "",
        f"**A phase costs the script {(marked - bare) * us:.2f} µs a step** "
        f"({(marked / bare - 1) * 100:.0f}% over `log_metrics` alone, whose event it rides "
        f"on); **runwatch applies a step carrying it in {(carried / plain - 1) * 100:.0f}% "
        f"more time**, and the account is {marking / applied * 100:.0f}% of applying a step "
        f"({marking * us:.2f} µs).",
    ])  # fmt: skip
    write_section("bench/goodput.py", text)
    print(text)


if __name__ == "__main__":
    main()
