"""``TrainingMonitor``: seed 002's API, emitting runwatch's event format.

    from exporter.sdk import TrainingMonitor, FileTransport

    with TrainingMonitor("resnet50", config={"lr": 3e-4},
                         transport=FileTransport("/tmp/runwatch/events.jsonl")) as monitor:
        monitor.stage("training")
        for step in range(steps):
            monitor.log_metrics({"loss": loss, "learning_rate": lr}, step=step)
        best = monitor.save_checkpoint("ckpt.pt", metrics={"loss": loss})
        monitor.mark_best_checkpoint(best)

Leaving the ``with`` block ends the run ``completed``, or ``failed`` with the exception
as an error event (the exception still propagates). Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from exporter.sdk.transports import Transport

RUN_MARKER = ".runwatch-run.json"  # in the checkpoint directory: the run to resume


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class TrainingMonitor:
    """One training run's events; every method returns at once and never raises on I/O."""

    def __init__(
        self,
        run_name: str,
        config: dict[str, Any] | None = None,
        *,
        transport: Transport,
        run_id: str | None = None,
        resumed: bool = False,
    ) -> None:
        self.run_name = run_name
        self.config = dict(config or {})
        self.run_id = (
            run_id or f"{run_name}_{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:8]}"
        )
        self.transport = transport
        self._checkpoints: dict[str, dict[str, Any]] = {}
        self._stage: str | None = None
        self._step: int | None = None
        self.latest_checkpoint: Path | None = None  # set by resume_or_create
        self._emit("run_start", name=run_name, config=self.config, resumed=resumed or None)

    @classmethod
    def resume_or_create(
        cls,
        run_name: str,
        checkpoint_dir: str | os.PathLike[str],
        config: dict[str, Any] | None = None,
        *,
        transport: Transport,
    ) -> TrainingMonitor:
        """The run recorded in ``checkpoint_dir`` (after a crash), or a new one recorded there.
        ``latest_checkpoint`` then names the newest checkpoint file, if any."""
        directory = Path(checkpoint_dir)
        directory.mkdir(parents=True, exist_ok=True)
        marker = directory / RUN_MARKER
        try:
            run_id = json.loads(marker.read_text())["run_id"]
        except (OSError, ValueError, KeyError, TypeError):
            run_id = None
        monitor = cls(
            run_name, config, transport=transport, run_id=run_id, resumed=run_id is not None
        )
        marker.write_text(json.dumps({"run_id": monitor.run_id, "run_name": run_name}))
        files = [p for p in directory.iterdir() if p.is_file() and p.name != RUN_MARKER]
        monitor.latest_checkpoint = max(files, key=lambda p: p.stat().st_mtime, default=None)
        return monitor

    # --- seed 002 ---------------------------------------------------------------------

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._step = step if step is not None else self._step
        numbers = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self._emit("metric_update", step=step, metrics=numbers)

    def save_checkpoint(
        self,
        filepath: str | os.PathLike[str],
        metrics: dict[str, float] | None = None,
        metadata: dict[str, Any] | None = None,
        step: int | None = None,
    ) -> str:
        """Record a saved checkpoint; returns its id (for ``mark_best_checkpoint``)."""
        checkpoint_id = f"ckpt_{len(self._checkpoints) + 1:06d}"
        record = {
            "checkpoint_id": checkpoint_id,
            "filepath": os.fspath(filepath),
            "step": step if step is not None else self._step,
            "metrics": dict(metrics or {}),
            "metadata": dict(metadata or {}),
        }
        self._checkpoints[checkpoint_id] = record
        self._emit("checkpoint_saved", is_best=False, **record)
        return checkpoint_id

    def mark_best_checkpoint(self, checkpoint_id: str) -> None:
        record = self._checkpoints.get(checkpoint_id)
        if record is not None:
            self._emit("checkpoint_saved", is_best=True, **record)

    def set_status(self, status: str, reason: str | None = None) -> None:
        self._emit("status_change", status=status, reason=reason)

    # --- stages, targets, progress (seed 000) --------------------------------------------

    def stage(self, name: str) -> None:
        self._emit("stage_change", previous_stage=self._stage or "", new_stage=name)
        self._stage = name

    def progress(self, progress_pct: float, message: str | None = None, **fields: Any) -> None:
        self._emit(
            "progress",
            stage=self._stage or "",
            progress_pct=progress_pct,
            message=message,
            **fields,
        )

    @contextmanager
    def target(
        self, name: str, index: int | None = None, total: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """A target: started on entry, completed on exit (``failed`` if the block raises).
        Put ``best_auc`` or ``status`` into the yielded dict to report them."""
        self._emit("target_start", target=name, target_index=index, total_targets=total)
        result: dict[str, Any] = {}
        started = time.monotonic()
        try:
            yield result
        except Exception:
            result.setdefault("status", "failed")
            raise
        finally:
            self._emit(
                "target_complete",
                target=name,
                status=result.get("status", "success"),
                best_auc=result.get("best_auc"),
                duration_seconds=round(time.monotonic() - started, 3),
            )

    def error(self, message: str, error_type: str = "Error", recoverable: bool = True) -> None:
        self._emit("error", error_message=message, error_type=error_type, recoverable=recoverable)

    def complete(self, status: str = "completed") -> None:
        self._emit("run_complete", status=status)

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
        if exc is None:
            self.complete("completed")
        else:
            self.error(str(exc) or kind.__name__, kind.__name__, recoverable=False)
            self.complete("failed")
        self.close()

    def _emit(self, event_type: str, **fields: Any) -> None:
        event = {"event_type": event_type, "run_id": self.run_id, "timestamp": now_iso()}
        event.update({key: value for key, value in fields.items() if value is not None})
        with contextlib.suppress(Exception):  # telemetry never fails the training
            self.transport.send(event)
