"""Where a training script's events go: a JSONL file, runwatch's ``POST /v1/events``, or
(with runwatch's full install) straight to an OTel collector.

Standard library only. Neither transport can block or fail the training: the file is
written with one ``write`` per line on an ``O_APPEND`` descriptor (safe with several
writers and with runwatch's rotation handling), and HTTP goes through a bounded buffer
(the oldest events dropped and counted when it is full) sent by a thread every second,
backing off 1, 2, 4 … 30 s while runwatch is unreachable. Every event a transport loses
is counted in its ``dropped`` and said once in a warning; none is lost silently.
"""

from __future__ import annotations

import atexit
import base64
import itertools
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from runwatch_sdk.values import encode

log = logging.getLogger(__name__)

BUFFER_EVENTS = 1000
BATCH_SECONDS = 1.0
BACKOFF_SECONDS = (1, 2, 4, 8, 16, 30)
CLOSE_SECONDS = 5.0
"""Longest ``close`` (and so a script's exit) waits to deliver what is still buffered."""


class Transport(Protocol):
    def send(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class FileTransport:
    """Appends each event as one line to a JSONL file that runwatch follows; creates the
    file's folder. A write that fails (full disk, no permission) loses that event, counted
    in ``dropped`` and warned about once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.dropped = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._warned = False

    def send(self, event: dict[str, Any]) -> None:
        line = encode(event)
        with self._lock:
            try:
                if self._fd is None:
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(self._fd, line)  # one write: lines from several writers never mix
            except OSError as exc:  # a full disk must not stop the training
                self.dropped += 1
                if not self._warned:
                    self._warned = True
                    log.warning("runwatch events: cannot write %s: %s (events are lost and "
                                "counted in FileTransport.dropped)", self.path, exc)  # fmt: skip

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        if self.dropped:
            log.warning("runwatch events: %d events could not be written to %s",
                        self.dropped, self.path)  # fmt: skip


class HttpTransport:
    """Sends events to runwatch's ``POST /v1/events`` in batches, from a thread.

    ``username``/``password`` answer ``serve --basic-auth-user`` (default:
    ``RUNWATCH_USERNAME``/``RUNWATCH_PASSWORD``); ``ca_file`` verifies a runwatch serving
    HTTPS with its own CA (default ``RUNWATCH_CA_FILE``, else the system's). ``close``
    (also run at exit) delivers what is buffered for up to ``close_timeout`` seconds. After
    ``os.fork`` the child starts with an empty buffer and a sender of its own.

    Counters: ``sent`` (accepted by runwatch), ``refused`` (runwatch answered 400 for them:
    counted there by reason), ``dropped`` (lost here: buffer full, or still unsent when
    ``close`` gave up), ``failed_posts`` (attempts that did not reach runwatch; retried).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        buffer_events: int = BUFFER_EVENTS,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        close_timeout: float = CLOSE_SECONDS,
    ) -> None:
        base = url.rstrip("/")
        self.url = base if base.endswith("/v1/events") else base + "/v1/events"
        self.timeout = timeout
        self.close_timeout = close_timeout
        self.sent = self.refused = self.dropped = self.failed_posts = 0
        self._headers = {"Content-Type": "application/x-ndjson"}
        username = username or os.environ.get("RUNWATCH_USERNAME")
        if username:
            secret = f"{username}:{password or os.environ.get('RUNWATCH_PASSWORD', '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
        ca_file = ca_file or os.environ.get("RUNWATCH_CA_FILE")
        self._tls = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file else None)
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_events)
        self._warned: set[str] = set()
        self._closed = False
        self._start()
        _open_transports.add(self)

    def _start(self) -> None:
        """The sender thread and what it shares with ``send``; again in a forked child."""
        self._buffer.clear()
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runwatch-sdk-http", daemon=True)
        self._thread.start()

    def send(self, event: dict[str, Any]) -> None:
        line = encode(event)
        if self._closed:  # used again after close (one transport, several runs)
            with _reopening:
                if self._closed:
                    self._closed = False
                    self._start()
                    _open_transports.add(self)
        with self._lock:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
                self._warn("full", "runwatch events: buffer of %d full (runwatch at %s "
                           "unreachable?); the oldest events are dropped", self._buffer.maxlen,
                           self.url)  # fmt: skip
            self._buffer.append((next(self._sequence), line))

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is buffered (retrying for up to ``timeout`` seconds, by default
        ``close_timeout``), then stop; what is still unsent then is counted in ``dropped``."""
        if self._closed:
            return
        self._closed = True
        self._deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        self._closing.set()
        self._wake.set()
        self._thread.join(max(0.0, self._deadline - time.monotonic()) + self.timeout)
        with self._lock:
            self.dropped += len(self._buffer)
            self._buffer.clear()
        if self.dropped:
            log.warning("runwatch events: %d events were not delivered to %s", self.dropped,
                        self.url)  # fmt: skip
        _open_transports.discard(self)

    def _run(self) -> None:
        attempt = 0
        while True:
            closing = self._closing.is_set()
            with self._lock:
                batch = list(self._buffer)
            if batch:
                outcome = self._post(b"".join(line for _, line in batch))
                if outcome is not None:
                    last_sent = batch[-1][0]
                    with self._lock:  # new events may have pushed old ones out meanwhile
                        while self._buffer and self._buffer[0][0] <= last_sent:
                            self._buffer.popleft()
                    self.refused += outcome
                    self.sent += len(batch) - outcome
                    attempt = 0
                    continue  # more may have come meanwhile
                self.failed_posts += 1
                delay: float = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
                attempt += 1
                if closing:
                    delay = min(delay, self._deadline - time.monotonic())
                    if delay <= 0:
                        return
                self._wake.wait(delay)
                self._wake.clear()
                continue
            if closing:
                return
            self._wake.wait(BATCH_SECONDS)
            self._wake.clear()

    def _post(self, body: bytes) -> int | None:
        """How many events of the batch runwatch refused, or None when it was not delivered."""
        request = urllib.request.Request(self.url, data=body, method="POST", headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._tls):
                return 0
        except urllib.error.HTTPError as exc:
            if exc.code == 400:  # some events refused: runwatch counted them; the rest landed
                try:
                    return int(json.loads(exc.read())["rejected"])
                except (OSError, ValueError, KeyError, TypeError):
                    return body.count(b"\n")
            if exc.code in (401, 403):
                self._warn("auth", "runwatch events: %s answered %s: give HttpTransport "
                           "username/password (or RUNWATCH_USERNAME/RUNWATCH_PASSWORD)",
                           self.url, exc.code)  # fmt: skip
            else:
                log.debug("runwatch events: %s answered %s", self.url, exc.code)
            return None
        except (OSError, ValueError) as exc:
            if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
                self._warn("tls", "runwatch events: TLS to %s failed: %s (ca_file or "
                           "RUNWATCH_CA_FILE names runwatch's CA)", self.url, exc)  # fmt: skip
            log.debug("runwatch events: %s: %s", self.url, exc)
            return None

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message, *args)

    def _after_fork(self) -> None:
        self._warned = set()
        self.sent = self.refused = self.dropped = self.failed_posts = 0
        self._start()


_reopening = threading.Lock()
_open_transports: weakref.WeakSet[HttpTransport | OtelTransport] = weakref.WeakSet()
"""Transports closed at exit, after the monitors' own exit handler has ended their runs."""


def _close_all() -> None:
    for transport in list(_open_transports):
        transport.close()


def _restart_in_child() -> None:
    for transport in list(_open_transports):
        if isinstance(transport, HttpTransport) and not transport._closed:
            transport._after_fork()


atexit.register(_close_all)  # a script that never closes still delivers its last events
os.register_at_fork(after_in_child=_restart_in_child)


class OtelTransport:
    """Sends the run straight to an OTel collector, without runwatch: the events go through
    runwatch's own reducer and OTLP output in-process, so the metric names, span tree and
    trace ids are exactly those runwatch would produce. Needs runwatch installed too
    (``runwatch-sdk[otel]``; the other transports need only the standard library)."""

    def __init__(
        self,
        endpoint: str | None = None,
        protocol: str | None = None,
        service_name: str | None = None,
        naming: str = "prometheus",
    ) -> None:
        try:
            from exporter.pipeline import Pipeline
            from exporter.telemetry.otel import OtlpOutput
            from exporter.telemetry.otlp_settings import otlp_settings_from
        except ImportError as exc:
            raise ImportError(
                f"OtelTransport needs runwatch itself: pip install 'runwatch-sdk[otel]' ({exc})"
            ) from exc

        settings = otlp_settings_from(endpoint, protocol, service_name, naming)
        if settings is None:
            raise ValueError("OtelTransport needs an endpoint or OTEL_EXPORTER_OTLP_ENDPOINT")
        self._pipeline = Pipeline()
        self._otlp = OtlpOutput(self._pipeline, settings)
        self._pipeline.add_sink(self._otlp, logs=self._otlp.logs)
        self._closed = False
        _open_transports.add(self)  # a script that never closes still sends its last spans

    def send(self, event: dict[str, Any]) -> None:
        self._pipeline.ingest_value(json.loads(encode(event)), "sdk")

    def close(self, timeout: float = 10.0) -> None:
        """Export what is left (spans, a last metric collection) and stop; a collector that
        does not answer within ``timeout`` seconds does not hold up the script's exit."""
        if not self._closed:
            self._closed = True
            self._otlp.close(timeout)
