"""The HTTP face: the view at ``/`` (static pages, ``static/``), ``/metrics``, ``/healthz``,
``/readyz``, the run API (:mod:`~exporter.app.run_api`), ``/ws`` and ``POST /v1/events``.

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

import contextlib
import html
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from exporter import __version__
from exporter.app.basic_auth import BcryptUsers, TooManyChecks, credentials
from exporter.app.live import LiveHub, live_routes
from exporter.app.log_once import LogOnce
from exporter.app.rate_limit import TokenBucket
from exporter.app.run_api import NotFound, method_not_allowed, not_found, run_routes
from exporter.app.system_api import system_routes
from exporter.app.trading_api import trading_routes
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


STATIC = Path(__file__).parent / "static"
"""The view at ``/``: index.html, app.js, style.css, and vendor/ (uPlot, copied there from
npm by ``scripts/build-assets`` when the package is built)."""
VIEW_POLICY = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
"""The view's Content-Security-Policy: its own scripts, styles and connections only (no
inline script, nothing from another origin), and not framed."""


def view_page(telemetry_path: str, grafana_url: str) -> str:
    """index.html with what the page needs to know of this runwatch in a meta tag (JSON,
    HTML-escaped): its version, the metrics path, the Grafana address for the board links;
    and the metrics path linked for a browser without JavaScript."""
    config = json.dumps({"version": __version__, "telemetry_path": telemetry_path,
                         "grafana_url": grafana_url})  # fmt: skip
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{telemetry_path}}", html.escape(telemetry_path, quote=True))
    return page.replace("{{config}}", html.escape(config, quote=True))


class WebGuard:
    """The rate limit and basic auth (bcrypt users) of the web configuration as it is for
    each request or WebSocket; the probes' ``OPEN_PATHS`` are neither limited nor checked."""

    def __init__(self, web: LiveWebConfig, pipeline: Pipeline) -> None:
        self.web = web
        self.users = BcryptUsers()
        self.bucket: TokenBucket | None = None  # kept while rate_limit stays as it is
        self.stats = pipeline.stats
        self.refusals = LogOnce(log)

    async def refusal(self, path: str, headers: Headers, client: str) -> JSONResponse | None:
        """The answer refusing this request, or None to serve it."""
        try:
            config = self.web.current()
        except WebConfigError:  # logged when it changed; answered as the toolkit does
            return _error(500, "the web configuration is invalid; see runwatch's log")
        if self.bucket is None or self.bucket.limit != config.rate_limit:
            self.bucket = TokenBucket(config.rate_limit) if config.rate_limit else None
        if path in OPEN_PATHS:
            return None
        if self.bucket is not None and not self.bucket.allow():
            return self._refuse("rate_limited", "over the web configuration's rate_limit")
        if config.users:
            given = credentials(headers.get("authorization", ""))
            try:
                passed = given is not None and await self.users.check(config.users, *given, client)
            except TooManyChecks:
                return self._refuse("auth_busy", "too many password checks waiting")
            if not passed:
                return JSONResponse(
                    {"error": "authentication required"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="runwatch"'},
                )
        return None

    def _refuse(self, reason: str, error: str) -> JSONResponse:
        self.stats.count(self.stats.http_refused, reason)
        self.refusals.log(logging.WARNING, reason, "%s: answered 429", error)
        return JSONResponse({"error": error}, status_code=429, headers={"Retry-After": "1"})


def _web_config_middleware(app: FastAPI, guard: WebGuard) -> None:
    """Every HTTP request through the guard, and the configured headers on every answer."""

    @app.middleware("http")
    async def web_config(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        client = request.client.host if request.client else ""
        refused = await guard.refusal(request.url.path, request.headers, client)
        response = refused if refused is not None else await call_next(request)
        with contextlib.suppress(WebConfigError):
            response.headers.update(guard.web.current().headers)
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
    grafana_url: str = "http://127.0.0.1:3000",
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
    guard = WebGuard(web, pipeline) if web is not None else None
    if guard is not None:
        _web_config_middleware(app, guard)
    page = view_page(telemetry_path, grafana_url)
    exposition = exposition or Exposition(pipeline)
    pipeline.keep_windows()
    app.include_router(run_routes(pipeline))
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(405, method_not_allowed)
    app.include_router(system_routes(pipeline))
    app.include_router(trading_routes(pipeline))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(live_routes(LiveHub(pipeline), guard.refusal if guard else None))

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": VIEW_POLICY})

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
