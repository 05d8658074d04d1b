"""The step history: each logged value as a sample of ``training_step_metric{run_id, key}``
at its event's time, where a scrape keeps one value per scrape, and the step it was logged
at as a sample of ``training_history_step{run_id}`` at the same time, so a board can draw
the values against the step.

Prometheus keeps one sample per series and millisecond and refuses a sample older than
its series' last: a loop logging three steps in one millisecond would keep one. So a
run's samples are stamped by :class:`RunClock`: at the event's time, or a millisecond
after the run's previous sample when that is not earlier. Every step (within
``--max-history-steps-per-second``, at most 100 a second by default, so the nudge stays
under a second) is kept in logging order, and all the samples of one step share one
timestamp, which is what joins a value to its step.

Two ways out: remote write while serving (:mod:`exporter.telemetry.remote_write`), and
OpenMetrics text with timestamps for a replayed file, which ``promtool tsdb
create-blocks-from openmetrics`` turns into blocks for Prometheus (backfill: a
remote-write receiver refuses samples older than its head, about an hour).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence

from exporter.core.outputs import Output, StepValues
from exporter.pipeline import Emit

STEP_METRIC = "training_step_metric"
HELP = "Every logged value of a step metric (metric_update, checkpoint), at the event's time."
STEP_INDEX_METRIC = "training_history_step"
STEP_INDEX_HELP = "The step of each step-history sample, at the same timestamp as its values."
MAX_RUNS_TRACKED = 100_000


def millis(seconds: float) -> int:
    """Prometheus's timestamps: integer milliseconds."""
    return round(seconds * 1000)


class RunClock:
    """The last timestamp given per run: each step gets one after it (see the module
    docstring); runs past ``max_runs`` are forgotten, the least recently stamped first."""

    def __init__(self, max_runs: int = MAX_RUNS_TRACKED) -> None:
        self._last: OrderedDict[str, int] = OrderedDict()
        self._max_runs = max_runs

    def stamp(self, run_id: str, at: int) -> int:
        last = self._last.pop(run_id, None)
        if last is not None and at <= last:
            at = last + 1
        self._last[run_id] = at
        if len(self._last) > self._max_runs:
            self._last.popitem(last=False)
        return at


class HistoryRecorder:
    """An OutputSink keeping the StepValues of a replay, for :func:`openmetrics`."""

    def __init__(self) -> None:
        self.steps: list[StepValues] = []

    def handle(self, outputs: Sequence[Output], emit: Emit) -> None:
        self.steps.extend(output for output in outputs if output.__class__ is StepValues)


def openmetrics(steps: Iterable[StepValues], labels: dict[str, str]) -> Iterator[str]:
    """OpenMetrics text of the steps: the values' family, then the steps' (each series'
    samples together and in time order), ``labels`` (job, instance) on every series, and
    ``# EOF`` last. A time before 1970 (which the format cannot hold) is written as 1970."""
    clock = RunClock(max_runs=1 << 62)  # a replay keeps every run it writes
    values: dict[tuple[str, str], list[str]] = {}
    indices: dict[str, list[str]] = {}
    for step in steps:
        at = clock.stamp(step.run_id, max(0, millis(step.timestamp)))
        stamp = f" {at // 1000}.{at % 1000:03d}\n"
        for key, value in step.values.items():
            values.setdefault((step.run_id, key), []).append(f" {_value(value)}{stamp}")
        if step.step is not None:
            indices.setdefault(step.run_id, []).append(f" {step.step}{stamp}")
    fixed = ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(labels.items()))
    yield f"# HELP {STEP_METRIC} {HELP}\n# TYPE {STEP_METRIC} gauge\n"
    for (run_id, key), samples in values.items():
        name = f'{STEP_METRIC}{{{fixed},key="{_escape(key)}",run_id="{_escape(run_id)}"}}'
        yield "".join(name + sample for sample in samples)
    yield f"# HELP {STEP_INDEX_METRIC} {STEP_INDEX_HELP}\n# TYPE {STEP_INDEX_METRIC} gauge\n"
    for run_id, samples in indices.items():
        name = f'{STEP_INDEX_METRIC}{{{fixed},run_id="{_escape(run_id)}"}}'
        yield "".join(name + sample for sample in samples)
    yield "# EOF\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
