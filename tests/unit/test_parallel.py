"""Replay on two cores gives exactly what the serial path gives, refusals included."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from exporter.app.wiring import read_files_once
from exporter.pipeline import Pipeline
from exporter.simulate.synthetic import synthetic_run
from exporter.sources.files.parallel import ParallelReader
from tests.pipelines import exposition


def test_parallel_and_serial_replays_are_identical(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    events = [orjson.dumps(e) for e in synthetic_run("run_p", 1.7e9, targets=40, steps=2000)]
    first.write_bytes(b"\n".join(events[:1000]) + b"\ngarbage\n\xff\xfe\n" + b"x" * 3000 + b"\n")
    second.write_bytes(
        b"\n".join(events[1000:])
        + b'\n{"event_type": "metric_update", "run_id": "run_p", "timestamp": 1.75e9, '
        b'"metrics": {"loss": NaN}}\n{"event_type": "shard_loaded", "run_id": "run_p", "rows": 5}\n'
        b'{"event_type": "progress", "run_id": "run_p", "timestamp": 1.75e9, "stage": "s", '
        b'"progress_pct": NaN}\n{"event_type": "progress", "run_id": "run_p", "ti'
    )
    paths = [str(first), str(second)]
    serial, parallel = Pipeline(max_line_bytes=2000), Pipeline(max_line_bytes=2000)
    read_files_once(serial, paths)
    ParallelReader(paths, 2000).feed(parallel, "jsonl")
    text = exposition(parallel)
    assert text == exposition(serial)
    for reason in ("invalid_json", "invalid_utf8", "line_too_long", "non_finite_number"):
        assert f'reason="{reason}",source="jsonl"}} 0.0' not in text
    assert 'training_events_total{event_type="metric_update"} 2001.0' in text  # NaN loss too
    assert 'training_metric_non_finite_total{key="loss",run_id="run_p"} 1.0' in text
    assert 'training_events_total{event_type="shard_loaded"} 1.0' in text


def test_a_file_the_worker_cannot_read_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="not a regular file"):
        ParallelReader([str(tmp_path)], 1000).feed(Pipeline(), "jsonl")
