"""The last step of every board: what grafana-foundation-sdk writes, brought to the Grafana
compose runs (13.2).

The SDK's newest build on PyPI is for Grafana 11.6 (schemaVersion 41); there is no 12 or
13 build. Grafana 13 would migrate such a board every time it loads it, and
``@grafana/schema`` 13.2 refuses two of the SDK's panel shapes. So the built JSON is
finished here, by the same rules Grafana's own migrations apply, and checked rather than
assumed: a board that a migration would change in a way this step does not make fails the
build instead of being stamped with a version it does not meet.

- schemaVersion 42 (Grafana 13's last v1 dashboard version). Migrations 40 to 42 turn a
  non-string ``refresh`` into ``""``, drop ``timepicker.time_options`` and add
  ``tooltip: true`` to ``custom.hideFrom`` overrides that hide a series from the plot; the
  boards must already be so.
- Table panels: Grafana 12 moved the footer from ``options.footer`` to each field's
  ``custom.footer.reducers``, and 13.2's table options have no ``footer``. A footer that is
  not shown is dropped, as Grafana's own table migration does; a shown one is an error
  here (say it per field instead).
- Gauge panels: 13.2 added required options (bar shape and width, effects, segments,
  shape); they are written out with 13.2's own defaults, so no choice is left to the plugin.
- XY chart panels carry ``pluginVersion``: the panel's migration handler (xychart
  ``migrations.ts``) takes a panel without one, or older than 11.1, for the pre-11.1 shape
  and rewrites its options (``seriesMapping``, ``dims``), which turns these boards' ``auto``
  mapping into ``manual`` with one series on the first frame. Stamped with the version
  compose runs, the handler leaves the options as they are.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 42
GRAFANA_VERSION = "13.2.3"  # compose.yaml's image: the core plugins' version
# @grafana/schema 13.2.3, raw/composable/gauge/panelcfg: defaultOptions
GAUGE_DEFAULTS: dict[str, Any] = {
    "barShape": "flat",
    "barWidthFactor": 0.5,
    "effects": {},
    "segmentCount": 1,
    "segmentSpacing": 0.3,
    "shape": "gauge",
}


class NotMigrated(ValueError):
    """A board that Grafana 13 would migrate in a way this step does not."""


def for_grafana_13(board: dict[str, Any]) -> dict[str, Any]:
    """The built board as Grafana 13.2 stores it; raises NotMigrated where it cannot be."""
    where = board.get("uid", "?")
    if not isinstance(board.get("refresh", ""), str):
        raise NotMigrated(f"{where}: refresh must be a string (schema 40)")
    if "time_options" in (board.get("timepicker") or {}):
        raise NotMigrated(f"{where}: timepicker.time_options is gone (schema 41)")
    for panel in board.get("panels", []):
        _check_hidden_series(panel, f"{where}: {panel.get('title')}")
        options = panel.get("options") or {}
        if panel.get("type") == "table":
            footer = options.pop("footer", None)
            if footer and footer.get("show"):
                raise NotMigrated(f"{where}: {panel.get('title')}: a shown table footer is "
                                  "fieldConfig custom.footer.reducers in Grafana 13")  # fmt: skip
        elif panel.get("type") == "gauge":
            panel["options"] = {**GAUGE_DEFAULTS, **options}
        elif panel.get("type") == "xychart":
            panel["pluginVersion"] = GRAFANA_VERSION
    board["schemaVersion"] = SCHEMA_VERSION
    return board


def _check_hidden_series(panel: dict[str, Any], where: str) -> None:
    for override in (panel.get("fieldConfig") or {}).get("overrides", []):
        for prop in override.get("properties", []):
            value = prop.get("value")
            if (prop.get("id") == "custom.hideFrom" and isinstance(value, dict)
                    and value.get("viz") and not value.get("tooltip")):  # fmt: skip
                raise NotMigrated(f"{where}: a series hidden from the plot is hidden from "
                                  "the tooltip too (schema 42)")  # fmt: skip
