"""The run API, read side: every run, one run, its latest metrics and its checkpoints as
JSON (the routes and shapes of the training-dashboard format: ``GET /api/runs``,
``/api/runs/{run_id}``, ``/api/runs/{run_id}/metrics/latest``,
``/api/runs/{run_id}/checkpoints``, ``/api/checkpoints/{checkpoint_id}``), ``/health`` and
``/api/version``. An unknown id is a 404 with a JSON error.

The write side of that format (creating, updating and deleting runs and checkpoints,
posting metrics, loading a checkpoint) is the events': a run is what its events say, so
those routes answer 405 with where to send events instead (``POST /v1/events``, which the
runwatch SDK's TrainingMonitor uses).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from exporter import __version__
from exporter.app.metric_history import (
    HistoryQuery,
    csv_filename,
    history_csv,
    history_json,
    json_number,
    parse_keys,
)
from exporter.core.goodput import Ledger
from exporter.core.state import Run
from exporter.pipeline import Pipeline
from exporter.pipeline.self_stats import Stats
from exporter.pipeline.view import View

log = logging.getLogger(__name__)

API_RUNS = "api_runs"
"""The ``family`` the run API's encoding errors are counted under."""
UNENCODABLE = "the run holds text that cannot be encoded as UTF-8"
API_VERSION = 1
"""The run API's version: a field renamed or removed is a new one."""
READ_ONLY = (
    "runwatch's run API is read-only: a run is what its events say. Send events to "
    "POST /v1/events (the runwatch SDK's TrainingMonitor does: log_metrics, "
    "save_checkpoint, mark_best_checkpoint, set_status); see docs/sdk.md."
)
WRITE_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("/api/runs", "POST", "GET, HEAD"),
    ("/api/runs/{run_id:path}/metrics", "POST", ""),
    ("/api/runs/{run_id:path}/checkpoints", "POST", "GET, HEAD"),
    ("/api/runs/{run_id:path}", "PUT", "GET, HEAD"),
    ("/api/runs/{run_id:path}", "DELETE", "GET, HEAD"),
    ("/api/checkpoints/{checkpoint_id:path}/load", "POST", "GET, HEAD"),
    ("/api/checkpoints/{checkpoint_id:path}", "DELETE", "GET, HEAD"),
)
"""(path, method, the methods the path does answer): the write side, answered 405."""


def run_routes(pipeline: Pipeline) -> APIRouter:
    """The run API's routes over ``pipeline``'s runs (each request reads a snapshot). Ids
    may hold a slash (``{run_id:path}``), so a run's own routes come before the run's."""
    router = APIRouter()

    def found(run_id: str) -> tuple[Run, View]:
        view = pipeline.snapshot()
        run = view.state.runs.get(run_id)
        if run is None:
            raise NotFound("run", run_id)
        return run, view

    def answer(run: Run, document: Any, stats: Stats) -> Response:
        body = encoded_run(run, document, stats)
        if body is None:
            return JSONResponse({"error": UNENCODABLE}, status_code=500)
        return Response(body, media_type="application/json")

    @router.api_route("/api/runs", methods=["GET", "HEAD"])
    def runs() -> Response:
        view = pipeline.snapshot()
        return Response(runs_document(view.state.runs.values(), view.stats),
                        media_type="application/json")  # fmt: skip

    @router.api_route("/api/runs/{run_id:path}/metrics/latest", methods=["GET", "HEAD"])
    def latest(run_id: str) -> Response:
        run, view = found(run_id)
        document = {
            "run_id": run.run_id,
            "step": run.step,
            "metrics": {key: json_number(value) for key, value in run.metrics.items()},
            "timestamp": run.last_event,
        }
        return answer(run, document, view.stats)

    @router.api_route("/api/runs/{run_id:path}/metrics", methods=["GET", "HEAD"])
    def history(
        run_id: str,
        keys: Annotated[list[str] | None, Query()] = None,
        min_step: int | None = None,
        max_step: int | None = None,
        max_points: Annotated[int | None, Query(ge=10)] = None,
        layout: Literal["rows", "columns"] = "rows",
        format: Literal["json", "csv"] = "json",
    ) -> Response:
        """The run's metric window (see docs/using.md): JSON by rows or by columns, or CSV."""
        run, view = found(run_id)
        picked = parse_keys(keys)
        query = HistoryQuery(picked, min_step, max_step, max_points)
        rows = pipeline.window_rows(run.run_id, picked)
        if format == "csv":
            headers = {"Content-Disposition": f'attachment; filename="{csv_filename(run_id)}"'}
            text = history_csv(rows, query).encode("utf-8", "backslashreplace")
            return Response(text, media_type="text/csv; charset=utf-8", headers=headers)
        limits = view.state.limits
        try:
            body = history_json(run.run_id, rows, query, layout, limits.max_window_values_per_run)
        except (TypeError, ValueError):  # a key UTF-8 cannot encode
            return JSONResponse({"error": UNENCODABLE}, status_code=500)
        return Response(body, media_type="application/json")

    @router.api_route("/api/runs/{run_id:path}/checkpoints", methods=["GET", "HEAD"])
    def checkpoints(run_id: str) -> Response:
        run, view = found(run_id)
        return answer(run, [checkpoint_json(run, id_) for id_ in run.checkpoints], view.stats)

    @router.api_route("/api/runs/{run_id:path}", methods=["GET", "HEAD"])
    def run(run_id: str) -> Response:
        run, view = found(run_id)
        return answer(run, run_json(run), view.stats)

    @router.api_route("/api/checkpoints/{checkpoint_id:path}", methods=["GET", "HEAD"])
    def checkpoint(checkpoint_id: str, run_id: str | None = None) -> Response:
        """A checkpoint id is its run's (the SDK numbers each run's from ckpt_000001): of
        several runs naming one alike, ``run_id``'s, else the latest saved."""
        view = pipeline.snapshot()
        holders = [run for run in view.state.runs.values() if checkpoint_id in run.checkpoints
                   and run_id in (None, run.run_id)]  # fmt: skip
        if not holders:
            raise NotFound("checkpoint", checkpoint_id)
        run = max(holders, key=lambda r: r.checkpoints[checkpoint_id].timestamp)
        document = {"run_id": run.run_id, **checkpoint_json(run, checkpoint_id)}
        return answer(run, document, view.stats)

    @router.api_route("/health", methods=["GET", "HEAD"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @router.api_route("/api/version", methods=["GET", "HEAD"])
    def version() -> dict[str, Any]:
        return {"version": __version__, "api_version": API_VERSION}

    for path, method, allowed in WRITE_ROUTES:
        router.add_api_route(path, _read_only(allowed), methods=[method],
                             include_in_schema=False)  # fmt: skip
    return router


def method_not_allowed(request: Request, exc: Exception) -> Response:
    """Any other method on the run API's paths: the read-only answer too, with the methods
    the path takes."""
    allowed = getattr(exc, "headers", None) or {}
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": READ_ONLY}, status_code=405, headers=allowed)
    return JSONResponse({"error": "method not allowed"}, status_code=405, headers=allowed)


def _read_only(allowed: str) -> Any:
    def refuse() -> JSONResponse:
        return JSONResponse({"error": READ_ONLY}, status_code=405, headers={"Allow": allowed})

    return refuse


class NotFound(Exception):
    """An unknown run or checkpoint id: 404 with a JSON error (:func:`not_found`, the
    app's handler for it)."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"no {kind} {name!r} (runs finished past --finished-run-retention, "
                         "or past --max-runs, are forgotten)")  # fmt: skip


def not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=404)


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
            {"stage": stage, "target": target, "best_auc": json_number(auc)}
            for (stage, target), auc in run.target_best_auc.items()
        ],
        "step": run.step,
        "metrics": {key: json_number(value) for key, value in run.metrics.items()},
        "non_finite_metrics": dict(run.non_finite),
        "errors": [
            {"error_type": error_type, "recoverable": recoverable, "count": count}
            for (error_type, recoverable), count in run.errors.items()
        ],
        "last_error": None
        if run.last_error is None
        else {
            "timestamp": run.last_error.timestamp,
            "error_type": run.last_error.error_type,
            "message": run.last_error.message,
            "recoverable": run.last_error.recoverable,
        },
        "best_checkpoint": run.best_checkpoint,
        "checkpoints": [checkpoint_json(run, id_) for id_ in run.checkpoints],
        "goodput": goodput_json(run.goodput) if run.goodput.steps else None,
    }


def goodput_json(ledger: Ledger) -> dict[str, Any]:
    """A run's goodput account (docs/goodput.md): seconds by figure, and its pace."""
    return {
        "wall_clock_seconds": ledger.elapsed,
        "goodput_seconds": ledger.goodput,
        "work_at_risk_seconds": ledger.at_risk,
        "badput_seconds": dict(ledger.badput),
        "restarts": ledger.restarts,
        "steps": ledger.steps,
        "lost_steps": ledger.lost_steps,
        "lost_gpu_seconds": ledger.lost_gpu_seconds,
        "steps_per_second": ledger.steps_per_second(),
        "step_time_seconds": dict(ledger.step_percentiles()),
        "planned_steps": ledger.total_steps,
        "eta_seconds": ledger.eta_seconds(),
    }


def checkpoint_json(run: Run, checkpoint_id: str) -> dict[str, Any]:
    """One of a run's checkpoints, as a run's ``checkpoints`` lists it."""
    checkpoint = run.checkpoints[checkpoint_id]
    return {
        "checkpoint_id": checkpoint_id,
        "step": checkpoint.step,
        "is_best": checkpoint.is_best,
        "metrics": {key: json_number(value) for key, value in checkpoint.metrics.items()},
        "filepath": checkpoint.filepath,
        "timestamp": checkpoint.timestamp,
    }


def runs_document(runs: Iterable[Run], stats: Stats) -> bytes:
    """``GET /api/runs``: each run encoded on its own, so one that cannot be (text UTF-8
    cannot encode) is left out, counted as ``runwatch_render_errors_total{family="api_runs"}``
    and logged once, and the others are served."""
    encoded = [body for run in runs if (body := encoded_run(run, run_json(run), stats))]
    return b"[" + b",".join(encoded) + b"]"


def encoded_run(run: Run, document: Any, stats: Stats) -> bytes | None:
    """A document of ``run`` as JSON, or None when it cannot be (text UTF-8 cannot
    encode): counted as ``runwatch_render_errors_total{family="api_runs"}``, logged once."""
    try:
        return _encoded(document)
    except (TypeError, ValueError) as exc:
        stats.count(stats.render_errors, API_RUNS)
        if API_RUNS not in _logged:
            _logged.add(API_RUNS)
            log.error("/api/runs: run %r could not be encoded and is left out (%s)",
                      run.run_id, exc)  # fmt: skip
        return None


_logged: set[str] = set()


def _encoded(value: Any) -> bytes:
    """JSON of one run: orjson, or for integers past 64 bits (a config may hold them) the
    standard library's; text UTF-8 cannot encode raises UnicodeEncodeError either way."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False).encode()
