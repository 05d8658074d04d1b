"""What a Prometheus operator expects of an exporter's HTTP side, against `runwatch serve`:
the view at / (its config meta tag), gzip when asked, HEAD, the telemetry path, several
listen addresses, no CDN-backed /docs, runwatch's own process metrics and build info."""

from __future__ import annotations

import gzip
import html
import http.client
import json
import re
import socket

import httpx

from exporter import __version__
from tests.support import free_port


def raw(port: int, method: str, path: str, **headers: str) -> http.client.HTTPResponse:
    """One request without a client that decompresses for us."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, headers=headers)
    response = connection.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    connection.close()
    return response


def test_the_view_gzip_head_and_no_docs(serve) -> None:
    server = serve("--no-nvml", "--no-system", "--web.telemetry-path", "/m")
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    meta = re.search(r'<meta name="runwatch-config" content="([^"]*)">', page.text)
    assert meta is not None
    config = json.loads(html.unescape(meta.group(1)))
    assert config["version"] == __version__ and config["telemetry_path"] == "/m"
    plain = raw(server.port, "GET", "/m")
    assert plain.status == 200

    assert plain.getheader("Content-Encoding") is None
    zipped = raw(server.port, "GET", "/m", **{"Accept-Encoding": "gzip"})
    assert zipped.getheader("Content-Encoding") == "gzip"
    text = gzip.decompress(zipped.body).decode()  # type: ignore[attr-defined]
    assert "runwatch_build_info{" in text and len(zipped.body) < len(plain.body) / 3  # type: ignore[attr-defined]
    refused = raw(server.port, "GET", "/m", **{"Accept-Encoding": "gzip;q=0"})
    assert refused.getheader("Content-Encoding") is None

    head = raw(server.port, "HEAD", "/m")
    assert head.status == 200 and head.body == b""  # type: ignore[attr-defined]
    assert head.getheader("Content-Type").startswith("text/plain")

    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(server.url + path).status_code == 404


def test_own_process_metrics_and_build_info(serve) -> None:
    text = serve("--no-nvml", "--no-system").metrics()
    own = ("process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds ",
           "python_info{", "python_gc_collections_total{")  # fmt: skip
    for family in own:
        assert re.search("^" + re.escape(family), text, re.M), family
    assert not re.search("^process_cpu_time_seconds_total", text, re.M)  # the run's: renamed
    build = re.search(r"^runwatch_build_info\{(.*)\} 1\.0$", text, re.M)
    assert build, text
    labels = dict(re.findall(r'(\w+)="([^"]*)"', build.group(1)))
    assert labels["version"] == __version__
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", labels["revision"])
    assert re.fullmatch(r"3\.\d+\.\d+", labels["python_version"])


def test_telemetry_path_and_several_listen_addresses(serve) -> None:
    other = free_port()
    server = serve("--no-nvml", "--no-system", "--web.telemetry-path", "/probe/metrics",
                   "--web.listen-address", f":{other}")  # fmt: skip
    assert httpx.get(server.url + "/probe/metrics").status_code == 200
    assert httpx.get(server.url + "/metrics").status_code == 404
    assert 'href="/probe/metrics"' in httpx.get(server.url + "/").text
    # ":PORT" is every interface: loopback by IPv4, and by IPv6 where the host has it
    assert httpx.get(f"http://127.0.0.1:{other}/healthz").status_code == 200
    if socket.has_ipv6:
        try:
            socket.create_connection(("::1", other), timeout=2).close()
        except OSError as exc:  # no IPv6 loopback configured: only IPv4 was bound
            assert exc.errno in (97, 99, 101, 111), exc
        else:
            assert httpx.get(f"http://[::1]:{other}/healthz").status_code == 200
    assert f"listening on http://[::]:{other}" in server.log.read_text() or (
        f"listening on http://0.0.0.0:{other}" in server.log.read_text()
    )
