"""The reducer's budgets: what the audit's hostile clients sent, at the defaults, stays
within a figure (series per run and over all runs, text per run), the cuts are counted,
and what a run gives up is given back."""

from __future__ import annotations

import orjson

from exporter.core.events import parse_line
from exporter.core.outputs import FinishedSpan
from exporter.core.state import MAX_SPAN_EVENTS, MAX_TEXT_CHARS, Limits, State
from tests.support import event

T0 = 1_700_000_000.0
MB = "x" * (1 << 20)


def feed(state: State, *events: dict) -> list:
    outputs = []
    for value in events:
        outputs.extend(state.apply(parse_line(orjson.dumps(value))))
    return outputs


def checkpoint_series(state: State) -> int:
    return sum(len(c.metrics) for run in state.runs.values() for c in run.checkpoints.values())


def test_checkpoint_metrics_of_many_runs_stay_within_the_series_budget() -> None:
    """100 runs x 50 checkpoints x 100 keys was 500,000 series; the budget holds it."""
    state, limits = State(), Limits()
    metrics = {f"m{k}": float(k) for k in range(100)}
    for r in range(100):
        for c in range(50):
            feed(state, event("checkpoint_saved", run_id=f"r{r}", ts=T0 + c,
                              checkpoint_id=f"c{c}", metrics=metrics))  # fmt: skip
    assert all(run.series <= limits.max_series_per_run for run in state.runs.values())
    assert checkpoint_series(state) == state.series == limits.max_series
    assert state.dropped["max_series_per_run"] > 0 and state.dropped["max_series"] > 0


def test_what_a_run_gives_up_is_given_back_to_the_budget() -> None:
    state = State(Limits(max_series=30, max_checkpoints_per_run=2, max_runs=1))
    metrics = {f"m{k}": 1.0 for k in range(10)}
    for c in range(5):  # two kept at a time: the oldest replaced ones are refunded
        feed(state, event("checkpoint_saved", ts=T0 + c, checkpoint_id=f"c{c}", metrics=metrics))
    assert state.series == 20 and state.dropped["max_series"] == 0
    feed(state, event("run_complete", ts=T0 + 9, status="completed"))
    feed(state, event("metric_update", run_id="next", ts=T0 + 10, metrics={"loss": 1.0}))
    assert list(state.runs) == ["next"] and state.series == 1  # the forgotten run's refunded


def test_a_path_is_cut_and_paths_stay_within_the_text_budget() -> None:
    """50 checkpoints of 1 MB paths in one run were 50 MB; now a budget's worth."""
    state, limits = State(), Limits()
    for c in range(50):
        feed(state, event("checkpoint_saved", ts=T0 + c, checkpoint_id=f"c{c}", filepath=MB))
    run = state.runs["run_1"]
    paths = [c.filepath for c in run.checkpoints.values() if c.filepath is not None]
    assert paths and all(len(p) == MAX_TEXT_CHARS for p in paths)
    assert run.text_bytes == sum(map(len, paths)) <= limits.max_text_bytes_per_run


def test_a_config_over_the_text_budget_keeps_its_leading_keys() -> None:
    state = State(Limits(max_text_bytes_per_run=1000))
    config = {f"key{k:03}": "v" * 40 for k in range(100)}
    feed(state, event("run_start", config=config))
    run = state.runs["run_1"]
    assert list(run.config) == [f"key{k:03}" for k in range(len(run.config))]
    assert 10 < len(run.config) < 100 and run.text_bytes <= 1000
    assert state.dropped["max_text_bytes_per_run"] == 1
    feed(state, event("run_start", ts=T0 + 1, config={"small": 1}))  # replaced: refunded
    assert run.config == {"small": 1} and run.text_bytes == len(b'{"small":1}')


def test_error_messages_in_an_open_span_are_cut_capped_and_given_back() -> None:
    """200 errors of 1 MB in one stage were 200 MB held in the open span."""
    state, limits = State(), Limits()
    feed(state, event("stage_change", new_stage="train"))
    for i in range(200):
        feed(state, event("error", ts=T0 + 1 + i, error_message=MB, error_type="OOM"))
    run = state.runs["run_1"]
    assert run.stage_span is not None
    assert len(run.stage_span.events) <= MAX_SPAN_EVENTS
    assert all(len(a["exception.message"]) == MAX_TEXT_CHARS for _, _, a in run.stage_span.events)
    assert run.text_bytes <= limits.max_text_bytes_per_run
    assert state.dropped["max_events_per_span"] + state.dropped["max_text_bytes_per_run"] > 0
    out = feed(state, event("run_complete", ts=T0 + 500, status="completed"))
    assert any(isinstance(o, FinishedSpan) and o.span.events for o in out)
    assert run.text_bytes == run.config_bytes  # the spans ended: their text given back


def test_open_target_spans_are_bounded_and_counted() -> None:
    """200,000 target_start without a completion held 200,000 open spans."""
    state, limits = State(), Limits()
    feed(state, *(event("target_start", ts=T0 + i / 1000, target=f"t{i}") for i in range(20_000)))
    run = state.runs["run_1"]
    assert len(run.target_spans) <= limits.max_targets_per_run
    assert run.text_bytes <= limits.max_text_bytes_per_run
    dropped = state.dropped["max_targets_per_run"] + state.dropped["max_text_bytes_per_run"]
    assert dropped == 20_000 - len(run.target_spans)
