"""The trading bridge's REST and WebSocket contract, as runwatch reads it.

The bridge's documentation only sketches these shapes, so the contract is tolerant: every field
is optional unless the metric makes no sense without it, unknown fields are
ignored, and a few equivalent shapes are accepted (a list or an object holding
the list; arms as a list or keyed by name). A response that still does not fit
is refused by reason (see :data:`~exporter.sources.peers.contract.REJECT_REASONS`) and counted in
``runwatch_events_rejected_total{source="bridge",reason}``.
The reference bridge (:mod:`exporter.simulate.reference_bridge`) serves exactly this.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field

from exporter.sources.peers.contract import Count, Name, Number, Tolerant


class EngineMetrics(Tolerant):
    """GET /api/metrics: the engine's MetricsRegistry."""

    portfolio_value: Number | None = None
    daily_pnl: Number | None = None
    cash: Number | None = None
    positions_count: Count | None = None
    trades_total: Count | None = None
    cycles_total: Count | None = None
    errors_total: Count | None = None


class EngineState(Tolerant):
    """GET /api/state: engine status and the current pipeline stage."""

    status: Name
    current_stage: Name | None = None


class Position(Tolerant):
    symbol: Name
    quantity: Number | None = Field(None, validation_alias=AliasChoices("quantity", "qty"))
    market_value: Number | None = None
    unrealized_pnl: Number | None = None
    avg_entry_price: Number | None = None
    current_price: Number | None = None


class Positions(Tolerant):
    """GET /api/positions: a list of positions, or ``{"positions": [...]}``."""

    positions: list[Position]


class Trade(Tolerant):
    symbol: Name | None = None
    side: str = "other"
    quantity: Number = 0.0
    price: Number = 0.0


class Decision(Tolerant):
    symbol: Name | None = None
    action: str = "other"


class TradeHistory(Tolerant):
    """GET /api/trades/history: the recent window of trades and decisions."""

    trades: list[Trade] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list)


class Arm(Tolerant):
    arm: Name
    weight: Number | None = None
    pulls: Count | None = None
    mean_reward: Number | None = None


class CilsStats(Tolerant):
    """GET /api/cils/stats: bandit arms, as a list or ``{"arm name": {...}}``."""

    arms: list[Arm]


class RiskStatus(Tolerant):
    """GET /api/risk/status: percentages as the engine reports them (0-100)."""

    drawdown_pct: Number | None = None
    exposure_pct: Number | None = None
    daily_pnl_pct: Number | None = None
    trading_allowed: bool | None = None


class BusEvent(Tolerant):
    """One message on /ws/events: the engine's event bus."""

    event_type: Name = Field(validation_alias=AliasChoices("type", "event_type"))
    timestamp: Number | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class StageChange(Tolerant):
    """The data of a STAGE_CHANGE bus event."""

    new_stage: Name = Field(validation_alias=AliasChoices("new_stage", "stage", "to"))
    previous_stage: str | None = None


def positions_from(body: Any) -> Positions:
    return Positions.model_validate({"positions": body} if isinstance(body, list) else body)


def arms_from(body: Any) -> CilsStats:
    arms = body.get("arms") if isinstance(body, dict) else body
    if isinstance(arms, dict):  # {"momentum": {"weight": ...}, ...}
        arms = [{"arm": name, **stats} for name, stats in arms.items() if isinstance(stats, dict)]
    return CilsStats.model_validate({"arms": arms})
