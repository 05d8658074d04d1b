"""``/ws``, in process: the training-dashboard format's messages for a step logged, a status
change and a checkpoint saved, each within a second; ping, bad messages, the subscription
bound; a page of another origin and a client without the web configuration's credentials
are refused."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from exporter.app.basic_auth import hash_password
from exporter.app.live import MAX_SUBSCRIPTIONS
from exporter.app.live_changes import RunChanges
from exporter.app.server import create_app
from exporter.app.web_config import LiveWebConfig, WebConfig
from exporter.pipeline import Pipeline
from tests.support import T0, event


def _ingest(pipeline: Pipeline, *events: dict) -> None:
    assert pipeline.ingest_lines([orjson.dumps(e) for e in events], "http") == []


def _until(ws: Any, kind: str) -> dict:
    """The next message of ``kind`` (others in between are skipped), within a second."""
    deadline = time.monotonic() + 1.0
    while True:
        message = ws.receive_json()
        if message["type"] == kind:
            return message
        assert time.monotonic() < deadline, f"no {kind} within a second"


def test_steps_status_and_checkpoints_are_pushed_within_a_second() -> None:
    pipeline = Pipeline()
    client = TestClient(create_app(pipeline))
    _ingest(pipeline, event("run_start", ts=T0, name="exp"),
            event("metric_update", ts=T0 + 1, step=1, metrics={"loss": 1.0}))  # fmt: skip
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "subscribe", "run_id": "run_1", "since": 0})
        assert ws.receive_json() == {"type": "subscribed", "run_id": "run_1"}
        ws.send_json({"type": "subscribe", "run_id": "*"})
        assert ws.receive_json() == {"type": "subscribed", "run_id": "*"}
        first = _until(ws, "metric_update")  # from ``since``: the step logged before
        assert (first["step"], first["metrics"], first["seq"]) == (1, {"loss": 1.0}, 0)
        started = time.monotonic()
        _ingest(pipeline, event("metric_update", ts=T0 + 2, step=2, metrics={"loss": "NaN"}))
        update = _until(ws, "metric_update")
        assert update["step"] == 2 and update["metrics"] == {"loss": "NaN"}
        assert time.monotonic() - started < 1.0
        _ingest(pipeline, event("checkpoint_saved", ts=T0 + 3, checkpoint_id="ckpt_1", step=2,
                                metrics={"loss": 0.5}, is_best=True))  # fmt: skip
        saved = _until(ws, "checkpoint_saved")
        assert saved["checkpoint_id"] == "ckpt_1" and saved["is_best"] is True
        log = _until(ws, "event")
        assert log["message"] == "checkpoint ckpt_1 at step 2 (best)"
        _ingest(pipeline, event("run_complete", ts=T0 + 4, status="failed"))
        change = _until(ws, "status_change")
        assert (change["old_status"], change["new_status"]) == ("running", "failed")
        assert _until(ws, "event")["level"] == "error"
        ws.send_json({"type": "ping"})
        assert _until(ws, "pong") == {"type": "pong"}


def test_bad_messages_get_an_error_and_subscriptions_are_bounded() -> None:
    client = TestClient(create_app(Pipeline()))
    with client.websocket_connect("/ws") as ws:
        for text in ("not json", "[]", '{"type": "subscribe"}', '{"type": "dance"}'):
            ws.send_text(text)
            assert ws.receive_json()["type"] == "error", text
        for index in range(MAX_SUBSCRIPTIONS):
            ws.send_json({"type": "subscribe", "run_id": f"run_{index}"})
            assert ws.receive_json()["type"] == "subscribed"
        ws.send_json({"type": "subscribe", "run_id": "one too many"})
        assert "at most" in ws.receive_json()["message"]
        ws.send_json({"type": "unsubscribe", "run_id": "run_0"})
        assert ws.receive_json() == {"type": "unsubscribed", "run_id": "run_0"}


def test_another_origin_and_a_client_without_credentials_are_refused() -> None:
    web = LiveWebConfig(None, WebConfig(None, {"alice": hash_password("secret")}))
    client = TestClient(create_app(Pipeline(), web=web))
    for headers in ({}, {"Authorization": "Basic YWxpY2U6d3Jvbmc="}):
        with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws", headers=headers):
            pass
    good = {"Authorization": "Basic YWxpY2U6c2VjcmV0"}  # alice:secret
    with client.websocket_connect("/ws", headers=good) as ws:
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
    hostile = {**good, "Origin": "http://evil.example"}
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws", headers=hostile):
        pass


def test_a_run_first_seen_without_its_name_says_the_name_when_it_comes() -> None:
    """A run first seen by its PID file (here: its first step) learns its name from its
    ``run_start``: one ``event`` says so, and a page reading it reads the run again."""
    pipeline = Pipeline()
    _ingest(pipeline, event("metric_update", ts=T0, step=1, metrics={"loss": 1.0}))
    changes = RunChanges(pipeline.snapshot().state.runs)
    _ingest(pipeline, event("run_start", ts=T0 + 1, name="<b>exp</b>"))
    messages = changes.since(pipeline.snapshot().state.runs, set(), everything=True)
    assert [m["message"] for m in messages if m["type"] == "event"] == ["run named: <b>exp</b>"]
    assert changes.since(pipeline.snapshot().state.runs, set(), everything=True) == []
