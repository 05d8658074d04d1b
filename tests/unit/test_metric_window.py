"""The run API's metric window: every step until the budget, then evenly thinned with the
latest step last; NaN apart from "not logged"; a run's window goes with the run."""

from __future__ import annotations

import math

import orjson
from hypothesis import given
from hypothesis import strategies as st

from exporter.core.metric_window import MetricWindow, thinned
from exporter.core.state import Limits
from exporter.pipeline import Pipeline
from tests.support import T0, event


def test_every_step_is_kept_and_nan_reads_apart_from_not_logged() -> None:
    window = MetricWindow()
    window.append(1, T0, {"loss": 0.5}, {"loss": 0.5})
    window.append(2, T0 + 1, {"loss": math.nan, "acc": 0.1}, {"loss": 0.5, "acc": 0.1})
    window.append(None, T0 + 2, {"acc": 0.2, "unkept": 1.0}, {"loss": 0.5, "acc": 0.1})
    rows = window.rows()
    assert list(rows.columns) == ["loss", "acc"]  # a key the run does not keep is no column
    assert rows.value("loss", 0) == 0.5
    assert math.isnan(rows.value("loss", 1)) and rows.value("loss", 2) is None
    assert rows.value("acc", 0) is None and rows.value("acc", 2) == 0.2
    assert window.rows(["acc"], since=2).columns.keys() == {"acc"}
    assert len(window.rows(since=2)) == 1 and window.values == 3 * 5


def test_halving_keeps_the_whole_run_evenly_and_the_latest_step_last() -> None:
    window = MetricWindow()
    for step in range(1000):
        window.append(step, T0 + step, {"loss": float(step)}, {"loss": 0.0})
        while len(window.seq) > 100:
            window.halve()
    rows = window.rows()
    assert rows.stride == 16 and rows.appended == 1000
    assert list(rows.steps[:-1]) == list(range(0, 1000, 16))  # the start and an even spread
    assert rows.steps[-1] == 999 and rows.value("loss", len(rows) - 1) == 999.0


@given(st.lists(st.tuples(st.booleans(), st.sampled_from([0.5, math.nan, None])), max_size=300),
       st.integers(2, 40))  # fmt: skip
def test_a_thinned_window_holds_what_was_logged_on_its_stride(
    rows_logged: list[tuple[bool, float | None]], cap: int
) -> None:
    window = MetricWindow()
    logged = []
    for index, (has_step, value) in enumerate(rows_logged):
        metrics = {} if value is None else {"v": value}
        logged.append(metrics.get("v"))
        window.append(index if has_step else None, float(index), metrics, {"v": 0.0})
        while len(window.seq) > cap:
            assert window.halve() > 0
    rows = window.rows()
    assert len(rows) <= cap
    if rows_logged:
        assert rows.seq[-1] == len(rows_logged) - 1
    for i, seq in enumerate(rows.seq):
        assert seq % rows.stride == 0 or i == len(rows) - 1
        assert rows.times[i] == float(seq)
        if "v" in rows.columns:
            got, want = rows.value("v", i), logged[seq]
            assert got == want or (got is not None and want is not None and math.isnan(want))


def test_thinning_to_points_keeps_each_buckets_extremes() -> None:
    window = MetricWindow()
    for step in range(10_000):
        value = 100.0 if step == 4321 else -5.0 if step == 777 else math.sin(step / 100)
        window.append(step, T0 + step, {"loss": value}, {"loss": 0.0})
    rows = window.rows()
    kept = thinned(rows, list(range(len(rows))), ["loss"], 200)
    assert len(kept) <= 200 and kept == sorted(kept)
    assert {0, 777, 4321, 9999} <= set(kept)


def _ingest(pipeline: Pipeline, *events: dict) -> None:
    assert pipeline.ingest_lines([orjson.dumps(e) for e in events], "http") == []


def test_the_budgets_halve_and_count_and_a_forgotten_run_takes_its_window() -> None:
    pipeline = Pipeline(Limits(max_window_values_per_run=400, max_window_values=600,
                               max_runs=2, max_clock_skew_seconds=math.inf))  # fmt: skip
    pipeline.keep_windows()
    for run_id in ("a", "b"):
        _ingest(pipeline, event("run_start", run_id=run_id, ts=T0))
        _ingest(pipeline, *(event("metric_update", run_id=run_id, ts=T0 + i, step=i,
                                  metrics={"loss": 1.0}) for i in range(100)))  # fmt: skip
    state = pipeline.state
    assert state.windows is not None
    assert all(w.values <= 400 for w in state.windows.values())
    assert state.window_values == sum(w.values for w in state.windows.values()) <= 600
    assert state.dropped["metric_window"] > 0
    rows_a = pipeline.window_rows("a")
    assert rows_a is not None and rows_a.steps[-1] == 99
    _ingest(pipeline, event("run_complete", run_id="a", ts=T0 + 200, status="completed"))
    pipeline.expire_runs(0.0)
    pipeline.expire_runs(math.inf)
    assert pipeline.window_rows("a") is None
    _ingest(
        pipeline,
        event("run_start", run_id="a", ts=T0 + 300),
        event("metric_update", run_id="a", ts=T0 + 301, step=5, metrics={"x": 2.0}),
    )
    rows_a = pipeline.window_rows("a")
    assert rows_a is not None and list(rows_a.steps) == [5] and list(rows_a.columns) == ["x"]
