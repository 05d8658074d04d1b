"""The SDK's HTTP sender, this tree's and an earlier commit's side by side in one run:
the cost of ``log_metrics`` in the training loop, and the highest rate one training
process can log with nothing lost, against a local ``runwatch serve``; writes its section
of bench/RESULTS.md.

Each measurement is a training script in a process of its own (the SDK imported from
the tree measured), logging ``{"loss", "learning_rate"}`` per step through
``TrainingMonitor`` with ``RUNWATCH_URL`` set, paced at a rate for a few seconds or as
fast as it can; then ``end()`` (which delivers what is left within 5 s). What arrived is
read from the serve's ``training_events_total{event_type="metric_update"}``. The cost per
call is the loop's time per step less that of the same loop without a monitor.

    python bench/sdk_sender.py [--baseline 93b732a] [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_section
from bench.run import cpu_model
from bench.trees import ROOT, baseline_worktree, serve

RATES = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000)
FLAT_OUT_STEPS = 200_000

SCRIPT = textwrap.dedent("""
    import json, sys, time
    mode, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    steps = int(sys.argv[4])
    import runwatch_sdk
    from runwatch_sdk import TrainingMonitor
    if rate:
        steps = int(rate * seconds)
    monitor = TrainingMonitor("bench", pid_file=False) if mode == "sdk" else None
    log = monitor.log_metrics if monitor else (lambda metrics, step: None)
    start = time.perf_counter()
    for step in range(steps):
        if rate:
            while time.perf_counter() < start + step / rate:
                pass
        log({"loss": 1.0 / (step + 1), "learning_rate": 3e-4}, step=step)
    loop = time.perf_counter() - start
    if monitor:
        monitor.end()
    t = monitor.transport if monitor else None
    print(json.dumps({"steps": steps, "loop": loop, "sdk": runwatch_sdk.__file__,
                      "dropped": t.dropped if t else 0}))
""")


def logged(tree: Path, url: str, mode: str, rate: float, seconds: float, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "sdk"), "RUNWATCH_URL": url,
           "RUNWATCH_QUIET": "1"}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(rate), str(seconds),
                          str(steps)], env=env, capture_output=True, text=True, check=True,
                         timeout=600).stdout  # fmt: skip
    result = json.loads(out.splitlines()[-1])
    if not Path(result["sdk"]).is_relative_to(tree):
        raise SystemExit(f"{tree}: the SDK was imported from {result['sdk']}")
    return result


def arrived(url: str) -> int:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith('training_events_total{event_type="metric_update"}'):
            return int(float(line.split()[-1]))
    return 0


def measure(tree: Path, url: str, seconds: float) -> dict:
    """Per rate, the share that arrived; flat out, the rate reached and what arrived; the
    cost per call."""
    rows: dict[str, tuple[float, int, int]] = {}
    for rate in RATES:
        before = arrived(url)
        result = logged(tree, url, "sdk", rate, seconds, 0)
        rows[f"{rate:,}/s"] = (rate, result["steps"], arrived(url) - before)
    before = arrived(url)
    flat = logged(tree, url, "sdk", 0, 0, FLAT_OUT_STEPS)
    bare = logged(tree, url, "bare", 0, 0, FLAT_OUT_STEPS)
    reached = flat["steps"] / flat["loop"]
    rows["flat out"] = (reached, flat["steps"], arrived(url) - before)
    cost = (flat["loop"] - bare["loop"]) / FLAT_OUT_STEPS * 1e6
    return {"rows": rows, "cost_us": cost}


def report(trees: dict[str, dict], seconds: float) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    names = list(trees)
    lines = [
        f"Written by `python bench/sdk_sender.py` on {now}.",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}.",
        "",
        "## The SDK's HTTP sender: what one training process can log, whole",
        "",
        f"A training script (its own process) logs loss and learning rate per step through "
        f"`TrainingMonitor` to a local `runwatch serve`, paced for {seconds:g} s at each "
        f"rate, then flat out ({FLAT_OUT_STEPS:,} steps); `end()` delivers the rest. "
        "Arrived: metric updates the serve applied. Both trees against the same serve, "
        "one after the other.",
        "",
        "| rate | " + " | ".join(f"{name}: arrived of logged" for name in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for row in trees[names[0]]["rows"]:
        cells = []
        for name in names:
            rate, steps, got = trees[name]["rows"][row]
            label = f"{got:,} of {steps:,}" + ("" if got == steps else f" ({got / steps:.0%})")
            if row == "flat out":
                label += f" at {rate:,.0f}/s"
            cells.append(label)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines.append("| µs per `log_metrics` call (loop time less a bare loop) | "
                 + " | ".join(f"{trees[n]['cost_us']:.1f}" for n in names) + " |")  # fmt: skip
    for name in names:
        whole = [r for r, (rate, steps, got) in trees[name]["rows"].items() if got == steps]
        lines.append(f"\n{name}: zero loss at {', '.join(whole) or 'no rate'}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="93b732a", help="earlier commit to compare")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        base = baseline_worktree(args.baseline, Path(work))
        log = Path(work) / "serve.log"
        with base as baseline, serve(ROOT, ["--local-dir", ""], log) as served:
            results = {}
            for name, tree in ((f"baseline {args.baseline}", baseline), ("this tree", ROOT)):
                results[name] = measure(tree, served.url, args.seconds)
                print(name, results[name], flush=True)
    text = report(results, args.seconds)
    print(text)
    write_section("bench/sdk_sender.py", text)


if __name__ == "__main__":
    main()
