"""The trading board: engine metrics, event log, pipeline stage, positions, risk, bandit arms,
training progress, and the bridge's health."""

from __future__ import annotations

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    gauge,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from exporter.dashboards.names import metric
from exporter.dashboards.style import (
    BAD,
    GOOD,
    RATE,
    SEL,
    WARNING,
    board,
    event_log,
    query,
    selected,
    styled,
    thresholds,
    value_map,
)

UP_DOWN = value_map({"1": ("UP", GOOD), "0": ("DOWN", BAD)})


def build() -> dashboard.Dashboard:
    money = styled(
        stat.Panel(),
        "METRICS",
        "none",
        [
            query(selected("trading_portfolio_value"), "portfolio"),
            query(selected("trading_daily_pnl"), "daily P&L"),
            query(selected("trading_cash"), "cash"),
            query(selected("trading_positions"), "positions"),
        ],
    )
    health = styled(
        stat.Panel(),
        "BRIDGE",
        "none",
        [
            query(metric("runwatch_source_up") + f'{{{SEL}, source="bridge"}}', "REST"),
            query(selected("trading_bridge_websocket_connected"), "WS {{channel}}"),
        ],
    ).mappings(UP_DOWN)
    engine = (
        styled(
            stat.Panel(),
            "ENGINE",
            "none",
            [
                query(f"max by (status) ({selected('trading_engine_status')} == 1)", "{{status}}"),
                query(selected("trading_risk_trading_allowed"), "trading"),
            ],
        )
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .override_by_name(
            "trading",
            [
                model.DynamicConfigValue(
                    id_val="mappings",
                    value=value_map({"1": ("ALLOWED", GOOD), "0": ("HALTED", BAD)}),
                )
            ],
        )
        .mappings(value_map({"1": ("●", GOOD)}))
    )
    errors = styled(
        timeseries.Panel(),
        "ERRORS",
        "short",
        [query(f"increase({selected('trading_errors_total')}[{RATE}])", "engine errors")],
    )
    activity = styled(
        timeseries.Panel(),
        "CYCLES AND TRADES",
        "short",
        [
            query(f"increase({selected('trading_cycles_total')}[{RATE}])", "cycles"),
            query(f"increase({selected('trading_trades_total')}[{RATE}])", "trades"),
        ],
    )
    events = event_log("EVENT LOG", '{service_name=~".+"} | trading_engine!=""')
    events_by_type = styled(
        timeseries.Panel(),
        "EVENTS BY TYPE",
        "short",
        [
            query(
                f"sum by (event_type) (increase({selected('trading_events_total')}[{RATE}]))",
                "{{event_type}}",
            ),
        ],
    )
    stage = styled(
        statetimeline.Panel(),
        "PIPELINE STAGE",
        "none",
        [
            query(f"max by (stage) ({selected('trading_engine_stage')})", "{{stage}}"),
        ],
    ).mappings(value_map({"1": ("●", GOOD), "0": ("", "transparent")}))
    risk = (
        styled(
            gauge.Panel(),
            "RISK",
            "percentunit",
            [
                query(selected("trading_risk_drawdown_ratio"), "drawdown"),
                query(selected("trading_risk_exposure_ratio"), "exposure"),
                query(f"-{selected('trading_risk_daily_pnl_ratio')}", "daily loss"),
            ],
        )
        .min(0)
        .max(0.2)
        .thresholds(thresholds((None, GOOD), (0.05, WARNING), (0.1, BAD)))
    )
    positions = styled(
        table.Panel(),
        "POSITIONS",
        "none",
        [
            query(selected("trading_position_quantity"), table=True),
            query(selected("trading_position_market_value"), table=True),
            query(selected("trading_position_unrealized_pnl"), table=True),
        ],
    ).with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
    for ref, name in (("A", "quantity"), ("B", "market value"), ("C", "unrealized P&L")):
        positions = positions.override_by_name(
            f"Value #{ref}", [model.DynamicConfigValue(id_val="displayName", value=name)]
        )
    arms = (
        styled(
            bargauge.Panel(),
            "CILS ARMS",
            "percentunit",
            [
                query(selected("trading_cils_arm_weight"), "{{arm}}"),
            ],
        )
        .min(0)
        .max(1)
    )
    progress = (
        styled(
            timeseries.Panel(),
            "TRAINING PROGRESS",
            "percentunit",
            [
                query(selected("training_run_progress_ratio"), "{{run_id}} {{stage}}"),
            ],
        )
        .min(0)
        .max(1)
    )
    return board(
        "runwatch-trading",
        "runwatch / trading",
        "The trading engine through its bridge: metrics, events, stage, positions, risk, arms.",
        ["job", "instance"],
        [
            (6, [money, engine, health, activity]),
            (8, [events, stage, risk]),
            (8, [positions, arms, progress]),
            (6, [errors, events_by_type]),
        ],
    )
