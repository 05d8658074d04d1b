"""The view at ``/`` in a real browser: Debian's Chromium, headless, driven by Playwright,
against a real ``runwatch serve`` fed by the SDK in child processes (each a training script
that takes its orders on stdin). The screenshots of both views in docs/images/ are taken
here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.processes import Bridge, Server
from tests.support import ROOT, wait_for

CHROMIUM = "/usr/bin/chromium"
"""Debian's package (scripts/test installs it); Playwright's own browsers are not fetched."""
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SCREENSHOTS = ROOT / "docs" / "images"
HOSTILE = '<img src=x onerror="window.pwned=1">"&amp;\u202e</td>'
"""A run name that is markup, an entity, and a right-to-left override."""
CORPUS = [
    '"><script>window.pwned=2</script>',
    "javascript:window.pwned=3",
    "{{config}} ${window.pwned=4} `x`",
    "\u200bzero\u2066width\u2069",
    "<svg onload=alert(1)>",
]
"""What else a run says that is hostile: metric keys, a config value, a checkpoint path, an
error message."""

SCRIPT = """
import json, sys
from runwatch_sdk import HttpTransport, TrainingMonitor
run_id, name, url, config = sys.argv[1:5]
monitor = TrainingMonitor(name, run_id=run_id, transport=HttpTransport(url),
                          config=json.loads(config))
monitor.stage("training")
print("ready", flush=True)
for line in sys.stdin:
    order = json.loads(line)
    if order["do"] == "steps":
        for step in range(order["first"], order["last"] + 1):
            monitor.log_metrics({"loss": 2.0 / step ** 0.5, "learning_rate": 3e-4 * 0.999 ** step,
                                 "accuracy": 1 - 1.0 / step ** 0.5}, step)
    elif order["do"] == "checkpoint":
        made = monitor.save_checkpoint(order["path"], metrics=order["metrics"], step=order["step"])
        if order.get("best"):
            monitor.mark_best_checkpoint(made)
    elif order["do"] == "log":
        monitor.log_metrics(order["metrics"], order["step"])
    elif order["do"] == "error":
        monitor.error(order["message"], error_type=order["type"])
    elif order["do"] == "complete":
        monitor.complete()
        monitor.close()
    print("done", flush=True)
"""


class Script:
    """A training script in a child process, fed orders one at a time."""

    def __init__(self, run_id: str, name: str, server: Server, config: dict | None = None) -> None:
        self.run_id = run_id
        config = config or {"optimizer": "adamw", "lr": 3e-4, "batch_size": 64}
        self.process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, run_id, name, server.url, json.dumps(config)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None and self.process.stdout.readline() == "ready\n"

    def order(self, **order: object) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(order) + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline() == "done\n"

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def open_view(browser: Browser, url: str) -> tuple[Page, list[str]]:
    """The page, and the errors it logs (a script error fails the test)."""
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    return page, errors


def api_step(server: Server, run_id: str) -> int | None:
    return httpx.get(f"{server.url}/api/runs/{run_id}", timeout=5).json()["step"]


def test_a_live_run_its_chart_checkpoints_and_crash_in_the_browser(
    serve, browser: Browser, tmp_path: Path
) -> None:
    server = serve("--pid-file", str(tmp_path / "pids" / "*.pid"), "--pid-interval", "0.1",
                   "--no-nvml", "--fake-gpus", "2")  # fmt: skip
    alpha = Script("alpha", "resnet50-baseline", server)
    alpha.order(do="steps", first=1, last=200)
    wait_for(lambda: api_step(server, "alpha") == 200, what="the first steps in runwatch")
    page, errors = open_view(browser, server.url + "/")

    # the log opens with what the state tells of the past
    expect(page.locator("#log li", has_text="run started: resnet50-baseline")).to_have_count(1)

    # the run appears with its badge, selected, its history on both charts
    run = page.locator("li.run[data-run-id='alpha']")
    badge = run.locator(".badge")
    assert badge.inner_text() == "[● RUNNING]"
    assert badge.evaluate("e => getComputedStyle(e).color") == "rgb(0, 255, 0)"
    loss = page.locator("#panel-loss")
    expect(page.locator("#panel-loss")).to_have_attribute("data-points", "200")
    assert loss.get_attribute("data-key") == "loss"
    assert page.locator("#panel-lr").get_attribute("data-key") == "learning_rate"
    assert page.locator("#panel-loss canvas").count() == 1

    # a step logged shows on the chart within a second of runwatch having it
    logged = time.monotonic()
    alpha.order(do="steps", first=201, last=201)
    wait_for(lambda: api_step(server, "alpha") == 201, what="step 201 in runwatch")
    arrived = time.monotonic()
    expect(loss).to_have_attribute("data-last-step", "201")
    shown = time.monotonic()
    assert shown - arrived < 1.0, f"{shown - arrived:.2f} s from runwatch to the chart"
    assert shown - logged < 2.5, f"{shown - logged:.2f} s from log_metrics to the chart"

    # last 100 / all, and the x axis by time
    page.click("button[data-window='100']")
    expect(page.locator("#panel-loss")).to_have_attribute("data-points", "100")
    page.keyboard.press("w")  # the next window: 1000 (all 201 of them)
    expect(page.locator("#panel-loss")).to_have_attribute("data-points", "201")

    # checkpoints: the table fills live, sorts by any column, stars the best
    for step, value, best in ((50, 0.31, False), (150, 0.12, True), (100, 0.2, False)):
        alpha.order(do="checkpoint", path=f"/ckpt/{step}.pt", metrics={"val_loss": value},
                    step=step, best=best)  # fmt: skip
    rows = page.locator("#checkpoints tbody tr")
    expect(page.locator("#checkpoints tbody tr[data-checkpoint-id]")).to_have_count(3)

    def steps() -> list[int]:
        return [int(t.replace(",", "")) for t in rows.locator("td:nth-child(2)").all_inner_texts()]

    assert steps() == [150, 100, 50]  # newest step first by default
    page.click("#checkpoints th[data-sort='step']")
    assert steps() == [50, 100, 150]
    page.click("#checkpoints th[data-sort='metric:val_loss']")
    assert steps() == [50, 100, 150]  # by the metric: a number column sorts high to low first
    page.click("#checkpoints th[data-sort='metric:val_loss']")
    assert steps() == [150, 100, 50]
    best = page.locator("#checkpoints tbody tr.best")
    assert best.count() == 1 and "★" in best.inner_text() and "ckpt_000002" in best.inner_text()
    assert page.locator("#log li", has_text="checkpoint ckpt_000002").count() == 1

    # the goodput account in RUN CONFIG: the steps the checkpoints kept, in green
    expect(page.locator("#config .goodbar .part.good")).to_have_count(1)
    expect(page.locator("#config dd", has_text="% of")).to_have_count(1)

    # a second run, compared on the charts
    beta = Script("beta", HOSTILE, server, config={key: key for key in CORPUS})
    beta.order(do="steps", first=1, last=120)
    beta.order(do="log", step=121, metrics={key: 1.0 for key in CORPUS})
    beta.order(do="checkpoint", path=CORPUS[1], metrics={CORPUS[0]: 0.5}, step=121)
    beta.order(do="error", message=CORPUS[0], type=CORPUS[4])
    page.wait_for_selector("li.run[data-run-id='beta']")
    page.locator("li.run[data-run-id='beta']").focus()
    page.keyboard.press("c")
    expect(page.locator("#panel-loss")).to_have_attribute("data-points", "322")

    # hostile text renders as text, and nothing of it runs
    name = page.locator("li.run[data-run-id='beta'] .name")
    expect(name).to_have_text(HOSTILE)  # the PID file shows the run first, then its name
    page.locator("li.run[data-run-id='beta']").click()
    expect(page.locator("#checkpoints tbody tr[data-checkpoint-id]")).to_have_count(1)
    options = page.locator("#panel-loss select.key option").all_inner_texts()
    assert set(CORPUS) <= set(options), options  # the keys, as text
    config = page.locator("#config").inner_text()
    assert all(text in config for text in CORPUS[:3]), config
    assert CORPUS[1] in page.locator("#checkpoints tbody").inner_text()  # the path
    expect(page.locator("#log li.warn", has_text=f"error {CORPUS[4]}: {CORPUS[0]}")).to_have_count(
        1
    )
    markup = page.locator("main :is(img, svg, script, iframe, a[href^='javascript'])")
    assert markup.count() == 0
    assert page.evaluate("window.pwned") is None
    page.locator("li.run[data-run-id='alpha']").click()
    page.locator("li.run[data-run-id='beta']").click(modifiers=["Shift"])  # overlaid again
    expect(page.locator("li.run[data-run-id='beta'] .mark")).to_have_text("+")

    # a crashed run turns red
    beta.kill()
    crashed = page.locator("li.run[data-run-id='beta'][data-status='crashed'] .badge")
    crashed.wait_for(timeout=10000)
    assert crashed.inner_text() == "[✗ CRASHED]"
    assert crashed.evaluate("e => getComputedStyle(e).color") == "rgb(255, 0, 0)"
    page.wait_for_selector("#log li.error", timeout=5000)

    page.click("button[data-window='all']")
    expect(page.locator("#panel-loss")).to_have_attribute("data-points", "322")
    page.wait_for_timeout(300)  # one more draw of the settled page for the picture
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "view-training.png")
    alpha.order(do="complete")
    assert not errors, errors


def test_the_trading_view_shows_the_bridge(serve, browser: Browser, tmp_path: Path) -> None:
    bridge = Bridge(tmp_path, tick=0.2, warmup=20)
    try:
        server = serve("--bridge-url", bridge.url, "--bridge-interval", "0.5", "--no-nvml")
        wait_for(lambda: httpx.get(server.url + "/api/trading/status").json()["trading"],
                 what="a poll of the bridge")  # fmt: skip
        page, errors = open_view(browser, server.url + "/#trading")
        assert page.locator("#training").is_hidden()
        page.wait_for_selector("#positions tbody tr td:not(.muted)")
        assert page.locator("#bridge-up").inner_text() == "[● BRIDGE UP]"
        stage = bridge.get("/api/state")["current_stage"]
        assert stage is not None
        page.wait_for_selector("#cils tbody tr td:not(.muted)")
        expect(page.locator("#panel-portfolio canvas")).to_have_count(1)  # the polls charted
        assert int(page.locator("#panel-portfolio").get_attribute("data-points") or 0) >= 1
        page.keyboard.press("1")
        page.wait_for_selector("#training:not([hidden])")
        page.keyboard.press("2")
        page.wait_for_selector("#trading:not([hidden])")
        page.wait_for_timeout(300)
        page.screenshot(path=SCREENSHOTS / "view-trading.png")
        assert not errors, errors
    finally:
        bridge.close()


def test_the_page_refuses_inline_script_and_is_framed_nowhere(serve) -> None:
    server = serve("--no-nvml", "--no-system")
    page = httpx.get(server.url + "/")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "<script>" not in page.text
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css"),
                        ("vendor/uPlot.iife.min.js", "javascript")):  # fmt: skip
        answer = httpx.get(f"{server.url}/static/{asset}")
        assert answer.status_code == 200 and kind in answer.headers["content-type"], asset
    assert "http://" not in (ROOT / "exporter/app/static/index.html").read_text()
