"""Hostile input, in-process: a worker whose run raises is started again, a big batch is
applied in slices of the pipeline lock and steps aside for a scrape without starving, a
scrape renders outside the lock, and text that cannot be encoded costs only its samples.
The same, tried on a real ``runwatch serve``, is in tests/e2e/test_hostile.py."""

from __future__ import annotations

import threading

import orjson

from tests.pipelines import poisoned_pipeline
from tests.support import event, wait_for


def test_a_worker_whose_run_raises_is_started_again_and_says_so(monkeypatch) -> None:
    from exporter.sources import worker

    monkeypatch.setattr(worker, "RESTART_SECONDS", 0.01)
    crashed: list[int] = []

    class Flaky(worker.Worker):
        runs = 0

        def _run(self) -> None:
            self.runs += 1
            if self.runs < 3:
                raise RuntimeError("bug")
            self._stop.wait()

        def _crashed(self) -> None:
            crashed.append(self.runs)

    flaky = Flaky("flaky", join_timeout=5)
    flaky.start()
    wait_for(lambda: flaky.runs == 3, what="the third start")
    flaky.stop()
    assert crashed == [1, 2] and flaky.restarts == 2


def test_a_batch_is_applied_in_slices_of_the_lock() -> None:
    from exporter.pipeline import Pipeline
    from exporter.pipeline.priority import APPLY_SLICE

    pipeline = Pipeline()
    holds: list[int] = []

    class CountingLock:
        def __init__(self) -> None:
            self._lock = threading.Lock()

        def __enter__(self) -> None:
            self._lock.acquire()
            holds.append(0)

        def __exit__(self, *exc: object) -> None:
            self._lock.release()

    pipeline._lock = CountingLock()  # type: ignore[assignment]
    lines = [orjson.dumps(event("progress", stage="s", progress_pct=i % 100)) for i in range(2000)]
    pipeline.ingest_lines(lines, "jsonl")
    assert len(holds) == 2000 // APPLY_SLICE


def test_a_scrape_renders_outside_the_pipeline_lock() -> None:
    from exporter.pipeline import Pipeline
    from exporter.telemetry.exposition import Exposition
    from exporter.telemetry.metric import Metric, Type

    pipeline = Pipeline()
    pipeline.ingest_lines([orjson.dumps(event("run_start"))], "jsonl")
    free_while_rendering: list[bool] = []

    def sample(view):  # type: ignore[no-untyped-def]
        free = pipeline._lock.acquire(blocking=False)
        if free:
            pipeline._lock.release()
        free_while_rendering.append(free)
        return [((run_id,), 1.0) for run_id in view.state.runs]

    probe = Metric("probe", "probe", "", Type.GAUGE, ("run_id",), "probe", sample)
    exposition = Exposition(pipeline)
    exposition._metrics = (probe,)  # the probe alone
    assert (
        exposition.render()[0]
        == b'# HELP probe probe\n# TYPE probe gauge\nprobe{run_id="run_1"} 1.0\n'
    )
    assert free_while_rendering == [True]


def test_text_utf8_cannot_encode_that_reached_the_state_costs_its_samples_only(caplog) -> None:
    """Were such text to get past validation (a source with a bug), the render still
    isolates it: its samples and its run's /api/runs entry are left out and counted."""
    from exporter.app.run_api import runs_document
    from exporter.telemetry.exposition import Exposition

    pipeline = poisoned_pipeline()
    run = pipeline.state.runs["run_1"]
    run.step, run.metrics["x\ud800"] = 3, 1.0
    text = Exposition(pipeline).render()[0].decode()
    assert 'training_metric{key="loss",run_id="run_1"} 0.5' in text
    assert 'key="x' not in text and pipeline.stats.render_errors["training_metric"] == 1
    document = orjson.loads(runs_document(pipeline.state.runs.values(), pipeline.stats))
    assert [r["run_id"] for r in document] == ["run_2"]
    assert pipeline.stats.render_errors["api_runs"] == 1


def test_ingestion_steps_aside_for_a_scrape_but_is_never_starved() -> None:
    from exporter.pipeline import Pipeline
    from exporter.pipeline.priority import APPLY_SLICE

    pipeline = Pipeline()
    lines = [orjson.dumps(event("progress", stage="s", progress_pct=1))] * (3 * APPLY_SLICE)
    with pipeline.rendering():  # a scrape that never ends
        pipeline.ingest_lines(lines, "jsonl")
    assert pipeline.state.events_by_type["progress"] == 3 * APPLY_SLICE
