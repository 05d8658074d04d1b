"""Hostile peers on loopback: an HTTP service whose every path can drip, hang, fail or
answer without end, a WebSocket service that sends whatever frames it is given, and a
flood of clients (the tests' and the benchmarks')."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from websockets.sync.server import ServerConnection, serve

Behaviour = Callable[[BaseHTTPRequestHandler], None]


def answer(status: int, body: bytes = b"{}") -> Behaviour:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def drip(body: bytes, every: float) -> Behaviour:
    """A 200 whose body comes one byte every ``every`` seconds."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for byte in body:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(every)

    return respond


def endless(prefix: bytes, total: int, counter: list[int]) -> Behaviour:
    """A 200 with a JSON array of ``total`` bytes (no Content-Length), streamed; the bytes
    the client actually took are added to ``counter[0]``."""
    item = b'{"symbol": "S", "quantity": 1, "market_value": 1.0},'

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        chunk = prefix + item * ((64 << 10) // len(item))
        sent = 0
        try:
            while sent < total:
                handler.wfile.write(chunk)
                sent += len(chunk)
                chunk = item * ((64 << 10) // len(item))
            handler.wfile.write(b"{}]")
        except OSError:  # the client hung up: what it refused is not counted as taken
            pass
        counter[0] += sent

    return respond


def hang(release: threading.Event) -> Behaviour:
    """Accept the request and never answer (until ``release``)."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        release.wait(60)

    return respond


class HttpPeer:
    """Answers each GET or POST path with its behaviour (404 for unknown paths)."""

    def __init__(self, paths: dict[str, Behaviour], default: Behaviour | None = None) -> None:
        self.paths = paths
        self.requests: list[str] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                peer.requests.append(self.path)
                if self.command == "POST":
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                behaviour = peer.paths.get(self.path, default or answer(404, b"{}"))
                with contextlib.suppress(OSError):  # the client hung up
                    behaviour(self)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class WebSocketPeer:
    """Sends ``frames(path)`` to each client of a path, then holds the connection open; GETs
    that are not WebSocket upgrades are answered from ``rest`` (404 otherwise)."""

    def __init__(
        self,
        frames: Callable[[str], Iterable[str | bytes]],
        rest: dict[str, Any] | None = None,
    ) -> None:
        self.connections = 0
        self.sent = 0
        self._frames = frames
        self._rest = rest or {}
        self._stopping = threading.Event()

        def process_request(connection: ServerConnection, request: Any) -> Any:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return None
            if request.path in self._rest:
                response = connection.respond(200, orjson.dumps(self._rest[request.path]).decode())
                response.headers["Content-Type"] = "application/json"
                return response
            return connection.respond(404, "{}")

        self._server = serve(self._handle, "127.0.0.1", 0, process_request=process_request,
                             compression=None, max_queue=None)  # fmt: skip
        self.url = f"http://127.0.0.1:{self._server.socket.getsockname()[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _handle(self, connection: ServerConnection) -> None:
        self.connections += 1
        for frame in self._frames(connection.request.path):
            connection.send(frame)
            self.sent += 1
        self._stopping.wait(60)

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()


def frames_once(by_path: dict[str, list[str | bytes]]) -> Callable[[str], Iterator[str | bytes]]:
    """Each path's frames to its first client only (reconnects get nothing more)."""
    sent: set[str] = set()

    def frames(path: str) -> Iterator[str | bytes]:
        if path not in sent:
            sent.add(path)
            yield from by_path.get(path, [])

    return frames


class Flood:
    """``clients`` clients sending requests back to back on kept-alive connections, from one
    asyncio loop in a thread of its own; the statuses answered, counted."""

    def __init__(self, port: int, clients: int, request: Callable[[int, int], bytes]) -> None:
        self.statuses: Counter[int] = Counter()
        self._port, self._request = port, request
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._all(clients),), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    async def _all(self, clients: int) -> None:
        await asyncio.gather(*(self._client(index) for index in range(clients)))

    async def _client(self, index: int) -> None:
        sent = 0
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            try:
                while not self._stop.is_set():
                    writer.write(self._request(index, sent))
                    sent += 1
                    head = (await reader.readuntil(b"\r\n\r\n")).lower()
                    length = re.search(rb"content-length: *(\d+)", head)
                    await reader.readexactly(int(length.group(1)) if length else 0)
                    self.statuses[int(head.split(b" ", 2)[1])] += 1
                    if b"connection: close" in head:
                        break
            except (OSError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.05)
            finally:
                writer.close()
