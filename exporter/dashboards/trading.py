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

from exporter.dashboards.style import (
    BAD,
    GOOD,
    RATE,
    SEL,
    WARNING,
    board,
    event_log,
    query,
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
            query(f"trading_portfolio_value{{{SEL}}}", "portfolio"),
            query(f"trading_daily_pnl{{{SEL}}}", "daily P&L"),
            query(f"trading_cash{{{SEL}}}", "cash"),
            query(f"trading_positions{{{SEL}}}", "positions"),
        ],
    )
    health = styled(
        stat.Panel(),
        "BRIDGE",
        "none",
        [
            query(f'runwatch_source_up{{{SEL}, source="bridge"}}', "REST"),
            query(f"trading_bridge_websocket_connected{{{SEL}}}", "WS {{channel}}"),
        ],
    ).mappings(UP_DOWN)
    engine = (
        styled(
            stat.Panel(),
            "ENGINE",
            "none",
            [
                query(f"max by (status) (trading_engine_status{{{SEL}}} == 1)", "{{status}}"),
                query(f"trading_risk_trading_allowed{{{SEL}}}", "trading"),
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
        [query(f"increase(trading_errors_total{{{SEL}}}[{RATE}])", "engine errors")],
    )
    activity = styled(
        timeseries.Panel(),
        "CYCLES AND TRADES",
        "short",
        [
            query(f"increase(trading_cycles_total{{{SEL}}}[{RATE}])", "cycles"),
            query(f"increase(trading_trades_total{{{SEL}}}[{RATE}])", "trades"),
        ],
    )
    events = event_log("EVENT LOG", '{service_name=~".+"} | trading_engine!=""')
    events_by_type = styled(
        timeseries.Panel(),
        "EVENTS BY TYPE",
        "short",
        [
            query(
                f"sum by (event_type) (increase(trading_events_total{{{SEL}}}[{RATE}]))",
                "{{event_type}}",
            ),
        ],
    )
    stage = styled(
        statetimeline.Panel(),
        "PIPELINE STAGE",
        "none",
        [
            query(f"max by (stage) (trading_engine_stage{{{SEL}}})", "{{stage}}"),
        ],
    ).mappings(value_map({"1": ("●", GOOD), "0": ("", "transparent")}))
    risk = (
        styled(
            gauge.Panel(),
            "RISK",
            "percentunit",
            [
                query(f"trading_risk_drawdown_ratio{{{SEL}}}", "drawdown"),
                query(f"trading_risk_exposure_ratio{{{SEL}}}", "exposure"),
                query(f"-trading_risk_daily_pnl_ratio{{{SEL}}}", "daily loss"),
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
            query(f"trading_position_quantity{{{SEL}}}", table=True),
            query(f"trading_position_market_value{{{SEL}}}", table=True),
            query(f"trading_position_unrealized_pnl{{{SEL}}}", table=True),
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
                query(f"trading_cils_arm_weight{{{SEL}}}", "{{arm}}"),
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
                query(f"training_run_progress_ratio{{{SEL}}}", "{{run_id}} {{stage}}"),
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
