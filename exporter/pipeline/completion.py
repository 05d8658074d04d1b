"""What the event format lets a writer leave out, completed (or refused under
``--strict-events``) and counted: a missing run id, a missing timestamp, a naive one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

from exporter.core.events import Event, Parsed, Rejected, naive_seconds
from exporter.core.state import State
from exporter.pipeline.self_stats import Stats

BACKLOG_SECONDS = 1.0
"""A source that applied an event of a run this recently (wall clock) is reading a backlog
of it: an event of that run without a timestamp takes the run's latest time, not now."""


class Completion:
    """The leniencies, with what they need to remember: each source's latest run and the
    PID files' live runs. Called under the pipeline lock only."""

    def __init__(self, state: State, stats: Stats, strict: bool) -> None:
        self.state = state
        self.stats = stats
        self.strict = strict  # refuse what LENIENCIES would complete
        self._latest_run: dict[str, tuple[str, float]] = {}  # by source: the run of its
        # latest event, and when (monotonic) that slice was applied
        self._pid_runs: dict[str, bool] = {}  # run id -> alive, from the PID files

    def complete(self, event: Event, source: str, items: Sequence[Parsed], before: range) -> None:
        """Apply the LENIENCIES an event needs, counting each; raises Rejected when
        ``strict`` is set or no run can be named. ``before``: the items of this slice
        before the event (earlier slices are in ``_latest_run``)."""
        if event.run_id is None:
            if self.strict:
                raise Rejected("missing_field", "run_id (--strict-events)")
            run_id = self._live_pid_run() or latest_run_id(items, before)
            run_id = run_id or self._latest_run.get(source, (None,))[0]
            if run_id is None:
                raise Rejected(
                    "missing_field", "run_id, and no PID file or earlier event names one"
                )
            event.run_id = run_id
            self._count(source, "missing_run_id")
        if event.timestamp is None:
            if self.strict:
                raise Rejected("missing_field", "timestamp (--strict-events)")
            now = time.time()
            run = self.state.runs.get(event.run_id)
            skew = self.state.limits.max_clock_skew_seconds
            # The time of reading, unless that would put the event out of order with its
            # neighbours: in a backlog (a file read long after it was written), or when the
            # writer's clock is ahead of ours. A live run that logs every few seconds is
            # neither, and its clock moves on.
            if run is not None and (
                run.last_event - now > skew
                or (
                    now - run.last_event > skew and self._backlog(source, run.run_id, items, before)
                )
            ):
                event.timestamp = run.last_event
            else:
                event.timestamp = now
            self._count(source, "missing_timestamp")
        elif isinstance(event.timestamp, datetime):
            if self.strict:
                raise Rejected("invalid_timestamp", "no UTC offset (--strict-events)")
            event.timestamp = naive_seconds(event.timestamp)
            self._count(source, "naive_timestamp")

    def applied(self, source: str, items: Sequence[Parsed], indices: range) -> None:
        """A slice of ``source`` was applied: remember the last run it named."""
        latest = latest_run_id(items, indices)
        if latest is not None:
            self._latest_run[source] = (latest, time.monotonic())

    def process_seen(self, run_id: str, alive: bool) -> None:
        """A PID file's process, alive or not (the oldest forgotten past max_runs)."""
        self._pid_runs[run_id] = alive
        if len(self._pid_runs) > self.state.limits.max_runs:
            del self._pid_runs[next(iter(self._pid_runs))]

    def _backlog(self, source: str, run_id: str, items: Sequence[Parsed], before: range) -> bool:
        """Whether ``source`` is reading a backlog of ``run_id``: an earlier event of this
        slice, or a slice applied within BACKLOG_SECONDS, was the run's."""
        if latest_run_id(items, before) == run_id:
            return True
        latest, at = self._latest_run.get(source, (None, 0.0))
        return latest == run_id and time.monotonic() - at < BACKLOG_SECONDS

    def _live_pid_run(self) -> str | None:
        """The run of the one live PID-file process, if exactly one is alive."""
        live = [run_id for run_id, alive in self._pid_runs.items() if alive]
        return live[0] if len(live) == 1 else None

    def _count(self, source: str, leniency: str) -> None:
        self.stats.count(self.stats.lenient, (source, leniency))


def latest_run_id(items: Sequence[Parsed], indices: range) -> str | None:
    """The run id of the last event among ``items[indices]`` that names one."""
    for index in reversed(indices):
        item = items[index]
        if isinstance(item, Event) and item.run_id is not None:
            return item.run_id
    return None
