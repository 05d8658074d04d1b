"""A run's metric values by step, kept in memory for the run API and the live view: a
window, not a store (Prometheus keeps the history).

Every logged step is appended, in the order the events came (a resumed run logs steps it
logged before again; both are kept). When the window is over its budget it is halved:
every other row goes and from then on only every ``stride``-th step is kept, so a whole
run stays in view at an even, coarser resolution, rather than its start or its end being
cut. The latest step is always the last row, kept or not. Columns are arrays of floats; a
step that did not log a key holds NaN there, and a value that *was* NaN is remembered
apart (rare), so the two read differently."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

NO_STEP = -(1 << 63)
"""A row logged without a step (none given, none known before)."""
FIXED_COLUMNS = 3
"""Each row's sequence number, step and time, besides its metric values."""


@dataclass(frozen=True, slots=True)
class WindowRows:
    """Rows copied out of a window (under the pipeline lock), read outside it."""

    seq: array[int]
    steps: array[int]
    times: array[float]
    columns: dict[str, array[float]]
    nans: dict[str, frozenset[int]]  # per key, the sequence numbers whose value was NaN
    stride: int  # one row kept per ``stride`` steps logged (1: every step)
    appended: int  # rows ever appended: the next row's sequence number

    def __len__(self) -> int:
        return len(self.seq)

    def value(self, key: str, index: int) -> float | None:
        """The value of ``key`` at row ``index``: None where the step did not log it."""
        value = self.columns[key][index]
        if value == value or self.seq[index] in self.nans[key]:
            return value
        return None


class MetricWindow:
    """One run's window; written by the reducer under the pipeline lock."""

    __slots__ = ("_tail", "appended", "columns", "nans", "seq", "steps", "stride", "times")

    def __init__(self) -> None:
        self.seq: array[int] = array("q")
        self.steps: array[int] = array("q")
        self.times: array[float] = array("d")
        self.columns: dict[str, array[float]] = {}
        self.nans: dict[str, set[int]] = {}
        self.stride = 1
        self.appended = 0
        self._tail = False  # the last row is off the stride: replaced by the next

    @property
    def values(self) -> int:
        """What the window holds, in values (the budget's unit: 8 bytes each)."""
        return len(self.seq) * (len(self.columns) + FIXED_COLUMNS)

    def append(self, step: int | None, timestamp: float, metrics: Mapping[str, float],
               keys: Mapping[str, float]) -> int:  # fmt: skip
        """A step's values; only those whose key the run keeps (``keys``: the run's latest
        values, bounded by max_metric_keys_per_run) become columns. Returns the values the
        window grew by (the budget's change). A row off the stride is provisional: the next
        step overwrites it in place, so the latest step is always the last row."""
        columns = self.columns
        before = len(self.seq) * (len(columns) + FIXED_COLUMNS)
        if not metrics.keys() <= columns.keys():
            rows = len(self.seq)
            for key in metrics:
                if key not in columns and key in keys:
                    columns[key] = array("d", [math.nan]) * rows
                    self.nans[key] = set()
        seq = self.appended
        self.appended = seq + 1
        get, nans = metrics.get, self.nans
        if self._tail:
            replaced = self.seq[-1]
            self.seq[-1] = seq
            self.steps[-1] = NO_STEP if step is None else step
            self.times[-1] = timestamp
            for key, column in columns.items():
                value = column[-1] = get(key, math.nan)
                if nans[key]:
                    nans[key].discard(replaced)
                if value != value and key in metrics:  # a NaN logged, told from "not logged"
                    nans[key].add(seq)
        else:
            self.seq.append(seq)
            self.steps.append(NO_STEP if step is None else step)  # events' steps fit 53 bits
            self.times.append(timestamp)
            for key, column in columns.items():
                value = get(key, math.nan)
                if value != value and key in metrics:
                    nans[key].add(seq)
                column.append(value)
        self._tail = seq % self.stride != 0
        return len(self.seq) * (len(columns) + FIXED_COLUMNS) - before

    def halve(self) -> int:
        """Keep every other row and double the stride; returns the rows removed. The latest
        row stays last."""
        if len(self.seq) < 2:
            return 0
        before = len(self.seq)
        last = self._row(before - 1)
        self._pop()
        self.stride *= 2
        # the rows left are those numbered 0, s, 2s, ... (s: the old stride): every other
        # one is on the new stride
        self.seq, self.steps, self.times = self.seq[::2], self.steps[::2], self.times[::2]
        self.columns = {key: column[::2] for key, column in self.columns.items()}
        kept = set(self.seq)
        self.nans = {key: nans & kept for key, nans in self.nans.items()}
        self._restore(last)
        return before - len(self.seq)

    def rows(self, keys: Iterable[str] | None = None, since: int = 0) -> WindowRows:
        """A copy of the rows from sequence number ``since`` on, with ``keys``' columns
        (all when None; a key the run never logged is left out)."""
        first = _first_at_or_after(self.seq, since)
        names = self.columns if keys is None else [k for k in keys if k in self.columns]
        return WindowRows(
            self.seq[first:], self.steps[first:], self.times[first:],
            {key: self.columns[key][first:] for key in names},
            {key: frozenset(self.nans[key]) for key in names},
            self.stride, self.appended,
        )  # fmt: skip

    def _pop(self) -> None:
        seq = self.seq.pop()
        self.steps.pop()
        self.times.pop()
        for key, column in self.columns.items():
            column.pop()
            self.nans[key].discard(seq)
        self._tail = False

    def _row(self, index: int) -> tuple[int, int, float, dict[str, float], set[str]]:
        seq = self.seq[index]
        nan_keys = {key for key, nans in self.nans.items() if seq in nans}
        values = {key: column[index] for key, column in self.columns.items()}
        return seq, self.steps[index], self.times[index], values, nan_keys

    def _restore(self, row: tuple[int, int, float, dict[str, float], set[str]]) -> None:
        seq, step, timestamp, values, nan_keys = row
        self.seq.append(seq)
        self.steps.append(step)
        self.times.append(timestamp)
        for key, column in self.columns.items():
            column.append(values[key])
            if key in nan_keys:
                self.nans[key].add(seq)
        self._tail = seq % self.stride != 0


def _first_at_or_after(seq: array[int], since: int) -> int:
    """The index of the first row whose sequence number is ``since`` or more (rows are in
    ascending order)."""
    low, high = 0, len(seq)
    while low < high:
        middle = (low + high) // 2
        if seq[middle] < since:
            low = middle + 1
        else:
            high = middle
    return low


def thinned(rows: WindowRows, indices: list[int], keys: Iterable[str], max_points: int
            ) -> list[int]:  # fmt: skip
    """At most about ``max_points`` of ``indices`` (rows in order) that keep the shape: they
    are cut into buckets and each keeps its first and last row and the rows holding each
    key's least and greatest value, so a spike is never thinned away."""
    if len(indices) <= max_points:
        return indices
    columns = [rows.columns[key] for key in keys]
    buckets = max(1, max_points // (2 + 2 * len(columns)))
    size = math.ceil(len(indices) / buckets)
    kept: list[int] = []
    for start in range(0, len(indices), size):
        bucket = indices[start : start + size]
        chosen = {bucket[0], bucket[-1]}
        for column in columns:
            finite = [(column[i], i) for i in bucket if column[i] == column[i]]
            if finite:
                chosen.add(min(finite)[1])
                chosen.add(max(finite)[1])
        kept.extend(sorted(chosen))
    return kept
