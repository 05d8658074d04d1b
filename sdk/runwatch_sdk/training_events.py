"""Seed 000's emitter functions, as a drop-in module: an existing pipeline switches to
runwatch by changing one import. Events go to ``RUNWATCH_EVENTS_FILE`` (default
``training_events.jsonl`` in the local folder, ``$RUNWATCH_LOCAL_DIR``, ``/tmp/runwatch``)
and the PID file to ``RUNWATCH_PID_FILE`` (default ``pids/training.pid`` there): where
``runwatch serve`` looks by default, or point its ``--events`` and ``--pid-file`` at them.
``close_training_events`` without an ``emit_run_complete`` first (the seed's own pattern)
ends the run ``ended``: a clean close, never read as a crash.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runwatch_sdk.monitor import now_iso
from runwatch_sdk.pidfile import remove_pid_file, write_pid_file
from runwatch_sdk.places import local_dir
from runwatch_sdk.transports import FileTransport

_state: dict[str, Any] = {}


def _paths() -> tuple[Path, Path]:
    events = os.environ.get("RUNWATCH_EVENTS_FILE") or local_dir() / "training_events.jsonl"
    pid = os.environ.get("RUNWATCH_PID_FILE") or local_dir() / "pids" / "training.pid"
    return Path(events), Path(pid)


def init_training_events(run_id: str) -> None:
    """Start emitting for ``run_id`` and write the PID file."""
    events, pid = _paths()
    write_pid_file(pid, run_id)
    _state.update(run_id=run_id, transport=FileTransport(events), pid_file=pid, ended=False)


def _emit(event_type: str, **fields: Any) -> None:
    transport = _state.get("transport")
    if transport is None:
        return  # not initialised: emitting is a no-op, never an error
    event = {"event_type": event_type, "run_id": _state["run_id"], "timestamp": now_iso()}
    event.update({key: value for key, value in fields.items() if value is not None})
    transport.send(event)


def emit_progress(
    stage: str,
    progress_pct: float,
    current_target: str | None = None,
    targets_complete: int | None = None,
    targets_total: int | None = None,
    message: str | None = None,
) -> None:
    _emit(
        "progress",
        stage=stage,
        progress_pct=progress_pct,
        current_target=current_target,
        targets_complete=targets_complete,
        targets_total=targets_total,
        message=message,
    )


def emit_stage_change(previous_stage: str, new_stage: str) -> None:
    _emit("stage_change", previous_stage=previous_stage, new_stage=new_stage)


def emit_target_start(
    target: str, target_index: int | None = None, total_targets: int | None = None
) -> None:
    _emit("target_start", target=target, target_index=target_index, total_targets=total_targets)


def emit_target_complete(
    target: str,
    status: str = "success",
    best_auc: float | None = None,
    duration_seconds: float | None = None,
) -> None:
    _emit(
        "target_complete",
        target=target,
        status=status,
        best_auc=best_auc,
        duration_seconds=duration_seconds,
    )


def emit_run_complete(
    status: str = "completed",
    total_targets: int | None = None,
    successful_targets: int | None = None,
    duration_seconds: float | None = None,
) -> None:
    _state["ended"] = True
    _emit(
        "run_complete",
        status=status,
        total_targets=total_targets,
        successful_targets=successful_targets,
        duration_seconds=duration_seconds,
    )


def emit_error(
    error_message: str,
    error_type: str = "Error",
    recoverable: bool = True,
    target: str | None = None,
) -> None:
    _emit(
        "error",
        error_message=error_message,
        error_type=error_type,
        recoverable=recoverable,
        target=target,
    )


def close_training_events() -> None:
    """Stop emitting and remove the PID file: a clean end, not a crash (``ended`` unless
    ``emit_run_complete`` said how the run went)."""
    if _state.get("transport") is not None and not _state.get("ended"):
        _emit("run_complete", status="ended")
    transport = _state.pop("transport", None)
    if transport is not None:
        transport.close()
    pid_file = _state.pop("pid_file", None)
    if pid_file is not None:
        remove_pid_file(pid_file)
