"""The trading bridge as a source: its REST endpoints polled on their own clock, its event
bus (``/ws/events``) followed over a WebSocket.

REST: each poll reads the six endpoints of :mod:`exporter.sources.peers.bridge_contract`
at once (:class:`~exporter.sources.peers.rest.JsonClient`: each request bounded in time and
size as a whole) into one :class:`~exporter.sources.peers.samples.TradingSample`.
An endpoint that fails (timeout, non-2xx, too large, not JSON, off contract) is counted by reason in
``runwatch_events_rejected_total{source="bridge"}`` and left out of that sample, so
its series vanish instead of freezing; a bridge that cannot be reached at all, or
whose every endpoint failed, fails the sample, and the sampler reports the source
down until it answers again.

WebSocket (:class:`~exporter.sources.peers.websocket.WebSocketFollower`, a thread per
channel, with backoff): ``/ws/events`` messages are counted by event type and each
STAGE_CHANGE becomes a stage span of an engine cycle (:mod:`exporter.core.engine_cycles`);
``/ws/training`` carries training events in the core format, ingested like a JSONL
line from source ``bridge``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from exporter.pipeline.self_stats import Stats
from exporter.pipeline.source_names import BRIDGE_SOURCE
from exporter.sources.peers.bridge_contract import (
    BusEvent,
    EngineMetrics,
    EngineState,
    RiskStatus,
    StageChange,
    TradeHistory,
    arms_from,
    positions_from,
)
from exporter.sources.peers.rest import Failed, JsonClient, Unreachable
from exporter.sources.peers.samples import TradingSample
from exporter.sources.sampled.sampling import SourceUnavailable

log = logging.getLogger(__name__)

MAX_STAGES = 32
MAX_STATUSES = 16
MAX_ARMS = 64
MAX_EVENT_TYPES = 64
MAX_ACTIONS = 16
OTHER = "other"
SIDES = {"buy": "buy", "long": "buy", "sell": "sell", "short": "sell"}

ENDPOINTS: dict[str, Callable[[Any], Any]] = {
    "/api/metrics": EngineMetrics.model_validate,
    "/api/state": EngineState.model_validate,
    "/api/positions": positions_from,
    "/api/trades/history": TradeHistory.model_validate,
    "/api/cils/stats": arms_from,
    "/api/risk/status": RiskStatus.model_validate,
}


class BridgePoller:
    """A SampledSource over the bridge's REST endpoints."""

    name = BRIDGE_SOURCE

    def __init__(
        self, url: str, timeout: float, stats: Stats, max_positions: int, max_bytes: int
    ) -> None:
        self._url = url.rstrip("/")
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._stats = stats
        self._max_positions = max_positions
        self._client: JsonClient | None = None
        self._stages: dict[str, None] = {}  # insertion-ordered sets, bounded
        self._statuses: dict[str, None] = {}

    def open(self) -> None:
        self._client = JsonClient(self._url, self._timeout, self._max_bytes, self._reject)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def sample(self) -> TradingSample:
        """One poll; raises SourceUnavailable when the bridge is unreachable or every
        endpoint failed (a bridge answering 500 everywhere is down, not up and empty)."""
        assert self._client is not None
        try:
            answers = self._client.get_many(list(ENDPOINTS))
        except Unreachable as exc:
            raise SourceUnavailable(f"bridge {exc}") from None
        bodies: dict[str, Any] = {}
        failures: set[str] = set()
        for path, body in answers.items():
            if isinstance(body, Failed):
                failures.add(body.reason)
                continue
            try:
                bodies[path] = ENDPOINTS[path](body)
            except ValidationError:
                self._reject("contract_violation")
                failures.add("contract_violation")
        if not bodies:
            raise SourceUnavailable(
                f"bridge {self._url}: every endpoint failed ({', '.join(sorted(failures))})"
            )
        return self._assemble(bodies)

    def _assemble(self, bodies: dict[str, Any]) -> TradingSample:
        state = bodies.get("/api/state")
        if state is not None:
            _remember(self._statuses, state.status, MAX_STATUSES)
            if state.current_stage:
                _remember(self._stages, state.current_stage, MAX_STAGES)
        positions = bodies.get("/api/positions")
        kept = None
        if positions is not None:
            ordered = sorted(positions.positions, key=lambda p: -abs(p.market_value or 0.0))
            kept = tuple(sorted(ordered[: self._max_positions], key=lambda p: p.symbol))
            if len(ordered) > self._max_positions:
                cut = len(ordered) - self._max_positions
                self._stats.count(self._stats.series_dropped, "max_positions", cut)
        history = bodies.get("/api/trades/history")
        arms = bodies.get("/api/cils/stats")
        return TradingSample(
            metrics=bodies.get("/api/metrics"),
            state=state,
            stages=tuple(self._stages),
            statuses=tuple(self._statuses),
            positions=kept,
            trades=None if history is None else _trades(history),
            decisions=None if history is None else _decisions(history),
            arms=None if arms is None else tuple(arms.arms[:MAX_ARMS]),
            risk=bodies.get("/api/risk/status"),
        )

    def _reject(self, reason: str) -> None:
        self._stats.count(self._stats.rejected, (BRIDGE_SOURCE, reason))


def _remember(seen: dict[str, None], value: str, limit: int) -> None:
    if value not in seen and len(seen) < limit:
        seen[value] = None


def _trades(history: TradeHistory) -> tuple[tuple[str, int, float], ...]:
    counts: Counter[str] = Counter(dict.fromkeys(("buy", "sell"), 0))
    volumes: dict[str, float] = dict.fromkeys(("buy", "sell"), 0.0)
    for trade in history.trades:
        side = SIDES.get(trade.side.lower(), OTHER)
        counts[side] += 1
        volumes[side] = volumes.get(side, 0.0) + abs(trade.quantity * trade.price)
    return tuple((side, counts[side], volumes[side]) for side in counts)


def _decisions(history: TradeHistory) -> tuple[tuple[str, int], ...]:
    counts: Counter[str] = Counter()
    for decision in history.decisions:
        action = decision.action.lower()
        known = action in counts or len(counts) < MAX_ACTIONS - 1
        counts[action if known else OTHER] += 1
    return tuple(sorted(counts.items()))


class BusEvents:
    """Handles /ws/events messages: counts them by type (bounded), reports each
    STAGE_CHANGE to ``on_stage(stage, timestamp)`` and every message to
    ``on_event(event_type, data, timestamp)`` (the event log), the event's time when it
    has one."""

    def __init__(
        self,
        stats: Stats,
        on_stage: Callable[[str, float], None],
        on_event: Callable[[str, dict[str, Any], float], None],
    ) -> None:
        self._stats = stats
        self._on_stage = on_stage
        self._on_event = on_event

    def __call__(self, message: str | bytes) -> None:
        try:
            event = BusEvent.model_validate(orjson.loads(message))
            change = None
            if event.event_type == "STAGE_CHANGE":
                change = StageChange.model_validate(event.data)
        except orjson.JSONDecodeError:
            self._reject("invalid_json")
            return
        except ValidationError:
            self._reject("contract_violation")
            return
        types = self._stats.trading_events
        known = event.event_type in types or len(types) < MAX_EVENT_TYPES - 1
        self._stats.count(types, event.event_type if known else OTHER)
        at = event.timestamp or time.time()
        if change is not None:
            self._on_stage(change.new_stage, at)
        self._on_event(event.event_type, event.data, at)

    def _reject(self, reason: str) -> None:
        self._stats.count(self._stats.rejected, (BRIDGE_SOURCE, reason))
