"""The training terminal: a 3x3 grid of dense amber panels (RUN LIST, SYSTEM STATUS, EVENT
LOG; LOSS, LEARNING RATE, RUN CONFIG; CHECKPOINTS, ...) and the event log's stage tags."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import (
    dashboard,
    prometheus,
    stat,
    statetimeline,
    table,
    text,
    timeseries,
    xychart,
)
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.text import TextMode
from grafana_foundation_sdk.models.xychart import PointShape, XYShowMode

from exporter.core.event_log import STAGE_TAGS
from exporter.dashboards.names import metric
from exporter.dashboards.style import (
    ACCENT,
    AMBER,
    BAD,
    GOOD,
    INFO,
    MUTED,
    RATE,
    SEL,
    TEMPO,
    WARNING,
    board,
    event_log,
    query,
    selected,
    styled,
    thresholds,
    value_map,
)

RUN = f'{SEL}, run_id=~"$run"'
# the terminal's status badges: [● RUNNING] green, [✗ FAILED] red, [✓ COMPLETED] green
STATUS_BADGES = {
    "running": ("● RUNNING", GOOD),
    "completed": ("✓ COMPLETED", GOOD),
    "ended": ("✓ ENDED", GOOD),
    "failed": ("✗ FAILED", BAD),
    "crashed": ("✗ CRASHED", BAD),
    "interrupted": ("■ INTERRUPTED", WARNING),
    "cancelled": ("■ CANCELLED", WARNING),
}
# the training-events format's stage tags (those of the event log's lines) and their colours
STAGE_COLOURS = {
    "ranking": WARNING,
    "feature_selection": ACCENT,
    "training": GOOD,
    "initializing": MUTED,
    "completed": GOOD,
}
TAGGED_STAGES = {stage: (STAGE_TAGS[stage], colour) for stage, colour in STAGE_COLOURS.items()}
TRACE_LINK = (
    '/explore?left={"datasource":"' + TEMPO + '","queries":[{"refId":"A",'
    '"queryType":"traceql","query":"${__data.fields.trace_id}"}],'
    '"range":{"from":"now-24h","to":"now"}}'
)


def _of_runs(name: str, matchers: str = "") -> str:
    """The series of metric ``name`` of the runs picked (and the job and instances), with
    more label ``matchers`` if given."""
    return f"{metric(name)}{{{RUN}{', ' + matchers if matchers else ''}}}"


def _set(field: str, value: object) -> model.DynamicConfigValue:
    return model.DynamicConfigValue(id_val=field, value=value)


def _run_list() -> table.Panel:
    expr = (
        f"max by (run_id, name, trace_id) ({selected('training_run_info')})"
        f" * on (run_id) group_left (status) max by (run_id, status) "
        f"({selected('training_run_status')} == 1)"
    )
    return (
        styled(table.Panel(), "RUN LIST", "none", [query(expr, table=True)])
        .data_links([dashboard.DashboardLink("trace").url(TRACE_LINK)])
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": {"Time": True, "Value": True}},
            )
        )
        .override_by_name(
            "status",
            [
                _set("mappings", value_map(STATUS_BADGES)),
                _set("custom.cellOptions", {"type": "color-text"}),
            ],
        )
    )


def _run_config() -> table.Panel:
    """The terminal's RUN CONFIG: each key of the run's config and its (shortened) value."""
    config = _of_runs("training_run_config_info")
    return styled(
        table.Panel(),
        "RUN CONFIG",
        "none",
        [query(f"max by (run_id, key, value) ({config})", table=True)],
    ).with_transformation(
        model.DataTransformerConfig(
            id_val="organize", options={"excludeByName": {"Time": True, "Value": True}}
        )
    )


def _span_metrics() -> list[timeseries.Panel]:
    """RED metrics of the runs' spans, as Tempo's metrics generator writes them (the one
    source of span metrics: tempo/tempo.yaml), per span name, for the runs picked."""
    spans = metric("traces_spanmetrics_calls_total") + '{run_id=~"$run"}'
    latency = metric("traces_spanmetrics_latency_bucket") + f'{{run_id=~"$run"}}[{RATE}]'
    return [
        styled(timeseries.Panel(), "SPANS ENDED (TEMPO)", "short", [
            query(f"sum by (span_name, status_code) (increase({spans}[{RATE}]))",
                  "{{span_name}} {{status_code}}"),
        ]),
        styled(timeseries.Panel(), "SPAN DURATION p90 (TEMPO)", "s", [
            query(f"histogram_quantile(0.9, sum by (le, span_name) (rate({latency})))",
                  "{{span_name}}"),
        ]),
    ]  # fmt: skip


def _checkpoints() -> table.Panel:
    """The terminal's CHECKPOINTS: one row per checkpoint, its step, time, the metrics logged
    with it as columns, and ★ on the best."""
    by = "run_id, checkpoint_id"
    time = _of_runs("training_checkpoint_timestamp_seconds")
    panel = styled(
        table.Panel(),
        "CHECKPOINTS",
        "none",
        [
            query(f"max by ({by}) ({_of_runs('training_checkpoint_step')})", table=True),
            query(f"max by ({by}) ({time}) * 1000", table=True),
            query(f"max by ({by}) ({_of_runs('training_checkpoint_best')})", table=True),
            query(f"max by ({by}, key) ({_of_runs('training_checkpoint_metric')})", table=True),
        ],
    )
    panel = panel.with_transformation(
        model.DataTransformerConfig(
            id_val="labelsToFields", options={"valueLabel": "key", "mode": "columns"}
        )
    ).with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
    panel = panel.with_transformation(
        model.DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}})
    )
    for ref, name, extra in (
        ("A", "step", []),
        ("B", "time", [_set("unit", "dateTimeAsIso")]),
        ("C", "best", [_set("mappings", value_map({"1": ("★", AMBER), "0": ("", "transparent")}))]),
    ):
        panel = panel.override_by_name(f"Value #{ref}", [_set("displayName", name), *extra])
    return panel


def _last_steps(keys: str) -> str:
    """Every logged step of the keys (training_step_metric, the step history) where it is
    written, else the scraped latest values (training_metric), of the runs' last $steps
    steps: the points taken while training_step was within $steps of its latest."""
    selector = f'{RUN}, key=~"{keys}"'
    history, latest = metric("training_step_metric"), metric("training_metric")
    values = f"({history}{{{selector}}} or {latest}{{{selector}}})"
    step = _of_runs("training_step")
    recent = f"({step} >= on (run_id) (max_over_time({step}[$__range] @ end()) - $steps))"
    return f"({values} and on (run_id) {recent}) or ({values} unless on (run_id) {step})"


def _steps_panel(title: str, keys: str, legend: str) -> timeseries.Panel:
    """A plot of step metrics at step resolution: up to 10,000 points, no minimum step
    (the data source's scrape-interval floor would hide the steps between scrapes)."""
    return (
        styled(timeseries.Panel(), title, "none", [query(_last_steps(keys), legend)])
        .interval("1ms")
        .max_data_points(10_000)
    )


PALETTE = dashboard.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC)
"""A colour per series: where runs are compared, each its own."""


def _key_history() -> timeseries.Panel:
    """Each key picked in ``$key`` in a panel of its own (repeated downwards, beside its BY
    STEP): every logged step as LOSS draws it, the history where written, else the scraped
    value."""
    return (
        _steps_panel("HISTORY: $key", "$key", "{{run_id}} {{key}}")
        .color_scheme(PALETTE)
        .repeat("key")
        .repeat_direction("v")
    )


def _by_step_queries() -> list[prometheus.Dataquery]:
    """The step history of the runs and key picked, every sample in the time range: the
    values, and the steps at the same timestamps (Prometheus answers a range selector with
    raw samples)."""
    values = metric("training_step_metric") + f'{{{RUN}, key=~"$key"}}[$__range]'
    steps = f"{_of_runs('training_history_step')}[$__range]"
    return [query(values, table=True), query(steps, table=True)]


# the fields @grafana/prometheus makes of two table queries' answers: "Value #<refId>"
VALUE, STEP = "Value #A", "Value #B"


def _transform(id_val: str, options: dict[str, object]) -> model.DataTransformerConfig:
    return model.DataTransformerConfig(id_val=id_val, options=options)


def _by_step() -> xychart.Panel:
    """The key of the runs picked against the step, a series per run: an XY chart of the
    two instant queries' samples paired by (time, job, instance, run_id).

    Grafana's transformations, in order: drop ``__name__`` (the two series' names differ,
    and ``merge`` joins rows whose common fields are all equal); ``merge`` the two tables,
    so a value and the step logged at its timestamp share a row (every step of a run has a
    timestamp of its own, and its values and step share it); drop rows without both (a key
    not logged at every step); drop job and instance; ``partitionByValues`` on run and key,
    a frame per series. In every frame the XY chart (``auto`` mapping) takes the steps
    (``Value #B``, which an override names ``step``) as x and the other number field, the
    values (``Value #A``, named ``<run> <key>``), as y. Checked against a real Prometheus
    by tests/integration/test_step_history.py."""
    is_null = {"id": "isNull", "options": {}}
    panel = (
        styled(xychart.Panel(), "BY STEP: $key", "none", _by_step_queries())
        .description(
            "$key of the runs picked against the step (x), a series per run: every sample "
            "of the step history in the time range. Needs the step history "
            "(--remote-write-url, or a backfill)."
        )
        .color_scheme(PALETTE)
        .show(XYShowMode.POINTS_AND_LINES)
        .point_shape(PointShape.CIRCLE)
        .point_size(xychart.XychartFieldConfigPointSize().fixed(3))
        .point_stroke_width(0)
        .fill_opacity(100)
        .line_width(1)
        .series([
            xychart.XYSeriesConfig().x(xychart.XychartXYSeriesConfigX().matcher(
                xychart.MatcherConfig().id("byRegexp").options(f"(step|{STEP}.*)")
            ))
        ])
        .repeat("key")
        .repeat_direction("v")
    )  # fmt: skip
    for transformation in (
        _transform("organize", {"excludeByName": {"__name__": True}}),
        _transform("merge", {}),
        _transform("filterByValue", {
            "filters": [{"fieldName": VALUE, "config": is_null},
                        {"fieldName": STEP, "config": is_null}],
            "type": "exclude",
            "match": "any",
        }),
        _transform("organize", {"excludeByName": {"instance": True, "job": True}}),
        _transform("partitionByValues", {
            "fields": ["run_id", "key"], "keepFields": False, "naming": {"asLabels": True},
        }),
    ):  # fmt: skip
        panel = panel.with_transformation(transformation)
    return panel.override_by_regexp(f"{STEP}.*", [_set("displayName", "step")]).override_by_regexp(
        f"{VALUE}.*", [_set("displayName", "${__field.labels.run_id} ${__field.labels.key}")]
    )


def _goodput() -> timeseries.Panel:
    """GOODPUT of each run picked (a panel per run): its wall clock split into kept step
    time, step time still at risk and the badput causes, stacked (docs/goodput.md)."""
    of = "sum by (run_id)"
    return (
        styled(
            timeseries.Panel(),
            "GOODPUT: $run",
            "s",
            [
                query(f"{of} ({_of_runs('training_goodput_seconds_total')})", "goodput"),
                query(f"{of} ({_of_runs('training_work_at_risk_seconds')})", "at risk"),
                query(
                    f"sum by (cause) ({_of_runs('training_badput_seconds_total')}) > 0", "{{cause}}"
                ),
            ],
        )
        .color_scheme(PALETTE)
        .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
        .fill_opacity(60)
        .override_by_name("goodput", [_set("color", {"mode": "fixed", "fixedColor": GOOD})])
        .override_by_name("at risk", [_set("color", {"mode": "fixed", "fixedColor": AMBER})])
        .override_by_name("lost_work", [_set("color", {"mode": "fixed", "fixedColor": BAD})])
        .repeat("run")
        .repeat_direction("h")
        .max_per_row(3)
    )


def _lost_work() -> stat.Panel:
    """What the runs picked lost to restarts, and how much of their time was goodput."""
    by = "sum by (run_id)"
    kept = f"{by} ({_of_runs('training_goodput_seconds_total')})"
    wall = f"{by} ({_of_runs('training_wall_clock_seconds_total')})"
    lost_work = _of_runs("training_badput_seconds_total", 'cause="lost_work"')
    lost = f"{by} ({lost_work})"
    return styled(stat.Panel(), "GOODPUT / LOST WORK", "none", [
        query(f"{kept} / {wall} * 100", "{{run_id}} goodput %"),
        query(f"{by} ({_of_runs('training_restarts_total')})", "{{run_id}} restarts"),
        query(f"{by} ({_of_runs('training_lost_steps_total')})", "{{run_id}} steps lost"),
        query(f"{lost} / 60", "{{run_id}} minutes lost"),
        query(f"{by} ({_of_runs('training_lost_gpu_seconds_total')}) / 3600",
              "{{run_id}} GPU-hours lost"),
    ]).text_mode(common.BigValueTextMode.VALUE_AND_NAME)  # fmt: skip


def _pace() -> timeseries.Panel:
    """Steps per second and the ETA of the runs picked (the ETA where a run gave
    total_steps), with the step time's p50 and p99."""
    step_time = _of_runs("training_step_time_seconds", 'percentile=~"p50|p99"')
    seconds_on_the_right = [_set("unit", "s"), _set("custom.axisPlacement", "right")]
    return (
        styled(
            timeseries.Panel(),
            "PACE: STEPS/S, ETA",
            "short",
            [
                query(_of_runs("training_steps_per_second"), "{{run_id}} steps/s"),
                query(_of_runs("training_eta_seconds"), "{{run_id}} ETA"),
                query(step_time, "{{run_id}} step {{percentile}}"),
            ],
        )
        .color_scheme(PALETTE)
        .override_by_regexp(".* ETA", seconds_on_the_right)
        .override_by_regexp(".* step p.*", seconds_on_the_right)
    )


def _stage_tags() -> statetimeline.Panel:
    panel = styled(
        statetimeline.Panel(),
        "STAGES",
        "none",
        [query(f"max by (stage) ({_of_runs('training_run_stage')})", "{{stage}}")],
    )
    panel = panel.mappings(value_map({"0": ("", "transparent")})).show_value(
        common.VisibilityMode.AUTO
    )
    for stage, (tag, color) in TAGGED_STAGES.items():
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
    available = selected("system_linux_memory_available_bytes")
    limit = selected("system_memory_limit_bytes")
    system = styled(
        stat.Panel(),
        "SYSTEM",
        "percentunit",
        [
            query(
                f'1 - avg({metric("system_cpu_utilization_ratio")}{{{SEL}, cpu_mode="idle"}})',
                "CPU",
            ),
            query(f"1 - sum({available}) / sum({limit})", "MEM"),
            query(f"avg({selected('gpu_utilization_ratio')})", "GPU"),
        ],
    ).thresholds(thresholds((None, GOOD), (0.8, WARNING), (0.95, "red")))
    events = event_log("EVENT LOG", '{service_name=~".+"} | training_run_id=~"$run"')
    events_by_type = (
        styled(
            timeseries.Panel(),
            "EVENTS BY TYPE",
            "short",
            [
                query(
                    f"sum by (event_type) (increase({selected('training_events_total')}[{RATE}]))",
                    "{{event_type}}",
                ),
            ],
        )
        .draw_style(common.GraphDrawStyle.BARS)
        .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    )
    loss = _steps_panel("LOSS", "loss|val_loss", "{{run_id}} {{key}}").override_by_regexp(
        ".* val_loss", [_set("color", {"mode": "fixed", "fixedColor": INFO})]
    )
    learning_rate = _steps_panel("LEARNING RATE", "learning_rate|lr", "{{run_id}}")
    progress = styled(
        stat.Panel(),
        "RUN",
        "none",
        [
            query(_of_runs("training_step"), "{{run_id}} step"),
            query(_of_runs("training_run_targets_completed"), "{{run_id}} targets done"),
            query(f"{_of_runs('training_run_duration_seconds')} / 60", "{{run_id}} minutes"),
        ],
    ).text_mode(common.BigValueTextMode.VALUE_AND_NAME)
    actions = (
        text.Panel()
        .title("ACTIONS / LINKS")
        .mode(TextMode.MARKDOWN)
        .content(
            '* [Traces of the runs in Tempo](/explore?left={"datasource":"' + TEMPO + '",'
            '"queries":[{"refId":"A","queryType":"traceql","query":"{ .training.run_id =~ '
            '\\"${run:regex}\\" }"}]})\n'
            "* [Alerts firing](/alerting/list?search=state:firing)\n"
            "* [Runs API on runwatch](${runwatch_url}/api/runs) (the runwatch address is the "
            "board's `runwatch_url` variable)\n"
            "* [runwatch /metrics](${runwatch_url}/metrics)\n"
        )
    )
    return board(
        "runwatch-training",
        "runwatch / training terminal",
        "Runs, stages, loss, learning rate, checkpoints, config and the system in a "
        "3x3; pick several runs to compare them, and keys to see each by time and by step.",
        ["job", "instance", "run", "key", "steps", "runwatch_url"],
        [
            (8, [_run_list(), system, events]),
            (8, [loss, learning_rate, progress]),
            (8, [_checkpoints(), _stage_tags(), actions]),
            (8, [_run_config(), events_by_type, *_span_metrics()]),
            (8, [_lost_work(), _pace()]),
            (8, [_goodput()]),
            (8, [_key_history(), _by_step()]),
        ],
    )
