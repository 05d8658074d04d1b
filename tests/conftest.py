"""Shared fixtures: real binaries (Prometheus, promtool, VictoriaMetrics), a real
``runwatch serve`` process, and an OTLP/HTTP receiver that decodes the protobuf."""

from __future__ import annotations

import gzip
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, settings
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parent.parent
RUNWATCH = [sys.executable, "-m", "exporter"]

# Where the SDK writes and serve reads when told nothing: a folder of this session's, so
# that tests never read or leave anything in the machine's /tmp/runwatch; and quiet.
os.environ["RUNWATCH_LOCAL_DIR"] = tempfile.mkdtemp(prefix="runwatch-tests-")
os.environ.setdefault("RUNWATCH_QUIET", "1")

# Property-based tests: a bounded number of examples in CI; scripts/fuzz runs the "long"
# profile (and atheris) for a long session. No deadline: these machines are noisy.
_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=_SLOW)
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=_SLOW)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked by its folder: ``scripts/test -m unit`` is the quick loop."""
    for item in items:
        layer = item.path.parent.name
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


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


@pytest.fixture(autouse=True)
def _pid_files_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TrainingMonitor writes a PID file per run: into the test's folder, not /tmp/runwatch."""
    monkeypatch.setenv("RUNWATCH_PID_DIR", str(tmp_path / "pids"))


@pytest.fixture(autouse=True)
def _sdk_closed() -> Iterator[None]:
    """A test ends the SDK monitors and closes the senders it opens. Left open, a sender
    lives on in its thread and a monitor in the SDK's table of open runs: at the
    interpreter's exit, after the summary, the monitor is ended and the sender closed,
    sending to a server long gone and spooling what it could not ("... events not
    delivered ..."). Here they are let go, quietly, and the test fails, naming them."""
    from runwatch_sdk import monitor, transports

    senders, monitors = weakref.WeakSet(transports._open_transports), set(monitor._open_monitors)
    yield
    with monitor._open_lock:
        runs = {name: m for name, m in monitor._open_monitors.items()
                if name not in monitors and not m._ended}  # fmt: skip
        for name in runs:
            del monitor._open_monitors[name]
    left = [t for t in list(transports._open_transports) if t not in senders]
    for transport in left:
        transport.close(timeout=0)
    assert not runs, f"SDK monitors left running (end or close them): {sorted(runs)}"
    assert not left, f"SDK senders left open: {[getattr(t, 'url', t) for t in left]}"


@pytest.fixture
def self_signed_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, from the real openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def event(event_type: str, run_id: str = "run_1", ts: float = 1_700_000_000.0, **fields) -> dict:
    return {"event_type": event_type, "run_id": run_id, "timestamp": ts, **fields}


def jsonl(*events: dict) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


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


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """Prometheus, promtool and VictoriaMetrics from Debian, installed into a cache."""
    if os.environ.get("RUNWATCH_BIN"):
        return Path(os.environ["RUNWATCH_BIN"])
    out = subprocess.run(
        [str(ROOT / "scripts" / "install-components")], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


class Server:
    """A ``runwatch serve`` subprocess."""

    def __init__(
        self,
        args: list[str],
        tmp: Path,
        env: dict[str, str] | None = None,
        scheme: str = "http",
        port: int | None = None,
        preexec_fn: Callable[[], None] | None = None,
        **client: Any,
    ) -> None:
        self.port = port or free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.client = client  # httpx options: verify, auth
        self.log = tmp / f"runwatch-{self.port}.log"
        self._log_file = self.log.open("wb")
        # a local folder of its own: no other test's default events are followed
        local = {"RUNWATCH_LOCAL_DIR": str(tmp / f"local-{self.port}")}
        self.process = subprocess.Popen(
            [*RUNWATCH, "serve", "--listen", f"127.0.0.1:{self.port}", *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **local, **(env or {})},
            cwd=ROOT,
            preexec_fn=preexec_fn,  # e.g. resource limits of the child alone
        )
        wait_for(self._ready, what=f"runwatch serve on {self.url}")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"runwatch exited: {self.log.read_text()}")
        return httpx.get(self.url + "/readyz", timeout=1, **self.client).status_code == 200

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=5, **self.client).text

    def sample(self, series: str) -> float | None:
        """The value of one exact series line on /metrics (name and labels as printed)."""
        for line in self.metrics().splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, **options: Any) -> Server:
        server = Server(list(args), tmp_path, env, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def decode_spans(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """The spans of an OTLP trace export request, as plain records."""
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "status": span.status.code,
                        "status_message": span.status.message,
                        "attributes": {a.key: _any_value(a.value) for a in span.attributes},
                        "events": [
                            (
                                e.name,
                                e.time_unix_nano,
                                {a.key: _any_value(a.value) for a in e.attributes},
                            )
                            for e in span.events
                        ],
                        "resource": resource,
                    }
                )
    return spans


def decode_logs(request: ExportLogsServiceRequest) -> list[dict[str, Any]]:
    """The log records of an OTLP logs export request, as plain records."""
    records = []
    for resource_logs in request.resource_logs:
        resource = {a.key: a.value.string_value for a in resource_logs.resource.attributes}
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                records.append({
                    "time": record.time_unix_nano,
                    "observed_time": record.observed_time_unix_nano,
                    "severity_number": record.severity_number,
                    "severity": record.severity_text,
                    "body": _any_value(record.body),
                    "attributes": {a.key: _any_value(a.value) for a in record.attributes},
                    "trace_id": record.trace_id.hex(),
                    "span_id": record.span_id.hex(),
                    "scope": scope_logs.scope.name,
                    "resource": resource,
                })  # fmt: skip
    return records


class OtlpReceiver:
    """An OTLP/HTTP endpoint decoding the real protobuf requests it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.metric_requests: list[ExportMetricsServiceRequest] = []
        self.fail_next = 0  # answer this many requests with 503
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":  # the collector's default
                    body = gzip.decompress(body)
                if receiver.fail_next:
                    receiver.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    receiver.spans.extend(decode_spans(request))
                elif self.path == "/v1/metrics":
                    receiver.metric_requests.append(ExportMetricsServiceRequest.FromString(body))
                elif self.path == "/v1/logs":
                    receiver.logs.extend(decode_logs(ExportLogsServiceRequest.FromString(body)))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()


def _any_value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


class GrpcTraceReceiver:
    """An OTLP/gRPC trace and logs endpoint, decoding into the same records as OtlpReceiver."""

    def __init__(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.spans: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        spans, logs = self.spans, self.logs

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # the gRPC method name
                spans.extend(decode_spans(request))
                return trace_service_pb2.ExportTraceServiceResponse()

        class LogsService(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):
                logs.extend(decode_logs(request))
                return logs_service_pb2.ExportLogsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsService(), self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{port}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None)


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcTraceReceiver]:
    receiver = GrpcTraceReceiver()
    yield receiver
    receiver.stop()


class Prometheus:
    """A Prometheus scraping ``target`` as job runwatch every 500 ms, or run with the
    ``config`` given (a prometheus.yml as a mapping)."""

    def __init__(
        self,
        binary: Path,
        target: str,
        tmp: Path,
        config: dict[str, Any] | None = None,
        flags: tuple[str, ...] = (),
    ) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.config = tmp / "prometheus.yml"
        config = config or {
            "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
            "scrape_configs": [{"job_name": "runwatch", "static_configs": [{"targets": [target]}]}],
        }
        self.config.write_text(yaml.safe_dump(config))
        self.log = (tmp / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                *flags,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: httpx.get(self.url + "/-/ready").status_code == 200, what="Prometheus")

    def query(self, promql: str) -> dict[str, float]:
        """Instant query; the result as {label set rendered: value}."""
        data = httpx.get(self.url + "/api/v1/query", params={"query": promql}).json()["data"]
        return {
            ",".join(
                f"{k}={v}"
                for k, v in sorted(r["metric"].items())
                if k not in ("job", "instance", "__name__")
            ): float(r["value"][1])
            for r in data["result"]
        }

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return next(iter(result.values())) if len(result) == 1 else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def prometheus(bin_dir: Path, tmp_path: Path) -> Iterator:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        started.append(Prometheus(bin_dir / "prometheus", target, tmp_path))
        return started[-1]

    yield start
    for instance in started:
        instance.stop()


class Bridge:
    """``python -m exporter.simulate.reference_bridge`` on a fixed port, restartable."""

    def __init__(self, tmp: Path, tick: float, warmup: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = ["--tick", str(tick), "--warmup", str(warmup)]
        self._log = (tmp / f"bridge-{self.port}.log").open("ab")
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter.simulate.reference_bridge", "--listen",
             f"127.0.0.1:{self.port}", *self._args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        wait_for(lambda: httpx.get(self.url + "/api/state", timeout=1).status_code == 200,
                 what="reference bridge")  # fmt: skip

    def get(self, path: str) -> dict:
        return httpx.get(self.url + path, timeout=5).json()

    def faults(self, **faults: object) -> None:
        httpx.post(self.url + "/_faults", json=faults, timeout=5).raise_for_status()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.kill()
        self._log.close()


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator:
    bridges: list[Bridge] = []

    def start(tick: float = 3600.0, warmup: int = 40) -> Bridge:
        bridges.append(Bridge(tmp_path, tick, warmup))
        return bridges[-1]

    yield start
    for instance in bridges:
        instance.close()
