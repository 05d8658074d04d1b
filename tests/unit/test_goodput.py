"""The goodput account (exporter/core/goodput.py) on scripted runs with exact timestamps:
the worked timeline of docs/goodput.md to the second, and properties over any events."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.events import Rejected, parse_line
from exporter.core.goodput import CAUSES, CUSTOM, MAX_CUSTOM_PHASES, Ledger
from exporter.core.state import ProcessObservation, State

T0 = 1_700_000_000.0


def event(kind: str, at: float, **fields: Any) -> bytes:
    return json.dumps({"event_type": kind, "run_id": "r", "timestamp": T0 + at, **fields}).encode()


def scripted_run() -> list[bytes]:
    """docs/goodput.md's worked timeline: 30 s of start-up, 20 steps of 2 s with 0.5 s of
    data loading each, a 4 s checkpoint, 60 s of evaluation, 10 more steps, a crash 1 s
    into the 11th, 120 s down, 15 s of restore, 30 steps, one stalled 20 s, the end."""
    lines = [event("run_start", 0, name="worked", total_steps=40)]
    at = 30.0
    lines.append(event("metric_update", at, step=0, metrics={"loss": 1.0}))
    for step in range(1, 21):
        at += 2
        lines.append(event("metric_update", at, step=step, metrics={"loss": 1.0},
                           phase_seconds={"data_loading": 0.5}))  # fmt: skip
    at += 4  # 70 + 4
    lines.append(event("checkpoint_saved", at, checkpoint_id="c20", step=20,
                       duration_seconds=4))  # fmt: skip
    at += 60  # 134
    lines.append(event("phase", at, phase_seconds={"evaluation": 60}))
    for step in range(21, 31):
        at += 2
        lines.append(event("metric_update", at, step=step, metrics={"loss": 1.0}))
    at += 1  # 155: the process dies 1 s into step 31
    lines.append(event("status_change", at, new_status="crashed"))
    at += 120  # 275
    lines.append(event("run_start", at, resumed=True))
    at += 15  # 290: restored from c20; step 21 again
    lines.append(event("metric_update", at, step=21, metrics={"loss": 1.0}))
    for step in range(22, 51):
        at += 20 if step == 30 else 2
        lines.append(event("metric_update", at, step=step, metrics={"loss": 1.0}))
    at += 3  # 369
    lines.append(event("run_complete", at, status="completed"))
    return lines


def apply(lines: list[bytes], state: State | None = None) -> State:
    state = state or State()
    for line in lines:
        state.apply(parse_line(line))
    return state


def figures(ledger: Ledger) -> dict[str, float]:
    return {"goodput": ledger.goodput, "at_risk": ledger.at_risk, **ledger.badput}


def test_the_worked_timeline_gives_each_figure_to_the_second() -> None:
    ledger = apply(scripted_run()).runs["r"].goodput
    assert figures(ledger) == pytest.approx({
        "goodput": 30 + 56 + 1.5,  # steps 1-20 (1.5 s each), 28 steps of 2 s, the stall's 1.5
        "at_risk": 0,
        "init": 30 + 0,  # start to step 0
        "checkpoint_restore": 15,
        "checkpoint_save": 4,
        "data_loading": 10,
        "evaluation": 60,
        "lost_work": 20 + 1,  # steps 21-30, and the second of step 31
        "stall": 18.5,  # the step of 20 s, past the median of the steps before it (1.5 s)
        "downtime": 120,
        "other": 3,  # the last step to run_complete
    }, abs=1e-9)  # fmt: skip
    assert ledger.elapsed == pytest.approx(369)
    assert (ledger.restarts, ledger.lost_steps, ledger.steps) == (1, 10, 61)
    assert sum(figures(ledger).values()) == pytest.approx(ledger.elapsed)


def test_a_crash_seen_by_its_pid_file_ends_the_attempt_at_its_last_step() -> None:
    lines = scripted_run()
    crash = next(i for i, line in enumerate(lines) if b"crashed" in line)
    state = apply(lines[:crash])
    state.observe_process(ProcessObservation("r", False, T0, T0 + 158.0))  # seen 3 s later
    apply(lines[crash + 1 :], state)
    ledger = state.runs["r"].goodput
    # the second of step 31 is downtime now: nothing says the process lived through it
    assert (ledger.badput["lost_work"], ledger.badput["downtime"]) == (20, 121)
    assert ledger.elapsed == pytest.approx(369)


def test_a_resume_nobody_saw_crash_loses_the_work_since_the_checkpoint() -> None:
    lines = [line for line in scripted_run() if b"crashed" not in line]
    ledger = apply(lines).runs["r"].goodput
    assert (ledger.restarts, ledger.lost_steps, ledger.badput["lost_work"]) == (1, 10, 20)
    assert ledger.badput["downtime"] == pytest.approx(121)


def test_a_run_that_fails_loses_what_no_checkpoint_kept_and_a_late_step_adds_nothing() -> None:
    lines = [event("run_start", 0), event("metric_update", 5, step=0, metrics={"x": 1})]
    lines += [event("metric_update", 5 + s, step=s, metrics={"x": 1}) for s in range(1, 6)]
    lines += [event("run_complete", 12, status="failed"),
              event("metric_update", 13, step=6, metrics={"x": 1})]  # fmt: skip
    ledger = apply(lines).runs["r"].goodput
    assert (ledger.goodput, ledger.badput["lost_work"], ledger.lost_steps) == (0, 7, 6)
    assert ledger.elapsed == 12


def test_lost_work_counts_the_gpus_the_run_had_while_it_lived() -> None:
    lines = [event("run_start", 0)]
    lines += [event("metric_update", 1 + s, step=s, metrics={"x": 1}) for s in range(4)]
    state = apply(lines)
    state.observe_gpus({"r": 2, "unknown": 1})
    state.observe_process(ProcessObservation("r", False, T0, T0 + 9))
    state.observe_gpus({"r": 0})  # gone with its process: the count at the loss stands
    ledger = state.runs["r"].goodput
    assert (ledger.badput["lost_work"], ledger.lost_gpu_seconds, ledger.gpus) == (3, 6, 2)


def test_a_script_of_its_own_phases_gets_eight_names_then_custom() -> None:
    names = {f"phase_{n}": 1.0 for n in range(MAX_CUSTOM_PHASES + 2)}
    lines = [event("run_start", 0), event("metric_update", 1, step=0, metrics={"x": 1}),
             event("phase", 20, phase_seconds=names)]  # fmt: skip
    badput = apply(lines).runs["r"].goodput.badput
    assert set(badput) == {*CAUSES, *sorted(names)[:MAX_CUSTOM_PHASES], CUSTOM}
    assert badput[CUSTOM] == 2 and badput["other"] == 9


def test_phases_claim_no_more_than_the_time_since_the_last_mark() -> None:
    lines = [event("run_start", 0), event("metric_update", 1, step=0, metrics={"x": 1}),
             event("metric_update", 3, step=1, metrics={"x": 1},
                   phase_seconds={"data_loading": 5.0, "evaluation": 1.0})]  # fmt: skip
    ledger = apply(lines).runs["r"].goodput
    assert (ledger.badput["data_loading"], ledger.badput["evaluation"], ledger.at_risk) == (
        2, 0, 0)  # fmt: skip


def test_steps_per_second_and_eta_from_the_planned_steps() -> None:
    lines = [event("run_start", 0, total_steps=1000)]
    lines += [event("metric_update", 1 + s * 0.5, step=s, metrics={"x": 1}) for s in range(200)]
    ledger = apply(lines).runs["r"].goodput
    assert ledger.steps_per_second() == pytest.approx(2.0)
    assert ledger.eta_seconds() == pytest.approx((1000 - 199) / 2.0)
    assert dict(ledger.step_percentiles()) == pytest.approx({"p50": 0.5, "p90": 0.5, "p99": 0.5})
    ended = apply([event("run_complete", 101, status="completed")], apply(lines))
    assert ended.runs["r"].goodput.eta_seconds() is None


def test_a_snapshot_is_not_changed_by_later_events() -> None:
    state = apply(scripted_run()[:10])
    before = state.snapshot().runs["r"].goodput
    assert figures(before) == figures(state.runs["r"].goodput) and before.elapsed == 46
    kept = (before.elapsed, dict(before.badput), before.step_percentiles())
    apply(scripted_run()[10:], state)
    assert (before.elapsed, dict(before.badput), before.step_percentiles()) == kept


# -- properties ------------------------------------------------------------------------------

MARK = st.one_of(
    st.builds(lambda s, p: ("metric_update", {"step": s, "metrics": {"x": 1.0},
                                              "phase_seconds": p}),
              st.none() | st.integers(0, 50),
              st.dictionaries(st.sampled_from(["data_loading", "evaluation", "mine", "a", "b"]),
                              st.floats(0, 30), max_size=3)),
    st.builds(lambda p: ("phase", {"phase_seconds": p}),
              st.dictionaries(st.text("abcdefghijklmnop_", min_size=1, max_size=3),
                              st.floats(0, 100), min_size=1, max_size=4)),
    st.builds(lambda c, d, v: ("checkpoint_saved", {"checkpoint_id": c, "duration_seconds": d,
                                                    "valid": v}),
              st.sampled_from(["c1", "c2", "c3"]), st.none() | st.floats(0, 20),
              st.none() | st.booleans()),
    st.builds(lambda s: ("status_change", {"new_status": s}),
              st.sampled_from(["crashed", "failed", "completed", "interrupted", "running"])),
    st.builds(lambda r: ("run_start", {"resumed": r}), st.booleans()),
    st.just(("pid_dead", {})),
)  # fmt: skip


def _monotonic_figures(ledger: Ledger) -> list[float]:
    return [ledger.elapsed, ledger.goodput, ledger.restarts, ledger.lost_steps, ledger.steps,
            ledger.lost_gpu_seconds, *ledger.badput.values()]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1000), MARK), max_size=40), st.integers(0, 4))
def test_the_causes_always_add_up_to_the_wall_clock_whatever_the_order(
    marks: list[tuple[float, tuple[str, dict[str, Any]]]], gpus: int
) -> None:
    state = State()
    state.apply(parse_line(event("run_start", 0)))
    state.runs["r"].goodput.gpus = gpus
    before = _monotonic_figures(state.runs["r"].goodput)
    for at, (kind, fields) in marks:  # in the order drawn: any order, skew and all
        try:
            if kind == "pid_dead":
                state.observe_process(ProcessObservation("r", False, T0, T0 + at))
            else:
                state.apply(parse_line(event(kind, at, **fields)))
        except Rejected:
            continue  # out of order past the clock skew: refused whole, nothing changed
        ledger = state.runs["r"].goodput
        parts = [ledger.goodput, ledger.at_risk, *ledger.badput.values()]
        assert all(part >= 0 for part in parts)
        assert math.fsum(parts) == pytest.approx(ledger.elapsed, abs=1e-6)
        assert ledger.goodput <= ledger.elapsed + 1e-9
        assert ledger.lost_gpu_seconds <= ledger.badput["lost_work"] * gpus + 1e-6
        after = _monotonic_figures(ledger)
        assert all(new >= old - 1e-9 for new, old in zip(after, before, strict=False))
        before = after


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"event_type":"phase","run_id":"r","phase_seconds":{"data_loading":-1}}', "invalid_value"),
    (b'{"event_type":"phase","run_id":"r","phase_seconds":{"data_loading":NaN}}',
     "non_finite_number"),
    (b'{"event_type":"phase","run_id":"r","phase_seconds":{"data_loading":"x"}}', "wrong_type"),
    (b'{"event_type":"phase","run_id":"r","phase_seconds":{"":1}}', "invalid_value"),
    (b'{"event_type":"phase","run_id":"r","phase_seconds":{"' + b"a" * 300 + b'":1}}',
     "value_too_long"),
    (b'{"event_type":"phase","run_id":"r"}', "missing_field"),
    (b'{"event_type":"run_start","run_id":"r","total_steps":-5}', "invalid_value"),
    (b'{"event_type":"checkpoint_saved","run_id":"r","checkpoint_id":"c",'
     b'"duration_seconds":-2}', "invalid_value"),
])  # fmt: skip
def test_bad_phase_and_goodput_fields_are_refused_with_a_reason(line: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as refused:
        parse_line(line)
    assert refused.value.reason == reason


def test_a_huge_phase_claims_no_more_than_its_interval() -> None:
    lines = [event("run_start", 0), event("metric_update", 1, step=0, metrics={"x": 1}),
             event("phase", 4, phase_seconds={"evaluation": 1e308})]  # fmt: skip
    ledger = apply(lines).runs["r"].goodput
    assert (ledger.badput["evaluation"], ledger.elapsed) == (3, 4)
