"""Seed 000's emitters and event lines in real processes: a clean close is no crash, a
replayed file keeps custom and lenient lines, a declared custom type gets metrics from its
numeric fields. The lines as its dashboard takes them, in-process, are in
tests/unit/test_seed_000.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from tests.support import ROOT, event, jsonl, wait_for

SEED_PIPELINE = """
    import sys
    from runwatch_sdk.training_events import (init_training_events, emit_progress,
        emit_stage_change, close_training_events)
    init_training_events("{run_id}")
    emit_stage_change("ranking", "{last_stage}")
    emit_progress("{last_stage}", 100, message="done")
    close_training_events()  # the seed's pattern: no emit_run_complete
"""


def test_a_clean_close_without_run_complete_is_not_a_crash(serve, tmp_path) -> None:
    events, pid = tmp_path / "events.jsonl", tmp_path / "training.pid"
    server = serve("--events", str(events), "--pid-file", str(pid), "--pid-interval", "0.1",
                   "--no-nvml", "--no-system")  # fmt: skip
    env = {"RUNWATCH_EVENTS_FILE": str(events), "RUNWATCH_PID_FILE": str(pid)}
    for last_stage, status in (("feature_selection", "ended"), ("completed", "completed")):
        run_id = f"seed_{status}"  # a run of its own each: no status left over from the other
        code = textwrap.dedent(SEED_PIPELINE).format(last_stage=last_stage, run_id=run_id)
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60,
                       env={**os.environ, **env})  # fmt: skip
        wait_for(
            lambda s=status: (
                server.sample(f'training_run_status{{run_id="seed_{s}",status="{s}"}}') == 1
            ),
            what=status,
        )
        time.sleep(0.5)  # PID checks after the process exited: still no crash
        assert server.sample(f'training_run_status{{run_id="{run_id}",status="crashed"}}') == 0


def test_a_replayed_file_with_custom_and_lenient_lines(tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(
        event("run_start", run_id="old", ts=1_600_000_000),
        {"event_type": "dataset_loaded", "run_id": "old", "rows": 10},  # no timestamp
        event("run_complete", run_id="old", ts=1_600_000_100, status="completed"),
    ))  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "exporter", "replay", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    text = result.stdout
    assert 'training_events_total{event_type="dataset_loaded"} 1.0' in text
    assert 'training_run_status{run_id="old",status="completed"} 1.0' in text  # kept in order
    assert 'runwatch_events_lenient_total{reason="missing_timestamp",source="jsonl"} 1.0' in text


def test_a_declared_custom_type_gets_metrics_from_its_numeric_fields(tmp_path) -> None:
    mapping = tmp_path / "custom.yaml"
    mapping.write_text(
        textwrap.dedent("""\
        type_field: event_type
        events:
          data: [data_loaded]
        counters:
          - {name: data_loads, events: [data_loaded], labels: {run_id: run_id, split: split}}
        gauges:
          - {name: rows_loaded, key: {run_id: run_id}, events: [data_loaded], value: rows}
    """)
    )
    events = tmp_path / "events.jsonl"
    events.write_bytes(jsonl(
        event("run_start", run_id="r1"),
        event("data_loaded", run_id="r1", ts=1.7e9 + 1, rows=1200, split="train"),
        event("data_loaded", run_id="r1", ts=1.7e9 + 2, rows=300, split="valid"),
    ))  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "exporter", "replay", str(events),
                             "--router-mapping", str(mapping)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert 'router_rows_loaded{run_id="r1"} 300.0' in text
    assert 'router_data_loads_total{event_type="data_loaded",run_id="r1",split="train"} 1.0' in text
    assert 'training_events_total{event_type="data_loaded"} 2.0' in text
