"""Where a training script's events go: a JSONL file, runwatch's ``POST /v1/events``, or
(with runwatch's full install) straight to an OTel collector.

Standard library only. Neither transport can block or fail the training: the file is
written with one ``write`` per line on an ``O_APPEND`` descriptor (safe with several
writers and with runwatch's rotation handling), and HTTP goes through a bounded buffer
(the oldest events dropped and counted when it is full) sent by a thread every second,
backing off 1, 2, 4 … 30 s while runwatch is unreachable.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import math
import os
import threading
import urllib.error
import urllib.request
from collections import deque
from typing import Any, Protocol

log = logging.getLogger(__name__)

BUFFER_EVENTS = 1000
BATCH_SECONDS = 1.0
BACKOFF_SECONDS = (1, 2, 4, 8, 16, 30)


class Transport(Protocol):
    def send(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def encode(event: dict[str, Any]) -> bytes:
    """One event as a JSON line; NaN and infinities become null (runwatch refuses them)."""
    return json.dumps(_finite(event), separators=(",", ":"), default=str).encode() + b"\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


class FileTransport:
    """Appends each event as one line to a JSONL file that runwatch follows."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._fd: int | None = None

    def send(self, event: dict[str, Any]) -> None:
        line = encode(event)
        try:
            with self._lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(self._fd, line)  # one write: lines from several writers never mix
        except OSError as exc:  # a full disk must not stop the training
            log.warning("runwatch events: cannot write %s: %s", self.path, exc)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class HttpTransport:
    """Sends events to runwatch's ``POST /v1/events`` in batches, from a thread."""

    def __init__(self, url: str, timeout: float = 5.0, buffer_events: int = BUFFER_EVENTS) -> None:
        self.url = url.rstrip("/") + (
            "" if url.rstrip("/").endswith("/v1/events") else "/v1/events"
        )
        self.timeout = timeout
        self.dropped = 0  # events lost because the buffer was full
        self.failed_posts = 0  # sends that did not reach runwatch (retried with backoff)
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_events)
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runwatch-sdk-http", daemon=True)
        self._thread.start()

    def send(self, event: dict[str, Any]) -> None:
        with self._lock:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
            self._buffer.append((next(self._sequence), encode(event)))

    def close(self, timeout: float = 5.0) -> None:
        """Send what is buffered (one last try), then stop."""
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        attempt = 0
        while True:
            closing = self._closing.is_set()
            with self._lock:
                batch = list(self._buffer)
            if batch:
                if self._post(b"".join(line for _, line in batch)):
                    last_sent = batch[-1][0]
                    with self._lock:  # new events may have pushed old ones out meanwhile
                        while self._buffer and self._buffer[0][0] <= last_sent:
                            self._buffer.popleft()
                    attempt = 0
                elif not closing:
                    self.failed_posts += 1
                    delay = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
                    attempt += 1
                    self._wake.wait(delay)
                    self._wake.clear()
                    continue
            if closing:
                return
            self._wake.wait(BATCH_SECONDS)
            self._wake.clear()

    def _post(self, body: bytes) -> bool:
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/x-ndjson"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return 200 <= response.status < 300
        except urllib.error.HTTPError as exc:
            if exc.code == 400:  # some events refused: runwatch counted them; the rest landed
                return True
            log.debug("runwatch events: %s answered %s", self.url, exc.code)
            return False
        except (OSError, ValueError) as exc:
            log.debug("runwatch events: %s: %s", self.url, exc)
            return False


class OtelTransport:
    """Sends the run straight to an OTel collector, without runwatch: the events go through
    runwatch's own reducer and OTLP output in-process, so the metric names, span tree and
    trace ids are exactly those runwatch would produce. Needs runwatch's full install (the
    other transports need only the standard library)."""

    def __init__(
        self,
        endpoint: str | None = None,
        protocol: str | None = None,
        service_name: str | None = None,
        naming: str = "prometheus",
    ) -> None:
        from exporter.pipeline import Pipeline
        from exporter.telemetry.otel import OtlpOutput
        from exporter.telemetry.otlp_settings import otlp_settings_from

        settings = otlp_settings_from(endpoint, protocol, service_name, naming)
        if settings is None:
            raise ValueError("OtelTransport needs an endpoint or OTEL_EXPORTER_OTLP_ENDPOINT")
        self._pipeline = Pipeline()
        self._otlp = OtlpOutput(self._pipeline, settings)
        self._pipeline.add_sink(self._otlp)
        self._closed = False
        atexit.register(self.close)  # a script that never closes still sends its last spans

    def send(self, event: dict[str, Any]) -> None:
        self._pipeline.ingest_value(json.loads(encode(event)), "sdk")

    def close(self, timeout: float = 10.0) -> None:
        """Export what is left (spans, a last metric collection) and stop; a collector that
        does not answer within ``timeout`` seconds does not hold up the script's exit."""
        if not self._closed:
            self._closed = True
            self._otlp.close(timeout)
