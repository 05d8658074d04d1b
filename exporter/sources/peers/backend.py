"""The training backend as a source: its WebSocket messages become runs in the
core state, its REST side gives health, job listings and a fallback while the
WebSocket is down, and the start handshake becomes telemetry (:mod:`exporter.core.handshake`).

Messages (``GET /ws``), tolerant like the bridge contract:
``training.accepted`` / ``training.started`` / ``training.epoch`` /
``training.completed`` / ``training.failed``, each with ``job_id`` and
``timestamp`` (epoch seconds; the receive time when absent). A job is a run
(``run_id`` = job_id) whose symbol, timeframe and the rest of ``training.started``
are its config, not labels; each fold is a stage ``fold_<n>`` and each epoch a
target ``epoch_<n>`` (so the trace has a span per job, fold and epoch); epoch
metrics are step metrics with the epoch count as the step.

While a job waits for its ``training.started`` or just failed, the backend's
``GET /status/log_tail?n=200`` ("View Logs") is polled too: lines not seen in the
previous poll are logged on runwatch's own log (``backend log: ...``, logger
``exporter.sources.peers.backend``), so a failed start's log sits next to its timeout, and
counted in ``training_backend_log_lines_total``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from pydantic import AliasChoices, Field, ValidationError

from exporter.core.events import (
    Error,
    Event,
    MetricUpdate,
    NumberMap,
    RunComplete,
    RunStart,
    StageChange,
    TargetComplete,
    TargetStart,
)
from exporter.pipeline import Pipeline
from exporter.pipeline.source_names import BACKEND_SOURCE
from exporter.sources.peers.contract import Count, Name, Number, Tolerant
from exporter.sources.peers.rest import Failed, JsonClient, Unreachable
from exporter.sources.peers.samples import BACKEND_JOB_STATUSES, BackendSample
from exporter.sources.sampled.sampling import SourceUnavailable

log = logging.getLogger(__name__)

MAX_JOBS = 1000
LOG_TAIL_LINES = 200  # as the backend's own "View Logs" asks for them
MAX_LOG_LINE_CHARS = 2000
MAX_FALLBACK_JOBS = 50  # job-status requests per poll while the WebSocket is down
WAITING = frozenset({"accepted", "queued", "pending"})
FINISHED = {"completed": "completed", "succeeded": "completed", "failed": "failed",
            "error": "failed", "cancelled": "cancelled"}  # fmt: skip
RUNNING = frozenset({"running", "started", "training"})


def job_status(status: str) -> str:
    """A backend's job status as one of BACKEND_JOB_STATUSES (bounded, for a label)."""
    status = status.lower()
    if status in WAITING:
        return "waiting"
    if status in RUNNING:
        return "running"
    return FINISHED.get(status, "other")


class BackendMessage(Tolerant):
    """One message on the backend's WebSocket."""

    type: Name = Field(validation_alias=AliasChoices("type", "event"))
    job_id: Name
    timestamp: Number | None = None
    symbol: str | None = None
    timeframe: str | None = None
    epoch: Count | None = None
    fold: Count | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class Job(Tolerant):
    job_id: Name
    status: Name
    accepted_at: Number | None = None


class LogTail(Tolerant):
    """``GET /status/log_tail?n=200``: ``{"lines": [...], "count": ..., "requested": ...}``."""

    lines: list[str]


def new_lines(previous: deque[str], lines: list[str]) -> list[str]:
    """The lines of a log tail not in the previous poll's: after the longest overlap of
    the previous tail's end with this one's start (a tail that shares nothing is new)."""
    for overlap in range(min(len(previous), len(lines)), 0, -1):
        if list(previous)[-overlap:] == lines[:overlap]:
            return lines[overlap:]
    return lines


class JobList(Tolerant):
    """``GET /jobs``: ``{"jobs": [...]}`` or a bare list."""

    jobs: list[Job]


@dataclass
class _JobProgress:
    fold: int | None = None
    last: float = 0.0  # timestamp of the job's latest event
    epochs: int = 0
    finished: bool = False


class BackendEvents:
    """Turns backend messages into core events (ingested from source ``backend``) and
    handshake observations."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._lock = threading.Lock()  # the WebSocket thread and the REST fallback both apply
        self.jobs: OrderedDict[str, _JobProgress] = OrderedDict()
        self._failed_since_poll = False  # a job failed: read the backend's log tail

    def __call__(self, frame: str | bytes) -> None:
        try:
            message = BackendMessage.model_validate(orjson.loads(frame))
        except orjson.JSONDecodeError:
            self.reject("invalid_json")
            return
        except ValidationError:
            self.reject("contract_violation")
            return
        self.apply(message)

    def apply(self, message: BackendMessage) -> None:
        with self._lock:
            self._apply(message)

    def _apply(self, message: BackendMessage) -> None:
        at = message.timestamp or time.time()
        job = self._job(message.job_id)
        handler = self._handlers.get(message.type)
        if handler is None:
            self.reject("unknown_event_type")
            return
        for event in handler(self, message, job, at):
            event.run_id = message.job_id
            if event.timestamp is None:
                event.timestamp = at
            self.pipeline.ingest_event(event, BACKEND_SOURCE)
        job.last = max(job.last, at)

    def _accepted(self, message: BackendMessage, job: _JobProgress, at: float) -> list[Event]:
        self.pipeline.jobs.accepted(message.job_id, at)
        return []

    def _started(self, message: BackendMessage, job: _JobProgress, at: float) -> list[Event]:
        self.pipeline.jobs.started(message.job_id, at)
        config = message.model_dump(exclude={"type", "job_id", "timestamp", "metrics", "error"},
                                    exclude_none=True)  # fmt: skip
        name = " ".join(str(config[k]) for k in ("symbol", "timeframe") if k in config)
        job.fold = message.fold or 0
        return [
            RunStart(name=name or message.job_id, config=config),
            StageChange(new_stage=f"fold_{job.fold}"),
        ]

    def _epoch(self, message: BackendMessage, job: _JobProgress, at: float) -> list[Event]:
        events: list[Event] = []
        fold = message.fold if message.fold is not None else job.fold or 0
        if fold != job.fold:
            events.append(StageChange(new_stage=f"fold_{fold}", timestamp=job.last or at))
            job.fold = fold
        epoch = message.epoch if message.epoch is not None else job.epochs
        target = f"epoch_{epoch}"
        job.epochs += 1
        events.append(TargetStart(target=target, timestamp=job.last or at))
        metrics: NumberMap = {
            k: v for k, v in message.metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }  # fmt: skip
        if metrics:
            events.append(MetricUpdate(step=job.epochs, metrics=metrics))
        events.append(TargetComplete(target=target, status="success"))
        return events

    def _completed(self, message: BackendMessage, job: _JobProgress, at: float) -> list[Event]:
        job.finished = True
        return [RunComplete(status="completed")]

    def _failed(self, message: BackendMessage, job: _JobProgress, at: float) -> list[Event]:
        job.finished = True
        self._failed_since_poll = True  # under _lock (apply)
        return [
            Error(error_message=message.error or "training failed", error_type="TrainingFailed",
                  recoverable=False),
            RunComplete(status="failed"),
        ]  # fmt: skip

    _handlers: ClassVar[dict[str, Callable[..., list[Event]]]] = {
        "training.accepted": _accepted,
        "training.started": _started,
        "training.epoch": _epoch,
        "training.completed": _completed,
        "training.failed": _failed,
    }

    def take_failed(self) -> bool:
        """Whether a job failed since the last call (the poller then reads the log tail)."""
        with self._lock:
            failed, self._failed_since_poll = self._failed_since_poll, False
            return failed

    def unfinished(self) -> list[str]:
        """The jobs followed that have not ended, oldest first."""
        with self._lock:
            return [job for job, progress in self.jobs.items() if not progress.finished]

    def _job(self, job_id: str) -> _JobProgress:
        job = self.jobs.get(job_id)
        if job is None:
            job = self.jobs[job_id] = _JobProgress()
            while len(self.jobs) > MAX_JOBS:
                self.jobs.popitem(last=False)
        return job

    def reject(self, reason: str) -> None:
        stats = self.pipeline.stats
        stats.count(stats.rejected, (BACKEND_SOURCE, reason))


class BackendPoller:
    """A SampledSource over the backend's REST side: ``GET /`` for health, ``GET /jobs`` for
    accepted jobs (the handshake clock), and while the WebSocket is down ``GET /jobs/{id}``
    for the jobs it knows, so their outcome is not lost."""

    name = BACKEND_SOURCE

    def __init__(
        self,
        url: str,
        timeout: float,
        max_bytes: int,
        events: BackendEvents,
        websocket_up: Callable[[], bool],
        authorization: str | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._headers = {"authorization": authorization} if authorization else {}
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._events = events
        self._websocket_up = websocket_up
        self._client: JsonClient | None = None
        self._log_tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)

    def open(self) -> None:
        self._client = JsonClient(self._url, self._timeout, self._max_bytes, self._events.reject,
                                  self._headers)  # fmt: skip

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def sample(self) -> BackendSample:
        assert self._client is not None
        try:
            health = self._client.get("/")
        except Unreachable as exc:
            raise SourceUnavailable(f"training backend {exc}") from None
        if isinstance(health, Failed):
            raise SourceUnavailable(f"training backend {self._url}: GET / {health.reason}")
        listed = self._listing()
        if not self._websocket_up():
            self._fall_back()
        failed = self._events.take_failed()
        if self._events.pipeline.jobs.awaiting() or failed:
            self._read_log_tail()
        self._events.pipeline.jobs.expire(time.time())
        return BackendSample(listed)

    def _listing(self) -> dict[str, int] | None:
        body = self._get("/jobs")
        if body is None:
            return None
        try:
            jobs = JobList.model_validate({"jobs": body} if isinstance(body, list) else body).jobs
        except ValidationError:
            self._events.reject("contract_violation")
            return None
        by_status = dict.fromkeys(BACKEND_JOB_STATUSES, 0)
        for job in jobs:
            status = job_status(job.status)
            by_status[status] += 1
            if status == "waiting":
                self._events.pipeline.jobs.accepted(job.job_id, job.accepted_at or time.time())
        return by_status

    def _read_log_tail(self) -> None:
        body = self._get(f"/status/log_tail?n={LOG_TAIL_LINES}")
        if body is None:
            return
        try:
            lines = LogTail.model_validate(body).lines[-LOG_TAIL_LINES:]
        except ValidationError:
            self._events.reject("contract_violation")
            return
        fresh = new_lines(self._log_tail, lines)
        self._log_tail.extend(fresh)
        for line in fresh:
            log.info("backend log: %s", line[:MAX_LOG_LINE_CHARS])
        stats = self._events.pipeline.stats
        stats.count(stats.backend_log_lines, (), len(fresh))

    def _fall_back(self) -> None:
        for job_id in self._events.unfinished()[-MAX_FALLBACK_JOBS:]:  # the most recent ones
            body = self._get(f"/jobs/{job_id}")
            try:
                job = Job.model_validate(body) if body is not None else None
            except ValidationError:
                self._events.reject("contract_violation")
                continue
            outcome = FINISHED.get(job.status.lower()) if job is not None else None
            if outcome in ("completed", "failed"):
                message = {"type": f"training.{outcome}", "job_id": job_id}
                self._events.apply(BackendMessage.model_validate(message))

    def _get(self, path: str) -> Any:
        """An optional endpoint's JSON, or None (failures counted, 404 not)."""
        assert self._client is not None
        try:
            body = self._client.get(path, optional=True)
        except Unreachable:
            return None
        return None if isinstance(body, Failed) else body
