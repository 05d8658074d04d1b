"""Hostile connections, tried on a real ``runwatch serve``: more event files than the process
may open, idle sockets by the thousand, and floods of wrong passwords must not cost the
scrapes (the outside audit's defects 2, 3 and 15)."""

from __future__ import annotations

import base64
import resource
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from tests.peers import Flood
from tests.support import event, jsonl, wait_for

QUIET = ["--no-nvml", "--no-system"]
IDLE_SOCKETS = 1100


def _at_most_1024_descriptors() -> None:
    """In the server's process before it starts: soft and hard limit 1024, so raising the
    soft limit cannot help."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def _descriptor_limit(pid: int) -> list[str]:
    """A process's soft and hard open-file limits, as /proc shows them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3:5]
    return []


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """This test process opens more sockets than a soft limit of 1024 allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * IDLE_SOCKETS
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard open-file limit ({hard}) is under {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def timed_scrapes(url: str, count: int, limit: float = 5.0, **client: Any) -> list[float]:
    """Seconds each of ``count`` scrapes took, one every 50 ms, each on a new connection;
    the first that takes over ``limit`` seconds is the last."""
    took = []
    for _ in range(count):
        started = time.perf_counter()
        try:
            response = httpx.get(url + "/metrics", timeout=limit, **client)
        except httpx.TimeoutException:
            return [*took, limit]
        assert response.status_code == 200, response.text[:200]
        took.append(time.perf_counter() - started)
        time.sleep(0.05)
    return took


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (whatever it wrote
    first is read and dropped)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


# -- 2. a glob of more files than the process may open --------------------------------------------


def test_a_glob_of_1100_files_under_ulimit_1024_is_read_whole_and_scrapes_answer(
    serve, tmp_path: Path
) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    files = [folder / f"run-{i:04d}.jsonl" for i in range(1100)]
    for i, path in enumerate(files):
        path.write_bytes(jsonl(event("target_complete", run_id=f"r{i}", target="a")))
    server = serve(*QUIET, "--events", str(folder / "*.jsonl"),
                   preexec_fn=_at_most_1024_descriptors)  # fmt: skip
    assert _descriptor_limit(server.process.pid) == ["1024", "1024"]
    ingested = 'runwatch_events_ingested_total{source="jsonl"}'
    wait_for(lambda: server.sample(ingested) == 1100, what="a line from each of 1,100 files")
    for i, path in enumerate(files):  # every file followed on: a second line each
        with path.open("ab") as out:
            out.write(jsonl(event("target_complete", run_id=f"r{i}", target="b")))
    wait_for(lambda: server.sample(ingested) == 2200, timeout=30, what="the second lines")
    for path in ("/metrics", "/readyz", "/healthz"):
        assert httpx.get(server.url + path, timeout=2).status_code == 200
    log = server.log.read_text()
    assert "cannot read" not in log and "out of system resource" not in log
    assert len(log.splitlines()) < 1200  # "following" once per file, nothing per attempt


# -- 3. idle connections --------------------------------------------------------------------------


def test_1100_idle_sockets_under_ulimit_1024_do_not_starve_scrapes(
    serve, many_descriptors: None
) -> None:
    server = serve(*QUIET, preexec_fn=_at_most_1024_descriptors)
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(IDLE_SOCKETS)]
    try:
        took = timed_scrapes(server.url, 20)
        assert max(took) < 1.0, f"scrapes took up to {max(took):.2f} s (median "
        f"{statistics.median(took):.3f} s) beside {IDLE_SOCKETS} idle sockets"
        for path in ("/readyz", "/healthz"):
            assert httpx.get(server.url + path, timeout=2).status_code == 200
        evicted = 'runwatch_http_refused_total{reason="max_connections"}'
        # 512 kept (the default cap); each later one, and each scrape, closed the oldest
        wait_for(lambda: server.sample(evicted) >= IDLE_SOCKETS - 512, what="the oldest closed")
        assert closed_by_server(idle[0], within=2) and not closed_by_server(idle[-1], within=0.1)
    finally:
        for sock in idle:
            sock.close()
    log = server.log.read_text()
    assert "out of system resource" not in log
    assert len(log.splitlines()) < 50, log[-2000:]


def test_a_request_head_that_does_not_arrive_whole_in_time_is_closed(serve) -> None:
    server = serve(*QUIET, "--header-timeout", "1s")
    silent = socket.create_connection(("127.0.0.1", server.port))
    dripping = socket.create_connection(("127.0.0.1", server.port))
    started = time.monotonic()
    try:
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":  # a byte every 0.1 s: never whole
            if time.monotonic() - started > 3:
                break
            try:
                dripping.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
        assert closed_by_server(dripping, within=3)
        assert time.monotonic() - started < 2.5  # the deadline is not pushed on by each byte
        assert closed_by_server(silent, within=1)
        assert httpx.get(server.url + "/metrics", timeout=5).status_code == 200
        timed_out = 'runwatch_http_refused_total{reason="header_timeout"}'
        assert server.sample(timed_out) == 2
    finally:
        silent.close()
        dripping.close()


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(serve) -> None:
    server = serve(*QUIET, "--idle-timeout", "1", "--header-timeout", "30")
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert closed_by_server(sock, within=5)
        assert 0.8 < time.monotonic() - started < 3
    finally:
        sock.close()


def test_at_the_cap_the_longest_idle_is_closed_and_when_all_are_busy_a_503(serve) -> None:
    server = serve(*QUIET, "--max-connections", "4")
    port = server.port
    busy = []
    for _ in range(2):  # a request in flight: a body promised that has not come
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        busy.append(sock)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        time.sleep(0.3)  # all four accepted, the idle ones in order
        assert httpx.get(server.url + "/metrics", timeout=5).status_code == 200
        assert closed_by_server(idle[0], within=2)  # made room for the scrape
        assert not closed_by_server(idle[1], within=0.1)
        idle[1].sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        busy.append(idle[1])
        third = socket.create_connection(("127.0.0.1", port))
        third.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        busy.append(third)
        time.sleep(0.3)  # four requests in flight now
        refused = httpx.get(server.url + "/metrics", timeout=5)
        assert refused.status_code == 503 and "--max-connections" in refused.text
        assert server.process.poll() is None
    finally:
        for sock in [*busy, *idle]:
            sock.close()
    wait_for(lambda: httpx.get(server.url + "/metrics", timeout=2).status_code == 200,
             what="scrapes answered again once the requests are gone")  # fmt: skip
    assert server.sample('runwatch_http_refused_total{reason="max_connections"}') == 2


# -- 15. wrong passwords --------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_flood_of_wrong_passwords_does_not_hold_up_an_authorised_scrape(
    serve, tmp_path: Path
) -> None:
    config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=10)).decode()
    config.write_text(f"basic_auth_users:\n  prometheus: {hashed}\n")
    server = serve(*QUIET, "--web.config.file", str(config), auth=("prometheus", "right"))
    assert httpx.get(server.url + "/metrics", auth=("prometheus", "right")).status_code == 200

    def wrong(index: int, sent: int) -> bytes:  # a new wrong password each time: no cache helps
        header = basic("prometheus", f"wrong-{index}-{sent}")
        return f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {header}\r\n\r\n".encode()

    flood = Flood(server.port, 100, wrong)
    try:
        wait_for(lambda: sum(flood.statuses.values()) >= 100, what="the flood under way")
        took = timed_scrapes(server.url, 20, auth=("prometheus", "right"))
    finally:
        flood.stop()
    assert max(took) < 1.0, f"authorised scrapes took up to {max(took):.2f} s (median "
    f"{statistics.median(took):.3f} s) during the flood"
    assert set(flood.statuses) <= {401, 429}, flood.statuses
    busy = server.sample('runwatch_http_refused_total{reason="auth_busy"}')
    assert busy is not None and busy >= flood.statuses[429] > 0
    # the same wrong password again is remembered: answered without a check
    same = {"Authorization": basic("prometheus", "wrong-0-0")}
    assert httpx.get(server.url + "/metrics", headers=same).status_code == 401


def test_the_web_configs_rate_limit_is_applied(serve, tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text("rate_limit:\n  interval: 1h\n  burst: 2\n")
    server = serve(*QUIET, "--web.config.file", str(config))  # /readyz, a probe, took none
    assert [httpx.get(server.url + "/metrics").status_code for _ in range(2)] == [200, 200]
    limited = httpx.get(server.url + "/metrics")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    for probe in ("/healthz", "/readyz"):  # probes are not limited
        assert httpx.get(server.url + probe).status_code == 200
    config.write_text("rate_limit:\n  interval: 10ms\n  burst: 1\n")  # read again: a new bucket
    wait_for(lambda: httpx.get(server.url + "/api/runs").status_code == 200, what="a new bucket")
    config.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    answered = [httpx.get(server.url + "/api/runs").status_code for _ in range(5)]
    assert answered == [200] * 5
    assert server.sample('runwatch_http_refused_total{reason="rate_limited"}') >= 1
