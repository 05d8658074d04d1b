"""Goodput accounting: how much of a training run's wall-clock time became progress that
was kept, and where the rest went (docs/goodput.md defines each figure on a timeline).

A :class:`Ledger` per run is fed *marks* in time order by the reducer: the run's start,
each step, each phase report, each checkpoint, its end and its resumption. Each mark
closes the interval since the one before and hands every second of it to exactly one
account: first to the phases the mark reports (data loading, evaluation, a checkpoint's
save, a name of the script's own), the rest to what the interval was by default — a
step's time when the mark is a step (kept once a checkpoint or a clean end keeps it,
lost when the attempt ends badly; the part of a step far above the run's typical step
time is a stall), start-up before an attempt's first step (``init`` the first time,
``checkpoint_restore`` after a restart), and ``other`` otherwise. The time between an
attempt's last sign of life and the next attempt is ``downtime``. So the causes, the
goodput and the work still at risk always add up to the time accounted.

Pure: time comes only from the marks; a mark older than the last is taken as at the
last (no time is counted twice).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

PHASE_CAUSES: tuple[str, ...] = ("init", "checkpoint_restore", "checkpoint_save",
                                 "data_loading", "evaluation")  # fmt: skip
"""Phases runwatch knows by name: a script may mark any of them (``monitor.phase``)."""
CAUSES: tuple[str, ...] = (*PHASE_CAUSES, "lost_work", "stall", "downtime", "other")
"""The badput causes every run shows; a script's own phase names come after them."""
CUSTOM = "custom"
"""The cause of the script's own phases past MAX_CUSTOM_PHASES names."""
MAX_CUSTOM_PHASES = 8
"""Phase names of a script's own kept per run as causes (label values); more add to
``custom``."""
RECENT_STEPS = 100
"""Steps whose times give the run's typical step time (the median) and the quantiles."""
STALL_FACTOR = 5.0
"""A step whose time is over this many times the median of the recent steps stalled."""
MIN_STEPS_FOR_STALLS = 10
"""Steps needed before a step is judged a stall against them."""
RATE_SAMPLE_SECONDS = 10.0
RATE_SAMPLES = 31
"""Steps per second: from a step 5 minutes back in the attempt (steps remembered every
10 s) to its latest."""
STEP_PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


@dataclass(slots=True)
class Ledger:
    """One run's account; ``elapsed == goodput + at_risk + sum(badput.values())``."""

    start: float
    cursor: float  # time accounted up to
    goodput: float = 0.0  # step time whose progress a checkpoint or a clean end kept
    at_risk: float = 0.0  # step time since the last checkpoint: lost if the attempt dies
    badput: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CAUSES, 0.0))
    attempts: int = 1
    steps: int = 0  # steps counted, over all attempts
    lost_steps: int = 0
    lost_gpu_seconds: float = 0.0
    gpus: int = 0  # GPUs attributed to the run's processes, as last seen
    total_steps: int | None = None  # what the script says the run will take
    step: int | None = None  # the latest step number of the current attempt
    ended: bool = False  # the attempt ended; the next mark of the run resumes it
    active: bool = False  # a mark since the attempt opened
    seen_step: bool = False  # a step since the attempt opened
    steps_at_risk: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_STEPS))
    recent_sorted: list[float] = field(default_factory=list)
    rate: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=RATE_SAMPLES))
    latest: tuple[float, int] = (0.0, 0)  # the attempt's latest step: (time, step)

    @property
    def elapsed(self) -> float:
        return self.cursor - self.start

    @property
    def restarts(self) -> int:
        return self.attempts - 1

    # -- marks -------------------------------------------------------------------------------

    def open(self, ts: float, resumed: bool) -> None:
        """A process of the run started (``run_start``). After a sign of life of the open
        attempt (or when it says it resumes one) it is a new attempt: the open one ended
        unannounced at its last mark (a crash nobody observed)."""
        if self.ended or (self.active and (resumed or self.seen_step)):
            self.reopen(ts)

    def mark(self, ts: float, phases: Mapping[str, float], step: int | None = None,
             progress: bool = False, keeps: bool = False) -> None:  # fmt: skip
        """A sign of life at ``ts`` reporting ``phases`` (seconds by name) since the last
        mark; ``progress``: it is a step (number ``step``); ``keeps``: a new checkpoint,
        which keeps the progress made so far. Marks after the attempt's end (late
        events) are not counted: only a new start resumes a run."""
        if self.ended:
            return
        rest = self._claim(ts, phases)
        if progress:
            self._step(rest, ts, step)
        elif rest:
            self.badput["other" if self.seen_step else self._start_up()] += rest
        self.active = True
        if keeps:
            self.goodput += self.at_risk
            self.at_risk, self.steps_at_risk = 0.0, 0

    def end(self, ts: float | None, clean: bool) -> None:
        """The attempt ended at ``ts`` (None: at its last mark, for a crash seen later).
        A clean end keeps the progress at risk; any other loses it, with the work in
        progress since the last mark."""
        if self.ended:
            return
        if ts is not None:
            rest = self._claim(ts, {})
            self.badput["other" if clean else "lost_work"] += rest
        if clean:
            self.goodput += self.at_risk
        else:
            self.badput["lost_work"] += self.at_risk
            self.lost_steps += self.steps_at_risk
            self.lost_gpu_seconds += self.at_risk * self.gpus
        self.at_risk, self.steps_at_risk = 0.0, 0
        self.ended = True

    def reopen(self, ts: float) -> None:
        """A new attempt of the run at ``ts``; the time since the last one's end is
        downtime."""
        if not self.ended:
            self.end(None, clean=False)
        self.badput["downtime"] += self._claim(ts, {})
        self.attempts += 1
        self.ended = self.active = self.seen_step = False
        self.step = None
        self.rate.clear()

    def snapshot(self) -> Ledger:
        """A copy the reducer will not change (what the outputs read)."""
        # ``recent`` is the reducer's alone: outputs read the sorted copy
        copy = replace(self, badput=self.badput.copy(), recent=deque(maxlen=1),
                       recent_sorted=self.recent_sorted.copy())  # fmt: skip
        copy.rate = deque(self.rate, maxlen=RATE_SAMPLES)
        return copy

    # -- figures -----------------------------------------------------------------------------

    def step_percentiles(self) -> list[tuple[str, float]]:
        """The recent steps' times at STEP_PERCENTILES (nearest rank), by name."""
        ordered = self.recent_sorted
        if not ordered:
            return []
        last = len(ordered) - 1
        return [(name, ordered[min(last, int(q * len(ordered)))]) for name, q in STEP_PERCENTILES]

    def steps_per_second(self) -> float | None:
        """Steps per second of the attempt's wall clock over its last 5 minutes (phases,
        checkpoints and stalls included: what an ETA needs)."""
        if not self.rate or self.ended:
            return None
        (t0, s0), (t1, s1) = self.rate[0], self.latest
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    def eta_seconds(self) -> float | None:
        """Seconds until ``total_steps`` at the current rate; None unknown or finished."""
        rate = self.steps_per_second()
        if self.total_steps is None or self.step is None or not rate or rate <= 0:
            return None
        return max(0.0, self.total_steps - self.step) / rate

    # -- within ----------------------------------------------------------------------------

    def _claim(self, ts: float, phases: Mapping[str, float]) -> float:
        """Hand the time from the cursor to ``ts`` to the phases reported (in name order,
        each at most what is left), move the cursor; returns what is left."""
        rest = ts - self.cursor
        if rest <= 0:
            return 0.0
        self.cursor = ts
        if not phases:
            return rest
        for name in sorted(phases) if len(phases) > 1 else phases:
            seconds = min(rest, phases[name])
            if seconds > 0:
                cause = self._cause(name)
                self.badput[cause] = self.badput.get(cause, 0.0) + seconds
                rest -= seconds
        return rest

    def _cause(self, phase: str) -> str:
        if phase in self.badput or phase in PHASE_CAUSES:
            return phase
        return phase if len(self.badput) < len(CAUSES) + MAX_CUSTOM_PHASES else CUSTOM

    def _start_up(self) -> str:
        return "init" if self.attempts == 1 else "checkpoint_restore"

    def _step(self, seconds: float, ts: float, step: int | None) -> None:
        self.steps += 1
        self.steps_at_risk += 1
        if not self.seen_step:  # the first step of an attempt ends its start-up: its time
            self.seen_step = True  # is start-up's (a step's own time is not known yet)
            self.badput[self._start_up()] += seconds
        else:  # a step's time, or a stall's past the median of the recent ones
            recent, ordered = self.recent, self.recent_sorted
            count = len(ordered)
            median = ordered[count // 2] if count >= MIN_STEPS_FOR_STALLS else seconds
            if seconds > STALL_FACTOR * median:
                self.badput["stall"] += seconds - median
                self.at_risk += median
            else:
                self.at_risk += seconds
            if count == RECENT_STEPS:
                del ordered[bisect.bisect_left(ordered, recent[0])]
            recent.append(seconds)
            bisect.insort(ordered, seconds)
        self.step = step = step if step is not None else (self.step or 0) + 1
        self.latest = latest = (ts, step)
        rate = self.rate
        if not rate or ts - rate[-1][0] >= RATE_SAMPLE_SECONDS:
            rate.append(latest)
