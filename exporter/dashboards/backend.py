"""The training backend board: REST and WebSocket health, the backend's own jobs
by status, the start handshake's latency and timeouts, and which jobs timed out."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, stat, table, timeseries
from grafana_foundation_sdk.models import dashboard as model

from exporter.dashboards.style import BAD, GOOD, RATE, SEL, board, query, styled, value_map

TIMED_OUT = "training_job_ack_timed_out_timestamp_seconds"


def build() -> dashboard.Dashboard:
    health = styled(
        stat.Panel(),
        "HEALTH",
        "none",
        [
            query(f'runwatch_source_up{{{SEL}, source="backend"}}', "REST"),
            query(f'trading_bridge_websocket_connected{{{SEL}, channel="backend"}}', "WS"),
        ],
    ).mappings(value_map({"1": ("UP", GOOD), "0": ("DOWN", BAD)}))
    jobs = styled(
        stat.Panel(),
        "JOBS",
        "none",
        [
            query(f"sum by (status) (training_backend_jobs{{{SEL}}})", "{{status}}"),
            query(f"sum(training_jobs_awaiting_ack{{{SEL}}})", "awaiting ack"),
        ],
    )
    timed_out = (
        styled(
            table.Panel(),
            "TIMED OUT JOBS",
            "dateTimeAsIso",
            [
                query(f"max by (job_id) ({TIMED_OUT}{{{SEL}}}) * 1000", table=True),
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
            query(
                f"histogram_quantile(0.5, sum by (le) "
                f"(rate(training_job_ack_seconds_bucket{{{SEL}}}[{RATE}])))",
                "p50",
            ),
            query(
                f"histogram_quantile(0.9, sum by (le) "
                f"(rate(training_job_ack_seconds_bucket{{{SEL}}}[{RATE}])))",
                "p90",
            ),
        ],
    )
    timeouts = styled(
        timeseries.Panel(),
        "ACK TIMEOUTS",
        "short",
        [
            query(f"increase(training_job_ack_timeouts_total{{{SEL}}}[{RATE}])", "timeouts"),
        ],
    )
    rejected = styled(
        timeseries.Panel(),
        "REFUSED MESSAGES",
        "short",
        [
            query(
                f"sum by (reason) (increase(runwatch_events_rejected_total{{{SEL}, "
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
