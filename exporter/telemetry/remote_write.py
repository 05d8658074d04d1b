"""Step history to a Prometheus remote-write receiver: every logged step at its event time.

A scrape keeps one value per metric key per scrape; a run logging 20 steps a second
shows one step in 300. With ``--remote-write-url`` each value of a ``metric_update``
(and of a checkpoint) becomes a sample of ``training_step_metric{run_id, key}`` at the
event's timestamp, pushed with the ``job`` and ``instance`` labels the scrape gives,
so the boards' filters match. Remote write and not OTLP: Prometheus takes it with no
collector in between (``--web.enable-remote-write-receiver``), and a sample keeps its
own timestamp (an OTLP gauge point through the collector's exporter does too, but
needs the collector for a single-process setup).

Never in ingestion's way: samples go through a bounded :class:`Shipper` queue; a
batch is retried with backoff on connection errors, 429 and 5xx, up to
:data:`MAX_ATTEMPTS`; every sample lost is counted by reason in
``runwatch_remote_write_dropped_samples_total``. Each step is stamped by
:class:`RunClock` (after its run's previous one), so no sample is out of order when
queued, and its step goes along as ``training_history_step{run_id}``.

Prometheus stores none of a request if it refuses one sample (remote write 1.0), so
one bad sample must not share a request with good ones: samples more than
:data:`OLD_SAMPLE_MS` behind the newest (Prometheus refuses what is older than about
an hour behind its head) go in requests of their own, and a request refused for its
samples (out of bounds, too old, out of order) is split by series into halves, sent
again, down to the series refused, which are dropped and counted
(``out_of_bounds``, ``out_of_order``); at most :data:`MAX_REQUESTS_PER_BATCH` requests
a batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from exporter import __version__
from exporter.core.outputs import Output, StepValues
from exporter.pipeline import Emit
from exporter.pipeline.self_stats import Stats
from exporter.telemetry.prompb import write_request
from exporter.telemetry.shipper import Outcomes, Shipper, whole
from exporter.telemetry.step_history import STEP_INDEX_METRIC, STEP_METRIC, RunClock, millis

log = logging.getLogger(__name__)

DROP_REASONS = ("queue_full", "out_of_order", "out_of_bounds", "rejected", "failed")
MAX_ATTEMPTS = 6  # 15.5 s of backoff (0.5, 1, 2, 4, 8) before a batch is given up
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0
OLD_SAMPLE_MS = 3_600_000
"""Samples older than this behind the newest (of the batch, or the clock) are sent apart:
Prometheus refuses those older than half its head block (2 h) behind its newest sample."""
MAX_REQUESTS_PER_BATCH = 64
"""Requests one batch may take while refused requests are split (a batch of all-refused
series stops there, its rest dropped)."""
REFUSED_SAMPLES = {
    "out of bounds": "out_of_bounds",
    "too old sample": "out_of_bounds",
    "out of order sample": "out_of_order",
    "duplicate sample for timestamp": "out_of_order",
}
"""Prometheus's errors for a sample it refuses (answered 400, nothing of the request
stored), and the drop reason each counts as."""

Sample = tuple[str, str | None, int, float]  # run id, key (None: the step), time (ms), value
Series = list[Sample]  # one (run id, key)'s samples, in time order


@dataclass(frozen=True, slots=True)
class RemoteWriteSettings:
    url: str
    job: str
    instance: str
    max_queue: int = 100_000  # samples waiting; the oldest go first when it is full
    batch_size: int = 5000
    timeout_seconds: float = 10.0


class RemoteWriteOutput:
    """An OutputSink: StepValues into remote-write requests."""

    def __init__(self, settings: RemoteWriteSettings, stats: Stats) -> None:
        self._settings = settings
        self._stats = stats
        stats.declare(stats.remote_write_sent, [()])
        stats.declare(stats.remote_write_dropped, list(DROP_REASONS))
        self._labels = {"job": settings.job, "instance": settings.instance}
        self._clock = RunClock()
        self._client = httpx.Client(timeout=settings.timeout_seconds, headers={
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "User-Agent": f"runwatch/{__version__}",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        })  # fmt: skip
        self._closing = threading.Event()
        self._warned: set[str] = set()
        self._shipper: Shipper[Sample] = Shipper(
            self._send,
            lambda samples: stats.count(stats.remote_write_sent, (), len(samples)),
            lambda reason, samples: stats.count(stats.remote_write_dropped, reason, len(samples)),
            name="runwatch-remote-write",
            max_queue=settings.max_queue,
            batch_size=settings.batch_size,
        )

    def handle(self, outputs: Sequence[Output], emit: Emit) -> None:
        """Queue the step values; not those re-read after a restart (``emit.fresh`` off:
        they were sent before, and Prometheus would refuse them as out of order)."""
        if not emit.fresh:
            return
        put, stamp = self._shipper.put, self._clock.stamp
        for output in outputs:
            if output.__class__ is StepValues:
                run_id = output.run_id
                at = stamp(run_id, millis(output.timestamp))
                for key, value in output.values.items():
                    put((run_id, key, at, value))
                if output.step is not None:
                    put((run_id, None, at, output.step))

    def close(self, within: float) -> bool:
        """Send what is queued, giving up after ``within`` seconds; whether it finished."""
        closing = threading.Thread(target=self._shipper.stop, name="runwatch-remote-write-close",
                                   daemon=True)  # fmt: skip
        closing.start()
        closing.join(within)
        self._closing.set()  # a batch still retrying stops waiting
        if closing.is_alive():
            log.warning("the remote-write receiver did not take the last samples within %g s; "
                        "%d are lost", within, self._shipper.unsent)  # fmt: skip
            return False
        self._client.close()
        return True

    def _send(self, batch: list[Sample]) -> Outcomes[Sample]:
        """The batch's samples too old for the receiver's head in one request, the others in
        another, split while refused for some of its samples."""
        bound = max(round(time.time() * 1000), max(at for _, _, at, _ in batch)) - OLD_SAMPLE_MS
        old = [sample for sample in batch if sample[2] < bound]
        recent = [sample for sample in batch if sample[2] >= bound] if old else batch
        outcomes: Outcomes[Sample] = []
        if old:  # refused, they are refused for their age: all of them, no use splitting
            outcomes += whole(old, self._post(_by_series(old)))
        if recent:
            outcomes += self._split(_by_series(recent))
        return outcomes

    def _split(self, series: list[Series]) -> Outcomes[Sample]:
        """Send ``series``; a request refused for its samples is sent again as two halves,
        down to the series refused, within MAX_REQUESTS_PER_BATCH requests."""
        outcomes: Outcomes[Sample] = []
        parts, requests = [series], 0
        while parts:
            part = parts.pop()
            requests += 1
            lost = self._post(part)
            fits = requests + len(parts) + 2 <= MAX_REQUESTS_PER_BATCH
            if lost in REFUSED_SAMPLES.values() and len(part) > 1 and fits:
                half = len(part) // 2
                parts += [part[half:], part[:half]]  # the first half next
            else:
                outcomes.append((lost, [sample for samples in part for sample in samples]))
        return outcomes

    def _post(self, series: list[Series]) -> str | None:
        """Send one request, retrying with backoff while the receiver is down or busy;
        returns None, or why the samples are lost."""
        body = write_request([
            (self._series_labels(samples[0][0], samples[0][1]),
             [(at, value) for _, _, at, value in samples])
            for samples in series
        ])  # fmt: skip
        backoff = FIRST_BACKOFF_SECONDS
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = self._client.post(self._settings.url, content=body)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 300:
                    return None
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code != 429 and response.status_code < 500:
                    reason = _refusal(response)
                    self._warn_once(reason, problem)
                    return reason
            log.debug("remote write attempt %d failed: %s", attempt, problem)
            if attempt == MAX_ATTEMPTS or self._closing.wait(backoff):
                break
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        self._warn_once("failed", problem)
        return "failed"

    def _series_labels(self, run_id: str, key: str | None) -> dict[str, str]:
        if key is None:
            return {"__name__": STEP_INDEX_METRIC, **self._labels, "run_id": run_id}
        return {"__name__": STEP_METRIC, **self._labels, "run_id": run_id, "key": key}

    def _warn_once(self, kind: str, problem: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("remote write to %s lost samples (%s; %s): counted in "
                        "runwatch_remote_write_dropped_samples_total, said once",
                        self._settings.url, kind, problem)  # fmt: skip


def _by_series(samples: list[Sample]) -> list[Series]:
    series: dict[tuple[str, str | None], Series] = {}
    for sample in samples:
        series.setdefault((sample[0], sample[1]), []).append(sample)
    return list(series.values())


def _refusal(response: httpx.Response) -> str:
    """The drop reason of a 4xx: what Prometheus said of a sample it refused, else
    ``rejected``."""
    if response.status_code == 400:
        text = response.text
        for error, reason in REFUSED_SAMPLES.items():
            if error in text:
                return reason
    return "rejected"
