"""In-process pipeline helpers shared by tests of several files and layers: a pipeline's
exposition as a scrape renders it, a sink keeping its outputs, the router's log lines, and
a pipeline holding a value that cannot be rendered."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from tests.support import T0, event

if TYPE_CHECKING:
    from exporter.core.outputs import LogLine
    from exporter.pipeline import Pipeline


def exposition(pipeline: Pipeline) -> str:
    from exporter.telemetry.exposition import Exposition

    return Exposition(pipeline).render()[0].decode()


class Capture:
    """An output sink keeping what it is handed."""

    def __init__(self) -> None:
        self.outputs: list = []

    def handle(self, outputs: list, emit_spans: bool) -> None:
        self.outputs.extend(outputs)


def router_lines(events: list[dict]) -> list[LogLine]:
    """The log lines the built-in router mapping makes of ``events``, read at T0."""
    from exporter.core.outputs import LogLine
    from exporter.core.router.reducer import RouterState
    from exporter.sources.files.router_mapping import load_mapping

    router = RouterState(load_mapping(None), logging=True)
    return [o for value in events for o in router.apply(value, T0) if isinstance(o, LogLine)]


def poisoned_pipeline() -> Pipeline:
    """Two runs, run_1's step past a float: what once broke every scrape."""
    from exporter.pipeline import Pipeline

    pipeline = Pipeline()
    lines = [orjson.dumps(event("metric_update", metrics={"loss": 0.5}, step=3))]
    lines.append(orjson.dumps(event("metric_update", run_id="run_2", metrics={}, step=4)))
    assert pipeline.ingest_lines(lines, "jsonl") == []
    pipeline.state.runs["run_1"].step = 10**400  # past a float: what once broke every scrape
    return pipeline
