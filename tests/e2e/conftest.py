"""The fixtures of the e2e tests alone: OTLP receivers over HTTP and gRPC, a Prometheus
scraping a target, the reference trading bridge, a certificate from the real openssl."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import Bridge, Prometheus
from tests.receivers import GrpcTraceReceiver, OtlpReceiver


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


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcTraceReceiver]:
    receiver = GrpcTraceReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def prometheus(bin_dir: Path, tmp_path: Path) -> Iterator:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        started.append(Prometheus(bin_dir / "prometheus", target, tmp_path))
        return started[-1]

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator:
    bridges: list[Bridge] = []

    def start(tick: float = 3600.0, warmup: int = 40) -> Bridge:
        bridges.append(Bridge(tmp_path, tick, warmup))
        return bridges[-1]

    yield start
    for instance in bridges:
        instance.close()
