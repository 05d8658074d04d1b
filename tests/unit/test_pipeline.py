"""The pipeline: batches, refusals as data, and outputs that fail."""

from __future__ import annotations

import orjson

from exporter.pipeline import Pipeline
from tests.conftest import event


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
