"""The HTTP face: ``/metrics``, ``/healthz``, ``/readyz``, ``/api/runs``, ``POST /v1/events``.

FastAPI on uvicorn rather than prometheus-client's built-in server, because
runwatch also takes POSTed events (with a body-size limit and JSON errors) and
serves JSON, with TLS and basic auth on the same port; ``/metrics`` still comes
from prometheus-client's own encoders, content negotiation included.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client.exposition import choose_encoder
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from exporter import __version__
from exporter.events import Rejected
from exporter.pipeline import Pipeline
from exporter.sources.http import SOURCE, ingest_body
from exporter.state import Run
from exporter.telemetry.prometheus import catalogue_registry

OPEN_PATHS = frozenset({"/healthz"})


def run_json(run: Run) -> dict[str, Any]:
    """A run as ``GET /api/runs`` shows it."""
    return {
        "run_id": run.run_id,
        "name": run.name,
        "status": run.status,
        "stage": run.stage,
        "start": run.start,
        "last_event": run.last_event,
        "end": run.end,
        "duration_seconds": run.duration,
        "process_up": run.process_up,
        "config": run.config,
        "progress": {name: stage.progress_ratio for name, stage in run.stages.items()},
        "stage_seconds": {name: stage.seconds for name, stage in run.stages.items()},
        "targets_total": run.targets_total,
        "targets_completed": run.targets_completed,
        "targets_successful": run.targets_successful,
        "current_target": run.current_target,
        "stage_targets": {
            name: {
                "total": stage.targets_total,
                "completed": stage.targets_completed,
                "message": stage.message,
            }
            for name, stage in run.stages.items()
        },
        "target_completions": dict(run.target_completions),
        "target_best_auc": [
            {"stage": stage, "target": target, "best_auc": _number(auc)}
            for (stage, target), auc in run.target_best_auc.items()
        ],
        "step": run.step,
        "metrics": {key: _number(value) for key, value in run.metrics.items()},
        "non_finite_metrics": dict(run.non_finite),
        "errors": [
            {"error_type": error_type, "recoverable": recoverable, "count": count}
            for (error_type, recoverable), count in run.errors.items()
        ],
        "best_checkpoint": run.best_checkpoint,
        "checkpoints": [
            {
                "checkpoint_id": checkpoint_id,
                "step": checkpoint.step,
                "is_best": checkpoint.is_best,
                "metrics": {key: _number(value) for key, value in checkpoint.metrics.items()},
                "filepath": checkpoint.filepath,
                "timestamp": checkpoint.timestamp,
            }
            for checkpoint_id, checkpoint in run.checkpoints.items()
        ],
    }


def _number(value: float) -> float | str:
    """JSON has no NaN or infinities: they are written as the event format spells them."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(
    pipeline: Pipeline,
    *,
    ready: Callable[[], bool] = lambda: True,
    max_body_bytes: int = 16 << 20,
    body_timeout: float = 30.0,
    basic_auth: tuple[str, str] | None = None,
    lifespan: Any = None,
) -> FastAPI:
    app = FastAPI(title="runwatch", version=__version__, lifespan=lifespan)
    registry = catalogue_registry(pipeline)

    if basic_auth is not None:
        expected = "Basic " + base64.b64encode(":".join(basic_auth).encode()).decode()

        @app.middleware("http")
        async def require_basic_auth(request: Request, call_next):  # type: ignore[no-untyped-def]
            given = request.headers.get("authorization", "")
            if request.url.path in OPEN_PATHS or hmac.compare_digest(given, expected):
                return await call_next(request)
            return JSONResponse(
                {"error": "authentication required"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="runwatch"'},
            )

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "reading existing events"}, status_code=503)

    @app.get("/api/runs")
    def runs() -> list[dict[str, Any]]:
        return [run_json(run) for run in pipeline.snapshot().state.runs.values()]

    @app.post("/v1/events", status_code=202)
    async def post_events(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            return _too_large(pipeline, max_body_bytes)
        body = bytearray()
        try:
            async with asyncio.timeout(body_timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > max_body_bytes:
                        return _too_large(pipeline, max_body_bytes)
        except (TimeoutError, ClientDisconnect):
            pipeline.reject(SOURCE, Rejected("body_incomplete", "body not received whole"))
            return _error(408, f"the body did not arrive whole within {body_timeout:g} s")
        if not body.strip():
            return _error(400, "empty body: send one event, a JSON array, or NDJSON")
        # Parsed and applied off the event loop (in slices of the pipeline lock), so a big
        # body never holds up /metrics or other clients.
        result = await run_in_threadpool(ingest_body, bytes(body), pipeline)
        payload = {"accepted": result.accepted, "rejected": result.rejected}
        if result.rejected:
            return _error(
                400,
                f"{result.rejected} event(s) rejected; the {result.accepted} valid ones "
                "were applied",
                **payload,
                rejections=result.rejections,
            )
        return JSONResponse(payload, status_code=202)

    return app


def _too_large(pipeline: Pipeline, limit: int) -> JSONResponse:
    pipeline.reject(SOURCE, Rejected("body_too_large", f"over {limit} bytes"))
    return _error(413, f"body over the limit of {limit} bytes (--max-body-bytes)")
