"""Router-event ingest, side by side in one run; writes its section of bench/RESULTS.md.

``runwatch replay --router-events`` (the built-in mapping: counts by type and category,
labelled counters, gauges, spans, flows) and mtail ``--one_shot`` running
bench/mtail-router/router.mtail (events by type, hosts up) read the same synthetic router
trace (seed 004's catalogue, ``exporter.simulate.synthetic.synthetic_router_cycle``), alternating,
several rounds: events per second, CPU seconds per million events, peak RSS.

    python bench/router.py [--events 500000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_section
from bench.run import Measure, alternate, components, cpu_model
from exporter.simulate.synthetic import synthetic_router_cycle

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def generate(path: Path, count: int) -> int:
    """Whole pipeline passes until ``count`` events; returns how many were written."""
    written, cycle, clock = 0, 0, 1_767_225_600.0
    with path.open("wb") as out:
        while written < count:
            for event in synthetic_router_cycle(cycle, clock, 1.0):
                out.write(orjson.dumps(event) + b"\n")
                written += 1
                clock = event["timestamp"]
            cycle += 1
    return written


def run(trace: Path, rounds: int, mtail: Path) -> dict[str, list[Measure]]:
    commands = {
        "runwatch replay --router-events": [sys.executable, "-m", "exporter", "replay",
                                            "--router-events", str(trace)],
        "mtail --one_shot": [str(mtail), "--one_shot", "--one_shot_format", "prometheus",
                             "--progs", str(HERE / "mtail-router"), "--logs", str(trace),
                             "--logtostderr"],
    }  # fmt: skip
    return alternate(commands, rounds)


def report(count: int, size: int, results: dict[str, list[Measure]]) -> str:
    rows, rates = [], {}
    for name, runs in results.items():
        wall = statistics.median(m.wall for m in runs)
        cpu = statistics.median(m.cpu for m in runs)
        rss = max(m.peak_rss_mb for m in runs)
        rates[name] = (count / wall, cpu * 1_000_000 / count)
        rows.append(f"| {name} | {count / wall:,.0f} | {wall:.2f} | "
                    f"{cpu * 1_000_000 / count:.2f} | {rss:.0f} |")  # fmt: skip
    (rw_rate, rw_cpu), (mt_rate, mt_cpu) = rates.values()
    return f"""Written by `python bench/router.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.
Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()},
{platform.system()} {platform.release()}.

## Router events: {count:,} events ({size / 1e6:.0f} MB, the event router's catalogue)

Both read the same trace start to end and printed their metrics, alternating,
{len(next(iter(results.values())))} rounds; medians of wall and CPU time, peak RSS the
maximum. mtail counts events by type and keeps hosts up; runwatch applies the whole
built-in mapping (by type and category, labelled counters, gauges, spans, flows with
their histograms) on two cores: a forked worker decodes each event and reads what the
mapping's rules need from it, the main process applies that to the state.

| tool | events/s | wall s | CPU s / 1M events | peak RSS MB, largest process |
|---|---:|---:|---:|---:|
{chr(10).join(rows)}

**runwatch / mtail: {rw_rate / mt_rate:.2f}x the events per second, \
{rw_cpu / mt_cpu:.2f}x the CPU per event** (for the whole mapping against two counts).
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (5)")
    args = parser.parse_args()
    bin_dir = components("mtail")
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-") as tmp:
        trace = Path(tmp) / "router.jsonl"
        count = generate(trace, args.events)
        results = run(trace, args.rounds, bin_dir / "mtail")
        text = report(count, trace.stat().st_size, results)
    write_section("bench/router.py", text)
    print(text)


if __name__ == "__main__":
    main()
