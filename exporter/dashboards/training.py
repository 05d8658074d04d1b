"""The training terminal (seed 002's 3x3 layout, seed 000's stage tags)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, stat, statetimeline, table, text, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from exporter.dashboards.style import (
    ACCENT,
    AMBER,
    GOOD,
    INFO,
    MUTED,
    RATE,
    SEL,
    TEMPO_UID,
    WARNING,
    board,
    query,
    styled,
    thresholds,
    value_map,
)

RUN = f'{SEL}, run_id="$run"'
# seed 000: the stage tags and their colours
STAGE_TAGS = {
    "ranking": ("TR", WARNING),
    "feature_selection": ("FS", ACCENT),
    "training": ("TRN", GOOD),
    "initializing": ("INIT", MUTED),
    "completed": ("DONE", GOOD),
}
TRACE_LINK = (
    '/explore?left={"datasource":"' + TEMPO_UID + '","queries":[{"refId":"A",'
    '"queryType":"traceql","query":"${__data.fields.trace_id}"}],'
    '"range":{"from":"now-24h","to":"now"}}'
)


def _run_list() -> table.Panel:
    expr = (
        f"max by (run_id, name, trace_id) (training_run_info{{{SEL}}})"
        f" * on (run_id) group_left (status) max by (run_id, status) "
        f"(training_run_status{{{SEL}}} == 1)"
    )
    return styled(table.Panel(), "RUN LIST", "none", [query(expr, table=True)]).data_links(
        [dashboard.DashboardLink("trace").url(TRACE_LINK)]  # type: ignore[list-item]
    )


def _stage_tags() -> statetimeline.Panel:
    panel = styled(
        statetimeline.Panel(),
        "STAGES",
        "none",
        [query(f"max by (stage) (training_run_stage{{{RUN}}})", "{{stage}}")],
    )
    panel = panel.mappings(value_map({"0": ("", "transparent")})).show_value(
        common.VisibilityMode.AUTO
    )
    for stage, (tag, color) in STAGE_TAGS.items():
        panel = panel.override_by_name(
            stage,
            [
                model.DynamicConfigValue(
                    id_val="mappings",
                    value=value_map({"1": (tag, color), "0": ("", "transparent")}),
                ),
            ],
        )
    return panel


def build() -> dashboard.Dashboard:
    system = styled(
        stat.Panel(),
        "SYSTEM",
        "percentunit",
        [
            query(f'1 - avg(system_cpu_utilization_ratio{{{SEL}, cpu_mode="idle"}})', "CPU"),
            query(
                f"1 - sum(system_linux_memory_available_bytes{{{SEL}}}) / "
                f"sum(system_memory_limit_bytes{{{SEL}}})",
                "MEM",
            ),
            query(f"avg(gpu_utilization_ratio{{{SEL}}})", "GPU"),
        ],
    ).thresholds(thresholds((None, GOOD), (0.8, WARNING), (0.95, "red")))
    events = (
        styled(
            timeseries.Panel(),
            "EVENT LOG",
            "short",
            [
                query(
                    f"sum by (event_type) (increase(training_events_total{{{SEL}}}[{RATE}]))",
                    "{{event_type}}",
                ),
            ],
        )
        .draw_style(common.GraphDrawStyle.BARS)
        .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    )
    loss = styled(
        timeseries.Panel(),
        "LOSS",
        "none",
        [
            query(f'training_metric{{{RUN}, key=~"loss|val_loss"}}', "{{key}}"),
        ],
    ).override_by_name(
        "val_loss",
        [model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": INFO})],
    )
    learning_rate = styled(
        timeseries.Panel(),
        "LEARNING RATE",
        "none",
        [
            query(f'training_metric{{{RUN}, key="learning_rate"}}', "lr"),
        ],
    )
    config = styled(
        stat.Panel(),
        "RUN",
        "none",
        [
            query(f"training_step{{{RUN}}}", "step"),
            query(f"training_run_targets_completed{{{RUN}}}", "targets done"),
            query(f"training_run_duration_seconds{{{RUN}}} / 60", "minutes"),
        ],
    ).text_mode(common.BigValueTextMode.VALUE_AND_NAME)
    checkpoints = (
        styled(
            table.Panel(),
            "CHECKPOINTS",
            "none",
            [
                query(f"training_checkpoint_step{{{RUN}}}", table=True),
                query(f"training_checkpoint_best{{{RUN}}}", table=True),
            ],
        )
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .override_by_name(
            "Value #B",
            [
                model.DynamicConfigValue(
                    id_val="mappings",
                    value=value_map({"1": ("★", AMBER), "0": ("", "transparent")}),
                ),
                model.DynamicConfigValue(id_val="displayName", value="best"),
            ],
        )
    )
    actions = (
        text.Panel()
        .title("LINKS")
        .mode("markdown")
        .content(
            '* [Trace of the run in Tempo](/explore?left={"datasource":"'
            + TEMPO_UID
            + '"})\n* [Alerts](/alerting/list)\n* [Runs API](/api/runs) on runwatch\n'
        )
    )
    return board(
        "runwatch-training",
        "runwatch / training terminal",
        "Runs, stages, loss, learning rate, checkpoints and the system, seed 002's 3x3.",
        ["job", "instance", "run"],
        [
            (8, [_run_list(), system, events]),
            (8, [loss, learning_rate, config]),
            (8, [checkpoints, _stage_tags(), actions]),
        ],
    )
