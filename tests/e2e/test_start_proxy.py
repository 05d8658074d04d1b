"""``POST /start_training`` against a backend that misbehaves, and a client that does: the
body is bounded and timed, the answer is bounded and timed, runwatch's own credentials
never reach the backend, and the backend's credentials come from a file."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.support import ROOT, RUNWATCH, free_port

QUIET = ("--no-nvml", "--no-system", "--backend-interval", "3600")


class RecordingBackend:
    """Answers ``POST /start_training`` with ``answer`` after ``delay`` seconds, keeping the
    headers of every request it was sent."""

    def __init__(self, answer: bytes = b'{"job_id": "j1"}', delay: float = 0.0) -> None:
        self.headers: list[dict[str, str]] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                backend.headers.append({k.lower(): v for k, v in self.headers.items()})
                time.sleep(delay)
                self.send_response(202)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self) -> None:
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def backend() -> Iterator[type[RecordingBackend]]:
    started: list[RecordingBackend] = []

    def start(**options: object) -> RecordingBackend:
        started.append(RecordingBackend(**options))  # type: ignore[arg-type]
        return started[-1]

    yield start  # type: ignore[misc]
    for each in started:
        each.stop()


def test_a_body_over_max_body_bytes_gets_413_and_never_reaches_the_backend(serve, backend) -> None:
    target = backend()
    server = serve("--backend-url", target.url, "--max-body-bytes", "1MiB", *QUIET)
    answer = httpx.post(server.url + "/start_training", content=b"x" * (3 << 20), timeout=30)
    assert answer.status_code == 413 and "1048576" in answer.json()["error"]
    assert target.headers == []
    assert httpx.post(server.url + "/start_training", json={"symbol": "A"}).status_code == 202


def test_a_stalled_body_gets_408_within_the_body_timeout(serve, backend) -> None:
    target = backend()
    server = serve("--backend-url", target.url, "--body-timeout", "1", *QUIET)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(b"POST /start_training HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                       b"Content-Type: application/json\r\n\r\n{")  # fmt: skip
        answer = client.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408")
    assert target.headers == []


def test_an_answer_over_max_response_bytes_is_a_502_not_a_buffer(serve, backend) -> None:
    target = backend(answer=b'{"job_id": "' + b"x" * (2 << 20) + b'"}')
    server = serve("--backend-url", target.url, "--max-response-bytes", "64KiB", *QUIET)
    answer = httpx.post(server.url + "/start_training", json={"symbol": "A"}, timeout=10)
    assert answer.status_code == 502 and "--max-response-bytes" in answer.json()["error"]


def test_a_backend_that_does_not_answer_in_time_gets_a_504(serve, backend) -> None:
    target = backend(delay=3.0)
    server = serve("--backend-url", target.url, "--backend-timeout", "0.5", *QUIET)
    started = time.monotonic()
    answer = httpx.post(server.url + "/start_training", json={"symbol": "A"}, timeout=10)
    assert answer.status_code == 504 and "--backend-timeout" in answer.json()["error"]
    assert time.monotonic() - started < 2.5


def test_runwatchs_password_never_reaches_the_backend_and_the_backends_token_does(
    serve, backend, tmp_path: Path
) -> None:
    target = backend()
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
    web.write_text(f"basic_auth_users:\n  alice: {hashed}\n")
    token = tmp_path / "backend-token"
    token.write_text("Bearer backend-token\n")
    server = serve("--backend-url", target.url, "--web.config.file", str(web),
                   "--backend-authorization-file", str(token), *QUIET,
                   auth=("alice", "secret"))  # fmt: skip
    answer = httpx.post(server.url + "/start_training", json={"symbol": "A"},
                        auth=("alice", "secret"), timeout=10)  # fmt: skip
    assert answer.status_code == 202
    assert [h.get("authorization") for h in target.headers] == ["Bearer backend-token"]


def test_without_a_token_file_no_authorization_is_forwarded(serve, backend, tmp_path) -> None:
    target = backend()
    server = serve("--backend-url", target.url, *QUIET)
    basic = {"Authorization": "Basic YWxpY2U6c2VjcmV0"}
    answer = httpx.post(server.url + "/start_training", json={"symbol": "A"}, headers=basic)
    assert answer.status_code == 202
    assert "authorization" not in target.headers[0]


def test_serving_on_every_interface_without_credentials_is_warned_once(serve) -> None:
    exposed = serve("--listen", f"0.0.0.0:{free_port()}", *QUIET[:2])
    local = serve(*QUIET[:2])
    warning = "POST /v1/events can be reached without credentials on 0.0.0.0:"
    assert exposed.log.read_text().count(warning) == 1
    assert "without credentials" not in local.log.read_text()


@pytest.mark.parametrize(
    ("content", "with_backend", "error"),
    [("Bearer t\u00e9st\n", True, "one line of ASCII"),
     ("Bearer a\nBearer b\n", True, "one line of ASCII"),
     ("Bearer token\n", False, "give --backend-url too")],
    ids=["not ASCII", "two lines", "no backend"],
)  # fmt: skip
def test_a_backend_token_file_runwatch_cannot_send_is_refused_at_start(
    tmp_path: Path, content: str, with_backend: bool, error: str
) -> None:
    token = tmp_path / "token"
    token.write_text(content)
    backend = ["--backend-url", "http://127.0.0.1:9"] if with_backend else []
    started = subprocess.run(
        [*RUNWATCH, "serve", "--listen", f"127.0.0.1:{free_port()}", *QUIET, *backend,
         "--backend-authorization-file", str(token)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert started.returncode == 2
    (line,) = started.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("runwatch: --backend-authorization-file") and error in line


def test_an_editors_byte_order_mark_is_not_sent(serve, backend, tmp_path: Path) -> None:
    target = backend()
    token = tmp_path / "token"
    token.write_bytes("\ufeffBearer backend-token\r\n".encode())
    server = serve("--backend-url", target.url, "--backend-authorization-file", str(token),
                   *QUIET)  # fmt: skip
    assert httpx.post(server.url + "/start_training", json={}).status_code == 202
    assert target.headers[0]["authorization"] == "Bearer backend-token"
