"""What the peer pollers read: one poll of the trading bridge's or the training
backend's REST side, stored in the :class:`~exporter.pipeline.readings.ReadingsCache`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: pydantic loads when a bridge is configured, not always
    from exporter.sources.peers.bridge_contract import (
        Arm,
        EngineMetrics,
        EngineState,
        Position,
        RiskStatus,
    )


@dataclass(frozen=True, slots=True)
class TradingSample:
    """One poll of the trading bridge's REST endpoints; None where an endpoint failed."""

    metrics: EngineMetrics | None
    state: EngineState | None
    stages: tuple[str, ...]  # stages seen so far (bounded), for the 1/0 stage series
    statuses: tuple[str, ...]  # statuses seen so far (bounded)
    positions: tuple[Position, ...] | None
    trades: tuple[tuple[str, int, float], ...] | None  # (side, count, notional volume)
    decisions: tuple[tuple[str, int], ...] | None  # (action, count)
    arms: tuple[Arm, ...] | None
    risk: RiskStatus | None


BACKEND_JOB_STATUSES = ("waiting", "running", "completed", "failed", "cancelled", "other")


@dataclass(frozen=True, slots=True)
class BackendSample:
    """One poll of the training backend's REST side."""

    jobs: dict[str, int] | None  # GET /jobs by status (BACKEND_JOB_STATUSES); None if it failed
