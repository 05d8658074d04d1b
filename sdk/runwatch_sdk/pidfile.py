"""The PID file a training process writes for runwatch (seed 000's format): it tells
runwatch which process is the run, so the run's CPU, memory and GPU series are attributed
to it and a process that dies without a word (``kill -9``, OOM) reads as ``crashed``.
Removed on a clean end: runwatch reads a PID file that goes away while its process lives
as the run having ended, not crashed."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_PID_DIR = "/tmp/runwatch/pids"


def run_process() -> int:
    """The pid whose process tree is the run: under ``torchrun`` its elastic agent (the
    parent of every rank, so all ranks' GPUs count), else this process."""
    parent = os.getppid()
    if os.environ.get("TORCHELASTIC_RUN_ID") and parent > 1:
        return parent
    return os.getpid()


def write_pid_file(path: Path, run_id: str) -> bool:
    """Write the PID file atomically (renamed into place: never read half-written); False
    when it cannot be written (telemetry must not fail the training). ``started_at`` is
    ISO 8601 in UTC with its offset, as seed 000 writes it, so any reader of the seed's
    format (not runwatch alone) can parse it."""
    started_at = datetime.now(UTC).isoformat()
    record = {"pid": run_process(), "run_id": run_id, "started_at": started_at}
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text(json.dumps(record))
        staged.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            staged.unlink()
        return False
    return True


def remove_pid_file(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
