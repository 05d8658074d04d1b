"""The metric names the boards' queries use, taken from the catalogue.

A board never spells a metric as free text: it asks :func:`metric`, which answers the name
only if runwatch makes that series and raises :class:`UnknownMetric`, when the board is
built, if not. What runwatch makes: the families of
:func:`~exporter.telemetry.catalogue.documented_metrics` (the catalogue and the built-in
router mapping's), a histogram's as its ``_bucket``, ``_count`` and ``_sum`` series, and the
step history's two families (remote-written or backfilled, not on ``/metrics``). So
renaming or removing a metric is one edit in the catalogue, and ``runwatch dashboards
build`` (and the tests, which build every board) then name each board still reading the old
name, as the OTel collector's ``metadata.yaml`` does for the code generated from it.
tests/unit/test_metric_names.py checks the built JSON and the Prometheus rules against the
same list, and that no board module spells a metric name outside :func:`metric`.
"""

from __future__ import annotations

import difflib
from functools import cache

from exporter.telemetry.catalogue import documented_metrics
from exporter.telemetry.metric import Type
from exporter.telemetry.step_history import STEP_INDEX_METRIC, STEP_METRIC

HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")
"""The series of a (classic) histogram family on ``/metrics``; counters are named with their
``_total`` in the catalogue already."""

ELSEWHERE = {
    "traces_spanmetrics_calls_total": "Tempo's metrics generator (tempo/tempo.yaml)",
    "traces_spanmetrics_latency_bucket": "Tempo's metrics generator (tempo/tempo.yaml)",
}
"""The metrics the boards read that runwatch does not make, and what makes them: the whole
allow-list."""


class UnknownMetric(ValueError):
    """A board names a metric that runwatch does not make."""


@cache
def exposed() -> frozenset[str]:
    """Every series name runwatch makes: each catalogue family's name, a histogram's as
    its ``_bucket``, ``_count`` and ``_sum`` series, and the step history's families."""
    names = {STEP_METRIC, STEP_INDEX_METRIC}
    for family in documented_metrics():
        if family.type is Type.HISTOGRAM:
            names.update(family.name + suffix for suffix in HISTOGRAM_SERIES)
        else:
            names.add(family.name)
    return frozenset(names)


def metric(name: str) -> str:
    """``name``, if runwatch makes that series (or it is one of :data:`ELSEWHERE`)."""
    known = exposed()
    if name in known or name in ELSEWHERE:
        return name
    close = difflib.get_close_matches(name, sorted(known), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UnknownMetric(
        f"{name!r} is not a metric runwatch makes (exporter/telemetry/catalogue.py){hint}"
    )
