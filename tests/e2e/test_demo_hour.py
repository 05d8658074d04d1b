"""An hour of the compose demo on a short clock: no self-alert fires, and a failed run's
alert holds.

The compose stack's workload is replayed through the real pipeline in simulated time: the
demo's synthetic runs (one in three fails), the bridge's training runs, and the reference
training backend's jobs (its own code, stepped on the simulated clock: about 12 a minute,
so --max-runs 100 is reached within minutes, as in compose). The reference bridge is
polled as the demo polls it, by the real poller over HTTP, every 5 simulated seconds; what
waits on a real clock there (the poll interval, uvicorn closing a kept-alive connection
idle for 5 s) runs SHORT_CLOCK real seconds per simulated one, so the hour's 720 polls meet
the server's closes as the demo's do. Every 15 simulated seconds the retention sweep runs
and /metrics is rendered, as Prometheus would scrape it. Those scrapes become the input
series of a ``promtool test rules`` file over the shipped rules, which must show none of
runwatch's self-alerts (RunwatchRejectingInput, RunwatchRenderErrors,
RunwatchDroppingSeries) at any time in the hour, and every failed run's RunwatchRunFailed
still firing at its end.
"""

from __future__ import annotations

import heapq
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
import uvicorn
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.app.config import Settings
from exporter.core.events import parse_lines
from exporter.core.state import Limits
from exporter.pipeline import Pipeline
from exporter.simulate import reference_backend
from exporter.simulate.reference_bridge import create_bridge_app
from exporter.simulate.synthetic import synthetic_run
from exporter.sources.peers.backend import BackendEvents
from exporter.sources.peers.bridge import BRIDGE_SOURCE, BridgePoller
from exporter.sources.peers.contract import REJECT_REASONS
from exporter.sources.sampled.sampling import SourceUnavailable
from exporter.telemetry.exposition import Exposition
from tests.support import ROOT, free_port, wait_for

HOUR, SCRAPE = 3600, 15
SELF_ALERTS = ("RunwatchRejectingInput", "RunwatchRenderErrors", "RunwatchDroppingSeries")
SELF_SERIES = ("runwatch_events_rejected_total", "runwatch_render_errors_total",
               "runwatch_series_dropped_total")  # fmt: skip
LABELS = {"job": "runwatch", "instance": "runwatch:19464"}
SHORT_CLOCK = 0.005  # real seconds per simulated second, for what waits on a real clock
KEEP_ALIVE = 5  # seconds uvicorn keeps an idle connection open: the reference bridge's


def runs(prefix: str, start: float, step: float, steps: int, gap: float,
         fail_every: int | None = None) -> Iterator[tuple[float, str, bytes]]:  # fmt: skip
    """Runs one after another, as the demo's and the bridge's generators write them."""
    number, clock = 0, start
    while clock < start + HOUR:
        number += 1
        fail = 300 if fail_every and number % fail_every == 0 else None
        for event in synthetic_run(f"{prefix}_{number:03d}", clock, step_seconds=step,
                                   steps=steps, fail_at_step=fail, seed=number):  # fmt: skip
            clock = datetime.fromisoformat(event["timestamp"]).timestamp()
            yield clock, "jsonl", orjson.dumps(event)
        clock += gap


def backend_jobs(start: float, tick: float, monkeypatch) -> Iterator[tuple[float, str, bytes]]:
    """The reference backend's own job cycle, stepped every tick of the simulated clock."""
    clock = [start]
    monkeypatch.setattr(reference_backend, "time", SimpleNamespace(time=lambda: clock[0]))
    backend = reference_backend.TrainingBackend()
    while clock[0] < start + HOUR:
        for message in backend.step():
            yield clock[0], "backend", orjson.dumps(message)
        clock[0] += tick


@contextmanager
def reference_bridge(keep_alive: float) -> Iterator[str]:
    """The demo's reference bridge served as the demo serves it (uvicorn on a loopback
    port), idle connections closed after ``keep_alive`` seconds; its URL."""
    port = free_port()
    config = uvicorn.Config(create_bridge_app(), host="127.0.0.1", port=port, log_level="warning",
                            timeout_keep_alive=keep_alive)  # type: ignore[arg-type]  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="the reference bridge")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def bridge_poller(pipeline: Pipeline, url: str) -> BridgePoller:
    """The bridge's REST poller as the demo wires it (its reasons declared at 0)."""
    settings, stats = Settings(), pipeline.stats
    stats.declare(stats.rejected, [(BRIDGE_SOURCE, reason) for reason in REJECT_REASONS])
    poller = BridgePoller(url, settings.bridge_timeout, stats, settings.max_positions,
                          settings.max_response_bytes)  # fmt: skip
    poller.open()
    return poller


def scrape(pipeline: Pipeline) -> dict[str, float]:
    """The samples a /metrics render would show of the series the alerts below read, by
    series (name and labels): the collector's families, without the text round trip."""
    samples = {}
    text = Exposition(pipeline).render()[0].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in SELF_SERIES or (
                sample.name == "training_run_status" and sample.labels["status"] == "failed"
            ):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted({**sample.labels,
                                                                   **LABELS}.items()))  # fmt: skip
                samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


@pytest.fixture(scope="module")
def an_hour(tmp_path_factory) -> tuple[Pipeline, list[dict[str, float]]]:
    monkeypatch = pytest.MonkeyPatch()
    start = datetime.now().timestamp() - HOUR - 60  # in the past: no event from the future
    pipeline = Pipeline(Limits())  # the defaults compose runs: 100 runs, 24 h retention
    backend = BackendEvents(pipeline)
    workload = heapq.merge(
        runs("demo", start, 0.1, 600, 0.5, fail_every=3),  # runwatch demo's _generate
        runs("bridge_run", start, 0.5, 100, 0.0),  # the reference bridge's training runs
        backend_jobs(start, 0.5, monkeypatch),  # the reference backend, a tick per 0.5 s
    )
    scrapes, pending = [], next(workload, None)
    interval = Settings().bridge_interval  # the demo's: 5 s
    with reference_bridge(KEEP_ALIVE * SHORT_CLOCK) as url:
        poller = bridge_poller(pipeline, url)
        polled, real_start, answered = start, time.monotonic(), 0
        try:
            for step in range(1, HOUR // SCRAPE + 1):
                now = start + step * SCRAPE
                while polled + interval <= now:  # at its simulated time, on the short clock
                    polled += interval
                    time.sleep(max(0.0, real_start + (polled - start) * SHORT_CLOCK
                                   - time.monotonic()))  # fmt: skip
                    with suppress(SourceUnavailable):  # counted by reason, as in the demo
                        poller.sample()
                        answered += 1
                lines = []
                while pending is not None and pending[0] < now:
                    _, source, line = pending
                    if source == "backend":
                        backend(line)
                    else:
                        lines.append(line)
                    pending = next(workload, None)
                pipeline.apply_parsed(parse_lines(lines, 1 << 20), "jsonl")
                pipeline.expire_runs(now)
                scrapes.append(scrape(pipeline))
        finally:
            poller.close()
            monkeypatch.undo()
    assert answered == HOUR // interval  # the bridge answered each of the hour's polls
    return pipeline, scrapes


def test_the_hour_fills_max_runs_and_forgets_finished_runs_without_a_drop(an_hour) -> None:
    pipeline, _ = an_hour
    state = pipeline.state
    assert state.forgotten["max_runs"] > 300  # the backend's jobs passed the bound many times
    assert len(state.runs) == 100 and sum(state.dropped.values()) == 0
    failed = [run for run in state.runs.values() if run.status == "failed"]
    assert len(failed) >= 15  # every failed demo run of the hour is still kept


def test_no_self_alert_fires_in_the_hour_and_failed_runs_stay_alerting(
    an_hour, bin_dir: Path, tmp_path: Path
) -> None:
    _, scrapes = an_hour
    series: dict[str, list[str]] = defaultdict(lambda: ["_"] * len(scrapes))
    for index, samples in enumerate(scrapes):
        for name, value in samples.items():
            series[name][index] = repr(value)
    last = scrapes[-1]
    failed = sorted(name for name, value in last.items()
                    if name.startswith("training_run_status") and value == 1)  # fmt: skip
    assert len(failed) >= 15
    end = f"{(len(scrapes) - 1) * SCRAPE}s"
    tests = {
        "rule_files": [str(ROOT / "prometheus" / "rules" / "runwatch-alerts.yml")],
        "evaluation_interval": f"{SCRAPE}s",
        "tests": [{
            "interval": f"{SCRAPE}s",
            "input_series": [{"series": name, "values": " ".join(values)}
                             for name, values in series.items()],
            "alert_rule_test": [
                *({"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": []}
                  for minute in range(1, 60) for alert in SELF_ALERTS),
                {"eval_time": end, "alertname": "RunwatchRunFailed",
                 "exp_alerts": [failed_alert(name) for name in failed]},
            ],
        }],
    }  # fmt: skip
    path = tmp_path / "hour.test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run([bin_dir / "promtool", "test", "rules", path],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def failed_alert(series: str) -> dict[str, dict[str, str]]:
    """RunwatchRunFailed as it fires on ``training_run_status{...,status="failed"}``."""
    inner = series[series.index("{") + 1 : -1]
    labels = {k: v.strip('"') for k, v in (pair.split("=", 1) for pair in inner.split(","))}
    run, instance = labels["run_id"], labels["instance"]
    return {
        "exp_labels": {**labels, "severity": "warning"},
        "exp_annotations": {
            "summary": f"Training run {run} failed.",
            "description": f"Run {run} on {instance} completed with status failed.",
            "runbook_url": "https://github.com/runwatch/runwatch/blob/main/docs/alerts.md#runwatchrunfailed",
        },
    }
