"""``/ws``: the training-dashboard format's WebSocket. A client sends ``subscribe`` /
``unsubscribe`` (a ``run_id``, or ``"*"`` for every run's status changes, checkpoints and
event-log lines) and ``ping``; runwatch answers ``subscribed`` / ``unsubscribed``,
``pong``, ``error``, and pushes ``metric_update`` (each step of the runs subscribed by
id), ``status_change``, ``checkpoint_saved`` and ``event`` as they happen.

Each connection looks at the state every ``TICK_SECONDS`` (a snapshot, and the metric
windows' rows since its cursors): ingestion does no work for it, a client that reads
slowly slows only itself, and what one connection holds is its subscriptions and one
tick's messages. A client that falls behind by more than
``MAX_ROWS_PER_TICK`` rows of a run in one tick gets an ``error`` with ``"resync": true``
and goes on from the newest step (the page then reads the history again)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Response, WebSocket, WebSocketDisconnect
from starlette.datastructures import Headers
from starlette.websockets import WebSocketState

from exporter.app.live_changes import RunChanges, metric_updates
from exporter.pipeline import Pipeline

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
"""How often a connection looks for changes: a step shows within this and a frame."""
MAX_CONNECTIONS = 64
MAX_SUBSCRIPTIONS = 64
"""Runs one connection follows by id (``"*"`` besides)."""
MAX_ROWS_PER_TICK = 2000
"""Steps of one run sent per tick; more, and the client is told to read the history."""
MAX_MESSAGE_BYTES = 4096
"""What a client's message may hold (uvicorn refuses frames past ``ws_max_size``)."""
SEND_TIMEOUT_SECONDS = 30.0
"""A client that takes a tick's messages no faster is closed."""
EVERY_RUN = "*"
_NEWEST = 1 << 62
"""A cursor past every row: only the window's count is read."""


class LiveHub:
    """The connections open now, against ``MAX_CONNECTIONS``."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.connections = 0

    async def serve(self, websocket: WebSocket) -> None:
        if self.connections >= MAX_CONNECTIONS:
            await websocket.close(code=1013, reason="too many live connections")
            return
        self.connections += 1
        try:
            await websocket.accept()
            await _Connection(self.pipeline, websocket).run()
        except WebSocketDisconnect:
            pass
        finally:
            self.connections -= 1


class _Connection:
    def __init__(self, pipeline: Pipeline, websocket: WebSocket) -> None:
        self.pipeline = pipeline
        self.websocket = websocket
        self.cursors: dict[str, int | None] = {}  # run id -> next row wanted (None: newest)
        self.everything = False
        self.changes = RunChanges(pipeline.snapshot(TICK_SECONDS).state.runs)
        self.outbox: list[dict[str, Any]] = []  # replies, sent with the next tick's messages

    async def run(self) -> None:
        ticker = asyncio.create_task(self._tick())
        try:
            while True:
                text = await self.websocket.receive_text()
                self._answer(text)
                if self.outbox:
                    await self._send(self._take_outbox())
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    def _answer(self, text: str) -> None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        run_id = message.get("run_id") if isinstance(message, dict) else None
        if kind == "ping":
            self.outbox.append({"type": "pong"})
        elif kind in ("subscribe", "unsubscribe") and isinstance(run_id, str):
            self._subscription(kind, run_id, message.get("since"))
        else:
            self.outbox.append(_error('send {"type": "subscribe" | "unsubscribe", "run_id": '
                                      '"<id>" | "*"} or {"type": "ping"}'))  # fmt: skip

    def _subscription(self, kind: str, run_id: str, since: Any) -> None:
        if run_id == EVERY_RUN:
            self.everything = kind == "subscribe"
        elif kind == "unsubscribe":
            self.cursors.pop(run_id, None)
        elif run_id not in self.cursors and len(self.cursors) >= MAX_SUBSCRIPTIONS:
            self.outbox.append(_error(f"at most {MAX_SUBSCRIPTIONS} runs per connection"))
            return
        else:
            self.cursors[run_id] = since if type(since) is int and since >= 0 else None
        self.outbox.append({"type": f"{kind}d", "run_id": run_id})

    async def _tick(self) -> None:
        while self.websocket.client_state is WebSocketState.CONNECTED:
            await asyncio.sleep(TICK_SECONDS)
            messages = self._take_outbox()
            runs = self.pipeline.snapshot(TICK_SECONDS).state.runs
            messages += self.changes.since(runs, set(self.cursors), self.everything)
            for run_id, cursor in self.cursors.items():
                messages += self._steps(run_id, cursor)
            if messages:
                await asyncio.wait_for(self._send(messages), SEND_TIMEOUT_SECONDS)

    def _steps(self, run_id: str, cursor: int | None) -> list[dict[str, Any]]:
        """The run's steps since the cursor, which moves past them (without a cursor, to
        the newest). A window thinned meanwhile sends only the rows it kept."""
        rows = self.pipeline.window_rows(run_id, since=_NEWEST if cursor is None else cursor)
        if rows is None:
            return []
        self.cursors[run_id] = rows.appended
        if len(rows) <= MAX_ROWS_PER_TICK:
            return metric_updates(run_id, rows)
        return [_error(f"{run_id}: {len(rows)} steps since the last look, more than are "
                       "sent at once: read /api/runs/{run_id}/metrics again",
                       run_id=run_id, resync=True, since=rows.appended)]  # fmt: skip

    def _take_outbox(self) -> list[dict[str, Any]]:
        messages, self.outbox = self.outbox, []
        return messages

    async def _send(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            await self.websocket.send_text(_encoded(message))


def _encoded(message: dict[str, Any]) -> str:
    """Text frames (the format's clients read JSON text); text UTF-8 cannot encode is
    written escaped rather than dropping the message."""
    try:
        return orjson.dumps(message).decode()
    except TypeError:
        return json.dumps(message)


def _error(message: str, **fields: Any) -> dict[str, Any]:
    return {"type": "error", "message": message, **fields}


Refusal = Callable[[str, Headers, str], Awaitable[Response | None]]
"""The web configuration's guard (rate limit, basic auth): a refusing answer, or None."""


def live_routes(hub: LiveHub, refusal: Refusal | None) -> APIRouter:
    """``/ws`` behind the same guard as every route (a browser sends the page's basic-auth
    credentials with the handshake), and only from a page of this server's own origin."""
    router = APIRouter()

    @router.websocket("/ws")
    async def live(websocket: WebSocket) -> None:
        headers = websocket.headers
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != headers.get("host"):
            await websocket.close(code=1008, reason="cross-origin")
            return
        if refusal is not None:
            client = websocket.client.host if websocket.client else ""
            if await refusal(websocket.url.path, headers, client) is not None:
                await websocket.close(code=1008, reason="refused by the web configuration")
                return
        await hub.serve(websocket)

    return router
