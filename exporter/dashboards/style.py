"""The shared look and building blocks of runwatch's dashboards (grafana-foundation-sdk).

Seed 002's terminal: dark, dense, amber and orange text, green / orange / red / cyan
for status. Panels query the Prometheus data source by its fixed uid; every rate uses
``$__rate_interval``; layout is rows of equal-width panels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DASHBOARD_VERSION = (1, 2)  # bump with every change to a board; see grafana/dashboards/CHANGELOG.md
TAG = f"runwatch-v{DASHBOARD_VERSION[0]}.{DASHBOARD_VERSION[1]}"
PROMETHEUS_UID, TEMPO_UID = "runwatch-prometheus", "runwatch-tempo"
PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)

AMBER, ORANGE, MUTED = "#FFD700", "#FFA500", "#808080"
GOOD, WARNING, BAD, INFO, ACCENT = "#00FF00", "#FFA500", "#FF0000", "#00FFFF", "#B877D9"

SEL = 'job="$job", instance="$instance"'
RATE = "$__rate_interval"


def query(expr: str, legend: str = "", *, table: bool = False) -> prometheus.Dataquery:
    """A PromQL target; ``table`` makes it an instant query in table format."""
    target = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto")
    if table:
        target = target.instant().format(PromQueryFormat.TABLE)
    return target


def styled(panel: Builder, title: str, unit: str, queries: Sequence[Any]) -> Builder:
    """Title, unit, data source, targets and the amber default colour, on any panel."""
    panel = panel.title(title).unit(unit).datasource(PROMETHEUS)
    panel = panel.color_scheme(
        dashboard.FieldColor().mode(model.FieldColorModeId.FIXED).fixed_color(AMBER)
    )
    for index, target in enumerate(queries):
        panel = panel.with_target(target.ref_id(chr(ord("A") + index)))
    return panel


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    """Absolute thresholds: ``(None, GOOD), (0.8, WARNING), (0.95, BAD)``."""
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def value_map(mapping: dict[str, tuple[str, str]]) -> list[model.ValueMap]:
    """``{"1": ("★", AMBER)}``: values shown as text in a colour."""
    return [
        model.ValueMap(
            options={
                value: model.ValueMappingResult(text=text, color=color, index=index)
                for index, (value, (text, color)) in enumerate(mapping.items())
            }
        )
    ]


def layout(rows: Sequence[tuple[int, Sequence[Builder]]]) -> list[Builder]:
    """Rows of (height, panels), each row's panels sharing the 24 columns equally."""
    placed, y = [], 0
    for height, panels in rows:
        width = 24 // len(panels)
        for column, panel in enumerate(panels):
            placed.append(panel.grid_pos(model.GridPos(h=height, w=width, x=column * width, y=y)))
        y += height
    return placed


VARIABLES = {
    "job": ("label_values(runwatch_build_info, job)", "job"),
    "instance": ('label_values(runwatch_build_info{job="$job"}, instance)', "instance"),
    "run": (f"label_values(training_run_info{{{SEL}}}, run_id)", "run"),
    "gpu": (f"label_values(gpu_info{{{SEL}}}, gpu)", "GPU"),
}


def board(
    uid: str,
    title: str,
    description: str,
    variables: Sequence[str],
    rows: Sequence[tuple[int, Sequence[Builder]]],
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
    for name in variables:
        expression, label = VARIABLES[name]
        built = built.with_variable(
            dashboard.QueryVariable(name)
            .label(label)
            .datasource(PROMETHEUS)
            .query(expression)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
        )
    for panel in layout(rows):
        built = built.with_panel(panel)
    return built
