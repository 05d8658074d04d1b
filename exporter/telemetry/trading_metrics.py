"""Catalogue entries for the trading bridge: the engine's metrics, state, positions, trade
history, bandit arms and risk from the latest fresh REST poll, and
the event bus and WebSocket health from runwatch's own counters.

Money is in the engine's currency, so those names carry no unit. Counters the engine
reports (trades, cycles, errors) pass through as counters. Series from the REST poll
vanish when the bridge stops answering (a frozen portfolio value would look healthy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from exporter.pipeline import View
from exporter.sources.peers.samples import TradingSample
from exporter.telemetry.metric import Metric, Sample, Sampler, Type, stats_counter

if TYPE_CHECKING:  # annotations only, so /metrics does not load pydantic
    from exporter.sources.peers.bridge_contract import Arm, EngineState, Position

G, C = Type.GAUGE, Type.COUNTER


def _part(select: Callable[[TradingSample], Any],
          values: Callable[[Any], Iterable[Sample]]) -> Sampler:  # fmt: skip
    """Samples from one endpoint's part of the latest poll, if there is one."""

    def sample(view: View) -> Iterator[Sample]:
        trading = view.readings.latest(TradingSample)
        part = None if trading is None else select(trading)
        if part is not None:
            yield from values(part)

    return sample


def _value(select: Callable[[TradingSample], Any], field: str, scale: float = 1.0) -> Sampler:
    def values(part: Any) -> Iterator[Sample]:
        value = getattr(part, field)
        if value is not None:
            yield (), float(value) * scale

    return _part(select, values)


def _one_of(current: Callable[[EngineState], str | None],
            seen: Callable[[TradingSample], tuple[str, ...]]) -> Sampler:  # fmt: skip
    """1 for the current value, 0 for the others seen (like training_run_stage)."""

    def sample(view: View) -> Iterator[Sample]:
        trading = view.readings.latest(TradingSample)
        if trading is not None and trading.state is not None:
            now = current(trading.state)
            for value in seen(trading):
                yield (value,), 1.0 if value == now else 0.0

    return sample


def _per_item(select: Callable[[TradingSample], Any], key: str, field: str,
              summed: bool) -> Sampler:  # fmt: skip
    """One series per position (by symbol) or arm (by name): ``field`` of each item. Items
    that share a name (two lots of one symbol) make one series, never two: summed where the
    field adds up (quantities, values, pulls), else the last item's (a price)."""

    def values(items: tuple[Position | Arm, ...]) -> Iterator[Sample]:
        by_name: dict[str, float] = {}
        for item in items:
            if (value := getattr(item, field)) is not None:
                name = getattr(item, key)
                by_name[name] = by_name.get(name, 0.0) + float(value) if summed else float(value)
        return (((name,), value) for name, value in by_name.items())

    return _part(select, values)


def _per_position(field: str, summed: bool = True) -> Sampler:
    return _per_item(lambda t: t.positions, "symbol", field, summed)


def _per_arm(field: str, summed: bool = False) -> Sampler:
    return _per_item(lambda t: t.arms, "arm", field, summed)


def _metrics(t: TradingSample) -> Any:
    return t.metrics


def _risk(t: TradingSample) -> Any:
    return t.risk


TRADING_METRICS: tuple[Metric, ...] = (
    Metric("trading_portfolio_value", "trading.portfolio.value", "", G, (),
           "Portfolio value, in the engine's currency.", _value(_metrics, "portfolio_value")),
    Metric("trading_daily_pnl", "trading.daily_pnl", "", G, (), "Profit and loss today.",
           _value(_metrics, "daily_pnl")),
    Metric("trading_cash", "trading.cash", "", G, (), "Cash.", _value(_metrics, "cash")),
    Metric("trading_positions", "trading.positions", "{position}", G, (), "Open positions.",
           _value(_metrics, "positions_count")),
    Metric("trading_trades_total", "trading.trades", "{trade}", C, (),
           "Trades executed, as the engine counts them.", _value(_metrics, "trades_total")),
    Metric("trading_cycles_total", "trading.cycles", "{cycle}", C, (),
           "Engine cycles completed, as the engine counts them.",
           _value(_metrics, "cycles_total")),
    Metric("trading_errors_total", "trading.errors", "{error}", C, (),
           "Engine errors, as the engine counts them.", _value(_metrics, "errors_total")),
    Metric("trading_engine_status", "trading.engine.status", "", G, ("status",),
           "1 for the engine's current status, 0 for others seen.",
           _one_of(lambda state: state.status, lambda t: t.statuses)),
    Metric("trading_engine_stage", "trading.engine.stage", "", G, ("stage",),
           "1 for the engine's current pipeline stage, 0 for others seen.",
           _one_of(lambda state: state.current_stage, lambda t: t.stages)),
    Metric("trading_position_quantity", "trading.position.quantity", "", G, ("symbol",),
           "Quantity held per symbol (negative: short; lots of one symbol summed).",
           _per_position("quantity")),
    Metric("trading_position_market_value", "trading.position.market_value", "", G,
           ("symbol",), "Market value per symbol.", _per_position("market_value")),
    Metric("trading_position_unrealized_pnl", "trading.position.unrealized_pnl", "", G,
           ("symbol",), "Unrealised profit and loss per symbol.", _per_position("unrealized_pnl")),
    Metric("trading_position_price", "trading.position.price", "", G, ("symbol",),
           "Current price per symbol held (of its last lot).",
           _per_position("current_price", summed=False)),
    Metric("trading_trade_history_trades", "trading.trade_history.trades", "{trade}", G,
           ("side",), "Trades in the bridge's recent history window, by side.",
           _part(lambda t: t.trades, lambda trades: (((s,), n) for s, n, _ in trades))),
    Metric("trading_trade_history_volume", "trading.trade_history.volume", "", G, ("side",),
           "Notional volume (quantity times price) in the recent history window, by side.",
           _part(lambda t: t.trades, lambda trades: (((s,), v) for s, _, v in trades))),
    Metric("trading_decision_history_decisions", "trading.decision_history.decisions",
           "{decision}", G, ("action",), "Decisions in the recent history window, by action.",
           _part(lambda t: t.decisions, lambda decisions: (((a,), n) for a, n in decisions))),
    Metric("trading_cils_arm_weight", "trading.cils.arm.weight", "", G, ("arm",),
           "Bandit weight of each arm (of its last entry).", _per_arm("weight")),
    Metric("trading_cils_arm_pulls", "trading.cils.arm.pulls", "", G, ("arm",),
           "Times each arm was chosen (summed over entries that repeat a name).",
           _per_arm("pulls", summed=True)),
    Metric("trading_cils_arm_mean_reward", "trading.cils.arm.mean_reward", "", G, ("arm",),
           "Mean reward of each arm (of its last entry).", _per_arm("mean_reward")),
    Metric("trading_risk_drawdown_ratio", "trading.risk.drawdown.ratio", "1", G, (),
           "Drawdown from the peak (drawdown_pct / 100).", _value(_risk, "drawdown_pct", 0.01)),
    Metric("trading_risk_exposure_ratio", "trading.risk.exposure.ratio", "1", G, (),
           "Gross exposure over portfolio value (exposure_pct / 100).",
           _value(_risk, "exposure_pct", 0.01)),
    Metric("trading_risk_daily_pnl_ratio", "trading.risk.daily_pnl.ratio", "1", G, (),
           "Profit and loss today over the day's starting value (daily_pnl_pct / 100).",
           _value(_risk, "daily_pnl_pct", 0.01)),
    Metric("trading_risk_trading_allowed", "trading.risk.trading_allowed", "", G, (),
           "1 while the risk guardrails allow trading.", _value(_risk, "trading_allowed")),
    Metric("trading_events_total", "trading.events", "", C, ("event_type",),
           "Messages on the bridge's event bus (/ws/events), by type.",
           stats_counter(lambda s: s.trading_events)),
    Metric("trading_bridge_websocket_connected", "trading.bridge.websocket.connected", "", G,
           ("channel",), "1 while runwatch holds the bridge WebSocket open.",
           stats_counter(lambda s: s.websocket_connected)),
    Metric("trading_bridge_websocket_reconnects_total", "trading.bridge.websocket.reconnects",
           "", C, ("channel",), "Reconnection attempts to the bridge WebSocket.",
           stats_counter(lambda s: s.websocket_reconnects)),
)  # fmt: skip
