"""``GET /api/runs/{run_id}/metrics``: a run's metric window (core/metric_window.py) as
JSON, by rows as the training-dashboard format stores them or by columns as a chart takes
them, or as CSV, after picking keys, a step range and thinning to a number of points."""

from __future__ import annotations

import csv
import io
import math
import re
from array import array
from dataclasses import dataclass
from typing import Any

import orjson

from exporter.core.metric_window import NO_STEP, WindowRows, thinned

FIXED_HEADERS = ("step", "timestamp")
"""The CSV's first columns; a metric key spelled alike is written ``metrics.<key>``."""
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as a formula at the start of a cell (OWASP's list)."""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    keys: list[str] | None  # None: every key
    min_step: int | None
    max_step: int | None
    max_points: int | None


def parse_keys(values: list[str] | None) -> list[str] | None:
    """``keys=loss,lr`` or ``keys=loss&keys=lr``; None (or nothing given) for all."""
    if not values:
        return None
    keys = [key for value in values for key in value.split(",") if key]
    return list(dict.fromkeys(keys)) or None


def selected(rows: WindowRows, query: HistoryQuery) -> list[int]:
    """The rows in the step range (a row without a step is in none), thinned."""
    low = -math.inf if query.min_step is None else query.min_step
    high = math.inf if query.max_step is None else query.max_step
    if query.min_step is None and query.max_step is None:
        indices = list(range(len(rows)))
    else:
        indices = [i for i, s in enumerate(rows.steps) if s != NO_STEP and low <= s <= high]
    if query.max_points is not None:
        indices = thinned(rows, indices, rows.columns, query.max_points)
    return indices


def history_json(run_id: str, rows: WindowRows | None, query: HistoryQuery, layout: str,
                 max_values: int) -> bytes:  # fmt: skip
    """The document: what the window holds and how thinned, then the rows (``metrics``: a
    list of {step, timestamp, metrics}, a key absent where the step did not log it) or the
    columns (``step``, ``timestamp``, ``values``: null where not logged). NaN and the
    infinities are written as the event format spells them."""
    rows = rows or _EMPTY
    indices = selected(rows, query)
    keys = list(rows.columns)
    document: dict[str, Any] = {
        "run_id": run_id,
        "keys": keys,
        "stride": rows.stride,
        "steps_logged": rows.appended,
        "rows_kept": len(rows),
        "rows": len(indices),
        "max_values": max_values,
    }
    steps = [_step(rows.steps[i]) for i in indices]
    times = [rows.times[i] for i in indices]
    if layout == "columns":
        document["step"], document["timestamp"] = steps, times
        document["values"] = {key: [_json_number(rows.value(key, i)) for i in indices]
                              for key in keys}  # fmt: skip
    else:
        document["metrics"] = [
            {"step": step, "timestamp": at,
             "metrics": {key: _json_number(v) for key in keys
                         if (v := rows.value(key, i)) is not None}}
            for i, step, at in zip(indices, steps, times, strict=True)
        ]  # fmt: skip
    return orjson.dumps(document)


def history_csv(rows: WindowRows | None, query: HistoryQuery) -> str:
    """One line per row: step, timestamp (epoch seconds), then each key (empty where the
    step did not log it, ``NaN`` where it logged NaN). Cells a spreadsheet would run as a
    formula are quoted with a leading apostrophe."""
    rows = rows or _EMPTY
    keys = list(rows.columns)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = (f"metrics.{key}" if key in FIXED_HEADERS else key for key in keys)
    writer.writerow([*FIXED_HEADERS, *map(_cell, names)])
    for i in selected(rows, query):
        values = [rows.value(key, i) for key in keys]
        writer.writerow([_step(rows.steps[i]) if rows.steps[i] != NO_STEP else "",
                         repr(rows.times[i]),
                         *("" if v is None else _csv_number(v) for v in values)])  # fmt: skip
    return out.getvalue()


def csv_filename(run_id: str) -> str:
    """A file name for a run's CSV that any browser and file system take."""
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._") or "run")[:100] + ".csv"


def _step(step: int) -> int | None:
    return None if step == NO_STEP else step


def json_number(value: float) -> float | str:
    """JSON has no NaN or infinities: they are written as the event format spells them."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _json_number(value: float | None) -> float | str | None:
    return None if value is None else json_number(value)


def _csv_number(value: float) -> str:
    number = json_number(value)
    return number if isinstance(number, str) else repr(number)


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


_EMPTY = WindowRows(array("q"), array("q"), array("d"), {}, {}, 1, 0)
