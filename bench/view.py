"""The view at / in Chromium with a run of 100,000 steps beside one of 1,000: how long the
page takes to draw the history, what a redraw costs, how soon a step POSTed shows on the
chart; writes its section of bench/RESULTS.md.

One ``runwatch serve`` holds both runs (three keys a step, POSTed as NDJSON). For each run,
alternating, a fresh page opens on it and is timed from navigation until both charts have
drawn every point (uPlot's draw hook sets the panel's ``data-points``); then steps are
POSTed one every 100 ms and each is timed from the POST's answer until the chart has drawn
it (``data-last-step``), while the page's own figure of each redraw (``data-draw-ms``: from
the data handed to uPlot to its draw hook) is collected. Debian's Chromium, headless, as the
browser tests drive it.

    python bench/view.py [--steps 100000] [--live-seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_section
from bench.run import cpu_model, percentile
from bench.trees import serve

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
T0 = 1_790_000_000.0


def step_event(run_id: str, step: int, at: float) -> dict:
    return {"event_type": "metric_update", "run_id": run_id, "timestamp": at, "step": step,
            "metrics": {"loss": 2.0 / (1 + step) ** 0.5, "learning_rate": 3e-4 * 0.99999 ** step,
                        "accuracy": 1 - 1.0 / (1 + step) ** 0.5}}  # fmt: skip


def post(url: str, events: list[dict]) -> None:
    body = b"\n".join(orjson.dumps(e) for e in events)
    answer = httpx.post(url + "/v1/events", content=body, timeout=60)
    assert answer.status_code == 202, answer.text


def load_run(url: str, run_id: str, steps: int) -> None:
    post(url, [{"event_type": "run_start", "run_id": run_id, "name": run_id, "timestamp": T0}])
    for first in range(1, steps + 1, 10_000):
        last = min(steps, first + 9_999)
        post(url, [step_event(run_id, s, T0 + s * 0.01) for s in range(first, last + 1)])


def wait_attribute(page: Page, selector: str, name: str, value: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while page.get_attribute(selector, name) != value:
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} {name} never became {value}")
        time.sleep(0.002)


def open_run(page: Page, url: str, run_id: str) -> tuple[float, int]:
    """Seconds from navigation to both charts drawn whole, and the points each drew (what
    the history answers the page's query with: past 100,000 rows, thinned)."""
    query = {"layout": "columns", "keys": "loss,learning_rate", "max_points": 100_000}
    points = httpx.get(f"{url}/api/runs/{run_id}/metrics", params=query, timeout=60).json()["rows"]
    started = time.monotonic()
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")
    if page.get_attribute("li.run[aria-selected='true']", "data-run-id") != run_id:
        page.click(f"li.run[data-run-id='{run_id}']")
    for panel in ("#panel-loss", "#panel-lr"):
        wait_attribute(page, panel, "data-points", str(points))
    return time.monotonic() - started, points


def live(
    page: Page, url: str, run_id: str, first: int, seconds: float
) -> tuple[list[float], list[float]]:
    """Each step's delay from its POST answered to the chart drawn with it, and the page's
    redraw figures meanwhile."""
    delays: list[float] = []
    draws: list[float] = []
    step = first
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        post(url, [step_event(run_id, step, T0 + step * 0.01)])
        posted = time.monotonic()
        wait_attribute(page, "#panel-loss", "data-last-step", str(step), timeout=10)
        delays.append(time.monotonic() - posted)
        draws.append(float(page.get_attribute("#panel-loss", "data-draw-ms") or "nan"))
        step += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - posted)))
    return delays, draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--live-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs = {"large": args.steps, "small": 1_000}
    results: dict[str, dict[str, list[float]]] = {
        name: {"load": [], "points": [], "delays": [], "draws": [], "heap": []} for name in runs
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(ROOT, ["--local-dir", ""], Path(tmp) / "log") as served,
    ):
        url = served.url
        for name, steps in runs.items():
            load_run(url, name, steps)
        next_step = dict(runs)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for _ in range(args.rounds):
                for name in runs:
                    page = browser.new_page(viewport={"width": 1600, "height": 900})
                    seconds, points = open_run(page, url, name)
                    results[name]["load"].append(seconds)
                    results[name]["points"].append(points)
                    delays, draws = live(page, url, name, next_step[name] + 1, args.live_seconds)
                    next_step[name] += len(delays)
                    results[name]["delays"] += delays
                    results[name]["draws"] += draws
                    heap = page.evaluate("performance.memory.usedJSHeapSize")
                    results[name]["heap"].append(heap / 2**20)
                    page.close()
            browser.close()
    write_section("bench/view.py", report(args, runs, results))
    print(report(args, runs, results))


def report(args: argparse.Namespace, runs: dict[str, int],
           results: dict[str, dict[str, list[float]]]) -> str:  # fmt: skip
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout
    lines = [
        f"Written by `python bench/view.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {cpu_model()}, Python {platform.python_version()}, {chromium.strip()} headless.",
        "",
        f"## The view: a run of {runs['large']:,} steps beside one of {runs['small']:,}",
        "",
        "Both runs in one `runwatch serve` (three keys a step); for each, alternating, "
        f"{args.rounds} rounds: a fresh page opened on it (navigation to both charts drawn "
        f"whole), then a step POSTed every 100 ms for {args.live_seconds:g} s, each timed "
        "from the POST's answer to the chart drawn with it; redraw: the page's own figure, "
        "data handed to uPlot to its draw hook. Medians, p95 and max over all rounds.",
        "",
        "| run | points a chart | open s (median) | step to chart ms p50 / p95 / max "
        "| redraw ms p50 / p95 | JS heap MB |",
        "|---|---:|---:|---|---|---:|",
    ]
    for name in runs:
        r = results[name]
        delays = [d * 1000 for d in r["delays"]]
        lines.append(
            f"| {name} | {max(r['points']):,} | {statistics.median(r['load']):.2f} "
            f"| {percentile(delays, 0.5):.0f} / {percentile(delays, 0.95):.0f} / {max(delays):.0f} "
            f"| {percentile(r['draws'], 0.5):.1f} / {percentile(r['draws'], 0.95):.1f} "
            f"| {max(r['heap']):.0f} |"
        )
    large, small = results["large"], results["small"]
    ratio = percentile(large["draws"], 0.5) / max(percentile(small["draws"], 0.5), 0.01)
    lines += ["", f"**A redraw of {runs['large']:,} points costs {ratio:.1f}x one of "
              f"{runs['small']:,}; a step reaches the chart in "
              f"{percentile([d * 1000 for d in large['delays']], 0.5):.0f} ms (median) either "
              "way.**"]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
