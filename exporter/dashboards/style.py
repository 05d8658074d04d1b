"""The shared look and building blocks of runwatch's dashboards (grafana-foundation-sdk).

The training terminal's look: dark, dense, amber and orange text, green / orange / red / cyan
for status. Panels query the data source picked in the board's ``datasource`` variable
(defaulting to the provisioned uid, so a board imported into another Grafana works); every
rate uses ``$__rate_interval``; layout is rows of equal-width panels. Every panel carries
all of its plugin's options as Grafana 13.2's ``@grafana/schema`` types them (the tests
type-check the built JSON against them), so no choice is left to a plugin default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    gauge,
    logs,
    loki,
    prometheus,
    stat,
    statetimeline,
    table,
    text,
    timeseries,
    xychart,
)
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat
from grafana_foundation_sdk.models.xychart import SeriesMapping

from exporter.dashboards.names import metric

DASHBOARD_VERSION = (2, 5)  # bump with every change to a board; see grafana/dashboards/CHANGELOG.md
TAG = f"runwatch-v{DASHBOARD_VERSION[0]}.{DASHBOARD_VERSION[1]}"
# the provisioned data sources (grafana/provisioning/datasources), the variables' defaults
DATA_SOURCES = {
    "datasource": ("prometheus", "Prometheus", "runwatch-prometheus"),
    "tempo": ("tempo", "Tempo", "runwatch-tempo"),
    "loki": ("loki", "Loki", "runwatch-loki"),
}
PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
LOKI = model.DataSourceRef(type_val="loki", uid="${loki}")
# the stage tags' colours as ANSI colours, which Grafana's logs panel renders
TAG_COLOURS = {"TR": 33, "FS": 35, "TRN": 32, "INIT": 90, "DONE": 32}  # yellow, purple, green
TEMPO = "${tempo}"  # the Tempo data source's uid, as links spell it

AMBER, ORANGE, MUTED = "#FFD700", "#FFA500", "#808080"
GOOD, WARNING, BAD, INFO, ACCENT = "#00FF00", "#FFA500", "#FF0000", "#00FFFF", "#B877D9"

SEL = 'job="$job", instance=~"$instance"'
RATE = "$__rate_interval"


def selected(name: str) -> str:
    """The series of metric ``name`` (checked by :func:`~exporter.dashboards.names.metric`)
    of the job and instances picked: ``name{job="$job", instance=~"$instance"}``."""
    return f"{metric(name)}{{{SEL}}}"


def query(expr: str, legend: str = "", *, table: bool = False) -> prometheus.Dataquery:
    """A PromQL target; ``table`` makes it an instant query in table format."""
    target = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto")
    if table:
        target = target.instant().format(PromQueryFormat.TABLE)
    return target


def _legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs([])
    )


def _tooltip(
    mode: common.TooltipDisplayMode = common.TooltipDisplayMode.MULTI,
    sort: common.SortOrder = common.SortOrder.DESCENDING,
) -> common_builders.VizTooltipOptions:
    return common_builders.VizTooltipOptions().mode(mode).sort(sort)


def _last_value() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def _single_stat(panel: Any) -> Any:
    return panel.reduce_options(_last_value()).orientation(common.VizOrientation.AUTO)


# Grafana's defaults (each plugin's defaultOptions in @grafana/schema), written out
Panel = (
    timeseries.Panel | stat.Panel | table.Panel | statetimeline.Panel | gauge.Panel
    | bargauge.Panel | logs.Panel | text.Panel | xychart.Panel
)  # fmt: skip
"""The panel builders runwatch's boards use."""
P = TypeVar("P", timeseries.Panel, stat.Panel, table.Panel, statetimeline.Panel, gauge.Panel,
            bargauge.Panel, xychart.Panel)  # fmt: skip
"""One of the panel builders :data:`OPTIONS` styles."""

OPTIONS: dict[type, Any] = {
    timeseries.Panel: lambda panel: panel.legend(_legend()).tooltip(_tooltip()),
    stat.Panel: lambda panel: (
        _single_stat(panel)
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .text_mode(common.BigValueTextMode.AUTO)
        .percent_change_color_mode(common.PercentChangeColorMode.STANDARD)
        .show_percent_change(False)
        .wide_layout(True)
    ),
    table.Panel: lambda panel: (
        panel.frame_index(0).show_header(True).cell_height(common.TableCellHeight.SM)
    ),
    statetimeline.Panel: lambda panel: (
        panel.legend(_legend())
        .tooltip(_tooltip())
        .row_height(0.9)
        .show_value(common.VisibilityMode.AUTO)
        .merge_values(True)
        .align_value(common.TimelineValueAlignment.LEFT)
    ),
    gauge.Panel: lambda panel: (
        _single_stat(panel)
        .min_viz_height(75)
        .min_viz_width(75)
        .show_threshold_labels(False)
        .show_threshold_markers(True)
        .sizing(common.BarGaugeSizing.AUTO)
    ),
    bargauge.Panel: lambda panel: (
        _single_stat(panel)
        .legend(_legend())
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .value_mode(common.BarGaugeValueMode.COLOR)
        .name_placement(common.BarGaugeNamePlacement.AUTO)
        .show_unfilled(True)
        .sizing(common.BarGaugeSizing.AUTO)
        .min_viz_height(16)
        .min_viz_width(8)
        .max_viz_height(300)
    ),
    # the hovered point only (several series rarely share an x); the panel says which fields
    # are x and y (``series``)
    xychart.Panel: lambda panel: (
        panel.legend(_legend())
        .tooltip(_tooltip(common.TooltipDisplayMode.SINGLE, common.SortOrder.NONE))
        .mapping(SeriesMapping.AUTO)
        .series([])
    ),
}


def styled(panel: P, title: str, unit: str, queries: Sequence[Any]) -> P:
    """Every option of the panel's plugin, title, unit, data source, targets and the amber
    default colour, on any panel."""
    panel = OPTIONS[type(panel)](panel).title(title).unit(unit).datasource(PROMETHEUS)
    panel = panel.color_scheme(
        dashboard.FieldColor().mode(model.FieldColorModeId.FIXED).fixed_color(AMBER)
    )
    for index, target in enumerate(queries):
        panel = panel.with_target(target.ref_id(chr(ord("A") + index)))
    return panel


def event_log(title: str, selector: str) -> logs.Panel:
    """A logs panel of runwatch's event log in Loki: the lines matching ``selector`` (a
    LogQL stream selector and filters), newest first, each stage tag in its colour."""
    escape = "\x1b"
    colour = "".join(f' | replace "[{tag}]" "{escape}[{code}m[{tag}]{escape}[0m"'
                     for tag, code in TAG_COLOURS.items())  # fmt: skip
    expr = f"{selector} | line_format `{{{{ __line__{colour} }}}}`"
    return (
        logs.Panel()
        .title(title)
        .datasource(LOKI)
        .show_time(True)
        .show_labels(False)
        .show_common_labels(False)
        .wrap_log_message(True)
        .prettify_log_message(False)
        .enable_log_details(True)
        .show_log_context_toggle(True)
        .sort_order(common.LogsSortOrder.DESCENDING)
        .dedup_strategy(common.LogsDedupStrategy.NONE)
        .with_target(loki.Dataquery().expr(expr).query_type("range").ref_id("A"))
    )


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    """Absolute thresholds: ``(None, GOOD), (0.8, WARNING), (0.95, BAD)``."""
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def value_map(mapping: dict[str, tuple[str, str]]) -> list[model.ValueMapping]:
    """``{"1": ("★", AMBER)}``: values shown as text in a colour."""
    return [
        model.ValueMap(
            options={
                value: model.ValueMappingResult(text=text, color=color, index=index)
                for index, (value, (text, color)) in enumerate(mapping.items())
            }
        )
    ]


def layout(rows: Sequence[tuple[int, Sequence[Panel]]]) -> list[Panel]:
    """Rows of (height, panels), each row's panels sharing the 24 columns equally."""
    placed: list[Panel] = []
    y = 0
    for height, panels in rows:
        width = 24 // len(panels)
        for column, panel in enumerate(panels):
            placed.append(panel.grid_pos(model.GridPos(h=height, w=width, x=column * width, y=y)))
        y += height
    return placed


def variables() -> dict[str, tuple[str, str, bool]]:
    """Name -> (query, label, several at once); the several-at-once ones also offer "All"."""
    build_info = metric("runwatch_build_info")
    return {
        "job": (f"label_values({build_info}, job)", "job", False),
        "instance": (f'label_values({build_info}{{job="$job"}}, instance)', "instance", True),
        "run": (f"label_values({selected('training_run_info')}, run_id)", "run", True),
        "gpu": (f"label_values({selected('gpu_info')}, gpu)", "GPU", True),
        # every key the runs picked logged (the scraped latest values: there with or without
        # history)
        "key": (
            f'label_values({metric("training_metric")}{{{SEL}, run_id=~"$run"}}, key)',
            "key",
            True,
        ),
    }


# name -> the value selected when the board opens (else Grafana's: the first, or All)
QUERY_DEFAULTS = {"key": "loss"}

# name -> (label, default): free text, such as the address runwatch answers on for links
TEXT_VARIABLES = {"runwatch_url": ("runwatch address", "http://127.0.0.1:19464")}
# name -> (label, "text : value" choices, default text): the terminal's "last 100, 1000, all"
CUSTOM_VARIABLES = {
    "steps": ("steps", "last 100 : 100, last 1000 : 1000, all : 1e18", "last 1000"),
}


def _data_source_variable(name: str) -> dashboard.DatasourceVariable:
    kind, text, uid = DATA_SOURCES[name]
    return (
        dashboard.DatasourceVariable(name)
        .label(text)
        .type(kind)
        .current(model.VariableOption(text=text, value=uid, selected=True))
    )


def _query_variable(name: str) -> dashboard.QueryVariable:
    expression, label, several = variables()[name]
    variable = (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query(expression)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )
    if name in QUERY_DEFAULTS:
        default = QUERY_DEFAULTS[name]
        chosen = [default] if several else default
        variable = variable.current(model.VariableOption(text=chosen, value=chosen, selected=True))
    return variable.multi(True).include_all(True) if several else variable


def _custom_variable(name: str) -> dashboard.CustomVariable:
    label, choices, default = CUSTOM_VARIABLES[name]
    values = dict(choice.split(" : ") for choice in choices.split(", "))
    return (
        dashboard.CustomVariable(name)
        .label(label)
        .values(choices)
        .current(model.VariableOption(text=default, value=values[default], selected=True))
    )


def without_ignored_fields(built: model.Dashboard) -> model.Dashboard:
    """Drop what the SDK writes on every variable but Grafana reads only on interval ones."""
    for variable in (built.templating.list_val if built.templating else None) or []:
        if variable.type_val != model.VariableType.INTERVAL:
            variable.auto = variable.auto_min = variable.auto_count = None
    return built


def board(
    uid: str,
    title: str,
    description: str,
    variables: Sequence[str],
    rows: Sequence[tuple[int, Sequence[Panel]]],
) -> dashboard.Dashboard:
    """A runwatch dashboard: stable uid, version and tag, variables, links to the others."""
    built = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["runwatch", TAG])
        .version(DASHBOARD_VERSION[0] * 100 + DASHBOARD_VERSION[1])
        .editable()
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .link(
            dashboard.DashboardLink("runwatch")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["runwatch"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for name in DATA_SOURCES:
        built = built.with_variable(_data_source_variable(name))
    for name in variables:
        if name in TEXT_VARIABLES:
            label, default = TEXT_VARIABLES[name]
            built = built.with_variable(
                dashboard.TextBoxVariable(name).label(label).default_value(default)
            )
        elif name in CUSTOM_VARIABLES:
            built = built.with_variable(_custom_variable(name))
        else:
            built = built.with_variable(_query_variable(name))
    for panel in layout(rows):
        built = built.with_panel(panel)
    return built
