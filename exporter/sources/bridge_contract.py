"""The trading bridge's REST and WebSocket contract (seed 001), as runwatch reads it.

The seed only sketches these shapes, so the contract is tolerant: every field
is optional unless the metric makes no sense without it, unknown fields are
ignored, and a few equivalent shapes are accepted (a list or an object holding
the list; arms as a list or keyed by name). A response that still does not fit
is refused by reason (see :data:`BRIDGE_REJECT_REASONS`) and counted in
``runwatch_events_rejected_total{source="bridge",reason}``.
The reference bridge (:mod:`exporter.reference_bridge`) serves exactly this.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field

BRIDGE_REJECT_REASONS: tuple[str, ...] = (
    "connect_failed",  # refused, reset, DNS
    "timeout",  # no full answer within --bridge-timeout
    "http_error",  # a status other than 2xx
    "invalid_json",  # a body that is not JSON (or a WebSocket frame that is not)
    "contract_violation",  # JSON that does not fit the models below
)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


Number = Annotated[float, AfterValidator(_finite)]
Count = Annotated[int, Field(ge=0)]
Name = Annotated[str, Field(min_length=1, max_length=256)]


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EngineMetrics(_Tolerant):
    """GET /api/metrics: the engine's MetricsRegistry."""

    portfolio_value: Number | None = None
    daily_pnl: Number | None = None
    cash: Number | None = None
    positions_count: Count | None = None
    trades_total: Count | None = None
    cycles_total: Count | None = None
    errors_total: Count | None = None


class EngineState(_Tolerant):
    """GET /api/state: engine status and the current pipeline stage."""

    status: Name
    current_stage: Name | None = None


class Position(_Tolerant):
    symbol: Name
    quantity: Number | None = Field(None, validation_alias=AliasChoices("quantity", "qty"))
    market_value: Number | None = None
    unrealized_pnl: Number | None = None
    avg_entry_price: Number | None = None
    current_price: Number | None = None


class Positions(_Tolerant):
    """GET /api/positions: a list of positions, or ``{"positions": [...]}``."""

    positions: list[Position]


class Trade(_Tolerant):
    symbol: Name | None = None
    side: str = "other"
    quantity: Number = 0.0
    price: Number = 0.0


class Decision(_Tolerant):
    symbol: Name | None = None
    action: str = "other"


class TradeHistory(_Tolerant):
    """GET /api/trades/history: the recent window of trades and decisions."""

    trades: list[Trade] = []
    decisions: list[Decision] = []


class Arm(_Tolerant):
    arm: Name
    weight: Number | None = None
    pulls: Count | None = None
    mean_reward: Number | None = None


class CilsStats(_Tolerant):
    """GET /api/cils/stats: bandit arms, as a list or ``{"arm name": {...}}``."""

    arms: list[Arm]


class RiskStatus(_Tolerant):
    """GET /api/risk/status: percentages as the engine reports them (0-100)."""

    drawdown_pct: Number | None = None
    exposure_pct: Number | None = None
    daily_pnl_pct: Number | None = None
    trading_allowed: bool | None = None


class BusEvent(_Tolerant):
    """One message on /ws/events: the engine's event bus."""

    event_type: Name = Field(validation_alias=AliasChoices("type", "event_type"))
    timestamp: Number | None = None
    data: dict[str, Any] = {}


class StageChange(_Tolerant):
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
