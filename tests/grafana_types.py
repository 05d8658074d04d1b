"""Turn a built dashboard into TypeScript typed by Grafana's own ``@grafana/schema``.

``tsc --strict`` then checks the board as Grafana's front end reads it: the dashboard, each
template variable, and each panel's ``options`` and ``fieldConfig.defaults.custom`` against
that panel plugin's generated types. Object literals get TypeScript's excess-property check,
so an unknown key anywhere is an error, and ``options`` is required, so ``null`` or a missing
``options`` is one too. The schema's enums are checked as the string or number values the
JSON carries.
"""

from __future__ import annotations

import json
from typing import Any

RAW = "@grafana/schema/dist/esm/raw"
# panel type -> (module under raw/composable, whether it exports a FieldConfig)
PANEL_TYPES = {
    "timeseries": ("timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen", True),
    "xychart": ("xychart/panelcfg/x/XYChartPanelCfg_types.gen", True),
    "stat": ("stat/panelcfg/x/StatPanelCfg_types.gen", False),
    "table": ("table/panelcfg/x/TablePanelCfg_types.gen", True),
    "state-timeline": ("statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen", True),
    "text": ("text/panelcfg/x/TextPanelCfg_types.gen", False),
    "gauge": ("gauge/panelcfg/x/GaugePanelCfg_types.gen", False),
    "bargauge": ("bargauge/panelcfg/x/BarGaugePanelCfg_types.gen", False),
    "logs": ("logs/panelcfg/x/LogsPanelCfg_types.gen", False),
}

PRELUDE = f"""\
import type * as raw from '{RAW}/dashboard/x/Dashboard_types.gen';
// An enum as the JSON spells it (its string values); objects and arrays mapped through.
type Json<T> = T extends string ? `${{T}}`
  : T extends number | boolean | null | undefined ? T
  : T extends Array<infer E> ? Array<Json<E>>
  : T extends object ? {{ [K in keyof T]: Json<T[K]> }} : T;
type StrictPanel<O, C> = Json<Omit<raw.Panel, 'options' | 'fieldConfig' | 'type'> & {{
  type: string;
  options: O;
  fieldConfig?: {{
    defaults: Omit<raw.FieldConfig, 'custom'> & {{ custom?: C }};
    overrides: raw.FieldConfigSource['overrides'];
  }};
}}>;
type Board = Json<Omit<raw.Dashboard, 'panels'>>;
"""


def typescript(board: dict[str, Any]) -> str:
    """The board as a TypeScript module: one typed constant per panel, one for the rest."""
    lines = [PRELUDE]
    imported = set()
    for index, panel in enumerate(board.get("panels", [])):
        kind = panel.get("type")
        if kind not in PANEL_TYPES:
            raise ValueError(f"panel {panel.get('title')!r}: no schema mapped for type {kind!r}")
        module, has_field_config = PANEL_TYPES[kind]
        alias = "p_" + kind.replace("-", "")
        if alias not in imported:
            lines.append(f"import type * as {alias} from '{RAW}/composable/{module}';")
            imported.add(alias)
        custom = f"{alias}.FieldConfig" if has_field_config else "Record<string, never>"
        lines.append(
            f"export const panel{index}: StrictPanel<{alias}.Options, {custom}> = "
            f"{json.dumps(panel, indent=1)};"
        )
    rest = {key: value for key, value in board.items() if key != "panels"}
    lines.append(f"export const board: Board = {json.dumps(rest, indent=1)};")
    return "\n".join(lines) + "\n"
