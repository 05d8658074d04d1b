"""Files that go wrong are visible: missing paths and refused lines in the log, and how far
each followed file has been read in the runwatch_file_* series (as mtail has them)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import event, jsonl, wait_for


def test_a_path_with_a_typo_is_said_and_found_when_it_appears(serve, tmp_path: Path) -> None:
    later = tmp_path / "later" / "events.jsonl"
    server = serve("--no-nvml", "--no-system", "--events", "/typo/x.jsonl", "--events",
                   str(later), "--events", str(tmp_path / "*.none"),
                   "--poll-interval", "0.2")  # fmt: skip
    wait_for(lambda: "waiting for one" in server.log.read_text(), what="the glob reported")
    log = server.log.read_text()
    assert "/typo/x.jsonl does not exist, nor does its directory /typo" in log
    assert f"{later} does not exist, nor does its directory" in log
    assert f"no file matches {tmp_path / '*.none'} yet" in log
    later.parent.mkdir()
    later.write_bytes(jsonl(event("run_start", "late", config={})))
    wait_for(lambda: f"following {later}" in server.log.read_text(), what="the file followed")
    wait_for(lambda: server.sample(f'runwatch_file_lines_read_total{{path="{later}",'
                                   'source="jsonl"}') == 1.0, what="its line counted")  # fmt: skip
    assert server.log.read_text().count("does not exist") == 2  # said once each


def test_refused_lines_are_logged_once_per_reason_with_their_line(serve, tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        jsonl(event("run_start", "r1", config={}))
        + b"garbage\n" * 100
        + jsonl({"event_type": "progress", "run_id": "r1", "timestamp": "yesterday"})
    )
    server = serve("--no-nvml", "--no-system", "--events", str(path))
    wait_for(lambda: server.sample('runwatch_events_rejected_total{reason="invalid_json",'
                                   'source="jsonl"}') == 100.0)  # fmt: skip
    log = server.log.read_text()
    refused = re.findall(r"line (\d+) refused \((\w+)\)", log)
    assert refused[0] == ("2", "invalid_json")
    assert [reason for _, reason in refused].count("invalid_json") == 1  # not 100 lines
    assert any(line == "102" for line, reason in refused if reason != "invalid_json")


def test_the_file_series_show_what_is_read_and_the_lag(serve, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    whole = jsonl(event("run_start", "r1", config={}), event("progress", "r1", progress_pct=5))
    partial = b'{"event_type": "progress", "run_id": "r1", "progr'
    path.write_bytes(whole + partial)
    server = serve("--no-nvml", "--no-system", "--events", str(path))
    labels = f'{{path="{path}",source="jsonl"}}'
    wait_for(lambda: server.sample("runwatch_file_lines_read_total" + labels) == 2.0)
    assert server.sample("runwatch_file_read_bytes_total" + labels) == len(whole + partial)
    assert server.sample("runwatch_file_offset_bytes" + labels) == len(whole)
    assert server.sample("runwatch_file_size_bytes" + labels) == len(whole + partial)
    assert server.sample("runwatch_file_last_read_timestamp_seconds" + labels) > 1.7e9
