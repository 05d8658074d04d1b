"""The last steps of each run, in memory: what the run API serves as a run's metric history
(``GET /api/runs/{run_id}/metrics``). A window, not a store: Prometheus keeps the whole
history (the step history's remote write); this keeps each run's latest ``PER_RUN_STEPS``
steps, in columns of floats (8 bytes a value), within one budget of ``BUDGET_VALUES`` for
all runs and ``MAX_RUNS`` runs. Past the budget the run with the most steps gives up its
oldest half; past ``MAX_RUNS`` the run written to least recently goes. Every step let go
is counted, as ``runwatch_series_dropped_total{reason="step_window"}``.

Fed as an output sink of step values (``StepValues``: the steps within
``--max-history-steps-per-second``), under the pipeline lock; read by request threads
under its own lock.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.core.outputs import Output, StepValues
from exporter.pipeline import Emit
from exporter.pipeline.self_stats import Stats

PER_RUN_STEPS = 100_000
"""Steps kept per run: a whole curve at any chart's width."""
BUDGET_VALUES = 8_000_000
"""Values kept over all runs, steps and times included: 64 MB of floats."""
MAX_RUNS = 1_000
"""Runs with a window; each costs a few hundred bytes before its values."""
DROPPED = "step_window"
"""The ``reason`` of runwatch_series_dropped_total the steps let go are counted under."""


@dataclass(frozen=True)
class Window:
    """Steps of one run as the API serves them: columns of one length, oldest first (a
    step or value None where the event gave none)."""

    steps: list[float | None]
    times: list[float]
    values: dict[str, list[float | None]]
    rows: int  # in the window, before the range and the thinning
    first_step: float | None  # the window's oldest step: before it, ask Prometheus


class _Columns:
    """One run's window: per row a step, a time and each key's value (NaN where the row
    has none); the first ``start`` rows are let go but not yet compacted away."""

    def __init__(self) -> None:
        self.steps: array[float] = array("d")
        self.times: array[float] = array("d")
        self.keys: dict[str, array[float]] = {}
        self.start = 0

    @property
    def rows(self) -> int:
        return len(self.steps) - self.start

    @property
    def values(self) -> int:
        return self.rows * (2 + len(self.keys))

    def append(self, step: int | None, at: float, values: dict[str, float]) -> int:
        """Add a row; returns the values it added (NaN for the rows before a new key)."""
        length = len(self.steps)
        self.steps.append(math.nan if step is None else float(step))
        self.times.append(at)
        keys, added = self.keys, 0
        for key, value in values.items():
            column = keys.get(key)
            if column is None:  # a key first logged now: NaN for the rows before
                column = keys[key] = array("d", [math.nan]) * length
                added += length - self.start
            column.append(value)
        if len(values) < len(keys):
            for column in keys.values():
                if len(column) == length:
                    column.append(math.nan)
        return added + 2 + len(keys)

    def let_go(self, rows: int) -> int:
        """Forget the oldest ``rows`` rows (compacted once they are half the arrays);
        returns how many went."""
        rows = min(rows, self.rows)
        self.start += rows
        if self.start * 2 >= len(self.steps):
            for column in (self.steps, self.times, *self.keys.values()):
                del column[: self.start]
            self.start = 0
        return rows


class StepWindow:
    """An OutputSink keeping each run's last steps (see the module docstring)."""

    def __init__(
        self,
        stats: Stats,
        per_run: int = PER_RUN_STEPS,
        budget: int = BUDGET_VALUES,
        max_runs: int = MAX_RUNS,
    ) -> None:
        self._stats = stats
        self._per_run, self._budget, self._max_runs = per_run, budget, max_runs
        self._runs: OrderedDict[str, _Columns] = OrderedDict()  # least recently written first
        self._values = 0
        self._lock = threading.Lock()  # guards _runs and _values
        stats.declare(stats.series_dropped, [DROPPED])

    def handle(self, outputs: Sequence[Output], emit: Emit) -> None:
        let_go = 0
        for output in outputs:
            if type(output) is StepValues:
                with self._lock:
                    let_go += self._add(output)
        if let_go:
            self._stats.count(self._stats.series_dropped, DROPPED, let_go)

    def _add(self, output: StepValues) -> int:
        """Append one step; returns the steps let go to make room."""
        runs, let_go = self._runs, 0
        columns = runs.get(output.run_id)
        if columns is None:
            if len(runs) >= self._max_runs:
                let_go += self._drop(runs.popitem(last=False)[1])
            columns = runs[output.run_id] = _Columns()
        else:
            runs.move_to_end(output.run_id)
        self._values += columns.append(output.step, output.timestamp, output.values)
        if columns.rows > self._per_run:
            let_go += self._let_go(columns, 1)
        while self._values > self._budget:
            largest = max(runs.values(), key=lambda c: c.rows)
            let_go += self._let_go(largest, max(1, largest.rows // 2))
        return let_go

    def _let_go(self, columns: _Columns, rows: int) -> int:
        before = columns.values
        gone = columns.let_go(rows)
        self._values += columns.values - before
        return gone

    def _drop(self, columns: _Columns) -> int:
        self._values -= columns.values
        return columns.rows

    def forget_except(self, run_ids: set[str]) -> None:
        """Let go the windows of runs no longer held (forgotten by retention or --max-runs);
        not counted: the run went, not its data."""
        with self._lock:
            for run_id in [r for r in self._runs if r not in run_ids]:
                self._drop(self._runs.pop(run_id))

    def window(
        self,
        run_id: str,
        keys: list[str] | None = None,
        min_step: float | None = None,
        max_step: float | None = None,
        max_points: int | None = None,
    ) -> Window | None:
        """The run's steps in ``[min_step, max_step]``, its ``keys`` (all when None), thinned
        to at most ``max_points`` rows when given (see :func:`thin`); None for a run
        without a window."""
        with self._lock:
            columns = self._runs.get(run_id)
            if columns is None:
                return None
            start = columns.start
            steps = columns.steps[start:]
            times = columns.times[start:]
            wanted = sorted(columns.keys) if keys is None else keys
            values = {k: columns.keys[k][start:] for k in wanted if k in columns.keys}
        rows = list(range(len(steps)))
        if min_step is not None or max_step is not None:
            low = -math.inf if min_step is None else min_step
            high = math.inf if max_step is None else max_step
            rows = [i for i in rows if low <= steps[i] <= high]  # a NaN step is in no range
        if max_points is not None and len(rows) > max_points:
            rows = thin(rows, [values[k] for k in values], max_points)
        return Window(
            steps=[_value(steps[i]) for i in rows],
            times=[times[i] for i in rows],
            values={k: [_value(column[i]) for i in rows] for k, column in values.items()},
            rows=len(steps),
            first_step=_value(steps[0]) if len(steps) else None,
        )


def thin(rows: list[int], columns: list[array[float]], max_points: int) -> list[int]:
    """At most ``max_points`` of ``rows``, the first and last among them: the rows cut into
    buckets, and in each the rows holding any column's least and greatest value (a spike
    stays on a chart drawn from them, as it does from all the rows); evenly spaced rows
    when ``max_points`` is too few for a bucket."""
    per_bucket = 2 * max(1, len(columns))
    buckets = (max_points - 2) // per_bucket
    if buckets < 1:
        stride = len(rows) / max(1, max_points)
        return [rows[int(i * stride)] for i in range(max_points)]
    size = math.ceil((len(rows) - 2) / buckets)
    kept = {rows[0], rows[-1]}
    for first in range(1, len(rows) - 1, size):
        bucket = rows[first : min(first + size, len(rows) - 1)]
        for column in columns:
            finite = [i for i in bucket if math.isfinite(column[i])]
            if finite:
                kept.add(min(finite, key=column.__getitem__))
                kept.add(max(finite, key=column.__getitem__))
        if not columns:
            kept.add(bucket[0])
    return sorted(kept)


def _value(number: float) -> float | None:
    """JSON's null where a row has no finite value (a gap on a chart)."""
    return number if math.isfinite(number) else None
