"""``GET /api/trading/status``: the trading engine as the bridge's last fresh poll showed
it (engine metrics, pipeline stage, positions, risk, CILS arms, trades and decisions by
kind) and the training backend's jobs by status, for the view's trading panels; and
``GET /api/trading/history``, the engine's portfolio over the cached polls. Null where a
source is down or an endpoint failed; Prometheus keeps the longer history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from exporter.app.system_api import sources_json
from exporter.pipeline import Pipeline
from exporter.pipeline.readings import HISTORY_SAMPLES
from exporter.pipeline.source_names import BACKEND_SOURCE, BRIDGE_SOURCE
from exporter.sources.peers.samples import BackendSample, TradingSample


def trading_routes(pipeline: Pipeline) -> APIRouter:
    router = APIRouter()

    @router.api_route("/api/trading/status", methods=["GET", "HEAD"])
    def status() -> dict[str, Any]:
        readings = pipeline.snapshot().readings
        trading, backend = readings.latest(TradingSample), readings.latest(BackendSample)
        return {
            "sources": sources_json(readings, (BRIDGE_SOURCE, BACKEND_SOURCE)),
            "trading": trading_json(trading) if trading else None,
            "backend_jobs": backend.jobs if backend else None,
        }

    @router.api_route("/api/trading/history", methods=["GET", "HEAD"])
    def history() -> dict[str, Any]:
        """The engine's metrics over the bridge's last polls, by columns (as a chart takes
        them): the cache's last ``HISTORY_SAMPLES``; null where a poll had no metrics."""
        polls = [(at, sample.metrics) for at, sample in pipeline.readings.history(BRIDGE_SOURCE)
                 if isinstance(sample, TradingSample)]  # fmt: skip
        columns: dict[str, Any] = {"timestamp": [at for at, _ in polls]}
        for field in HISTORY_FIELDS:
            columns[field] = [None if metrics is None else getattr(metrics, field)
                              for _, metrics in polls]  # fmt: skip
        return {**columns, "max_samples": HISTORY_SAMPLES}

    return router


HISTORY_FIELDS = ("portfolio_value", "cash", "daily_pnl")


def trading_json(sample: TradingSample) -> dict[str, Any]:
    """A poll of the bridge (its contract takes finite numbers only: JSON can carry them)."""

    def numbers(model: Any) -> dict[str, Any] | None:
        return None if model is None else dict(model.model_dump())

    return {
        "metrics": numbers(sample.metrics),
        "state": numbers(sample.state),
        "stages_seen": list(sample.stages),
        "positions": None if sample.positions is None else [numbers(p) for p in sample.positions],
        "risk": numbers(sample.risk),
        "arms": None if sample.arms is None else [numbers(a) for a in sample.arms],
        "trades": None
        if sample.trades is None
        else [
            {"side": side, "count": count, "volume": volume}
            for side, count, volume in sample.trades
        ],
        "decisions": None
        if sample.decisions is None
        else [{"action": action, "count": count} for action, count in sample.decisions],
    }
