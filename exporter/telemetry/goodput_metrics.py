"""Catalogue entries for the goodput account of each training run (:mod:`exporter.core.goodput`;
docs/goodput.md defines each figure).

Shown for runs that have logged a step. The seconds are counters that only grow: goodput
grows when a checkpoint or a clean end keeps the progress at risk, ``lost_work`` when an
attempt ends badly; ``training_work_at_risk_seconds`` is the gauge between them, so
goodput + badput + at risk = the wall clock, at every scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from exporter.core.goodput import Ledger
from exporter.core.state import Run
from exporter.telemetry.metric import Metric, RunSampler, Sample, Type

G, C = Type.GAUGE, Type.COUNTER
RUN = ("run_id",)


def _training(value: Callable[[Ledger], float | None]) -> RunSampler:
    """One sample per run that has stepped; left out where ``value`` gives None."""

    def of_run(run: Run) -> Iterator[Sample]:
        ledger = run.goodput
        if ledger.steps and (number := value(ledger)) is not None:
            yield (run.run_id,), number

    return RunSampler(of_run)


def _badput(run: Run) -> Iterator[Sample]:
    if run.goodput.steps:
        for cause, seconds in run.goodput.badput.items():
            yield (run.run_id, cause), seconds


def _step_percentiles(run: Run) -> Iterator[Sample]:
    for percentile, seconds in run.goodput.step_percentiles():
        yield (run.run_id, percentile), seconds


GOODPUT_METRICS: tuple[Metric, ...] = (
    Metric("training_goodput_seconds_total", "training.goodput", "s", C, RUN,
           "Step time whose progress was kept: by a checkpoint saved after it, or by the "
           "run's clean end.", _training(lambda g: g.goodput)),
    Metric("training_badput_seconds_total", "training.badput", "s", C, ("run_id", "cause"),
           "Wall-clock time of the run that did not become kept progress, by cause: init "
           "(start to first step), checkpoint_restore (a restart to its first step), "
           "checkpoint_save, data_loading, evaluation (as the script marks them), "
           "lost_work (step time after the last checkpoint of an attempt that ended badly), "
           "stall (a step's time over 5x the median of the last 100), downtime (between an "
           "attempt's last sign of life and the next attempt), other; a phase name of the "
           "script's own is a cause of its own (8 a run, then custom).",
           RunSampler(_badput)),
    Metric("training_work_at_risk_seconds", "training.work_at_risk", "s", G, RUN,
           "Step time since the run's last checkpoint: lost if the run crashes now.",
           _training(lambda g: g.at_risk)),
    Metric("training_wall_clock_seconds_total", "training.wall_clock", "s", C, RUN,
           "Time accounted for the run, from its first event to its latest (a run ended "
           "by a crash: to its last sign of life); goodput + badput + at risk.",
           _training(lambda g: g.elapsed)),
    Metric("training_restarts_total", "training.restarts", "", C, RUN,
           "Times the run started again under the same run id after it stopped.",
           _training(lambda g: g.restarts)),
    Metric("training_lost_steps_total", "training.lost_steps", "{step}", C, RUN,
           "Steps done after the last checkpoint of attempts that ended badly.",
           _training(lambda g: g.lost_steps)),
    Metric("training_lost_gpu_seconds_total", "training.lost_gpu", "s", C, RUN,
           "Lost work times the GPUs attributed to the run's processes when it was lost "
           "(0 without GPUs).", _training(lambda g: g.lost_gpu_seconds)),
    Metric("training_steps_per_second", "training.steps", "{step}/s", G, RUN,
           "Steps per second of wall clock over the last 5 minutes of the current attempt "
           "(phases and checkpoints included); absent once the run ended.",
           _training(lambda g: g.steps_per_second())),
    Metric("training_step_time_seconds", "training.step.time", "s", G,
           ("run_id", "percentile"), "Time of the run's last 100 steps at percentiles p50, "
           "p90 and p99 (the time from the step before, phases the script marked left "
           "out).", RunSampler(_step_percentiles)),
    Metric("training_planned_steps", "training.planned_steps", "{step}", G, RUN,
           "Steps the run says it will take (run_start total_steps).",
           _training(lambda g: g.total_steps)),
    Metric("training_eta_seconds", "training.eta", "s", G, RUN,
           "Seconds until the run reaches its planned steps at its current steps per "
           "second; absent without total_steps or once the run ended.",
           _training(lambda g: g.eta_seconds())),
)  # fmt: skip
