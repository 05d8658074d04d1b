"""``/api/trading/status`` and ``/api/trading/history``: the bridge's last fresh poll and its
cached polls as the view's trading panels read them; nulls where the bridge is down."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from exporter.app.server import create_app
from exporter.pipeline import Pipeline
from exporter.pipeline.source_names import BRIDGE_SOURCE
from exporter.sources.peers.bridge_contract import (
    Arm,
    EngineMetrics,
    EngineState,
    Position,
    RiskStatus,
)
from exporter.sources.peers.samples import TradingSample


def _poll(portfolio: float) -> TradingSample:
    return TradingSample(
        metrics=EngineMetrics(portfolio_value=portfolio, daily_pnl=-2.5, cash=10.0),
        state=EngineState(status="running", current_stage="decision"),
        stages=("market_data", "decision"),
        statuses=("running",),
        positions=(Position(symbol="<b>AAA</b>", qty=3, unrealized_pnl=-1.5),),
        trades=(("buy", 2, 300.0),),
        decisions=(("hold", 5),),
        arms=(Arm(arm="momentum", weight=0.5, pulls=3),),
        risk=RiskStatus(drawdown_pct=1.0, trading_allowed=False),
    )


def test_status_and_history_from_the_bridge_polls() -> None:
    pipeline = Pipeline()
    client = TestClient(create_app(pipeline))
    assert client.get("/api/trading/status").json() == {
        "sources": {}, "trading": None, "backend_jobs": None}  # fmt: skip
    pipeline.readings.register(BRIDGE_SOURCE, 5.0)
    now = time.time()
    for i, value in enumerate((100.0, 101.0, 102.0)):
        pipeline.readings.store(BRIDGE_SOURCE, _poll(value), 0.01, now - 2 + i)
    status = client.get("/api/trading/status").json()
    assert status["sources"][BRIDGE_SOURCE]["up"] is True
    trading = status["trading"]
    assert trading["metrics"]["portfolio_value"] == 102.0
    assert trading["metrics"]["daily_pnl"] == -2.5
    assert trading["state"] == {"status": "running", "current_stage": "decision"}
    assert (
        trading["positions"][0]["symbol"] == "<b>AAA</b>"
        and trading["positions"][0]["quantity"] == 3
    )
    assert trading["trades"] == [{"side": "buy", "count": 2, "volume": 300.0}]
    assert trading["decisions"] == [{"action": "hold", "count": 5}]
    assert trading["arms"][0]["arm"] == "momentum" and trading["risk"]["trading_allowed"] is False
    history = client.get("/api/trading/history").json()
    assert history["portfolio_value"] == [100.0, 101.0, 102.0]
    assert history["timestamp"] == [now - 2, now - 1, now]
    pipeline.readings.mark_down(BRIDGE_SOURCE)
    down = client.get("/api/trading/status").json()
    assert down["trading"] is None and down["sources"][BRIDGE_SOURCE]["up"] is False
