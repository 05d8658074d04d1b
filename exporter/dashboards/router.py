"""The event-router board (any mapping): events by type, hosts and daemons, open
spans and their durations, flows (training -> evaluation -> promotion) and their step
latencies, regressions, the models' ELO and win rates (numbers from the events'
payloads), and what the router source refused."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, stat, table, timeseries

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


def _quantiles(histogram: str, by: str, legend: str) -> list:
    """p50 and p90 of a router duration histogram, per ``by`` label."""
    rate = f"rate({selected(f'{histogram}_bucket')}[{RATE}])"
    return [
        query(f"histogram_quantile({q}, sum by (le, {by}) ({rate}))", f"{legend} p{round(q * 100)}")
        for q in (0.5, 0.9)
    ]


def build() -> dashboard.Dashboard:
    host_up, events_total = selected("router_host_up"), selected("router_events_total")
    regressions_total = selected("router_regressions_total")
    refusals = metric("runwatch_events_rejected_total") + f'{{{SEL}, source="router"}}'
    hosts = styled(stat.Panel(), "HOSTS", "none", [
        query(f"count({host_up} == 1) or vector(0)", "online"),
        query(f"count({host_up} == 0) or vector(0)", "offline"),
    ])  # fmt: skip
    open_spans = styled(stat.Panel(), "OPEN SPANS", "none", [
        query(f"sum by (span) ({selected('router_spans_open')})", "{{span}}"),
        query(f"sum by (flow) ({selected('router_flows_open')})", "flow {{flow}}"),
    ])  # fmt: skip
    regressions_stat = styled(stat.Panel(), "REGRESSIONS", "none", [
        query(f"sum({regressions_total}) or vector(0)", "detected"),
    ]).thresholds(thresholds((None, GOOD), (1, WARNING)))  # fmt: skip
    refused = styled(stat.Panel(), "REFUSED", "none", [
        query(f"sum({refusals})", "refused"),
    ]).thresholds(thresholds((None, GOOD), (1, WARNING)))  # fmt: skip
    events = event_log("EVENT LOG", '{service_name=~".+"} | router_category!=""')
    by_type = styled(timeseries.Panel(), "EVENTS BY TYPE", "short", [
        query(f"sum by (event_type) (increase({events_total}[{RATE}]))", "{{event_type}}"),
    ])  # fmt: skip
    by_category = styled(timeseries.Panel(), "EVENTS BY CATEGORY", "short", [
        query(f"sum by (category) (increase({events_total}[{RATE}]))", "{{category}}"),
    ])  # fmt: skip
    rejected = styled(timeseries.Panel(), "REFUSED BY REASON", "short", [
        query(f"sum by (reason) (increase({refusals}[{RATE}]))", "{{reason}}"),
    ])  # fmt: skip
    span_durations = styled(
        timeseries.Panel(),
        "SPAN DURATION",
        "s",
        _quantiles("router_span_duration_seconds", "span", "{{span}}"),
    )
    ended = selected("router_span_duration_seconds_count")
    unmatched = selected("router_span_unmatched_ends_total")
    outcomes = styled(timeseries.Panel(), "SPAN OUTCOMES", "short", [
        query(f"sum by (span, outcome) (increase({ended}[{RATE}]))", "{{span}} {{outcome}}"),
        query(f"sum by (span) (increase({unmatched}[{RATE}]))", "{{span}} unmatched end"),
    ])  # fmt: skip
    flow_steps = styled(
        timeseries.Panel(),
        "FLOW STEP LATENCY",
        "s",
        _quantiles("router_flow_step_seconds", "flow, step", "{{flow}} → {{step}}"),
    )
    completed = selected("router_flows_completed_total")
    flows = styled(timeseries.Panel(), "FLOWS", "short", [
        query(f"sum by (flow) (increase({completed}[{RATE}]))", "{{flow}} completed"),
        *_quantiles("router_flow_duration_seconds", "flow", "{{flow}} duration"),
    ])  # fmt: skip
    host_table = styled(table.Panel(), "HOST STATUS", "none", [
        query(f"max by (host) ({host_up})", table=True),
    ]).mappings(value_map({"1": ("ONLINE", GOOD), "0": ("OFFLINE", BAD)}))  # fmt: skip
    daemons = styled(table.Panel(), "DAEMON STATUS", "none", [
        query(f"max by (daemon, state) ({selected('router_daemon_status')} == 1)", table=True),
    ])  # fmt: skip
    regressions = styled(timeseries.Panel(), "REGRESSIONS BY CONFIG", "short", [
        query(f"sum by (config, event_type) (increase({regressions_total}[{RATE}]))",
              "{{config}} {{event_type}}"),
    ])  # fmt: skip
    elo = styled(timeseries.Panel(), "MODEL ELO", "none", [
        query(f"max by (config) ({selected('router_model_elo')})", "{{config}}"),
    ])  # fmt: skip
    win_rate = styled(timeseries.Panel(), "EVALUATION WIN RATE", "percentunit", [
        query(f"max by (config) ({selected('router_evaluation_win_rate')})", "{{config}}"),
    ])  # fmt: skip
    return board(
        "runwatch-router",
        "runwatch / event router",
        "An event router's typed events through a runwatch mapping: hosts, "
        "daemons, spans from start/end pairs, flows and regressions.",
        ["job", "instance"],
        [
            (5, [hosts, open_spans, regressions_stat, refused]),
            (8, [by_type, by_category, rejected]),
            (8, [span_durations, outcomes, flow_steps, flows]),
            (8, [host_table, daemons, regressions]),
            (8, [elo, win_rate]),
            (8, [events]),
        ],
    )
