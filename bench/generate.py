"""Write N events of the seed's mix (one run: stages, targets, progress, errors, step metrics,
checkpoints) as JSONL: ``python bench/generate.py --events 1000000 --out /tmp/events.jsonl``."""

from __future__ import annotations

import argparse
import itertools

import orjson

from exporter.simulate.synthetic import synthetic_run


def generate(path: str, events: int, run_id: str = "bench_run_0001") -> int:
    """Write exactly ``events`` lines; the last one is the run's run_complete."""
    targets = max(1, events // 12)  # about half seed-000 events, half step metrics
    steps = events  # more than needed; cut below
    run = synthetic_run(
        run_id, 1.7e9, targets=targets, steps=steps, step_seconds=0.001, checkpoint_every=1000
    )
    body = list(itertools.islice(run, events - 1))
    end = {
        "event_type": "run_complete",
        "run_id": run_id,
        "timestamp": 1.7e9 + events,
        "status": "completed",
        "total_targets": targets,
    }
    with open(path, "wb") as out:
        out.writelines(orjson.dumps(event) + b"\n" for event in [*body, end])
    return len(body) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    print(generate(args.out, args.events))


if __name__ == "__main__":
    main()
