"""The training backend board (seed 003): REST and WebSocket health, jobs started and
failed, the start handshake's latency and timeouts."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, stat, timeseries

from exporter.dashboards.style import BAD, GOOD, RATE, SEL, board, query, styled, value_map


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
            query(
                f'count(training_run_status{{{SEL}, status="running"}} == 1) or vector(0)',
                "running",
            ),
            query(
                f'count(training_run_status{{{SEL}, status="completed"}} == 1) or vector(0)',
                "completed",
            ),
            query(
                f'count(training_run_status{{{SEL}, status="failed"}} == 1) or vector(0)', "failed"
            ),
            query(f"training_jobs_awaiting_ack{{{SEL}}}", "awaiting ack"),
        ],
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
        "The training backend (seed 003): health, jobs, and the start handshake.",
        ["job", "instance"],
        [(6, [health, jobs]), (8, [latency, timeouts, rejected])],
    )
