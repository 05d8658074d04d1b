"""What changed in the runs since a connection last looked, as the training-dashboard
format's WebSocket messages: ``status_change``, ``checkpoint_saved`` and a line of the
event log (``event``) for each. A connection compares snapshots on its own clock rather
than being handed every event, so ingestion does no work for it and a slow client costs
only itself (``exporter.app.live``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.app.metric_history import json_number
from exporter.core.metric_window import NO_STEP, WindowRows
from exporter.core.state import Run

INFO, WARN, ERROR = "info", "warn", "error"
_LEVEL_OF_STATUS = {"failed": ERROR, "crashed": ERROR, "interrupted": WARN}


@dataclass(slots=True)
class _Seen:
    name: str | None
    status: str
    stage: str | None
    errors: int
    checkpoints: dict[str, tuple[float, bool]]  # id -> (saved at, is best)


class RunChanges:
    """The runs as last seen by one connection; :meth:`since` returns the messages that
    bring it up to a newer snapshot."""

    def __init__(self, runs: Mapping[str, Run]) -> None:
        self._seen = {run_id: _seen(run) for run_id, run in runs.items()}

    def since(self, runs: Mapping[str, Run], wanted: set[str], everything: bool
              ) -> list[dict[str, Any]]:  # fmt: skip
        """Messages for the runs in ``wanted`` (every run when ``everything``); all runs
        are remembered either way, so subscribing later does not replay the past."""
        messages: list[dict[str, Any]] = []
        seen = self._seen
        for run_id, run in runs.items():
            before = seen.get(run_id)
            now = _seen(run)
            seen[run_id] = now
            if before is not None and before == now:
                continue
            if everything or run_id in wanted:
                messages += _changes(run, before, now)
        for run_id in seen.keys() - runs.keys():
            del seen[run_id]
        return messages


def metric_updates(run_id: str, rows: WindowRows) -> list[dict[str, Any]]:
    """One ``metric_update`` per row: the step, its time, its sequence number in the
    window (``since`` to subscribe from) and the keys it logged."""
    keys = list(rows.columns)
    return [
        {"type": "metric_update", "run_id": run_id, "seq": rows.seq[i],
         "step": None if rows.steps[i] == NO_STEP else rows.steps[i],
         "timestamp": rows.times[i],
         "metrics": {key: json_number(v) for key in keys
                     if (v := rows.value(key, i)) is not None}}
        for i in range(len(rows))
    ]  # fmt: skip


def _seen(run: Run) -> _Seen:
    checkpoints = {cid: (c.timestamp, c.is_best) for cid, c in run.checkpoints.items()}
    return _Seen(run.name, run.status, run.stage, sum(run.errors.values()), checkpoints)


def _changes(run: Run, before: _Seen | None, now: _Seen) -> list[dict[str, Any]]:
    run_id, at = run.run_id, run.last_event
    out: list[dict[str, Any]] = []

    def event(level: str, message: str) -> None:
        out.append({"type": "event", "run_id": run_id, "timestamp": at, "level": level,
                    "message": message})  # fmt: skip

    old_status = before.status if before is not None else None
    if before is None:
        event(INFO, f"run started: {run.name or run_id}")
    elif now.name != before.name:  # a run first seen by its PID file learns its name
        event(INFO, f"run named: {now.name}")
    if old_status != now.status:
        out.append({"type": "status_change", "run_id": run_id, "old_status": old_status,
                    "new_status": now.status, "timestamp": at})  # fmt: skip
        if before is not None:
            event(_LEVEL_OF_STATUS.get(now.status, INFO), f"{old_status} -> {now.status}")
    if now.stage is not None and (before is None or now.stage != before.stage):
        event(INFO, f"stage {now.stage}")
    if now.errors > (before.errors if before is not None else 0) and run.last_error:
        new = now.errors - (before.errors if before is not None else 0)
        last = run.last_error
        more = f" ({new} new errors, the last:)" if new > 1 else ""
        event(WARN if last.recoverable else ERROR,
              f"error{more} {last.error_type}: {last.message}")  # fmt: skip
    old_checkpoints = before.checkpoints if before is not None else {}
    for checkpoint_id, state in now.checkpoints.items():
        if old_checkpoints.get(checkpoint_id) == state:
            continue
        checkpoint = run.checkpoints[checkpoint_id]
        metrics = {key: json_number(value) for key, value in checkpoint.metrics.items()}
        out.append({"type": "checkpoint_saved", "run_id": run_id,
                    "checkpoint_id": checkpoint_id, "step": checkpoint.step,
                    "is_best": checkpoint.is_best, "timestamp": checkpoint.timestamp,
                    "metrics": metrics})  # fmt: skip
        star = " (best)" if checkpoint.is_best else ""
        event(INFO, f"checkpoint {checkpoint_id} at step {checkpoint.step}{star}")
    return out
