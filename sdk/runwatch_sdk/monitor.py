"""``TrainingMonitor``: seed 002's API, emitting runwatch's event format.

    from runwatch_sdk import TrainingMonitor

    with TrainingMonitor(run_name="resnet50", config={"lr": 3e-4}) as monitor:
        monitor.stage("training")
        for step in range(steps):
            monitor.log_metrics({"loss": loss, "learning_rate": lr}, step=step)
        best = monitor.save_checkpoint("ckpt.pt", metrics={"loss": loss})
        monitor.mark_best_checkpoint(best)

Where the events go: ``transport=``, else ``dashboard_url=`` (``http(s)://`` runwatch, or
the seed's ``ws(s)://host:port``, sent to the same host and port over HTTP), else
``RUNWATCH_URL``, else the file ``RUNWATCH_EVENTS_FILE`` (default ``events.jsonl`` in the
local folder, ``RUNWATCH_LOCAL_DIR``, ``/tmp/runwatch``, which ``runwatch serve`` follows
by default: see :mod:`runwatch_sdk.places`); the first monitor of a process says where
on stderr (``RUNWATCH_QUIET=1`` silences it). Each run writes a PID file
(``$RUNWATCH_PID_DIR/<run_id>.pid``, default ``pids/`` in the local folder) so runwatch
attributes its CPU, memory and GPU use and sees a ``kill -9`` as a crash.

The run ends once: ``completed`` on leaving the ``with`` block, ``failed`` with the
exception as an error event, ``interrupted`` on Ctrl-C; a run left open ends when the
process exits (``failed`` on an uncaught exception, else ``ended``) or when a monitor of
the same name replaces it in the same process (``interrupted``: a re-run notebook cell).
On ranks other than zero of a distributed job (``RANK``) a monitor reports nothing.
Standard library only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from runwatch_sdk import checkpoints
from runwatch_sdk.phases import Phase, PhaseClock
from runwatch_sdk.pidfile import remove_pid_file, write_pid_file
from runwatch_sdk.places import events_file, local_dir, pid_dir
from runwatch_sdk.transports import FileTransport, HttpTransport, Transport
from runwatch_sdk.values import count, scalar, scalars

RUN_MARKER = ".runwatch-run.json"  # in the checkpoint directory: the run to resume
MAX_REMEMBERED_CHECKPOINTS = 50  # runwatch's default --max-checkpoints-per-run

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def transport_for(dashboard_url: str | None = None) -> Transport:
    """The transport a monitor uses when none is given (see the module docstring)."""
    url = dashboard_url or os.environ.get("RUNWATCH_URL")
    if not url:
        return FileTransport(events_file())
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):  # the seed's dashboard URL: runwatch on that host:port
        return HttpTransport(f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}")
    if parts.scheme in ("http", "https"):
        return HttpTransport(url)
    raise ValueError(f"dashboard_url {url!r}: give an http(s):// or ws(s):// URL")


def destination(transport: Transport) -> str:
    """Where a transport's events go, in words."""
    if isinstance(transport, FileTransport):
        path = Path(transport.path)
        if path.parent == local_dir() and path.suffix == ".jsonl":
            return f"{path} (runwatch serve follows it by default)"
        return f"{path} (give runwatch serve --events {path})"
    if isinstance(transport, HttpTransport):
        return f"{transport.url} (spooled to {transport.spool_path} while it is away)"
    return type(transport).__name__


_said_where: list[bool] = []


def _say_where(transport: Transport) -> None:
    """Once per process, on stderr: where the events go (RUNWATCH_QUIET=1: not)."""
    if not _said_where and os.environ.get("RUNWATCH_QUIET", "") in ("", "0"):
        _said_where.append(True)
        print(f"runwatch: events go to {destination(transport)}", file=sys.stderr)


def distributed_rank() -> int:
    """This process's rank in a distributed job (``RANK``, set by torchrun, Lightning and
    accelerate; ``SLURM_PROCID`` under srun), 0 outside one."""
    for name in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


class TrainingMonitor:
    """One training run's events; every method returns at once and never raises on I/O."""

    def __init__(
        self,
        run_name: str,
        config: dict[str, Any] | None = None,
        dashboard_url: str | None = None,
        *,
        transport: Transport | None = None,
        run_id: str | None = None,
        resumed: bool = False,
        pid_file: str | os.PathLike[str] | bool = True,
        total_steps: int | None = None,
    ) -> None:
        self.run_name = run_name
        self.config = dict(config or {})
        self.run_id = (
            run_id or f"{run_name}_{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:8]}"
        )
        self.rank = distributed_rank()
        self.transport = transport if transport is not None else transport_for(dashboard_url)
        self.is_resumed = resumed
        self.latest_checkpoint: Path | None = None  # newest file, set by resume_or_create
        self._checkpoints: dict[str, dict[str, Any]] = {}
        self._checkpoint_dir: Path | None = None
        self._next_checkpoint = 1
        self._stage: str | None = None
        self._step: int | None = None
        self.values_left_out = 0  # values log_metrics left out: not numbers
        self._left_out: set[str] = set()  # their keys, each warned about once
        self._ended = self.rank != 0  # other ranks report nothing, so they never end a run
        self._pid_file: Path | None = None
        self.phases = PhaseClock()
        if self.rank == 0 and pid_file is not False:
            default = pid_dir() / f"{self.run_id}.pid"
            path = default if pid_file is True else Path(pid_file)
            self._pid_file = path if write_pid_file(path, self.run_id) else None
        if self.rank == 0 and transport is None:
            _say_where(self.transport)
        _replace_open_monitor(self)
        self._emit("run_start", name=run_name, config=self.config, resumed=resumed or None,
                   total_steps=count(total_steps))  # fmt: skip

    @classmethod
    def resume_or_create(
        cls,
        run_name: str,
        checkpoint_dir: str | os.PathLike[str],
        config: dict[str, Any] | None = None,
        dashboard_url: str | None = None,
        *,
        transport: Transport | None = None,
        total_steps: int | None = None,
    ) -> TrainingMonitor:
        """The run recorded in ``checkpoint_dir`` (after a crash: same ``run_id``,
        ``is_resumed`` true, its checkpoints in :meth:`get_last_checkpoint`), or a new run
        recorded there. Checkpoints saved afterwards are recorded there too."""
        directory = Path(checkpoint_dir)
        directory.mkdir(parents=True, exist_ok=True)
        record = _read_marker(directory / RUN_MARKER)
        run_id = record.get("run_id") if isinstance(record.get("run_id"), str) else None
        monitor = cls(run_name, config, dashboard_url, transport=transport, run_id=run_id,
                      resumed=run_id is not None, total_steps=total_steps)  # fmt: skip
        monitor._checkpoint_dir = directory
        for saved in record.get("checkpoints", []) if run_id else []:
            if isinstance(saved, dict) and isinstance(saved.get("checkpoint_id"), str):
                monitor._checkpoints[saved["checkpoint_id"]] = saved
        monitor._next_checkpoint = int(record.get("next_checkpoint", 1)) if run_id else 1
        monitor._write_marker()
        files = [p for p in directory.iterdir() if p.is_file() and p.name != RUN_MARKER]
        monitor.latest_checkpoint = max(files, key=lambda p: p.stat().st_mtime, default=None)
        return monitor

    def get_last_checkpoint(self) -> dict[str, Any] | None:
        """The newest checkpoint this run registered, kept across restarts by
        :meth:`resume_or_create`: its file loaded with torch on the CPU (``model``,
        ``optimizer``, ``step``: what the script saved), with runwatch's record of it
        (``checkpoint_id``, ``filepath``, ``metrics``, ``metadata``, and ``step`` when the
        file has none). Only the record when torch is missing or the file cannot be
        loaded (said in a warning). None before the first checkpoint."""
        kept = [r for r in self._checkpoints.values() if r.get("valid") is not False]
        if not kept:
            return None
        record = dict(kept[-1])
        loaded, problem = checkpoints.load(record["filepath"])
        if loaded is None:
            log.warning("runwatch: checkpoint %s not loaded: %s", record["filepath"], problem)
            return record
        return {**record, **loaded} if isinstance(loaded, dict) else {**record, "model": loaded}

    def validate_checkpoint(
        self,
        filepath: str | os.PathLike[str],
        expected_keys: tuple[str, ...] = checkpoints.EXPECTED_KEYS,
        checkpoint_id: str | None = None,
    ) -> bool:
        """Whether the checkpoint file exists, loads with torch on the CPU and holds
        ``expected_keys``: the training dashboard's check before a checkpoint is trusted.
        The outcome is sent with the checkpoint (``checkpoint_id``, else the one saved at
        ``filepath``, else a new one): runwatch counts invalid ones and alerts on them."""
        problem = checkpoints.problem(filepath, expected_keys)
        path = os.fspath(filepath)
        if checkpoint_id is None:
            known = [c for c, r in self._checkpoints.items() if r["filepath"] == path]
            checkpoint_id = known[-1] if known else self.save_checkpoint(path)
        if checkpoint_id in self._checkpoints:  # one found invalid is never resumed from
            self._checkpoints[checkpoint_id]["valid"] = problem is None
            self._write_marker()
        self._emit("checkpoint_saved", checkpoint_id=checkpoint_id, valid=problem is None,
                   invalid_reason=problem)  # fmt: skip
        if problem is not None:
            log.warning("runwatch: checkpoint %s is not valid: %s", path, problem)
        return problem is None

    # --- seed 002 ---------------------------------------------------------------------

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Numbers (numpy and torch scalars included; NaN and infinities sent as such, for
        runwatch to count) for ``step`` (without one: the step after the last, from 0, as
        W&B counts); other values are left out, each key said once in a warning."""
        given = count(step)
        self._step = given if given is not None else (-1 if self._step is None else self._step) + 1
        numbers = scalars(metrics)
        if len(numbers) != len(metrics):
            self.values_left_out += len(metrics) - len(numbers)
            self._say_left_out(metrics, numbers)
        self._emit("metric_update", step=self._step, metrics=numbers,
                   phase_seconds=self.phases.take())  # fmt: skip

    def phase(self, name: str) -> Phase:
        """``with monitor.phase("data_loading"):`` — time the script spends outside its
        steps' compute, for runwatch's goodput account: ``data_loading``, ``evaluation``,
        ``checkpoint_save``, ``checkpoint_restore``, ``init``, or a name of its own.
        Nested phases count to the innermost. Cheap enough for every step: the seconds
        go with the next ``log_metrics`` (or on their own when a phase of a second or more
        ends, or before any other event)."""
        return Phase(self.phases, name, self.send_phases)

    def send_phases(self) -> None:
        """Send the phase time pending now, in a ``phase`` event."""
        if (spent := self.phases.take()) is not None:
            self._emit("phase", phase_seconds=spent)

    def _say_left_out(self, metrics: dict[str, Any], numbers: dict[str, float]) -> None:
        for key in metrics:
            name = str(key)
            if name not in numbers and name not in self._left_out:
                self._left_out.add(name)
                log.warning("runwatch: %r is not a number (%s): left out of the run's metrics",
                            name, type(metrics[key]).__name__)  # fmt: skip

    def save_checkpoint(
        self,
        filepath: str | os.PathLike[str],
        metrics: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        step: int | None = None,
    ) -> str:
        """Record a saved checkpoint; returns its id (for ``mark_best_checkpoint``)."""
        checkpoint_id = f"ckpt_{self._next_checkpoint:06d}"
        self._next_checkpoint += 1
        record = {
            "checkpoint_id": checkpoint_id,
            "filepath": os.fspath(filepath),
            "step": count(step) if step is not None else self._step,
            "metrics": scalars(metrics or {}),
            "metadata": dict(metadata or {}),
        }
        self._checkpoints[checkpoint_id] = record
        while len(self._checkpoints) > MAX_REMEMBERED_CHECKPOINTS:
            del self._checkpoints[next(iter(self._checkpoints))]
        self._write_marker()
        self._emit("checkpoint_saved", is_best=False, **record)
        return checkpoint_id

    def mark_best_checkpoint(self, checkpoint_id: str) -> None:
        """Star a saved checkpoint as the run's best (one per run). An id this monitor does
        not know (nor a resumed run's earlier process) is said in a warning, and sent all
        the same: runwatch may know it."""
        if checkpoint_id not in self._checkpoints:
            log.warning("runwatch: mark_best_checkpoint(%r): no checkpoint of that id was "
                        "saved by this run (save_checkpoint returns the id); the best is "
                        "unchanged", checkpoint_id)  # fmt: skip
            return
        self._emit("checkpoint_saved", checkpoint_id=checkpoint_id, is_best=True)

    def set_status(self, status: str, reason: str | None = None) -> None:
        """``running`` again, or an end: ``completed``, ``failed``, ``interrupted``, ..."""
        self._emit("status_change", new_status=status, reason=reason)
        if status.lower() not in ("running", "started", "resumed"):
            self._finished()

    # --- stages, targets, progress (seed 000) --------------------------------------------

    def stage(self, name: str) -> None:
        self._emit("stage_change", previous_stage=self._stage or "", new_stage=name)
        self._stage = name

    def progress(self, progress_pct: float, message: str | None = None, **fields: Any) -> None:
        self._emit("progress", stage=self._stage or "", progress_pct=scalar(progress_pct),
                   message=message, **fields)  # fmt: skip

    @contextmanager
    def target(
        self, name: str, index: int | None = None, total: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """A target: started on entry, completed on exit (``failed`` if the block raises).
        Put ``best_auc`` or ``status`` into the yielded dict to report them."""
        self._emit("target_start", target=name, target_index=count(index),
                   total_targets=count(total))  # fmt: skip
        result: dict[str, Any] = {}
        started = time.monotonic()
        try:
            yield result
        except BaseException:
            result.setdefault("status", "failed")
            raise
        finally:
            self._emit(
                "target_complete",
                target=name,
                status=result.get("status", "success"),
                best_auc=scalar(result.get("best_auc")),
                duration_seconds=round(time.monotonic() - started, 3),
            )

    def error(self, message: str, error_type: str = "Error", recoverable: bool = True) -> None:
        self._emit("error", error_message=message, error_type=error_type, recoverable=recoverable)

    def complete(self, status: str = "completed") -> None:
        self._emit("run_complete", status=status)
        self._finished()

    def end(self, error: BaseException | None = None) -> None:
        """End the run once: ``completed``; ``interrupted`` on KeyboardInterrupt; else
        ``failed``, with the exception as an error event. Then close the transport."""
        if not self._ended:
            if error is None:
                self.complete("completed")
            elif isinstance(error, KeyboardInterrupt):
                self.complete("interrupted")
            else:
                kind = type(error).__name__
                self.error(str(error) or kind, kind, recoverable=False)
                self.complete("failed")
        self.close()

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> TrainingMonitor:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end(exc)

    def _finished(self) -> None:
        self._ended = True
        with _open_lock:
            if _open_monitors.get(self.run_name) is self:
                del _open_monitors[self.run_name]
        if self._pid_file is not None:  # after the last event: a clean end, not a crash
            remove_pid_file(self._pid_file)
            self._pid_file = None

    def _write_marker(self) -> None:
        if self._checkpoint_dir is None:
            return
        record = {"run_id": self.run_id, "run_name": self.run_name,
                  "next_checkpoint": self._next_checkpoint,
                  "checkpoints": list(self._checkpoints.values())}  # fmt: skip
        marker = self._checkpoint_dir / RUN_MARKER
        staged = marker.with_name(marker.name + ".tmp")
        with contextlib.suppress(OSError, TypeError, ValueError):
            staged.write_text(json.dumps(record, default=str))
            staged.replace(marker)

    def _emit(self, event_type: str, **fields: Any) -> None:
        if self.rank != 0:
            return
        if event_type not in ("metric_update", "phase") and (
            self.phases.pending or self.phases.current
        ):
            self.send_phases()  # the phases' time belongs before this event
        event = {"event_type": event_type, "run_id": self.run_id, "timestamp": now_iso()}
        event.update({key: value for key, value in fields.items() if value is not None})
        with contextlib.suppress(Exception):  # telemetry never fails the training
            self.transport.send(event)


def _read_marker(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


# --- runs left open -----------------------------------------------------------------------

_open_monitors: dict[str, TrainingMonitor] = {}  # by run name, in this process
_open_lock = threading.Lock()
_uncaught: list[BaseException] = []  # the exception ending the interpreter, if any


def _replace_open_monitor(monitor: TrainingMonitor) -> None:
    """A monitor of the same name still open in this process was abandoned (a notebook
    cell run again): it ends ``interrupted`` rather than staying ``running`` forever."""
    if monitor.rank != 0:
        return
    with _open_lock:
        previous = _open_monitors.get(monitor.run_name)
        _open_monitors[monitor.run_name] = monitor
    if previous is not None and previous is not monitor and not previous._ended:
        previous.complete("interrupted")
        if previous.transport is not monitor.transport:
            previous.close()


def _end_open_monitors() -> None:
    error = _uncaught[-1] if _uncaught else None
    for monitor in list(_open_monitors.values()):
        if monitor._ended:
            continue
        if error is None:
            monitor.complete("ended")  # the script exited without saying how the run went
            monitor.close()
        else:
            monitor.end(error)


def _record_uncaught(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    _uncaught.append(exc)
    _previous_excepthook(kind, exc, tb)


_previous_excepthook = sys.excepthook
sys.excepthook = _record_uncaught
atexit.register(_end_open_monitors)  # registered after the transports': runs first
