"""PID file content: the seed's format, and garbage refused with a reason."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from runwatch_sdk.pidfile import write_pid_file

from exporter.core.events import Rejected
from exporter.sources.pidfile import MAX_PID_FILE_BYTES, parse_pid_file


def test_the_seed_format_parses() -> None:
    record = parse_pid_file(
        b'{"pid": 12345, "run_id": "intelligent_output_20260121_133213_64987a2d",'
        b' "started_at": "2026-01-21T19:32:13.024230+00:00"}'
    )
    assert (record.pid, record.run_id) == (12345, "intelligent_output_20260121_133213_64987a2d")
    assert record.started_at == pytest.approx(1769023933.02423)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"12345",
        b"{garbage",
        b'{"pid": 0, "run_id": "r", "started_at": 1}',
        b'{"pid": "12", "run_id": "r", "started_at": 1}',
        b'{"pid": 12, "started_at": 1}',
        b" " * (MAX_PID_FILE_BYTES + 1),
    ],
)
def test_garbage_is_refused(content: bytes) -> None:
    with pytest.raises(Rejected) as caught:
        parse_pid_file(content)
    assert caught.value.reason == "pid_file_invalid"


def test_the_sdk_writes_the_seed_format_and_both_forms_are_read(tmp_path: Path) -> None:
    path = tmp_path / "training.pid"
    assert write_pid_file(path, "r")
    started_at = json.loads(path.read_text())["started_at"]
    assert isinstance(started_at, str)  # seed 000: ISO 8601, not epoch seconds
    assert datetime.fromisoformat(started_at).utcoffset() == timedelta(0)  # UTC, with offset
    record = parse_pid_file(path.read_bytes())
    assert record.started_at == pytest.approx(time.time(), abs=60)
    epoch = parse_pid_file(b'{"pid": 12, "run_id": "r", "started_at": 1769023933.5}')
    assert epoch.started_at == 1769023933.5  # older SDKs' epoch seconds still read
