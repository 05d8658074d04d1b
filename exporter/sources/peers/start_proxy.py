"""``POST /start_training`` passed through to the training backend (docs/bridge.md).

That backend has no job listing and no ``training.accepted`` message: the only place a
job is seen accepted is the 202 answering ``POST /start_training``. With
``--backend-url`` runwatch serves the same endpoint and forwards it (body, content type,
status and answer), so a GUI pointed at runwatch instead of the backend starts jobs
exactly as before, and runwatch starts the job's handshake clock from the 202 and its
``job_id``: a job that never says ``training.started`` within ``--backend-ack-timeout``
is counted in ``training_job_ack_timeouts_total``.

It is held to the same bounds as ``POST /v1/events``: the body to ``--max-body-bytes``
and ``--body-timeout``, the backend's answer to ``--max-response-bytes`` and
``--backend-timeout``. The client's own ``Authorization`` (runwatch's password, with basic
auth on) is never passed on; the backend's credentials are ``--backend-authorization-file``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
import orjson
from fastapi import FastAPI, Request, Response

from exporter.pipeline import Pipeline
from exporter.sources.http import BodyError, read_body

FORWARDED_HEADERS = ("content-type", "accept")


@dataclass(frozen=True, slots=True)
class StartProxyLimits:
    max_body_bytes: int
    body_timeout: float
    max_response_bytes: int
    backend_timeout: float  # from connecting to the answer's last byte


def add_start_proxy(
    app: FastAPI,
    pipeline: Pipeline,
    backend_url: str,
    limits: StartProxyLimits,
    authorization: str | None = None,
) -> None:
    """Serve ``POST /start_training`` on ``app``, forwarded to the backend at ``backend_url``
    (with ``authorization`` as its Authorization header, when given)."""
    target = backend_url.rstrip("/") + "/start_training"

    @app.post("/start_training", include_in_schema=False)
    async def start_training(request: Request) -> Response:
        try:
            body = await read_body(request, limits.max_body_bytes, limits.body_timeout)
        except BodyError as refused:
            return _json(refused.status, {"error": refused.message})
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS}
        if authorization is not None:
            headers["authorization"] = authorization
        try:
            async with asyncio.timeout(limits.backend_timeout):
                answer = await _forward(target, body, headers, limits.max_response_bytes)
        except (TimeoutError, httpx.TimeoutException):
            message = (
                f"training backend {backend_url} did not answer within "
                f"{limits.backend_timeout:g} s (--backend-timeout)"
            )
            return _json(504, {"error": message})
        except httpx.HTTPError as exc:
            return _json(502, {"error": f"training backend {backend_url} unreachable: {exc}"})
        if answer is None:
            message = (
                f"training backend {backend_url} answered more than "
                f"{limits.max_response_bytes} bytes (--max-response-bytes)"
            )
            return _json(502, {"error": message})
        status, content, content_type = answer
        if status == 202:
            job_id = _job_id(content)
            if job_id is not None:
                pipeline.jobs.accepted(job_id, time.time())
        return Response(content, status, media_type=content_type)


async def _forward(
    target: str, body: bytes, headers: dict[str, str], max_bytes: int
) -> tuple[int, bytes, str | None] | None:
    """POST ``body`` and read the answer as it streams; None when it is over ``max_bytes``."""
    async with (
        httpx.AsyncClient() as client,
        client.stream("POST", target, content=body, headers=headers) as answer,
    ):
        content = bytearray()
        async for chunk in answer.aiter_bytes():
            content += chunk
            if len(content) > max_bytes:
                return None
        return answer.status_code, bytes(content), answer.headers.get("content-type")


def _json(status: int, value: dict[str, str]) -> Response:
    return Response(orjson.dumps(value), status, media_type="application/json")


def _job_id(content: bytes) -> str | None:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    job_id = body.get("job_id") if isinstance(body, dict) else None
    return job_id if isinstance(job_id, str) and 0 < len(job_id) <= 256 else None
