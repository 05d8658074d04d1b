"""Replay on two cores gives exactly what the serial path gives, refusals included."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from exporter.app.wiring import read_files_once, read_router_files_once
from exporter.core.events import AnyEvent
from exporter.core.router.reducer import RouterState
from exporter.pipeline import Pipeline
from exporter.pipeline.source_names import ROUTER_SOURCE
from exporter.simulate.synthetic import synthetic_router_cycle, synthetic_run
from exporter.sources.files.parallel import ParallelReader, event_reader, router_reader
from exporter.sources.files.router_mapping import load_mapping
from tests.pipelines import Capture, exposition


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
    event_reader(paths, 2000).feed(lambda batch: parallel.apply_parsed(batch, "jsonl"))
    text = exposition(parallel)
    assert text == exposition(serial)
    for reason in ("invalid_json", "invalid_utf8", "line_too_long", "non_finite_number"):
        assert f'reason="{reason}",source="jsonl"}} 0.0' not in text
    assert 'training_events_total{event_type="metric_update"} 2001.0' in text  # NaN loss too
    assert 'training_metric_non_finite_total{key="loss",run_id="run_p"} 1.0' in text
    assert 'training_events_total{event_type="shard_loaded"} 1.0' in text


def test_a_file_the_worker_cannot_read_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="not a regular file"):
        event_reader([str(tmp_path)], 1000).feed(lambda batch: None)


@pytest.mark.parametrize("logs", [False, True])
def test_router_traces_planned_by_the_worker_reduce_as_in_one_process(
    tmp_path: Path, logs: bool
) -> None:
    """Every rule kind, refusals, a missing key, a number that is not one, and (with an
    event-log output) each event's log line: the same whether planned here or there."""
    trace = tmp_path / "router.jsonl"
    lines = [orjson.dumps(e) for cycle in range(30)
             for e in synthetic_router_cycle(cycle, 1.7e9 + 100 * cycle, 1.0)]  # fmt: skip
    lines[5:5] = [b"garbage", b"\xff\xfe", b"[1, 2]", b'{"event_type": "NOT_A_TYPE"}',
                  b'{"timestamp": 1.7e9}', b'{"event_type": "HOST_ONLINE", "timestamp": "x"}',
                  b'{"event_type": "HOST_ONLINE", "timestamp": 1.7e9, "payload": {}}',
                  b'{"event_type": "ELO_SIGNIFICANT_CHANGE", "timestamp": 1.7e9, "payload": '
                  b'{"config": "c", "elo": "high"}}',
                  b'{"event_type": "DATA_SYNC_STARTED", "timestamp": 1.7e9, "payload": {}}',
                  b"x" * 3000]  # fmt: skip
    trace.write_bytes(b"\n".join(lines) + b"\n")
    results = []
    for parallel in (False, True):
        pipeline, capture = Pipeline(max_line_bytes=2000), Capture()
        pipeline.router = RouterState(load_mapping(None))
        pipeline.add_sink(capture, spans=True, logs=logs)  # type: ignore[arg-type]
        if parallel:
            planner = RouterState(load_mapping(None))
            planner.logging = logs
            reader = router_reader([str(trace)], 2000, planner)
            reader.feed(lambda batch, p=pipeline: p.apply_router_plans(batch, ROUTER_SOURCE))
        else:
            read_router_files_once(pipeline, [str(trace)])
        results.append((exposition(pipeline), [repr(o) for o in capture.outputs]))
    (serial_text, serial_outputs), (parallel_text, parallel_outputs) = results
    assert parallel_text == serial_text
    assert parallel_outputs == serial_outputs
    assert any("LogLine" in o for o in serial_outputs) == logs
    rejected = 'runwatch_events_rejected_total{{reason="{}",source="router"}} {}'
    for reason, count in [("invalid_json", 2), ("invalid_utf8", 1), ("not_an_object", 1),
                          ("unknown_event_type", 1), ("missing_field", 1),
                          ("invalid_timestamp", 1)]:  # fmt: skip
        assert rejected.format(reason, float(count)) in serial_text
    for reason in ("router_missing_key", "router_not_a_number"):
        assert f'runwatch_series_dropped_total{{reason="{reason}"}} 0.0' not in serial_text


def test_lines_msgpack_cannot_carry_are_parsed_again_here(tmp_path: Path) -> None:
    """An integer past 64 bits in a run's config parses (JSON has no bound) but does not
    cross the pipe: its batch is parsed again in this process, with the same result."""
    big = tmp_path / "big.jsonl"
    events = [orjson.dumps(e) for e in synthetic_run("run_b", 1.7e9, targets=5, steps=200)]
    first = b'{"event_type": "run_start", "run_id": "run_huge", "timestamp": 1.7e9, '
    first += b'"config": {"seed": 123456789012345678901234567890}}'
    big.write_bytes(b"\n".join([first, *events]) + b"\n")
    serial, parallel = Pipeline(), Pipeline()
    read_files_once(serial, [str(big)])
    event_reader([str(big)], 1 << 20).feed(lambda batch: parallel.apply_parsed(batch, "jsonl"))
    assert exposition(parallel) == exposition(serial)
    assert parallel.state.runs["run_huge"].config == {"seed": 123456789012345678901234567890}


def test_a_worker_that_dies_is_an_error_not_a_short_read(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b'{"event_type": "run_start", "run_id": "r"}\n')
    reader = ParallelReader([str(events)], 1000, lambda lines: os._exit(3), AnyEvent)
    with pytest.raises(OSError, match=r"worker ended before the end of the input \(exit code 3\)"):
        reader.feed(lambda batch: None)


def test_a_read_that_fails_names_its_file() -> None:
    """/proc/self/mem opens, then its reads fail (EIO): the message says which file."""
    for read in (
        lambda: read_files_once(Pipeline(), ["/proc/self/mem"]),
        lambda: event_reader(["/proc/self/mem"], 1000).feed(lambda batch: None),
    ):
        with pytest.raises(OSError) as raised:
            read()
        assert "/proc/self/mem" in str(raised.value)
