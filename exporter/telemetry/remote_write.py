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
``runwatch_remote_write_dropped_samples_total``. Per series, a sample not newer
than the last one queued (Prometheus refuses it, and with it the whole request) is
dropped before it is queued and counted as ``out_of_order``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from exporter import __version__
from exporter.core.outputs import Output, StepValues
from exporter.pipeline import Emit
from exporter.telemetry.prompb import write_request
from exporter.telemetry.self_stats import Stats
from exporter.telemetry.shipper import Outcomes, Shipper, whole
from exporter.telemetry.step_history import STEP_METRIC, SeriesClock, millis

log = logging.getLogger(__name__)

DROP_REASONS = ("queue_full", "out_of_order", "rejected", "failed")
MAX_ATTEMPTS = 6  # 15.5 s of backoff (0.5, 1, 2, 4, 8) before a batch is given up
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0

Sample = tuple[str, str, int, float]  # run id, key, timestamp (ms), value


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
        self._labels = {"__name__": STEP_METRIC, "job": settings.job,
                        "instance": settings.instance}  # fmt: skip
        self._clock = SeriesClock()
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
        put, admit, late = self._shipper.put, self._clock.admit, 0
        for output in outputs:
            if output.__class__ is StepValues:
                at, run_id = millis(output.timestamp), output.run_id
                for key, value in output.values.items():
                    if admit((run_id, key), at):
                        put((run_id, key, at, value))
                    else:
                        late += 1
        if late:
            self._stats.count(self._stats.remote_write_dropped, "out_of_order", late)

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
        series: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for run_id, key, at, value in batch:
            series.setdefault((run_id, key), []).append((at, value))
        body = write_request([({**self._labels, "run_id": run_id, "key": key}, samples)
                              for (run_id, key), samples in series.items()])  # fmt: skip
        return whole(batch, self._post(body))

    def _post(self, body: bytes) -> str | None:
        """Send one request, retrying with backoff while the receiver is down or busy;
        returns None, or why the samples are lost."""
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
                    self._warn_once("rejected", problem)
                    return "rejected"
            log.debug("remote write attempt %d failed: %s", attempt, problem)
            if attempt == MAX_ATTEMPTS or self._closing.wait(backoff):
                break
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        self._warn_once("failed", problem)
        return "failed"

    def _warn_once(self, kind: str, problem: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("remote write to %s lost samples (%s; %s): counted in "
                        "runwatch_remote_write_dropped_samples_total, said once",
                        self._settings.url, kind, problem)  # fmt: skip
