"""Seed 000's event lines as its own dashboard takes them, in-process: the lines it accepts
are accepted (and counted), no field it sends is dropped, and event types runwatch does not
know are kept. Its emitters in real processes, and replayed files, are in
tests/e2e/test_seed_000.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.core.events import CustomEvent, parse_line
from exporter.core.outputs import FinishedSpan
from exporter.core.state import MAX_CUSTOM_EVENT_TYPES, State
from exporter.pipeline import Pipeline
from tests.pipelines import exposition
from tests.support import event


def lines_of(*values: dict) -> list[bytes]:
    return [orjson.dumps(value) for value in values]


def test_lines_the_seed_dashboard_accepts_are_applied_and_counted() -> None:
    pipeline = Pipeline()
    naive = (datetime.now(UTC) - timedelta(seconds=1)).replace(tzinfo=None).isoformat()
    refused = pipeline.ingest_lines(lines_of(
        {"event_type": "run_start", "run_id": "live", "timestamp": naive},  # utcnow()
        {"event_type": "progress", "run_id": "live", "stage": "ranking", "progress_pct": 5},
        {"event_type": "stage_change", "new_stage": "training"},  # the live run's
    ), "jsonl")  # fmt: skip
    assert refused == []
    run = pipeline.state.runs["live"]
    assert abs(run.start - (time.time() - 1)) < 1  # naive = UTC, not local time
    assert run.stage == "training" and run.stages["ranking"].progress_ratio == 0.05
    text = exposition(pipeline)
    for reason, count in (("naive_timestamp", 1), ("missing_timestamp", 2), ("missing_run_id", 1)):
        assert (
            f'runwatch_events_lenient_total{{reason="{reason}",source="jsonl"}} {count}.0' in text
        )


def test_strict_events_keeps_the_refusals() -> None:
    pipeline = Pipeline(strict_events=True)
    refused = pipeline.ingest_lines(lines_of(
        {"event_type": "run_start", "run_id": "r", "timestamp": "2026-01-21T19:32:13"},
        {"event_type": "run_start", "run_id": "r"},
        {"event_type": "run_start", "timestamp": 1},
    ), "jsonl")  # fmt: skip
    assert [r.reason for _, r in refused] == ["invalid_timestamp", "missing_field", "missing_field"]
    assert pipeline.state.runs == {}


def test_a_missing_run_id_takes_the_pid_files_live_run(tmp_path) -> None:
    from exporter.core.state import ProcessObservation

    pipeline = Pipeline()
    pipeline.observe_process(ProcessObservation("from_pid", True, 1.0, time.time()))
    pipeline.ingest_lines(lines_of({"event_type": "progress", "stage": "s", "progress_pct": 1,
                                    "timestamp": time.time()}), "jsonl")  # fmt: skip
    assert pipeline.state.runs["from_pid"].stage == "s"
    orphan = Pipeline().ingest_lines(lines_of({"event_type": "progress", "stage": "s",
                                               "progress_pct": 1}), "jsonl")  # fmt: skip
    assert [r.reason for _, r in orphan] == ["missing_field"]  # nothing names a run


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2026, 1, 1)))  # the past
def test_a_naive_timestamp_means_the_same_instant_in_utc(moment: datetime) -> None:
    pipeline = Pipeline()
    aware = moment.replace(tzinfo=UTC).isoformat()
    pipeline.ingest_lines(lines_of(
        {"event_type": "run_start", "run_id": "naive", "timestamp": moment.isoformat()},
        {"event_type": "run_start", "run_id": "aware", "timestamp": aware},
    ), "jsonl")  # fmt: skip
    runs = pipeline.state.runs
    assert runs["naive"].start == runs["aware"].start


def test_no_field_the_seed_sends_is_dropped() -> None:
    state = State()
    apply = [
        event("stage_change", new_stage="ranking"),
        event("target_start", target="t1", target_index=0, total_targets=3),
        event("progress", stage="ranking", progress_pct=33, current_target="t1",
              targets_complete=1, targets_total=3, message="Evaluating t1"),
        event("target_complete", target="t1", best_auc=0.7),
        event("stage_change", new_stage="training"),
        event("progress", stage="training", progress_pct=10, targets_complete=0,
              targets_total=2),
        event("target_complete", target="t1", best_auc=0.9),  # same target, next stage
        event("run_complete", status="completed", total_targets=3, successful_targets=2),
    ]  # fmt: skip
    spans: list[FinishedSpan] = []
    for value in apply:
        spans += state.apply(parse_line(orjson.dumps(value)))
    run = state.runs["run_1"]
    assert run.target_best_auc == {("ranking", "t1"): 0.7, ("training", "t1"): 0.9}
    assert (run.stages["ranking"].targets_total, run.stages["ranking"].targets_completed) == (3, 1)
    assert (run.stages["training"].targets_total, run.stages["training"].targets_completed) == (
        2,
        0,
    )
    assert run.targets_successful == 2 and run.targets_total == 3
    ranking = next(s for s in spans if isinstance(s, FinishedSpan) and s.span.name == "ranking")
    assert (
        "progress",
        {"message": "Evaluating t1", "training.progress.ratio": 0.33, "training.target": "t1"},
    ) in [(n, a) for _, n, a in ranking.span.events]


def seed_ranking(stage: str, targets: list[str], ts: float, offset: int = 0) -> list[dict]:
    """Seed 000's ranking loop with target events around each target's work: a progress
    event carrying ``targets_complete`` (``i``, or ``i + offset``) and the target's own
    start and completion, then the stage's closing progress."""
    lines = [event("stage_change", ts=ts, new_stage=stage)]
    for i, target in enumerate(targets):
        lines += [
            event("target_start", ts=ts + 3 * i + 1, target=target, target_index=i,
                  total_targets=len(targets)),
            event("progress", ts=ts + 3 * i + 2, stage=stage, current_target=target,
                  progress_pct=100 * i / len(targets), targets_complete=i + offset,
                  targets_total=len(targets), message=f"Evaluating {target}"),
            event("target_complete", ts=ts + 3 * i + 3, target=target, best_auc=0.7),
        ]  # fmt: skip
    closing = event("progress", ts=ts + 3 * len(targets) + 1, stage=stage, progress_pct=100,
                    targets_total=len(targets), message=f"{stage} complete")  # fmt: skip
    return [*lines, closing]


@pytest.mark.parametrize("offset", [0, 1])  # targets_complete counted before or after
def test_each_target_is_completed_once_in_the_run_targets_completed_gauge(offset: int) -> None:
    pipeline = Pipeline()
    gauge = 'training_run_targets_completed{run_id="run_1"}'
    pipeline.ingest_lines(lines_of(*seed_ranking("ranking", ["t1", "t2"], 1.7e9, offset)),
                          "jsonl")  # fmt: skip
    assert f"{gauge} 2.0" in exposition(pipeline)  # not each target twice
    pipeline.ingest_lines(lines_of(  # the seed's next stage takes the same two targets
        event("progress", ts=1.7e9 + 20, stage="feature_selection", progress_pct=0,
              message="Starting feature selection"),
        *(event(kind, ts=1.7e9 + 21 + i, target=target) for i, target in enumerate(["t1", "t2"])
          for kind in ("target_start", "target_complete")),
    ), "jsonl")  # fmt: skip
    assert f"{gauge} 2.0" in exposition(pipeline)  # still two targets, not four
    pipeline.ingest_lines(lines_of(event("progress", ts=1.7e9 + 30, stage="training",
                                         progress_pct=50, targets_complete=3,
                                         targets_total=3)), "jsonl")  # fmt: skip
    assert f"{gauge} 3.0" in exposition(pipeline)  # a script's own count, when it is higher


def test_the_current_target_is_a_series_while_it_runs() -> None:
    pipeline = Pipeline()
    pipeline.ingest_lines(lines_of(event("target_start", target="t1")), "jsonl")
    assert 'training_run_current_target{run_id="run_1",target="t1"} 1.0' in exposition(pipeline)
    pipeline.ingest_lines(lines_of(event("target_complete", target="t1", ts=1.7e9 + 1)), "jsonl")
    assert "training_run_current_target{" not in exposition(pipeline)


def test_unknown_event_types_are_counted_bounded_and_kept() -> None:
    state = State()
    state.apply(parse_line(orjson.dumps(event("stage_change", new_stage="load"))))
    for index in range(MAX_CUSTOM_EVENT_TYPES + 5):
        state.apply(parse_line(orjson.dumps(event(f"custom_{index}", rows=index, ok=True))))
    counts = state.events_by_type
    assert counts["custom_0"] == 1 and counts[f"custom_{MAX_CUSTOM_EVENT_TYPES - 1}"] == 1
    assert counts["other"] == 5 and f"custom_{MAX_CUSTOM_EVENT_TYPES}" not in counts
    spans = state.apply(parse_line(orjson.dumps(event("run_complete", status="completed"))))
    stage = next(s for s in spans if isinstance(s, FinishedSpan) and s.span.name == "load")
    assert stage.span.events[0][1:] == ("custom_0", {"rows": 0.0, "ok": True})
    assert isinstance(parse_line(orjson.dumps(event("anything"))), CustomEvent)
