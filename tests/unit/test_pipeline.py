"""The pipeline: batches, refusals as data, and outputs that fail."""

from __future__ import annotations

import orjson

from exporter.pipeline import Pipeline
from tests.support import event


class Exploding:
    def __init__(self) -> None:
        self.calls = 0

    def handle(self, outputs, emit_spans) -> None:
        self.calls += 1
        raise RuntimeError("an output bug")


def test_a_failing_output_does_not_stop_ingestion(caplog) -> None:
    pipeline = Pipeline()
    sink = Exploding()
    pipeline.add_sink(sink)
    lines = [orjson.dumps(event("stage_change", ts=1 + i, new_stage=f"s{i}")) for i in range(3)]
    assert pipeline.ingest_lines(lines, "jsonl") == []
    assert pipeline.state.runs["run_1"].stage == "s2"
    assert sink.calls == 2  # leaving s0 and s1 ended their spans
    assert len(caplog.records) == 1  # logged once, not per event


def test_batches_report_each_refused_line_by_index() -> None:
    pipeline = Pipeline(max_line_bytes=200)
    lines = [
        orjson.dumps(event("progress", ts=1000, stage="s", progress_pct=1)),
        b"",
        b"{oops",
        b"x" * 300,
        orjson.dumps(event("progress", ts=1100, stage="s", progress_pct=2)),
        orjson.dumps(event("progress", ts=1050, stage="s", progress_pct=3)),  # out of order
        orjson.dumps(event("progress", ts=900, stage="s", progress_pct=4)),  # before the start
    ]
    refused = pipeline.ingest_lines(lines, "jsonl")
    assert [(i, r.reason) for i, r in refused] == [
        (2, "invalid_json"),
        (3, "line_too_long"),
        (5, "out_of_order"),
        (6, "before_run_start"),
    ]
    assert pipeline.stats.ingested["jsonl"] == 2
    assert pipeline.stats.rejected[("jsonl", "out_of_order")] == 1


class Clock:
    """time.time and time.monotonic of the pipeline, moved by hand."""

    def __init__(self, monkeypatch, now: float) -> None:
        self.now = now
        monkeypatch.setattr("exporter.pipeline.completion.time.time", lambda: self.now)
        monkeypatch.setattr("exporter.pipeline.completion.time.monotonic", lambda: self.now)


def untimed(event_type: str, **fields) -> bytes:
    return orjson.dumps({"event_type": event_type, "run_id": "run_1", **fields})


def test_a_live_run_without_timestamps_moves_its_clock_on(monkeypatch) -> None:
    """A run logging every 6 s is not a file read late: each event is taken at its reading."""
    clock = Clock(monkeypatch, 1_750_000_000.0)
    pipeline = Pipeline()
    for step in range(4):
        line = untimed("metric_update", step=step, metrics={})
        assert pipeline.ingest_lines([line], "http") == []
        clock.now += 6
    run = pipeline.state.runs["run_1"]
    assert run.last_event - run.start == 18
    assert pipeline.stats.lenient[("http", "missing_timestamp")] == 4


def test_a_backlog_without_timestamps_keeps_the_runs_last_time(monkeypatch) -> None:
    """Lines of a run read together long after its last dated event stay in order."""
    clock = Clock(monkeypatch, 1_750_000_000.0)
    pipeline = Pipeline()
    dated = orjson.dumps(event("stage_change", ts=clock.now - 3600, new_stage="s0"))
    backlog = [dated, *(untimed("stage_change", new_stage=f"s{i}") for i in range(1, 4))]
    assert pipeline.ingest_lines(backlog, "jsonl") == []
    run = pipeline.state.runs["run_1"]
    assert run.stage == "s3" and run.last_event == clock.now - 3600


def test_an_event_dated_ahead_of_the_clock_is_refused_and_locks_nothing(monkeypatch) -> None:
    clock = Clock(monkeypatch, 1_750_000_000.0)
    pipeline = Pipeline()
    lines = [orjson.dumps(event("metric_update", ts=ts, metrics={"loss": 1.0}))
             for ts in (clock.now - 10, 9_999_999_999.0, clock.now, clock.now + 30)]  # fmt: skip
    refused = pipeline.ingest_lines(lines, "http")
    assert [(i, r.reason) for i, r in refused] == [(1, "in_the_future")]
    assert pipeline.state.runs["run_1"].last_event == clock.now + 30  # within --max-time-ahead
    assert pipeline.stats.rejected[("http", "in_the_future")] == 1


def test_a_run_that_ends_before_it_started_lasts_zero_not_less(monkeypatch) -> None:
    Clock(monkeypatch, 1_750_000_000.0)
    pipeline = Pipeline()
    lines = [
        orjson.dumps(event("run_start", ts=1_749_999_990.0)),
        orjson.dumps(event("run_complete", ts=1_749_999_988.0, status="completed")),
    ]
    assert pipeline.ingest_lines(lines, "jsonl") == []  # within the clock skew allowed
    assert pipeline.state.runs["run_1"].duration == 0.0
