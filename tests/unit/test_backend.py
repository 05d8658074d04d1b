"""The training backend source in-process: bad backend messages are counted, never fatal;
start handshakes time out once and late starts still count; the log tail's new lines. The
source against the reference backend and seed 003's backend is in tests/e2e/test_backend.py
and tests/e2e/test_backend_seed.py."""

from __future__ import annotations

import json
from collections import deque

from exporter.core.handshake import Handshakes
from exporter.pipeline import Pipeline
from exporter.sources.peers.backend import BackendEvents, new_lines


def test_bad_backend_messages_are_counted_not_fatal() -> None:
    pipeline = Pipeline()
    events = BackendEvents(pipeline)
    events(b"\x00 not json")
    events(b'{"type": "training.started"}')  # no job_id
    events(b'{"type": "training.paused", "job_id": "j"}')
    events(b'{"type": "training.epoch", "job_id": "j", "epoch": 0, "metrics": {"loss": "NaN"}}')
    # the events built from a message meet the bounds of a parsed line: a key past them
    # refuses that metric_update, counted, and the job goes on
    long_key = json.dumps({"type": "training.epoch", "job_id": "j", "epoch": 1,
                           "metrics": {"k" * 300: 1.0}})  # fmt: skip
    events(long_key)
    rejected = pipeline.stats.rejected
    assert rejected[("backend", "invalid_json")] == 1
    assert rejected[("backend", "contract_violation")] == 1
    assert rejected[("backend", "unknown_event_type")] == 1
    assert rejected[("backend", "value_too_long")] == 1
    run = pipeline.state.runs["j"]
    assert "loss" not in run.metrics  # a non-number metric is left out
    assert not any(len(key) > 256 for key in run.metrics) and run.targets_completed == 2


def test_handshakes_time_out_once_and_late_starts_still_count() -> None:
    handshakes = Handshakes(timeout=30)
    handshakes.accepted("a", 100.0)
    handshakes.accepted("b", 100.0)
    assert handshakes.start("a", 101.5) == 1.5
    assert handshakes.expire(120.0) == 0 and handshakes.expire(131.0) == 1
    assert handshakes.expire(200.0) == 0  # counted once
    assert handshakes.start("b", 140.0) == 40.0  # late, but its delay is still observed
    handshakes.accepted("a", 300.0)  # a listing that still shows a started job
    assert "a" not in handshakes.pending and handshakes.timeouts == 1
    assert handshakes.latency.count == 2


def test_log_tail_lines_are_new_only_past_the_overlap() -> None:
    assert new_lines(deque(), ["a", "b"]) == ["a", "b"]
    assert new_lines(deque(["a", "b", "c"]), ["b", "c", "d", "e"]) == ["d", "e"]
    assert new_lines(deque(["a", "b"]), ["a", "b"]) == []
    assert new_lines(deque(["x", "x"]), ["x", "x", "x"]) == ["x"]  # repeated lines
    assert new_lines(deque(["a"]), ["z"]) == ["z"]  # rotated: nothing shared
