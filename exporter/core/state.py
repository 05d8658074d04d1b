"""The reducer: validated events in, current state of runs out, plus finished spans.

Pure: no I/O and no clock. Time comes only from the events (and from the
``observed_at`` of a process observation), so replaying a file always gives the
same state and the same spans. Every bound (runs, stages, targets, metric keys,
checkpoints, error types) is enforced here and what it cuts is counted in
``dropped``, which becomes ``runwatch_series_dropped_total``.
"""

from __future__ import annotations

import copy
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import msgspec

from exporter.core import event_log
from exporter.core.events import (
    EVENT_TYPE_NAMES,
    STATUSES,
    CheckpointSaved,
    CustomEvent,
    Error,
    Event,
    MetricUpdate,
    Phase,
    Progress,
    Rejected,
    RunComplete,
    RunStart,
    StageChange,
    StatusChange,
    TargetComplete,
    TargetStart,
)
from exporter.core.goodput import Ledger
from exporter.core.metric_window import MetricWindow
from exporter.core.outputs import (
    MAX_SPAN_EVENTS,
    FinishedSpan,
    Histogram,
    LogLine,
    Observed,
    OpenSpan,
    Output,
    StepValues,
)

FINISHED_STATUSES = frozenset(STATUSES[1:])
TARGET_STATUSES: tuple[str, ...] = ("success", "failed", "skipped", "other")
_TARGET_STATUS_ALIASES = {
    "success": "success",
    "succeeded": "success",
    "completed": "success",
    "complete": "success",
    "ok": "success",
    "failed": "failed",
    "failure": "failed",
    "error": "failed",
    "skipped": "skipped",
    "skip": "skipped",
}
TARGET_DURATION_BUCKETS: tuple[float, ...] = (
    1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200,
)  # fmt: skip
OTHER = "other"
CUSTOM = CustomEvent.__struct_config__.tag
TARGET_DURATION_METRIC = "training_target_duration_seconds"
MAX_CUSTOM_EVENT_TYPES = 32
MAX_SENDERS = 10_000  # senders whose last event_id is remembered (see State._seen)
"""Event types runwatch does not know counted by name; more are counted as ``other``."""
DROP_REASONS: tuple[str, ...] = (
    "max_runs", "max_stages_per_run", "max_targets_per_run", "max_metric_keys_per_run",
    "max_checkpoints_per_run", "max_error_types_per_run", "step_rate",
    "max_series_per_run", "max_series", "max_text_bytes_per_run", "max_events_per_span",
    "metric_window",
)  # fmt: skip
MAX_TEXT_CHARS = 1024
"""Longest free text kept from an event (a checkpoint's path, an error or progress message);
longer text is cut, not refused: the rest of the event stands."""
SPAN_EVENT_BYTES = 96
"""What a span event costs the run's text budget besides its text (its tuple and dict)."""
OPEN_SPAN_BYTES = 512
"""What an open target span costs the run's text budget besides its name."""


FORGET_REASONS: tuple[str, ...] = ("retention", "max_runs")
"""Why a finished run was forgotten: its retention ran out, or a new run needed its place."""
ALERTING_STATUSES = frozenset({"failed", "crashed"})
CLEAN_ENDS = frozenset({"completed", "ended"})
"""Ends that keep a run's progress (its goodput account's work at risk)."""
"""Finished runs an alert fires on while they are kept: the last to give up their place."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Cardinality bounds and the retention of finished runs; see ``runwatch serve --help``."""

    max_runs: int = 100
    finished_run_retention: float = 86400.0  # seconds a finished run is kept (wall clock)
    max_stages_per_run: int = 32
    max_targets_per_run: int = 500
    max_metric_keys_per_run: int = 100
    max_checkpoints_per_run: int = 50
    max_error_types_per_run: int = 32
    max_series_per_run: int = 2000  # keyed values that become series (see State._admit)
    max_series: int = 20000  # the same, over all runs
    max_text_bytes_per_run: int = 256 << 10  # config, paths, open spans and their events
    max_clock_skew_seconds: float = 5.0
    max_time_ahead_seconds: float = 60.0  # of runwatch's clock (checked by the pipeline)
    max_history_steps_per_second: int = 100  # step history kept per run (see StepRate)
    max_window_values: int = 8_000_000  # the metric windows' budget, over all runs
    max_window_values_per_run: int = 1_000_000


@dataclass(slots=True)
class Stage:
    progress_ratio: float = 0.0
    seconds: float = 0.0  # time spent in the stage, summed over visits
    entered_at: float | None = None  # set while it is the current stage
    targets_total: int | None = None  # as progress events report them within the stage
    targets_completed: int | None = None
    message: str | None = None  # the latest progress message


@dataclass(slots=True)
class Checkpoint:
    step: int | None
    metrics: dict[str, float]
    is_best: bool
    timestamp: float
    filepath: str | None
    valid: bool | None = None  # the outcome of the SDK's validate_checkpoint, if checked


@dataclass(slots=True)
class StepRate:
    """Thins a run's step history to ``cap`` steps per second of event time: each second
    keeps every Nth step, N from the rate of the second before, and never more than
    ``cap`` (a burst's first second keeps its first ``cap``)."""

    second: int = -1
    seen: int = 0  # steps in this second
    kept: int = 0
    every: int = 1

    def keep(self, ts: float, cap: int) -> bool:
        second = int(ts)
        if second != self.second:
            self.every = -(-self.seen // cap) if second == self.second + 1 and self.seen else 1
            self.second, self.seen, self.kept = second, 0, 0
        index = self.seen
        self.seen += 1
        if index % self.every or self.kept >= cap:
            return False
        self.kept += 1
        return True


@dataclass(frozen=True, slots=True)
class LastError:
    """A run's latest error: one per run, its message cut to ``MAX_TEXT_CHARS``."""

    timestamp: float
    error_type: str
    message: str
    recoverable: bool


@dataclass(slots=True)
class Run:
    run_id: str
    name: str
    start: float
    last_event: float
    status: str = "running"
    end: float | None = None
    reported_duration: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None
    stages: dict[str, Stage] = field(default_factory=dict)
    targets_total: int = 0
    targets_completed: int = 0  # each target once: see State._count_targets
    targets_done: int = 0  # distinct targets target_complete events named
    targets_reported: int | None = None  # the latest progress event's targets_complete
    completed_targets: set[int] = field(default_factory=set)  # hashes of targets' names
    targets_successful: int | None = None  # as run_complete reports it
    current_target: str | None = None
    target_best_auc: dict[tuple[str, str], float] = field(default_factory=dict)  # stage, target
    target_completions: Counter[str] = field(default_factory=Counter)
    target_durations: Histogram = field(
        default_factory=lambda: Histogram.empty(TARGET_DURATION_BUCKETS)
    )
    errors: Counter[tuple[str, bool]] = field(default_factory=Counter)
    last_error: LastError | None = None  # the latest error's message, for the run API and view
    metrics: dict[str, float] = field(default_factory=dict)
    non_finite: Counter[str] = field(default_factory=Counter)  # NaN/inf values per metric key
    invalid_checkpoints: int = 0  # checks that found a checkpoint not valid
    step: int | None = None
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    checkpoint_keys: set[str] = field(default_factory=set)  # with a step history, bounded
    step_rate: StepRate = field(default_factory=StepRate)
    process_up: bool | None = None
    finished_seen_at: float | None = None  # wall clock of the first sweep that saw it finished
    root_span: OpenSpan | None = None
    stage_span: OpenSpan | None = None
    target_spans: dict[str, OpenSpan] = field(default_factory=dict)
    series: int = 0  # series charged to the budget: metric keys, checkpoint values, AUCs
    text_bytes: int = 0  # text charged to the budget: config, paths, open spans' events
    config_bytes: int = 0  # of text_bytes, the config's
    goodput: Ledger = field(default_factory=lambda: Ledger(0.0, 0.0))  # set by State._new_run

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def duration(self) -> float:
        if self.reported_duration is not None:
            return self.reported_duration
        return (self.end if self.end is not None else self.last_event) - self.start

    @property
    def best_checkpoint(self) -> str | None:
        return next((cid for cid, c in self.checkpoints.items() if c.is_best), None)

    def snapshot(self) -> Run:
        """A copy the reducer will not change, for rendering outside the pipeline lock:
        every container the reducer mutates is copied (values are immutable or replaced
        whole, like ``config``); open spans are left out, outputs never read them."""
        run = copy.copy(self)
        run.stages = {name: copy.copy(stage) for name, stage in self.stages.items()}
        run.target_best_auc = self.target_best_auc.copy()
        run.target_completions = self.target_completions.copy()
        run.target_durations = self.target_durations.copy()
        run.errors = self.errors.copy()
        run.metrics = self.metrics.copy()
        run.non_finite = self.non_finite.copy()
        run.checkpoints = {  # a checkpoint's metrics are replaced whole, never changed
            cid: Checkpoint(c.step, c.metrics, c.is_best, c.timestamp, c.filepath, c.valid)
            for cid, c in self.checkpoints.items()
        }
        run.goodput = self.goodput.snapshot()
        run.root_span = run.stage_span = None
        run.target_spans = {}
        run.completed_targets = set()  # outputs read only the count
        return run


@dataclass(frozen=True, slots=True)
class ProcessObservation:
    """What the PID-file source saw: is the run's process alive at observed_at; ``closed``
    when its PID file was removed while the process lived (a clean end, not a crash)."""

    run_id: str
    alive: bool
    started_at: float
    observed_at: float
    closed: bool = False


_SPAN_ENDING = frozenset({TargetComplete, RunComplete, StatusChange})
"""Events whose line belongs to the span open before them (they may end it)."""


class State:
    """All runs and the counters that span them; ``apply`` is the only writer."""

    def __init__(self, limits: Limits | None = None, tracing: bool = True) -> None:
        self.limits = limits or Limits()
        # Spans and durations are only built for someone to receive them (the OTLP output);
        # without one, the reducer skips that work.
        self.tracing = tracing
        self.history = False  # StepValues, for a step-history output
        self.logging = False  # LogLines, for an event-log output
        self.windows: dict[str, MetricWindow] | None = None  # per run, for the run API
        self.window_values = 0  # what they hold, against max_window_values
        self.runs: dict[str, Run] = {}
        # the known types, then up to MAX_CUSTOM_EVENT_TYPES others, then "other"
        self.events_by_type: Counter[str] = Counter(dict.fromkeys(EVENT_TYPE_NAMES, 0))
        self.dropped: Counter[str] = Counter(dict.fromkeys(DROP_REASONS, 0))
        self.forgotten: Counter[str] = Counter(dict.fromkeys(FORGET_REASONS, 0))
        self.series = 0  # series charged to the budget, over all runs
        self.duplicates = 0  # events whose event_id was applied before
        self._senders: OrderedDict[str, int] = OrderedDict()  # sender -> last sequence
        # Copy on write: the runs changed since the last snapshot (an ordered set), and the
        # last snapshot's copy of every run, handed out again while its run is unchanged.
        self._changed: dict[str, None] = {}
        self._copies: dict[str, Run] = {}

    def snapshot(self) -> State:
        """The state as it is now, in copies the reducer will not change (see Run.snapshot).
        Only the runs changed since the last snapshot are copied again; an unchanged run is
        the same object as in the last snapshot, which lets outputs keep what they rendered
        of it (a finished run is copied once and rendered once)."""
        copies = self._copies
        for run_id in self._changed:
            run = self.runs.get(run_id)
            if run is None:
                copies.pop(run_id, None)
            else:
                copies[run_id] = run.snapshot()
        self._changed.clear()
        state = copy.copy(self)
        state.runs = copies.copy()
        state._changed, state._copies = {}, {}
        state.windows = None  # read under the lock only (Pipeline.window_rows)
        state.events_by_type = self.events_by_type.copy()
        state.dropped = self.dropped.copy()
        state.forgotten = self.forgotten.copy()
        return state

    def expire(self, now: float) -> int:
        """Forget the finished runs kept for ``finished_run_retention`` seconds; returns how
        many. A run's retention starts when a sweep first sees it finished (wall clock, so a
        replayed week-old run is kept as long as a live one) and starts again if it reopens."""
        expired = []
        for run in self.runs.values():
            if not run.finished:
                run.finished_seen_at = None
            elif run.finished_seen_at is None:
                run.finished_seen_at = now
            elif now - run.finished_seen_at >= self.limits.finished_run_retention:
                expired.append(run.run_id)
        for run_id in expired:
            self._forget(run_id)
        self.forgotten["retention"] += len(expired)
        return len(expired)

    # -- entry points -----------------------------------------------------------------------

    def apply(self, event: Event) -> list[Output]:
        """Reduce one event; returns spans that ended and durations observed.

        Raises Rejected (before_run_start, out_of_order) without changing anything.
        """
        run_id, ts = event.run_id, event.timestamp
        if run_id is None or type(ts) is not float:
            raise TypeError(f"not completed by the pipeline (run_id, epoch seconds): {event!r}")
        if event.event_id is not None and self._seen(event.event_id):
            self.duplicates += 1
            return []
        run = self.runs.get(run_id)
        self._changed[run_id] = None
        if run is None:
            run = self._new_run(run_id, ts)
        elif ts > run.last_event:
            run.last_event = ts
        elif ts < run.last_event - self.limits.max_clock_skew_seconds:
            if ts < run.start - self.limits.max_clock_skew_seconds:
                raise Rejected("before_run_start", f"{run_id}: {ts} < {run.start}")
            raise Rejected("out_of_order", f"{run_id}: {ts} < {run.last_event}")
        handler, name = self._handlers[event.__class__]
        if name == CUSTOM:
            name = cast(CustomEvent, event).type_name
            if (
                name not in self.events_by_type
                and len(self.events_by_type) >= len(EVENT_TYPE_NAMES) + MAX_CUSTOM_EVENT_TYPES
            ):
                name = OTHER
        self.events_by_type[name] += 1
        out: list[Output] = []
        if self.logging:
            before = _span_of(run, event)
            handler(self, run, event, ts, out)
            self._log(run, event, name, ts, before, out)
        else:
            handler(self, run, event, ts, out)
        if out:
            _refund_finished_spans(run, out)
        return out

    def _seen(self, event_id: str) -> bool:
        """Whether a sender's event was applied before: a sender (the SDK) numbers its
        events in the order it sends them, and sends them again in that order, so the last
        sequence applied per sender is enough. The MAX_SENDERS most recent are kept."""
        sender, _, sequence = event_id.rpartition(".")
        if not sender or not (sequence.isascii() and sequence.isdigit()):
            return False
        number, senders = int(sequence), self._senders
        last = senders.get(sender)
        if last is not None:
            if number <= last:
                return True
            senders.move_to_end(sender)
        senders[sender] = number
        if len(senders) > MAX_SENDERS:
            senders.popitem(last=False)
        return False

    def observe_process(self, obs: ProcessObservation) -> list[Output]:
        """A PID-file reading: liveness, and crash detection for runs left running."""
        self._changed[obs.run_id] = None
        run = self.runs.get(obs.run_id)
        if run is None:
            if not obs.alive:
                return []
            run = self._new_run(obs.run_id, obs.started_at)
        run.process_up = obs.alive and not obs.closed
        out: list[Output] = []
        was_running, span = run.status == "running", run.stage_span or run.root_span
        if obs.closed:
            if run.status == "running":
                self._finish(run, _clean_end(run), max(obs.observed_at, run.last_event), out, None)
        elif not obs.alive and run.status == "running":
            end = max(obs.observed_at, run.last_event)
            self._finish(run, "crashed", end, out, "process exited without run_complete",
                         seen_dead=True)  # fmt: skip
        elif obs.alive and run.status == "crashed":  # restarted under the same run id
            self._reopen(run, max(obs.started_at, run.last_event))
        if self.logging and was_running and run.finished:
            reason = "process exited without run_complete" if run.status == "crashed" else (
                "PID file removed")  # fmt: skip
            severity, body = event_log.finish_line(run.status, run.stage, reason)
            attributes = _log_attributes(run, "process_exit", None)
            out.append(LogLine(run.run_id, span, run.end or obs.observed_at, severity, body,
                               attributes))  # fmt: skip
        _refund_finished_spans(run, out)
        return out

    def observe_gpus(self, gpus: Mapping[str, int]) -> None:
        """GPUs attributed to runs' processes now: a running run's count is what its lost
        work is multiplied by in its GPU-seconds (the last count seen while it lived)."""
        for run_id, count in gpus.items():
            run = self.runs.get(run_id)
            if run is not None and not run.finished and run.goodput.gpus != count:
                run.goodput.gpus = count
                self._changed[run_id] = None

    # -- event handlers (one per event type) --------------------------------------------------

    def _on_run_start(self, run: Run, event: RunStart, ts: float, out: list[Output]) -> None:
        if event.name is not None:
            run.name = event.name
        if event.config is not None:
            self._set_config(run, event.config)
        if event.total_steps is not None:
            run.goodput.total_steps = event.total_steps
        if run.finished:
            self._reopen(run, ts)
        run.goodput.open(ts, bool(event.resumed))
        if run.root_span is not None:
            run.root_span.attributes["training.run.name"] = run.name

    def _on_progress(self, run: Run, event: Progress, ts: float, out: list[Output]) -> None:
        if run.stage == event.stage:  # the common case, without a call
            stage = run.stages.get(event.stage)
        else:
            stage = self._enter_stage(run, event.stage, ts, out)
        if stage is not None:
            stage.progress_ratio = event.progress_pct / 100.0
            if event.targets_total is not None:
                stage.targets_total = event.targets_total
            if event.targets_complete is not None:
                stage.targets_completed = event.targets_complete
            if event.message is not None:
                stage.message = event.message[:MAX_TEXT_CHARS]
        if event.targets_total is not None:
            run.targets_total = event.targets_total
        if event.targets_complete is not None:
            run.targets_reported = event.targets_complete
            self._count_targets(run)
        if event.current_target is not None:
            run.current_target = event.current_target[:256] or None
        if event.message is not None and run.stage_span is not None:
            attributes: dict[str, Any] = {
                "message": event.message[:MAX_TEXT_CHARS],
                "training.progress.ratio": event.progress_pct / 100,
            }
            if event.current_target:
                attributes["training.target"] = event.current_target[:256]
            self._add_span_event(run, run.stage_span, ts, "progress", attributes)

    def _on_stage_change(self, run: Run, event: StageChange, ts: float, out: list[Output]) -> None:
        assert event.new_stage is not None  # parsing fills it in from stage
        self._enter_stage(run, event.new_stage, ts, out)

    def _on_target_start(self, run: Run, event: TargetStart, ts: float, out: list[Output]) -> None:
        run.current_target = event.target
        if event.total_targets is not None:
            run.targets_total = event.total_targets
        if self.tracing and not run.finished:
            self._open_target_span(run, event, ts)

    def _on_target_complete(
        self, run: Run, event: TargetComplete, ts: float, out: list[Output]
    ) -> None:
        target = event.target
        status = _TARGET_STATUS_ALIASES.get((event.status or "success").lower(), OTHER)
        run.target_completions[status] += 1
        self._count_targets(run, target)
        if run.current_target == target:
            run.current_target = None
        best = run.target_best_auc
        key = (run.stage or "", target)  # the same target may be ranked, then trained
        if event.best_auc is not None and (
            key in best
            or self._admit(run, best, key, self.limits.max_targets_per_run, "max_targets_per_run")
        ):
            best[key] = event.best_auc
        span = run.target_spans.pop(target, None)
        duration = event.duration_seconds
        if duration is None and span is not None:
            duration = max(0.0, ts - span.start)
        if duration is not None:
            run.target_durations.observe(duration)
            if self.tracing:
                out.append(Observed(TARGET_DURATION_METRIC, duration, (run.run_id,)))
        if span is not None:
            span.attributes["training.target.status"] = status
            if event.best_auc is not None:
                span.attributes["training.target.best_auc"] = event.best_auc
            error = f"target {status}" if status == "failed" else None
            out.append(FinishedSpan(run.run_id, span, ts, error))

    def _on_run_complete(self, run: Run, event: RunComplete, ts: float, out: list[Output]) -> None:
        if event.total_targets is not None:
            run.targets_total = event.total_targets
        if event.successful_targets is not None:
            run.targets_successful = event.successful_targets
        if event.duration_seconds is not None:
            run.reported_duration = event.duration_seconds
        status = event.status
        if status == "running":
            status = "completed"
        elif status == "ended":
            status = _clean_end(run)
        self._finish(run, status, ts, out, None)

    def _on_error(self, run: Run, event: Error, ts: float, out: list[Output]) -> None:
        error_type = event.error_type or "error"
        recoverable = bool(event.recoverable)
        types = {t for t, _ in run.errors}
        if error_type not in types and len(types) >= self.limits.max_error_types_per_run:
            self.dropped["max_error_types_per_run"] += 1
            error_type = OTHER
        run.errors[(error_type, recoverable)] += 1
        run.last_error = LastError(ts, error_type, event.error_message[:MAX_TEXT_CHARS],
                                   recoverable)  # fmt: skip
        span = _span_of(run, event)
        if span is not None:
            attributes = {
                "exception.type": error_type,
                "exception.message": event.error_message[:MAX_TEXT_CHARS],
                "training.error.recoverable": recoverable,
            }
            self._add_span_event(run, span, ts, "exception", attributes)

    def _on_metric_update(
        self, run: Run, event: MetricUpdate, ts: float, out: list[Output]
    ) -> None:
        if event.step is not None:
            run.step = event.step
        ledger, step = run.goodput, event.step
        ledger.mark(
            ts,
            event.phase_seconds or {},
            step,
            progress=step is None or ledger.step is None or step > ledger.step,
        )
        values = event.metrics
        self._set_metrics(run, run.metrics, values)
        if self.history:
            if run.step_rate.keep(ts, self.limits.max_history_steps_per_second):
                kept = values
                if not kept.keys() <= run.metrics.keys():  # keys past the bound have none
                    kept = {k: v for k, v in kept.items() if k in run.metrics}
                out.append(StepValues(run.run_id, ts, kept, event.step))
            else:
                self.dropped["step_rate"] += len(values)
        if self.windows is not None:
            self._keep_in_window(run, ts, values)
        if not all(map(math.isfinite, values.values())):
            for key, value in values.items():
                if not math.isfinite(value) and key in run.metrics:
                    run.non_finite[key] += 1

    def _on_checkpoint_saved(
        self, run: Run, event: CheckpointSaved, ts: float, out: list[Output]
    ) -> None:
        checkpoint_id = event.checkpoint_id
        checkpoints = run.checkpoints
        previous = checkpoints.get(checkpoint_id)
        remark = previous is not None and not event.metrics and event.filepath is None
        saved = {"checkpoint_save": event.duration_seconds} if event.duration_seconds else {}
        run.goodput.mark(ts, saved, keeps=not remark and event.valid is not False)
        if checkpoint_id not in checkpoints and len(checkpoints) >= (
            self.limits.max_checkpoints_per_run
        ):
            self.dropped["max_checkpoints_per_run"] += 1
            oldest = next((c for c, v in checkpoints.items() if not v.is_best), None)
            if oldest is None:
                return
            self._refund_checkpoint(run, checkpoints.pop(oldest))
        if event.valid is False:
            run.invalid_checkpoints += 1
        if remark and previous is not None:
            # marking a known checkpoint best, or its check's outcome: nothing else changes
            if event.is_best:
                for checkpoint in checkpoints.values():
                    checkpoint.is_best = False
                previous.is_best = True
            if event.valid is not None:
                previous.valid = event.valid
            return
        if previous is not None:
            self._refund_checkpoint(run, previous)
        metrics: dict[str, float] = {}
        self._set_metrics(run, metrics, event.metrics or {})
        filepath = event.filepath
        if filepath is not None:
            filepath = filepath[:MAX_TEXT_CHARS]
            if not self._spend_text(run, len(filepath)):
                filepath = None
        # re-saving the best keeps its star unless another one is marked
        is_best = bool(event.is_best) or (previous is not None and previous.is_best)
        if is_best:
            for checkpoint in checkpoints.values():
                checkpoint.is_best = False
        valid = event.valid if event.valid is not None or previous is None else previous.valid
        checkpoints[checkpoint_id] = Checkpoint(event.step, metrics, is_best, ts, filepath, valid)
        if self.history and metrics:  # checkpoints are rare: never thinned
            keys, limit = run.checkpoint_keys, self.limits.max_metric_keys_per_run
            kept = {}
            for key, value in metrics.items():
                if key in keys or len(keys) < limit:
                    keys.add(key)
                    kept[key] = value
                else:
                    self.dropped["max_metric_keys_per_run"] += 1
            out.append(StepValues(run.run_id, ts, kept, event.step))

    def _on_status_change(
        self, run: Run, event: StatusChange, ts: float, out: list[Output]
    ) -> None:
        if event.new_status == "ended":
            self._finish(run, _clean_end(run), ts, out, None)
        elif event.new_status != "running":
            self._finish(run, event.new_status, ts, out, None)
        elif run.finished:
            self._reopen(run, ts)

    def _on_phase(self, run: Run, event: Phase, ts: float, out: list[Output]) -> None:
        run.goodput.mark(ts, event.phase_seconds)

    def _on_custom(self, run: Run, event: CustomEvent, ts: float, out: list[Output]) -> None:
        """Kept for the event log: a span event with the event's scalar fields."""
        span = _span_of(run, event)
        if span is not None:
            self._add_span_event(run, span, ts, event.type_name, dict(event.fields))

    _handlers: ClassVar[dict[type[Event], tuple[Callable[..., None], str]]] = {
        event_type: (handler, str(event_type.__struct_config__.tag))
        for event_type, handler in (
            (RunStart, _on_run_start),
            (Progress, _on_progress),
            (StageChange, _on_stage_change),
            (TargetStart, _on_target_start),
            (TargetComplete, _on_target_complete),
            (RunComplete, _on_run_complete),
            (Error, _on_error),
            (MetricUpdate, _on_metric_update),
            (Phase, _on_phase),
            (CheckpointSaved, _on_checkpoint_saved),
            (StatusChange, _on_status_change),
            (CustomEvent, _on_custom),
        )
    }

    # -- transitions ----------------------------------------------------------------------------

    def _new_run(self, run_id: str, ts: float) -> Run:
        if len(self.runs) >= self.limits.max_runs:
            self._make_room()
        run = Run(run_id, run_id, ts, ts, goodput=Ledger(ts, ts))
        run.target_completions.update(dict.fromkeys(TARGET_STATUSES, 0))
        if self.tracing:
            run.root_span = OpenSpan("run", run_id, ts, None, {"training.run.name": run_id})
        self.runs[run_id] = run
        return run

    def _make_room(self) -> None:
        """At max_runs: forget the finished run that ended first, those no alert fires on
        before failed and crashed ones; only when every run is live is one cut (a drop)."""
        finished = [run for run in self.runs.values() if run.finished]
        if finished:
            victim = min(
                finished, key=lambda r: (r.status in ALERTING_STATUSES, r.end or r.last_event)
            )
            self.forgotten["max_runs"] += 1
        else:
            victim = next(iter(self.runs.values()))
            self.dropped["max_runs"] += 1
        self._forget(victim.run_id)

    def _forget(self, run_id: str) -> None:
        self.series -= self.runs.pop(run_id).series
        self._changed[run_id] = None
        if self.windows is not None and (window := self.windows.pop(run_id, None)):
            self.window_values -= window.values

    def keep_windows(self) -> None:
        """Keep each run's metric values by step from now on (see metric_window)."""
        if self.windows is None:
            self.windows = {}

    def _keep_in_window(self, run: Run, ts: float, values: dict[str, float]) -> None:
        """Append the step; over a budget (the run's, or all runs'), halve the run's window
        (or the largest), counting the rows thinned out as metric_window drops."""
        assert self.windows is not None
        window = self.windows.get(run.run_id)
        if window is None:
            window = self.windows[run.run_id] = MetricWindow()
        self.window_values += window.append(run.step, ts, values, run.metrics)
        limits = self.limits
        while window.values > limits.max_window_values_per_run and self._halve(window):
            pass
        while self.window_values > limits.max_window_values:
            if not self._halve(max(self.windows.values(), key=lambda w: w.values)):
                break

    def _halve(self, window: MetricWindow) -> int:
        before = window.values
        removed = window.halve()
        self.window_values += window.values - before
        self.dropped["metric_window"] += removed
        return removed

    def _reopen(self, run: Run, ts: float) -> None:
        run.goodput.reopen(ts)
        run.status = "running"
        run.end = None
        run.reported_duration = None
        if self.tracing:
            attributes = {"training.run.name": run.name, "training.run.resumed": True}
            run.root_span = OpenSpan("run", run.run_id, ts, None, attributes)

    def _enter_stage(self, run: Run, name: str, ts: float, out: list[Output]) -> Stage | None:
        """Make ``name`` the current stage; returns it, or None when the stage bound cut it."""
        stage = run.stages.get(name)
        if run.stage == name:
            return stage
        if stage is None:
            if len(run.stages) >= self.limits.max_stages_per_run:
                left = next((s for s in run.stages if s != run.stage), None)
                if left is None:
                    self.dropped["max_stages_per_run"] += 1
                    return None
                del run.stages[left]
                self.dropped["max_stages_per_run"] += 1
            stage = run.stages[name] = Stage()
        self._leave_stage(run, ts, out, None)
        run.stage = name
        stage.entered_at = ts
        if self.tracing and not run.finished:
            attributes = {"training.stage": name}
            run.stage_span = OpenSpan("stage", name, ts, run.root_span, attributes)
        return stage

    def _leave_stage(self, run: Run, ts: float, out: list[Output], error: str | None) -> None:
        current = run.stages.get(run.stage) if run.stage is not None else None
        if current is not None and current.entered_at is not None:
            current.seconds += max(0.0, ts - current.entered_at)
            current.entered_at = None
        if run.stage_span is not None:
            out.append(FinishedSpan(run.run_id, run.stage_span, ts, error))
            run.stage_span = None

    def _finish(
        self, run: Run, status: str, ts: float, out: list[Output], reason: str | None,
        seen_dead: bool = False,
    ) -> None:  # fmt: skip
        """End the run at ``ts``; ``seen_dead``: its process was found gone at ``ts``, so
        its goodput account ends at its last sign of life."""
        if run.finished:
            run.status = status
            return
        run.goodput.end(None if seen_dead else ts, clean=status in CLEAN_ENDS)
        error = None
        if status in ("failed", "crashed"):
            error = reason or f"run {status}"
        for span in run.target_spans.values():
            out.append(FinishedSpan(run.run_id, span, ts, error and f"{error} during target"))
        run.target_spans.clear()
        self._leave_stage(run, ts, out, error)
        if run.root_span is not None:
            run.root_span.attributes["training.run.status"] = status
            out.append(FinishedSpan(run.run_id, run.root_span, ts, error))
            run.root_span = None
        run.status = status
        run.end = max(ts, run.start)  # an end within max_clock_skew before the start: 0 s

    # -- helpers ---------------------------------------------------------------------------------

    def _log(
        self, run: Run, event: Event, name: str, ts: float, before: OpenSpan | None,
        out: list[Output],
    ) -> None:  # fmt: skip
        span = before if event.__class__ in _SPAN_ENDING else _span_of(run, event) or before
        severity, body = event_log.line(event, run.stage)
        attributes = _log_attributes(run, name, _target_of(event))
        out.append(LogLine(run.run_id, span, ts, severity, body, attributes))

    # -- the budget: bounds on what a run holds, whatever the per-field bounds allow -----------
    #
    # Series: each metric key, checkpoint metric value and target AUC a run names becomes a
    # series (the multiplying dimensions; the rest of a run's series are bounded one by
    # one), charged to max_series_per_run and, over all runs, max_series. Text: the config,
    # checkpoint paths, and the open spans with their events, charged to
    # max_text_bytes_per_run. What does not fit is cut and counted by budget in ``dropped``;
    # what a run gives up (a checkpoint replaced, a span ended, the run forgotten) is
    # refunded.

    def _set_metrics(self, run: Run, into: dict[str, float], values: dict[str, float]) -> None:
        if values.keys() <= into.keys():
            into.update(values)  # the common case: keys it has logged before
            return
        limit = self.limits.max_metric_keys_per_run
        for key, value in values.items():
            if self._admit(run, into, key, limit, "max_metric_keys_per_run"):
                into[key] = value

    def _admit(
        self, run: Run, existing: Collection[object], key: object, limit: int, reason: str
    ) -> bool:
        """Whether a key fits under its bound and the series budget; a new one is charged
        to the budget. Counts the drop when it does not fit."""
        if key in existing:
            return True
        if len(existing) >= limit:
            self.dropped[reason] += 1
            return False
        if run.series >= self.limits.max_series_per_run:
            self.dropped["max_series_per_run"] += 1
            return False
        if self.series >= self.limits.max_series:
            self.dropped["max_series"] += 1
            return False
        run.series += 1
        self.series += 1
        return True

    def _count_targets(self, run: Run, completed: str | None = None) -> None:
        """Targets finished so far, each once: a target completed again (a later
        stage takes it too) or counted by a progress event's ``targets_complete`` as
        well (the training-events module sends both) is not counted twice. Distinct
        completed targets, or the script's own latest count where higher (a script
        that sends progress events alone). Names are kept up to max_targets_per_run
        (hashed: bounded memory); past it a target completed again counts again, as
        its best-AUC series is cut (and counted) there."""
        if completed is not None:
            names, key = run.completed_targets, hash(completed)
            if key not in names:
                if len(names) < self.limits.max_targets_per_run:
                    names.add(key)
                run.targets_done += 1
        run.targets_completed = max(run.targets_done, run.targets_reported or 0)

    def _refund_checkpoint(self, run: Run, checkpoint: Checkpoint) -> None:
        run.series -= len(checkpoint.metrics)
        self.series -= len(checkpoint.metrics)
        run.text_bytes -= len(checkpoint.filepath or "")

    def _spend_text(self, run: Run, size: int) -> bool:
        if run.text_bytes + size > self.limits.max_text_bytes_per_run:
            self.dropped["max_text_bytes_per_run"] += 1
            return False
        run.text_bytes += size
        return True

    def _set_config(self, run: Run, config: dict[str, Any]) -> None:
        """The run's config, its leading keys as far as the text budget allows."""
        run.text_bytes -= run.config_bytes
        room = self.limits.max_text_bytes_per_run - run.text_bytes
        size = len(msgspec.json.encode(config))
        if size > room:
            kept: dict[str, Any] = {}
            size = 2
            for key, value in config.items():
                item = len(msgspec.json.encode({key: value}))
                if size + item > room:
                    break
                kept[key], size = value, size + item
            self.dropped["max_text_bytes_per_run"] += 1
            config = kept
        run.config, run.config_bytes = config, size
        run.text_bytes += size

    def _add_span_event(
        self, run: Run, span: OpenSpan, ts: float, name: str, attributes: dict[str, Any]
    ) -> None:
        if len(span.events) >= MAX_SPAN_EVENTS:
            self.dropped["max_events_per_span"] += 1
            return
        size = SPAN_EVENT_BYTES + len(name) + sum(
            len(key) + (len(value) if isinstance(value, str) else 8)
            for key, value in attributes.items()
        )  # fmt: skip
        if self._spend_text(run, size):
            span.events.append((ts, name, attributes))
            span.cost += size

    def _open_target_span(self, run: Run, event: TargetStart, ts: float) -> None:
        target = event.target
        replaced = run.target_spans.pop(target, None)  # started again before it completed
        if replaced is not None:
            run.text_bytes -= replaced.cost
        if len(run.target_spans) >= self.limits.max_targets_per_run:
            self.dropped["max_targets_per_run"] += 1
            return
        size = OPEN_SPAN_BYTES + len(target)
        if not self._spend_text(run, size):
            return
        attributes: dict[str, Any] = {"training.target": target}
        if event.target_index is not None:
            attributes["training.target.index"] = event.target_index
        parent = run.stage_span or run.root_span
        span = run.target_spans[target] = OpenSpan("target", target, ts, parent, attributes)
        span.cost = size


def _refund_finished_spans(run: Run, out: list[Output]) -> None:
    """Give the run back the text budget of the spans that ended."""
    for output in out:
        if output.__class__ is FinishedSpan:
            run.text_bytes -= output.span.cost


def _target_of(event: Event) -> str | None:
    """The target an event names: its ``target`` field (a custom event's, as text), or a
    progress event's ``current_target``."""
    if event.__class__ is CustomEvent:
        target = event.fields.get("target")
        return None if target is None or target == "" else str(target)
    if event.__class__ is Progress:
        return event.current_target or None
    return getattr(event, "target", None)


def _span_of(run: Run, event: Event) -> OpenSpan | None:
    """The open span an event belongs to: its target's, else the stage's, else the run's."""
    target = _target_of(event)
    span = run.target_spans.get(target) if target is not None else None
    return span or run.stage_span or run.root_span


def _log_attributes(run: Run, event_type: str, target: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"training.run_id": run.run_id, "event_type": event_type}
    if run.stage is not None:
        attributes["training.stage"] = run.stage
    if target is not None:
        attributes["training.target"] = target[:256]
    return attributes


def _clean_end(run: Run) -> str:
    """A run closed without saying how it went: ``completed`` when its last stage was
    ``completed`` (the training-events module's dashboard shows it DONE), else ``ended``."""
    return "completed" if run.stage == "completed" else "ended"
