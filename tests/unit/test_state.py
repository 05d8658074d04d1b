"""The reducer, driven with parsed events: runs, stages, targets, checkpoints, bounds, spans."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.events import Rejected, parse_line
from exporter.core.outputs import FinishedSpan, Observed
from exporter.core.state import Limits, ProcessObservation, State
from tests.support import event

T0 = 1_700_000_000.0


def feed(state: State, *events: dict) -> list:
    outputs = []
    for value in events:
        outputs.extend(state.apply(parse_line(orjson.dumps(value))))
    return outputs


def spans(outputs: list) -> list[FinishedSpan]:
    return [o for o in outputs if isinstance(o, FinishedSpan)]


def test_a_run_walks_its_stages_and_records_their_durations() -> None:
    state = State()
    feed(
        state,
        event("run_start", ts=T0, name="exp", config={"lr": 0.1}),
        event("stage_change", ts=T0 + 1, new_stage="ranking"),
        event("progress", ts=T0 + 2, stage="ranking", progress_pct=40, targets_total=5),
        event("progress", ts=T0 + 11, stage="feature_selection", progress_pct=10),
    )
    run = state.runs["run_1"]
    assert (run.name, run.config, run.status, run.stage) == (
        "exp",
        {"lr": 0.1},
        "running",
        "feature_selection",
    )
    assert run.stages["ranking"].progress_ratio == pytest.approx(0.4)
    assert run.stages["ranking"].seconds == pytest.approx(10)
    assert run.stages["feature_selection"].progress_ratio == pytest.approx(0.1)
    assert run.targets_total == 5
    assert run.duration == pytest.approx(11)


def test_run_complete_ends_every_open_span_in_order_with_the_trace_structure() -> None:
    state = State()
    out = feed(
        state,
        event("stage_change", ts=T0, new_stage="training"),
        event("target_start", ts=T0 + 1, target="t1"),
        event(
            "error",
            ts=T0 + 2,
            error_message="bad fold",
            error_type="ValueError",
            recoverable=True,
            target="t1",
        ),
        event("target_complete", ts=T0 + 3, target="t1", status="success", best_auc=0.8),
        event("target_start", ts=T0 + 4, target="t2"),
        event("run_complete", ts=T0 + 6, status="failed"),
    )
    ended = spans(out)
    assert [(s.span.kind, s.span.name) for s in ended] == [
        ("target", "t1"),
        ("target", "t2"),
        ("stage", "training"),
        ("run", "run_1"),
    ]
    t1, t2, stage, root = ended
    assert t1.span.parent is stage.span and stage.span.parent is root.span
    assert (t1.span.start, t1.end, t1.error) == (T0 + 1, T0 + 3, None)
    assert t1.span.events[0][1] == "exception"
    assert t1.span.events[0][2]["exception.type"] == "ValueError"
    assert t2.error and stage.error and root.error == "run failed"
    assert [d.value for d in out if isinstance(d, Observed)] == [2.0]
    run = state.runs["run_1"]
    assert run.status == "failed" and run.end == T0 + 6
    assert run.errors[("ValueError", True)] == 1
    assert run.target_best_auc == {("training", "t1"): 0.8}


def test_checkpoints_keep_one_best() -> None:
    state = State()
    feed(
        state,
        event("checkpoint_saved", checkpoint_id="a", step=1, metrics={"loss": 2}, is_best=True),
        event("checkpoint_saved", checkpoint_id="b", step=2, metrics={"loss": 1}, is_best=True),
        event("checkpoint_saved", checkpoint_id="c", step=3, metrics={"loss": 3}),
    )
    run = state.runs["run_1"]
    assert run.best_checkpoint == "b"
    assert [c.is_best for c in run.checkpoints.values()] == [False, True, False]


def test_events_too_old_are_rejected_and_change_nothing() -> None:
    state = State(Limits(max_clock_skew_seconds=5))
    feed(state, event("progress", ts=T0, stage="a", progress_pct=1))
    feed(state, event("progress", ts=T0 + 100, stage="a", progress_pct=50))
    with pytest.raises(Rejected) as before:
        feed(state, event("progress", ts=T0 - 60, stage="a", progress_pct=99))
    with pytest.raises(Rejected) as older:
        feed(state, event("progress", ts=T0 + 50, stage="a", progress_pct=99))
    assert (before.value.reason, older.value.reason) == ("before_run_start", "out_of_order")
    feed(state, event("progress", ts=T0 + 97, stage="a", progress_pct=60))  # within the skew
    run = state.runs["run_1"]
    assert run.stages["a"].progress_ratio == pytest.approx(0.6)
    assert run.last_event == T0 + 100
    assert state.events_by_type["progress"] == 3


def test_a_dead_process_crashes_a_running_run_and_ends_its_spans_in_error() -> None:
    state = State()
    feed(state, event("stage_change", ts=T0, new_stage="training"))
    assert state.observe_process(ProcessObservation("run_1", True, T0, T0 + 1)) == []
    out = state.observe_process(ProcessObservation("run_1", False, T0, T0 + 30))
    run = state.runs["run_1"]
    assert (run.status, run.process_up) == ("crashed", False)
    assert [s.error for s in spans(out)] == ["process exited without run_complete"] * 2
    assert all(s.end == T0 + 30 for s in spans(out))
    # a new process for the same run (a restart after the crash) reopens it
    state.observe_process(ProcessObservation("run_1", True, T0 + 60, T0 + 61))
    assert (run.status, run.process_up) == ("running", True)
    # a finished run is not crashed by its process going away
    feed(state, event("run_complete", run_id="done", ts=T0, status="completed"))
    state.observe_process(ProcessObservation("done", False, T0, T0 + 30))
    assert state.runs["done"].status == "completed"


def test_max_runs_forgets_a_finished_run_not_a_live_one_and_that_is_no_drop() -> None:
    state = State(Limits(max_runs=2))
    feed(state, event("progress", run_id="old_running", stage="s", progress_pct=1))
    feed(state, event("run_complete", run_id="finished", status="completed"))
    feed(state, event("progress", run_id="new", stage="s", progress_pct=1))
    assert list(state.runs) == ["old_running", "new"]
    assert (state.forgotten["max_runs"], state.dropped["max_runs"]) == (1, 0)
    feed(state, event("progress", run_id="newest", stage="s", progress_pct=1))  # all live
    assert list(state.runs) == ["new", "newest"]
    assert state.dropped["max_runs"] == 1  # live data cut: the only drop


def test_max_runs_forgets_failed_and_crashed_runs_last_so_their_alerts_stay() -> None:
    state = State(Limits(max_runs=3))
    feed(state, event("run_complete", run_id="failed", ts=T0, status="failed"))
    feed(state, event("run_complete", run_id="done_later", ts=T0 + 10, status="completed"))
    feed(state, event("run_complete", run_id="done_last", ts=T0 + 20, status="completed"))
    for index in range(2):
        feed(state, event("progress", run_id=f"new_{index}", ts=T0 + 30, stage="s", progress_pct=1))
    assert list(state.runs) == ["failed", "new_0", "new_1"]  # completed ones first, oldest first
    feed(state, event("progress", run_id="new_2", ts=T0 + 40, stage="s", progress_pct=1))
    assert "failed" not in state.runs and state.forgotten["max_runs"] == 3


def test_a_finished_run_is_kept_for_its_retention_from_when_it_was_seen_ending() -> None:
    state = State(Limits(finished_run_retention=60))
    # a week-old run read from a file: its retention starts when runwatch sees it end
    feed(state, event("run_complete", run_id="old", ts=T0 - 7 * 86400, status="crashed"))
    feed(state, event("progress", run_id="live", ts=T0, stage="s", progress_pct=1))
    assert state.expire(T0) == 0
    assert state.expire(T0 + 59) == 0 and "old" in state.runs
    assert state.expire(T0 + 60) == 1
    assert list(state.runs) == ["live"] and state.forgotten["retention"] == 1
    # a run that reopens (resumed after its crash) starts its retention again when it ends
    feed(state, event("run_complete", run_id="live", ts=T0 + 61, status="failed"))
    state.expire(T0 + 100)
    feed(state, event("run_start", run_id="live", ts=T0 + 120))
    state.expire(T0 + 150)
    feed(state, event("run_complete", run_id="live", ts=T0 + 170, status="failed"))
    assert state.expire(T0 + 200) == 0 and state.expire(T0 + 259) == 0
    assert state.expire(T0 + 260) == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 9),
            st.sampled_from(["progress", "run_complete"]),
            st.sampled_from(["completed", "failed", "crashed"]),
            st.integers(0, 30),
        ),
        max_size=60,
    ),
)
def test_retention_never_cuts_a_live_run_while_a_finished_one_could_go(steps) -> None:
    """Whatever the order of runs starting and ending: the bound holds, a live run is only
    cut when every kept run is live, and each run leaves exactly once or stays."""
    state = State(Limits(max_runs=4, finished_run_retention=10))
    now = T0
    for run, kind, status, pause in steps:
        live_before = all(not r.finished for r in state.runs.values())
        kept_before, drops_before = len(state.runs), state.dropped["max_runs"]
        fields = {"status": status} if kind == "run_complete" else {"stage": "s", "progress_pct": 1}
        feed(state, event(kind, run_id=f"run_{run}", ts=now, **fields))
        assert len(state.runs) <= 4
        if state.dropped["max_runs"] > drops_before:
            assert live_before and kept_before == 4
        now += pause
        state.expire(now)
        for kept in state.runs.values():
            if kept.finished:
                assert now - kept.finished_seen_at < 10


def test_bounds_cut_and_count_metric_keys_targets_checkpoints_and_error_types() -> None:
    state = State(
        Limits(
            max_metric_keys_per_run=2,
            max_targets_per_run=1,
            max_checkpoints_per_run=2,
            max_error_types_per_run=1,
            max_stages_per_run=2,
        )
    )
    feed(
        state,
        event("metric_update", metrics={"a": 1, "b": 2, "c": 3}),
        event("metric_update", metrics={"a": 5}),
        event("target_complete", target="t1", best_auc=0.5),
        event("target_complete", target="t2", best_auc=0.6),
        event("checkpoint_saved", checkpoint_id="c1", is_best=True),
        event("checkpoint_saved", checkpoint_id="c2"),
        event("checkpoint_saved", checkpoint_id="c3"),
        event("error", error_message="x", error_type="E1"),
        event("error", error_message="x", error_type="E2"),
        event("stage_change", new_stage="s1"),
        event("stage_change", new_stage="s2"),
        event("stage_change", new_stage="s3"),
    )
    run = state.runs["run_1"]
    assert run.metrics == {"a": 5.0, "b": 2.0}
    assert run.target_best_auc == {("", "t1"): 0.5}
    assert list(run.checkpoints) == ["c1", "c3"]  # the best is kept, the oldest other goes
    assert run.errors == {("E1", False): 1, ("other", False): 1}
    assert list(run.stages) == ["s2", "s3"] and run.stage == "s3"
    assert +state.dropped == {
        "max_metric_keys_per_run": 1,
        "max_targets_per_run": 1,
        "max_checkpoints_per_run": 1,
        "max_error_types_per_run": 1,
        "max_stages_per_run": 1,
    }


def test_status_change_ends_and_reopens_a_run() -> None:
    state = State()
    out = feed(
        state,
        event("status_change", ts=T0, new_status="interrupted"),
        event("status_change", ts=T0 + 5, new_status="running"),
        event("run_complete", ts=T0 + 9, status="completed"),
    )
    roots = [s for s in spans(out) if s.span.kind == "run"]
    assert [(r.span.start, r.end, r.error) for r in roots] == [
        (T0, T0, None),
        (T0 + 5, T0 + 9, None),
    ]
    assert state.runs["run_1"].status == "completed"


def test_an_event_sent_again_is_applied_once_whatever_its_sender_sends_between() -> None:
    state = State()
    first = [event("metric_update", "r", ts=T0 + i, step=i, metrics={"loss": i},
                   event_id=f"sender-a.{i + 1}") for i in range(3)]  # fmt: skip
    feed(state, *first)
    feed(state, *first)  # the batch again: its answer was lost
    other = event("metric_update", "r", ts=T0 + 5, step=9, metrics={"loss": 9},
                  event_id="sender-b.1")  # fmt: skip
    feed(state, other, event("metric_update", "r", ts=T0 + 6, step=3, metrics={"loss": 3},
                             event_id="sender-a.4"))  # fmt: skip
    assert (state.events_by_type["metric_update"], state.duplicates) == (5, 3)
    assert state.runs["r"].step == 3
    for odd in ("x", "a.²", "a.١٢", ".5"):  # not <sender>.<digits>: never a duplicate
        unnumbered = event("metric_update", "r", ts=T0 + 7, metrics={"loss": 1}, event_id=odd)
        feed(state, unnumbered, unnumbered)
    assert state.events_by_type["metric_update"] == 5 + 8


def test_marking_a_checkpoint_best_or_checked_changes_nothing_else() -> None:
    state = State()
    state.history = True
    saved = feed(state, event("checkpoint_saved", "r", ts=T0, checkpoint_id="c1", step=5,
                              filepath="c1.pt", metrics={"loss": 0.5}))  # fmt: skip
    later = feed(state,
                 event("checkpoint_saved", "r", ts=T0 + 9, checkpoint_id="c1", is_best=True),
                 event("checkpoint_saved", "r", ts=T0 + 9, checkpoint_id="c1", valid=False,
                       invalid_reason="torn"))  # fmt: skip
    checkpoint = state.runs["r"].checkpoints["c1"]
    assert (checkpoint.is_best, checkpoint.valid, checkpoint.timestamp) == (True, False, T0)
    assert (checkpoint.metrics, checkpoint.filepath, checkpoint.step) == ({"loss": 0.5}, "c1.pt", 5)
    assert len(saved) == 1 and later == []  # its history value once
    assert state.runs["r"].invalid_checkpoints == 1
