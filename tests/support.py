"""Plain helpers shared by the tests of every layer: where the project is and how to run
``runwatch``, polling, free ports, event builders and a canned training run, JSON lines,
a file read as it is written, settings resolved as ``serve`` resolves them."""

from __future__ import annotations

import itertools
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

if TYPE_CHECKING:
    import pytest

    from exporter.app.config import Settings

ROOT = Path(__file__).resolve().parent.parent
RUNWATCH = [sys.executable, "-m", "exporter"]


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (httpx.HTTPError, OSError, KeyError, IndexError, ValueError) as exc:
            last_error = exc
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def event(event_type: str, run_id: str = "run_1", ts: float = 1_700_000_000.0, **fields) -> dict:
    return {"event_type": event_type, "run_id": run_id, "timestamp": ts, **fields}


def routed(event_type: str, ts: float, **payload: object) -> dict:
    """An event-router event: its type, time and payload."""
    return {"event_type": event_type, "timestamp": ts, "source": "test", "payload": payload}


def jsonl(*events: dict) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


# A training run of two targets, one failed, with a recoverable error: the run the OTLP
# and event-log tests replay. Times in seconds from T0; NS nanoseconds to a second.
T0 = 1_700_000_000.0
RUN = [
    event("run_start", ts=T0, name="exp"),
    event("stage_change", ts=T0 + 1, new_stage="ranking"),
    event("target_start", ts=T0 + 2, target="t1"),
    event("error", ts=T0 + 3, error_message="fold 2 empty", error_type="ValueError",
          recoverable=True, target="t1"),
    event("target_complete", ts=T0 + 4, target="t1", status="success", best_auc=0.7),
    event("target_start", ts=T0 + 5, target="t2"),
    event("target_complete", ts=T0 + 6, target="t2", status="failed"),
    event("stage_change", ts=T0 + 7, new_stage="training"),
    event("metric_update", ts=T0 + 8, metrics={"loss": 0.3}, step=1),
    event("run_complete", ts=T0 + 10, status="failed"),
]  # fmt: skip
NS = 1_000_000_000


def read_as_written(data: bytes, cuts: list[int], sink: Any, **reader_options: Any) -> None:
    """``data`` appended to a new file in writes of the sizes in ``cuts`` (over and over),
    a FileReader handing its lines to ``sink`` reading after each write."""
    from exporter.sources.files.jsonl import FileReader

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(b"")
        reader = FileReader(str(path), sink, 1 << 20, **reader_options)
        position = 0
        for size in itertools.cycle(cuts):
            if position >= len(data):
                break
            with path.open("ab") as out:
                out.write(data[position : position + size])
            position += size
            reader.read_available()
        reader.close()


def settings_for(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings ``argv`` and the environment ``env`` give, resolved as serve does."""
    import argparse

    from exporter.app.config import OPTIONS, add_arguments, resolve

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    names = [o.name for o in OPTIONS]
    add_arguments(parser, names)
    return resolve(parser.parse_args(argv), names)
