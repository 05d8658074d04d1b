"""``POST /start_training`` passed through to the training backend (seed 003's contract).

Seed 003's backend has no job listing and no ``training.accepted`` message: the only
place a job is seen accepted is the 202 answering ``POST /start_training``. With
``--backend-url`` runwatch serves the same endpoint and forwards it unchanged (body,
content type, status and answer), so a GUI pointed at runwatch instead of the backend
starts jobs exactly as before, and runwatch starts the job's handshake clock from the
202 and its ``job_id``: a job that never says ``training.started`` within
``--backend-ack-timeout`` is counted in ``training_job_ack_timeouts_total``.
"""

from __future__ import annotations

import time

import httpx
import orjson
from fastapi import FastAPI, Request, Response

from exporter.pipeline import Pipeline

FORWARDED_HEADERS = ("content-type", "authorization", "accept")
START_TIMEOUT_SECONDS = 30.0  # the seed GUI's own wait for the start's acknowledgement


def add_start_proxy(app: FastAPI, pipeline: Pipeline, backend_url: str) -> None:
    """Serve ``POST /start_training`` on ``app``, forwarded to the backend at ``backend_url``."""
    timeout = START_TIMEOUT_SECONDS
    target = backend_url.rstrip("/") + "/start_training"

    @app.post("/start_training", include_in_schema=False)
    async def start_training(request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS}
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                answer = await client.post(target, content=body, headers=headers)
        except httpx.HTTPError as exc:
            message = {"error": f"training backend {backend_url} unreachable: {exc}"}
            return Response(orjson.dumps(message), 502, media_type="application/json")
        if answer.status_code == 202:
            job_id = _job_id(answer.content)
            if job_id is not None:
                pipeline.job_accepted(job_id, time.time())
        return Response(answer.content, answer.status_code,
                        media_type=answer.headers.get("content-type"))  # fmt: skip


def _job_id(content: bytes) -> str | None:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    job_id = body.get("job_id") if isinstance(body, dict) else None
    return job_id if isinstance(job_id, str) and 0 < len(job_id) <= 256 else None
