"""What the framework callbacks (:mod:`runwatch_sdk.lightning`,
:mod:`runwatch_sdk.huggingface`) have in common: a run reported through a
:class:`~runwatch_sdk.monitor.TrainingMonitor`, its metrics taken from a framework's
dict of numbers and tensors, its checkpoints recorded once each, and its end.

A callback given a monitor leaves the run's end to its owner (``with monitor:``);
without one it creates the monitor at the start of training and ends the run itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from runwatch_sdk.monitor import TrainingMonitor
from runwatch_sdk.transports import Transport
from runwatch_sdk.values import scalars


class RunReporter:
    """One training run as the callbacks see it; every call is safe before ``start``."""

    def __init__(
        self,
        transport: Transport | None,
        run_name: str | None,
        monitor: TrainingMonitor | None,
    ) -> None:
        self._transport = transport
        self._run_name = run_name
        self.monitor = monitor
        self._owned = monitor is None  # ends the run itself only if it made the monitor
        self._stage: str | None = None
        self._checkpoints: dict[str, str] = {}  # path -> checkpoint id
        self._best: str | None = None

    def start(self, default_name: str, config: Mapping[str, Any], rank_zero: bool = True) -> None:
        """Begin the run; on other ranks of a distributed job, report nothing at all."""
        if not rank_zero:
            self.monitor, self._owned = None, False
            return
        if self.monitor is None:  # no transport: TrainingMonitor's default (RUNWATCH_URL, ...)
            self.monitor = TrainingMonitor(
                self._run_name or default_name, _plain(config), transport=self._transport
            )

    def stage(self, name: str) -> None:
        if self.monitor is not None and name != self._stage:
            self._stage = name
            self.monitor.stage(name)

    def metrics(self, values: Mapping[str, Any], step: int) -> None:
        numbers = scalars(values)
        if self.monitor is not None and numbers:
            self.monitor.log_metrics(numbers, step=step)

    def phase(self, name: str | None, closing_as: str | None = None) -> None:
        """A framework hook between phases: close the open one (its time under
        ``closing_as`` when given: a hook that learns afterwards what the time was), then
        open ``name`` (None: none) for the goodput account."""
        if self.monitor is None:
            return
        clock = self.monitor.phases
        if clock.current is not None and clock.leave(closing_as):
            self.monitor.send_phases()
        if name is not None:
            clock.enter(name)

    def checkpoint(
        self, path: str | os.PathLike[str], metrics: Mapping[str, Any], step: int
    ) -> str | None:
        """Record a checkpoint file the first time it is seen; returns its id."""
        path = os.fspath(path)
        if self.monitor is None or not path:
            return None
        if path not in self._checkpoints:
            recorded = self.monitor.save_checkpoint(path, scalars(metrics), step=step)
            self._checkpoints[path] = recorded
        return self._checkpoints[path]

    def best(self, path: str | os.PathLike[str] | None) -> None:
        """The framework's best checkpoint is now ``path`` (recorded already)."""
        checkpoint_id = self._checkpoints.get(os.fspath(path)) if path else None
        if self.monitor is not None and checkpoint_id and checkpoint_id != self._best:
            self._best = checkpoint_id
            self.monitor.mark_best_checkpoint(checkpoint_id)

    def finish(self, error: BaseException | None = None) -> None:
        """End the run (completed, failed with the error, or interrupted), if it is ours."""
        if self.monitor is not None and self._owned:
            self._owned = False  # once
            self.monitor.end(error)


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """A framework's hyperparameters as JSON-friendly values (others as their repr)."""
    plain: dict[str, Any] = {}
    for key, value in config.items():
        if value is None or isinstance(value, str | int | float | bool):
            plain[str(key)] = value
        else:
            plain[str(key)] = repr(value)[:200]
    return plain


class ReportingCallback:
    """The constructor both framework callbacks share (mixed in before the framework's own
    callback class): a transport for a run the callback starts and ends, or a monitor whose
    owner ends it; ``run_name`` overrides the name taken from the framework."""

    def __init__(
        self,
        transport: Transport | None = None,
        run_name: str | None = None,
        monitor: TrainingMonitor | None = None,
    ) -> None:
        self.reporter = RunReporter(transport, run_name, monitor)
