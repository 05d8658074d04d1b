"""A synthetic but realistic training run, for ``runwatch demo`` and the benchmark.

The run walks the stages of the training-events format (initializing, ranking, feature_selection,
training, completed) with targets, progress, step metrics (loss falling, a
cosine learning rate, accuracy rising), checkpoints with a best one, and a
recoverable error, the phases of its goodput account (data loading each step, an evaluation
and a timed save at each checkpoint), optionally a crash and its resume from the last
checkpoint, in the event format of :mod:`exporter.core.events`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

STAGES = ("initializing", "ranking", "feature_selection", "training", "completed")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def synthetic_run(
    run_id: str,
    start: float,
    *,
    targets: int = 6,
    steps: int = 400,
    step_seconds: float = 0.05,
    checkpoint_every: int = 100,
    fail_at_step: int | None = None,
    crash_at_step: int | None = None,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """Yield one run's events in order; timestamps advance by ``step_seconds`` per event.

    With ``fail_at_step`` the run dies in training with a non-recoverable error; with
    ``crash_at_step`` it crashes there, and 10 steps' time later resumes from its last
    checkpoint (a restart of the same run id, as ``resume_or_create`` makes one).
    """
    rng = random.Random(seed)
    clock = start

    def event(event_type: str, **fields: Any) -> dict[str, Any]:
        nonlocal clock
        clock += step_seconds
        return {"event_type": event_type, "run_id": run_id, "timestamp": iso(clock), **fields}

    yield event(
        "run_start",
        name=f"demo-{run_id[-6:]}",
        config={"lr": 3e-4, "batch_size": 128, "optimizer": "adamw", "targets": targets},
        total_steps=steps,
    )
    yield event("stage_change", previous_stage="", new_stage="initializing")
    yield event("progress", stage="initializing", progress_pct=100.0, message="data loaded")
    for stage in ("ranking", "feature_selection"):
        yield event("stage_change", previous_stage="initializing", new_stage=stage)
        for i in range(targets):
            target = f"target_{i:02d}"
            yield event("target_start", target=target, target_index=i, total_targets=targets)
            yield event(
                "progress",
                stage=stage,
                progress_pct=100.0 * i / targets,
                current_target=target,
                targets_complete=i,
                targets_total=targets,
                message=f"Evaluating {target}",
            )
            if stage == "ranking" and i == targets // 2:
                yield event(
                    "error",
                    error_message=f"{target}: too few samples, skipped fold",
                    error_type="DataWarning",
                    recoverable=True,
                    target=target,
                )
            status = "skipped" if stage == "ranking" and i == targets // 2 else "success"
            yield event(
                "target_complete",
                target=target,
                status=status,
                best_auc=round(0.6 + 0.3 * rng.random(), 4),
                duration_seconds=round(step_seconds * (1 + rng.random()), 3),
            )
        yield event(
            "progress",
            stage=stage,
            progress_pct=100.0,
            targets_complete=targets,
            targets_total=targets,
            message=f"{stage} complete",
        )
    yield event("stage_change", previous_stage="feature_selection", new_stage="training")
    best = math.inf
    step, saved = 0, 0
    while step < steps:
        step += 1
        loss = 2.5 * math.exp(-step / (steps / 4)) + 0.05 + 0.02 * rng.random()
        lr = 3e-4 * 0.5 * (1 + math.cos(math.pi * step / steps))
        accuracy = min(0.99, 1 - loss / 2.6)
        yield event(
            "metric_update",
            step=step,
            metrics={"loss": loss, "learning_rate": lr, "accuracy": accuracy},
            phase_seconds={"data_loading": round(step_seconds * 0.2, 6)},
        )
        if step % max(1, steps // 20) == 0:
            yield event(
                "progress",
                stage="training",
                progress_pct=100.0 * step / steps,
                message=f"step {step}/{steps}",
            )
        if step == fail_at_step:
            yield event(
                "error",
                error_message="CUDA out of memory",
                error_type="OutOfMemoryError",
                recoverable=False,
            )
            yield event("run_complete", status="failed", total_targets=targets)
            return
        if step == crash_at_step:
            crash_at_step = None
            yield event("status_change", old_status="running", new_status="crashed")
            clock += 10 * step_seconds  # down, then restored from the last checkpoint
            yield event("run_start", name=f"demo-{run_id[-6:]}", resumed=True, total_steps=steps)
            step = saved
            continue
        if step % checkpoint_every == 0:
            is_best = loss < best
            best = min(best, loss)
            saved = step
            yield event("phase", phase_seconds={"evaluation": round(step_seconds * 0.8, 6)})
            yield event(
                "checkpoint_saved",
                checkpoint_id=f"ckpt_{step:06d}",
                filepath=f"checkpoints/{run_id}/model_{step:06d}.pt",
                step=step,
                metrics={"loss": loss, "accuracy": accuracy},
                is_best=is_best,
                duration_seconds=round(step_seconds * 0.5, 6),
            )
    yield event("stage_change", previous_stage="training", new_stage="completed")
    yield event(
        "run_complete", status="completed", total_targets=targets, successful_targets=targets - 1
    )


def synthetic_router_cycle(cycle: int, start: float, step_seconds: float) -> Iterator[dict]:
    """One pass of an event router's pipeline (the event router's catalogue, the built-in mapping):
    a data sync, training, evaluation and a promotion or a regression, with hosts going
    offline and back and daemons changing status; timestamps advance by ``step_seconds``."""
    clock = start
    config = ("sq8_2p", "hex8_2p", "sq19_2p")[cycle % 3]

    def event(event_type: str, **payload: Any) -> dict[str, Any]:
        nonlocal clock
        clock += step_seconds
        return {"event_type": event_type, "timestamp": clock, "source": "demo_router",
                "payload": {"config": config, **payload}}  # fmt: skip

    if cycle == 0:
        for host in ("node-1", "node-2", "node-3"):
            yield event("HOST_ONLINE", host=host)
        yield event("DAEMON_STATUS_CHANGED", daemon="auto_sync", status="running")
        yield event("ALL_CRITICAL_DAEMONS_READY")
    sync = f"sync-{cycle}"
    yield event("DATA_SYNC_STARTED", sync_id=sync)
    yield event("DATA_SYNC_FAILED" if cycle % 5 == 4 else "DATA_SYNC_COMPLETED", sync_id=sync)
    yield event("NEW_GAMES_AVAILABLE", games=1000 + cycle)
    yield event("TRAINING_STARTED")
    if cycle % 4 == 3:
        yield event("TRAINING_FAILED", error="loss became NaN")
        return
    yield event("TRAINING_COMPLETED", model_path=f"models/{config}.pth")
    yield event("EVALUATION_STARTED")
    yield event("EVALUATION_PROGRESS", games_played=50)
    yield event("EVALUATION_COMPLETED", win_rate=0.55)
    if cycle % 3 == 0:
        yield event("REGRESSION_DETECTED", elo_drop=35)
        if cycle % 6 == 0:
            yield event("REGRESSION_CRITICAL", elo_drop=120)
        yield event("PROMOTION_FAILED", reason="regression")
    else:
        yield event("MODEL_PROMOTED", elo=1500 + 10 * cycle)
    if cycle % 6 == 0:
        yield event("HOST_OFFLINE", host="node-3")
        yield event("DAEMON_STATUS_CHANGED", daemon="auto_sync", status="degraded")
    elif cycle % 6 == 3:
        yield event("NODE_RECOVERED", host="node-3")
        yield event("DAEMON_STATUS_CHANGED", daemon="auto_sync", status="running")
