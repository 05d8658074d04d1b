"""Each event as a line of the event log: a severity and one readable line.

Pure, like the reducer that calls it. The line is what the training terminal's event stream and
the training-events module's dashboard show: the event's own ``message`` where it has one, else a
one-line summary (``target fold_3 complete status=success auc=0.81``), behind the
stage tag of the training-events format (``[TRN]``). Severity: ERROR for errors that stop a run and
for failed and crashed runs, WARN for recoverable errors, INFO otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from exporter.core.events import (
    CheckpointSaved,
    CustomEvent,
    Error,
    Event,
    MetricUpdate,
    Phase,
    Progress,
    RunComplete,
    RunStart,
    StageChange,
    StatusChange,
    TargetComplete,
    TargetStart,
)

INFO, WARN, ERROR = "INFO", "WARN", "ERROR"
FAILED_STATUSES = frozenset({"failed", "crashed"})
STAGE_TAGS = {
    "ranking": "TR",
    "feature_selection": "FS",
    "training": "TRN",
    "initializing": "INIT",
    "completed": "DONE",
}
"""The training-events format's tags; any other stage is tagged with its name in capitals."""
MAX_VALUES_SHOWN = 8
"""Metric values written out in one line; more are counted (``+3 more``)."""
MAX_LINE_CHARS = 2048


def stage_tag(stage: str | None) -> str:
    if not stage:
        return ""
    return f"[{STAGE_TAGS.get(stage, stage.upper()[:16])}] "


def line(event: Event, stage: str | None) -> tuple[str, str]:
    """The severity and text of ``event``, tagged with ``stage`` (the run's, as of it)."""
    severity, text = _DESCRIBE[event.__class__](event)
    return severity, (stage_tag(stage) + text)[:MAX_LINE_CHARS]


def finish_line(status: str, stage: str | None, reason: str | None) -> tuple[str, str]:
    """A run that ended without an event saying so (its process gone, its PID file removed)."""
    text = f"run {status}" + (f": {reason}" if reason else "")
    return (ERROR if status in FAILED_STATUSES else INFO), stage_tag(stage) + text


def _values(values: Mapping[str, float]) -> str:
    shown = [f"{key}={_number(value)}" for key, value in list(values.items())[:MAX_VALUES_SHOWN]]
    more = len(values) - MAX_VALUES_SHOWN
    return " ".join(shown + ([f"+{more} more"] if more > 0 else []))


def _number(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def _run_start(event: RunStart) -> tuple[str, str]:
    return INFO, f"run started name={event.name or event.run_id}"


def _progress(event: Progress) -> tuple[str, str]:
    if event.message:
        return INFO, event.message
    text = f"progress {event.progress_pct:.0f}%"
    if event.current_target:
        text += f" target={event.current_target}"
    if event.targets_complete is not None and event.targets_total is not None:
        text += f" {event.targets_complete}/{event.targets_total}"
    return INFO, text


def _stage_change(event: StageChange) -> tuple[str, str]:
    entered = event.new_stage or event.stage
    left = f"{event.previous_stage} -> " if event.previous_stage else ""
    return INFO, f"stage {left}{entered}"


def _target_start(event: TargetStart) -> tuple[str, str]:
    where = ""
    if event.target_index is not None and event.total_targets is not None:
        where = f" ({event.target_index}/{event.total_targets})"
    return INFO, f"target {event.target} start{where}"


def _target_complete(event: TargetComplete) -> tuple[str, str]:
    status = event.status or "success"
    text = f"target {event.target} complete status={status}"
    if event.best_auc is not None:
        text += f" auc={_number(event.best_auc)}"
    if event.duration_seconds is not None:
        text += f" in {event.duration_seconds:.1f}s"
    return (WARN if status.lower() in ("failed", "failure", "error") else INFO), text


def _run_complete(event: RunComplete) -> tuple[str, str]:
    text = f"run complete status={event.status}"
    if event.successful_targets is not None and event.total_targets is not None:
        text += f" targets={event.successful_targets}/{event.total_targets}"
    if event.duration_seconds is not None:
        text += f" in {event.duration_seconds:.0f}s"
    return (ERROR if event.status in FAILED_STATUSES else INFO), text


def _error(event: Error) -> tuple[str, str]:
    text = f"{event.error_type or 'error'}: {event.error_message}"
    if event.target:
        text += f" (target {event.target})"
    return (WARN, text + " [recoverable]") if event.recoverable else (ERROR, text)


def _metric_update(event: MetricUpdate) -> tuple[str, str]:
    step = f"step {event.step} " if event.step is not None else ""
    return INFO, step + _values(event.metrics)


def _phase(event: Phase) -> tuple[str, str]:
    spent = " ".join(f"{name}={seconds:.3g}s" for name, seconds in event.phase_seconds.items())
    return INFO, f"phase {spent}".rstrip()


def _checkpoint_saved(event: CheckpointSaved) -> tuple[str, str]:
    text = f"checkpoint {event.checkpoint_id} saved"
    if event.step is not None:
        text += f" step={event.step}"
    if event.duration_seconds is not None:
        text += f" in {event.duration_seconds:.3g}s"
    if event.is_best:
        text += " best"
    if event.metrics:
        text += " " + _values(event.metrics)
    return INFO, text


def _status_change(event: StatusChange) -> tuple[str, str]:
    severity = ERROR if event.new_status in FAILED_STATUSES else INFO
    left = f"{event.old_status} -> " if event.old_status else ""
    return severity, f"status {left}{event.new_status}"


def _custom(event: CustomEvent) -> tuple[str, str]:
    return INFO, f"{event.type_name} {_fields(event.fields)}".rstrip()


_DESCRIBE: dict[type[Event], Callable[[Any], tuple[str, str]]] = {
    RunStart: _run_start,
    Progress: _progress,
    StageChange: _stage_change,
    TargetStart: _target_start,
    TargetComplete: _target_complete,
    RunComplete: _run_complete,
    Error: _error,
    MetricUpdate: _metric_update,
    Phase: _phase,
    CheckpointSaved: _checkpoint_saved,
    StatusChange: _status_change,
    CustomEvent: _custom,
}


def bus_line(event_type: str, data: Mapping[str, Any]) -> tuple[str, str]:
    """A trading bridge's /ws/events message: its ``message`` where it has one, else its
    scalar fields; ERROR or WARN when its type says so."""
    upper = event_type.upper()
    severity = ERROR if "ERROR" in upper or "FAIL" in upper else (
        WARN if "WARN" in upper or "HALT" in upper or "REJECT" in upper else INFO)  # fmt: skip
    return severity, f"{event_type} {_fields(data)}".rstrip()[:MAX_LINE_CHARS]


def router_line(name: str, category: str, event: Mapping[str, Any]) -> tuple[str, str]:
    """An event router's event: ``[category] TYPE`` and its message or fields."""
    upper = name.upper()
    severity = ERROR if "ERROR" in upper or "FAIL" in upper else (
        WARN if "WARN" in upper or "REGRESSION" in upper else INFO)  # fmt: skip
    return severity, f"[{category}] {name} {_fields(event)}".rstrip()[:MAX_LINE_CHARS]


def _fields(data: Mapping[str, Any]) -> str:
    """``message`` where there is one, else up to MAX_VALUES_SHOWN scalar fields."""
    message = data.get("message")
    if isinstance(message, str) and message:
        return message
    scalars = [(k, v) for k, v in data.items()
               if isinstance(v, str | int | float | bool) and k != "timestamp"]  # fmt: skip
    return " ".join(f"{k}={_number(v) if isinstance(v, float) else v}"
                    for k, v in scalars[:MAX_VALUES_SHOWN])  # fmt: skip
