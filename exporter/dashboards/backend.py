"""The training backend board: REST and WebSocket health, the backend's own jobs
by status, the start handshake's latency and timeouts, and which jobs timed out."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, stat, table, timeseries
from grafana_foundation_sdk.models import dashboard as model

from exporter.dashboards.names import metric
from exporter.dashboards.style import (
    BAD,
    GOOD,
    RATE,
    SEL,
    board,
    query,
    selected,
    styled,
    value_map,
)


def build() -> dashboard.Dashboard:
    timed_out_at = selected("training_job_ack_timed_out_timestamp_seconds")
    acks = f"rate({selected('training_job_ack_seconds_bucket')}[{RATE}])"
    health = styled(
        stat.Panel(),
        "HEALTH",
        "none",
        [
            query(metric("runwatch_source_up") + f'{{{SEL}, source="backend"}}', "REST"),
            query(
                metric("trading_bridge_websocket_connected") + f'{{{SEL}, channel="backend"}}',
                "WS",
            ),
        ],
    ).mappings(value_map({"1": ("UP", GOOD), "0": ("DOWN", BAD)}))
    jobs = styled(
        stat.Panel(),
        "JOBS",
        "none",
        [
            query(f"sum by (status) ({selected('training_backend_jobs')})", "{{status}}"),
            query(f"sum({selected('training_jobs_awaiting_ack')})", "awaiting ack"),
        ],
    )
    timed_out = (
        styled(
            table.Panel(),
            "TIMED OUT JOBS",
            "dateTimeAsIso",
            [
                query(f"max by (job_id) ({timed_out_at}) * 1000", table=True),
            ],
        )
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize", options={"excludeByName": {"Time": True}}
            )
        )
        .override_by_name(
            "Value", [model.DynamicConfigValue(id_val="displayName", value="accepted")]
        )
    )
    latency = styled(
        timeseries.Panel(),
        "ACK LATENCY",
        "s",
        [
            query(f"histogram_quantile(0.5, sum by (le) ({acks}))", "p50"),
            query(f"histogram_quantile(0.9, sum by (le) ({acks}))", "p90"),
        ],
    )
    timeouts = styled(
        timeseries.Panel(),
        "ACK TIMEOUTS",
        "short",
        [
            query(f"increase({selected('training_job_ack_timeouts_total')}[{RATE}])", "timeouts"),
        ],
    )
    rejected = styled(
        timeseries.Panel(),
        "REFUSED MESSAGES",
        "short",
        [
            query(
                f"sum by (reason) (increase({metric('runwatch_events_rejected_total')}{{{SEL}, "
                f'source="backend"}}[{RATE}]))',
                "{{reason}}",
            ),
        ],
    )
    return board(
        "runwatch-backend",
        "runwatch / training backend",
        "The training backend: health, jobs, and the start handshake.",
        ["job", "instance"],
        [(6, [health, jobs, timed_out]), (8, [latency, timeouts, rejected])],
    )
