"""Finished runs kept for ``--finished-run-retention`` and then forgotten, on a clock of
their own: a run that ended keeps its series (and a failed or crashed run its alert) for
the retention whether or not any event arrives meanwhile."""

from __future__ import annotations

import time

from exporter.pipeline import Pipeline
from exporter.sources.worker import Worker

SWEEPS_PER_RETENTION = 20  # a run is forgotten within 5% of its retention after it is due
MAX_SWEEP_SECONDS = 10.0


class RetentionSweeper(Worker):
    """Calls ``Pipeline.expire_runs`` every retention / 20 seconds (10 s at most)."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__("retention", join_timeout=1.0)
        self._pipeline = pipeline
        retention = pipeline.state.limits.finished_run_retention
        self.interval = min(MAX_SWEEP_SECONDS, retention / SWEEPS_PER_RETENTION)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._pipeline.expire_runs(time.time())
