"""The HTTP face: a landing page, ``/metrics``, ``/healthz``, ``/readyz``, the run API
(:mod:`~exporter.app.run_api`) and ``POST /v1/events``.

FastAPI on uvicorn rather than prometheus-client's built-in server, because
runwatch also takes POSTed events (with a body-size limit and JSON errors) and
serves JSON, with TLS and basic auth on the same port; ``/metrics`` is the text
prometheus-client's encoders write, content negotiation included (each run's lines
kept until it changes: :mod:`~exporter.telemetry.exposition`), gzipped when the
scraper asks (Prometheus does). FastAPI's ``/docs`` and ``/openapi.json`` are
off: Swagger UI loads from a CDN an offline host cannot reach, and the README
documents every endpoint.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from exporter import __version__
from exporter.app.basic_auth import BcryptUsers, TooManyChecks, credentials
from exporter.app.log_once import LogOnce
from exporter.app.rate_limit import TokenBucket
from exporter.app.run_api import NotFound, method_not_allowed, not_found, run_routes
from exporter.app.system_api import system_routes
from exporter.app.web_config import LiveWebConfig, WebConfigError
from exporter.core.events import Rejected
from exporter.pipeline import Pipeline
from exporter.pipeline.source_names import HTTP_SOURCE
from exporter.sources.http import BodyError, ingest_body, read_body
from exporter.telemetry.exposition import Exposition

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Answered without credentials, for probes: they say only whether runwatch is up."""


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip: its own weight, else the wildcard's,
    above 0 (RFC 9110: a coding named outranks ``*``; parameter names are
    case-insensitive; a weight that is not a number refuses)."""
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, *params = item.split(";")
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        weights.setdefault(name.strip().lower(), weight)
    return weights.get("gzip", weights.get("*", 0.0)) > 0


def landing_page(telemetry_path: str) -> str:
    """The page at ``/``, as node_exporter has one: what runwatch is and where to look."""
    links = [(telemetry_path, "Metrics"), ("/api/runs", "Runs (JSON)"),
             ("/healthz", "Health"), ("/readyz", "Readiness")]  # fmt: skip
    items = "".join(f'<li><a href="{html.escape(path)}">{html.escape(title)}</a> '
                    f"<code>{html.escape(path)}</code></li>" for path, title in links)  # fmt: skip
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>runwatch</title></head>'
        f"<body><h1>runwatch {html.escape(__version__)}</h1><p>Prometheus exporter for ML "
        "training runs, trading bridges and GPUs. Events are taken on <code>POST "
        f"/v1/events</code>.</p><ul>{items}</ul></body></html>"
    )


def _web_config_middleware(app: FastAPI, web: LiveWebConfig, pipeline: Pipeline) -> None:
    """The rate limit, basic auth (bcrypt users) and the configured headers, from the web
    configuration as it is for each request; the probes' ``OPEN_PATHS`` are neither limited
    nor checked."""
    users = BcryptUsers()
    bucket: TokenBucket | None = None  # kept while rate_limit stays as it is
    stats = pipeline.stats
    refusals = LogOnce(log)

    def refuse(reason: str, error: str) -> JSONResponse:
        stats.count(stats.http_refused, reason)
        refusals.log(logging.WARNING, reason, "%s: answered 429", error)
        return JSONResponse({"error": error}, status_code=429, headers={"Retry-After": "1"})

    @app.middleware("http")
    async def web_config(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        nonlocal bucket
        try:
            config = web.current()
        except WebConfigError:  # logged when it changed; answered as the toolkit does
            return _error(500, "the web configuration is invalid; see runwatch's log")
        if bucket is None or bucket.limit != config.rate_limit:
            bucket = TokenBucket(config.rate_limit) if config.rate_limit else None
        response: Response | None = None
        guarded = request.url.path not in OPEN_PATHS
        if guarded and bucket is not None and not bucket.allow():
            response = refuse("rate_limited", "over the web configuration's rate_limit")
        elif guarded and config.users:
            given = credentials(request.headers.get("authorization", ""))
            try:
                client = request.client.host if request.client else ""
                passed = given is not None and await users.check(config.users, *given, client)
            except TooManyChecks:
                response = refuse("auth_busy", "too many password checks waiting")
            else:
                if not passed:
                    response = JSONResponse(
                        {"error": "authentication required"},
                        status_code=401,
                        headers={"WWW-Authenticate": 'Basic realm="runwatch"'},
                    )
        if response is None:
            response = await call_next(request)
        response.headers.update(config.headers)
        return response


def create_app(
    pipeline: Pipeline,
    exposition: Exposition | None = None,
    *,
    ready: Callable[[], bool] = lambda: True,
    max_body_bytes: int = 16 << 20,
    body_timeout: float = 30.0,
    web: LiveWebConfig | None = None,
    telemetry_path: str = "/metrics",
    lifespan: Any = None,
) -> FastAPI:
    app = FastAPI(
        title="runwatch",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    if web is not None:
        _web_config_middleware(app, web, pipeline)
    page = landing_page(telemetry_path)
    exposition = exposition or Exposition(pipeline)
    app.include_router(run_routes(pipeline))
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(405, method_not_allowed)
    app.include_router(system_routes(pipeline))

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.api_route(telemetry_path, methods=["GET", "HEAD"])
    async def metrics(request: Request) -> Response:
        # On the event loop, not a pool thread: a render costs a few milliseconds (what
        # changed since the last), and handing it to a thread and back costs two waits for
        # the interpreter lock under ingestion load.
        gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))
        body, content_type = exposition.render(request.headers.get("accept", ""), gzipped)
        headers = {"Vary": "Accept-Encoding"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=content_type, headers=headers)

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/readyz", methods=["GET", "HEAD"])
    def readyz() -> JSONResponse:
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "reading existing events"}, status_code=503)

    @app.post("/v1/events", status_code=202)
    async def post_events(request: Request) -> JSONResponse:
        try:
            body = await read_body(request, max_body_bytes, body_timeout)
        except BodyError as refused:
            pipeline.rejections.count(HTTP_SOURCE, Rejected(refused.reason, refused.message))
            return _error(refused.status, refused.message)
        if not body.strip():
            return _error(400, "empty body: send one event, a JSON array, or NDJSON")
        # Parsed and applied off the event loop (in slices of the pipeline lock), so a big
        # body never holds up /metrics or other clients.
        result = await run_in_threadpool(ingest_body, body, pipeline)
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
