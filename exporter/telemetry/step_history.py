"""The step history: each logged value as a sample of ``training_step_metric{run_id, key}``
at its event's time, where a scrape keeps one value per scrape.

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
MAX_SERIES_TRACKED = 100_000


def millis(seconds: float) -> int:
    """Prometheus's timestamps: integer milliseconds."""
    return round(seconds * 1000)


class SeriesClock:
    """The last timestamp written per series: a sample not newer than it is refused, as
    Prometheus refuses it (and, over remote write, the whole request with it)."""

    def __init__(self, max_series: int = MAX_SERIES_TRACKED) -> None:
        self._last: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._max_series = max_series

    def admit(self, series: tuple[str, str], at: int) -> bool:
        last = self._last.get(series)
        if last is not None and at <= last:
            return False
        self._last[series] = at
        if last is None and len(self._last) > self._max_series:  # forget the oldest series
            self._last.popitem(last=False)
        return True


class HistoryRecorder:
    """An OutputSink keeping the StepValues of a replay, for :func:`openmetrics`."""

    def __init__(self) -> None:
        self.steps: list[StepValues] = []

    def handle(self, outputs: Sequence[Output], emit: Emit) -> None:
        self.steps.extend(output for output in outputs if output.__class__ is StepValues)


def openmetrics(
    steps: Iterable[StepValues], labels: dict[str, str], refused: list[int]
) -> Iterator[str]:
    """OpenMetrics text of the steps: one family, each series' samples together and in
    time order, ``labels`` (job, instance) on every series, ``# EOF`` last. Samples not
    newer than their series' last are left out and counted in ``refused[0]``."""
    clock = SeriesClock(max_series=1 << 62)  # a replay keeps every series it writes
    series: dict[tuple[str, str], list[str]] = {}
    for step in steps:
        for key, value in step.values.items():
            at = millis(step.timestamp)
            if not clock.admit((step.run_id, key), at) or at < 0:
                refused[0] += 1
                continue
            series.setdefault((step.run_id, key), []).append(
                f" {_value(value)} {at // 1000}.{at % 1000:03d}\n"
            )
    yield f"# HELP {STEP_METRIC} {HELP}\n# TYPE {STEP_METRIC} gauge\n"
    fixed = ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(labels.items()))
    for (run_id, key), samples in series.items():
        name = f'{STEP_METRIC}{{{fixed},key="{_escape(key)}",run_id="{_escape(run_id)}"}}'
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
