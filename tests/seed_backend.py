"""A training backend built to seed 003 alone: ``GET /`` for health, ``POST /start_training``
answering 202 with a ``job_id``, ``training.started`` on ``/ws`` (unless told to never
start), ``GET /status/log_tail?n=``. No job listing, no ``training.accepted``, nothing the
reference backend adds."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from tests.support import free_port, wait_for


class SeedBackend:
    def __init__(self, never_start: bool = False) -> None:
        self.never_start = never_start
        self.log: list[str] = ["INFO backend up"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._clients: set[WebSocket] = set()
        self._sending: set[asyncio.Future] = set()
        self._server = uvicorn.Server(
            uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started, what="the seed backend")

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/")
        async def health() -> dict:
            return {"status": "ok"}

        @app.post("/start_training")
        async def start_training(request: dict) -> JSONResponse:
            job_id = str(uuid.uuid4())
            self.log.append(f"INFO start_training {job_id} {request.get('symbol')}")
            if self.never_start:
                self.log.append(f"ERROR worker for {job_id} failed to spawn: CUDA unavailable")
            else:
                message = {"type": "training.started", "job_id": job_id,
                           "symbol": request.get("symbol"), "timeframe": "1h", "epoch": 0,
                           "fold": 0}  # fmt: skip
                asyncio.get_running_loop().call_later(0.2, self._broadcast, message)
            return JSONResponse({"status": "accepted", "job_id": job_id, "expected_pid":
                                 os.getpid(), "message": "Training worker queued and starting"},
                                status_code=202)  # fmt: skip

        @app.get("/status/log_tail")
        async def log_tail(n: int = 200) -> dict:
            lines = self.log[-n:]
            return {"lines": lines, "count": len(lines), "requested": n}

        @app.websocket("/ws")
        async def ws(websocket: WebSocket) -> None:
            await websocket.accept()
            self._clients.add(websocket)
            try:
                while True:
                    await websocket.receive_text()
            except WebSocketDisconnect:
                self._clients.discard(websocket)

        return app

    def _broadcast(self, message: dict) -> None:
        for client in list(self._clients):
            task = asyncio.ensure_future(client.send_json(message))
            self._sending.add(task)  # kept until sent: the loop holds tasks only weakly
            task.add_done_callback(self._sending.discard)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
