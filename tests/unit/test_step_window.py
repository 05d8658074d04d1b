"""The run API's window of each run's steps: columns that keep every step in logging order
until the bounds, every step let go counted, and thinning that keeps a curve's spikes."""

from __future__ import annotations

import math
from array import array

from hypothesis import given
from hypothesis import strategies as st

from exporter.core.outputs import StepValues
from exporter.pipeline import EVERYTHING
from exporter.pipeline.self_stats import Stats
from exporter.telemetry.step_window import DROPPED, StepWindow, thin


def steps(run_id: str, count: int, first: int = 0, **extra: float) -> list[StepValues]:
    return [StepValues(run_id, 1000.0 + i, {"loss": 1.0 / (i + 1), **extra}, i)
            for i in range(first, first + count)]  # fmt: skip


def dropped(stats: Stats) -> int:
    return dict(stats.snapshot(stats.series_dropped))[DROPPED]


def test_each_step_is_kept_with_a_gap_where_a_key_was_not_logged() -> None:
    stats = Stats()
    window = StepWindow(stats)
    window.handle([*steps("r", 3), StepValues("r", 2000.0, {"acc": 0.5}, None)], EVERYTHING)
    got = window.window("r")
    assert got is not None and got.rows == 4 and got.first_step == 0
    assert got.steps == [0, 1, 2, None]
    assert got.values == {"acc": [None, None, None, 0.5], "loss": [1.0, 0.5, 1 / 3, None]}
    assert window.window("r", keys=["acc", "nope"]).values == {"acc": [None, None, None, 0.5]}
    assert window.window("r", min_step=1, max_step=2).steps == [1, 2]
    assert window.window("other") is None
    assert dropped(stats) == 0


def test_the_bounds_let_the_oldest_steps_go_and_count_them() -> None:
    stats = Stats()
    window = StepWindow(stats, per_run=100, budget=10_000, max_runs=2)
    window.handle(steps("a", 150), EVERYTHING)  # 50 past the run's window
    got = window.window("a")
    assert got is not None and got.rows == 100 and got.first_step == 50
    assert dropped(stats) == 50
    window.handle(steps("b", 10), EVERYTHING)
    window.handle(steps("c", 10), EVERYTHING)  # a third run: "a", written least recently, goes
    assert window.window("a") is None and dropped(stats) == 150
    small = StepWindow(stats, per_run=1000, budget=300, max_runs=10)  # 3 values a step
    small.handle(steps("d", 150), EVERYTHING)
    rows = small.window("d").rows
    assert rows * 3 <= 300 and small.window("d").steps[-1] == 149  # the newest kept
    window.forget_except({"c"})
    assert window.window("b") is None and window.window("c") is not None


@given(st.lists(st.floats(-1e6, 1e6) | st.just(math.nan), min_size=3, max_size=400),
       st.integers(min_value=1, max_value=60))  # fmt: skip
def test_thinning_keeps_the_ends_and_every_extreme_within_the_bound(
    values: list[float], max_points: int
) -> None:
    column = array("d", values)
    rows = list(range(len(values)))
    kept = thin(rows, [column], max_points)
    assert len(kept) <= max_points and kept == sorted(set(kept))
    if max_points >= 4:
        assert kept[0] == 0 and kept[-1] == len(values) - 1
        finite = [v for v in values if math.isfinite(v)]
        if finite:  # the curve's least and greatest values survive thinning
            assert min(finite) in [column[i] for i in kept]
            assert max(finite) in [column[i] for i in kept]
