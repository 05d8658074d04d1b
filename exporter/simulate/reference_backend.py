"""A reference training backend: ``POST /start_training`` answers 202 with a
``job_id``, the job is announced on ``/ws`` (``training.accepted``, then
``training.started`` a few ticks later, epochs per fold, ``training.completed`` or
``training.failed``), and ``GET /``, ``GET /jobs``, ``GET /jobs/{job_id}`` and
``GET /status/log_tail`` answer as the backend's contract describes. Part of the reference app
(:mod:`exporter.simulate.reference_bridge`), which steps it on its clock.
"""

from __future__ import annotations

import math
import os
import random
import time
import uuid
from collections import deque
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse


class TrainingBackend:
    """Jobs walking accepted -> running (folds x epochs) -> completed or failed."""

    def __init__(self, *, folds: int = 2, epochs: int = 3, start_after_ticks: int = 2,
                 auto_jobs: bool = True, seed: int = 11) -> None:  # fmt: skip
        self.folds, self.epochs, self.start_after_ticks = folds, epochs, start_after_ticks
        self.auto_jobs = auto_jobs
        self.never_start = False  # jobs stay accepted: the handshake times out
        self.fail_jobs = False  # jobs fail in their second epoch
        self.jobs: dict[str, dict[str, Any]] = {}
        self.log: deque[str] = deque(maxlen=1000)
        self._rng = random.Random(seed)

    def submit(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Accept a job; returns the job and the message announcing it."""
        job_id = str(uuid.uuid4())
        now = time.time()
        job = {"job_id": job_id, "status": "accepted", "accepted_at": now, "ticks": 0,
               "symbol": params.get("symbol", "AAA"), "timeframe": params.get("timeframe", "1h"),
               "batch_size": params.get("batch_size", 512), "fold": 0, "epoch": 0}  # fmt: skip
        self.jobs[job_id] = job
        self.log.append(f"{now:.3f} accepted {job_id}")
        return job, {"type": "training.accepted", "job_id": job_id, "timestamp": now}

    def step(self) -> list[dict[str, Any]]:
        """One tick of every job; returns the WebSocket messages it produced."""
        messages: list[dict[str, Any]] = []
        if self.auto_jobs and not any(j["status"] in ("accepted", "running")
                                      for j in self.jobs.values()):  # fmt: skip
            messages.append(self.submit({})[1])
        now = time.time()
        for job in list(self.jobs.values()):
            job["ticks"] += 1
            if job["status"] == "accepted":
                if not self.never_start and job["ticks"] > self.start_after_ticks:
                    job["status"] = "running"
                    messages.append({"type": "training.started", "job_id": job["job_id"],
                                     "symbol": job["symbol"], "timeframe": job["timeframe"],
                                     "epoch": 0, "fold": 0, "timestamp": now})  # fmt: skip
            elif job["status"] == "running":
                messages.append(self._epoch(job, now))
                if job["status"] == "completed":
                    messages.append({"type": "training.completed", "job_id": job["job_id"],
                                     "timestamp": now})  # fmt: skip
        return messages

    def _epoch(self, job: dict[str, Any], now: float) -> dict[str, Any]:
        if self.fail_jobs and job["epoch"] == 1:
            job["status"] = "failed"
            return {"type": "training.failed", "job_id": job["job_id"],
                    "error": "simulated worker crash", "timestamp": now}  # fmt: skip
        done = job["fold"] * self.epochs + job["epoch"] + 1
        loss = 1.5 * math.exp(-done / 3) + 0.05 * self._rng.random()
        message = {"type": "training.epoch", "job_id": job["job_id"], "fold": job["fold"],
                   "epoch": job["epoch"], "timestamp": now,
                   "metrics": {"loss": loss, "val_loss": loss * 1.1}}  # fmt: skip
        job["epoch"] += 1
        if job["epoch"] == self.epochs:
            job["epoch"], job["fold"] = 0, job["fold"] + 1
            if job["fold"] == self.folds:
                job["status"] = "completed"
        return message


def add_backend_routes(app: FastAPI, backend: TrainingBackend, publish: Any) -> None:
    """The backend's REST side on ``app``; ``publish(message)`` sends to ``/ws``."""

    @app.get("/")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "service": "reference training backend",
                "jobs": len(backend.jobs)}  # fmt: skip

    @app.post("/start_training", status_code=202)
    async def start_training(request: Request) -> JSONResponse:
        params = await request.json() if await request.body() else {}
        job, message = backend.submit(params if isinstance(params, dict) else {})
        publish(message)
        return JSONResponse({"status": "accepted", "job_id": job["job_id"],
                             "message": "Training worker queued and starting",
                             "expected_pid": os.getpid()}, status_code=202)  # fmt: skip

    @app.get("/jobs")
    async def jobs() -> dict[str, Any]:
        return {"jobs": [_public(job) for job in backend.jobs.values()]}

    @app.get("/jobs/{job_id}")
    async def job(job_id: str) -> dict[str, Any]:
        if job_id not in backend.jobs:
            raise HTTPException(404, f"no job {job_id}")
        return _public(backend.jobs[job_id])

    @app.get("/status/log_tail")
    async def log_tail(n: int = 200) -> dict[str, Any]:
        lines = list(backend.log)[-n:]
        return {"lines": lines, "count": len(lines), "requested": n}


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k != "ticks"}
