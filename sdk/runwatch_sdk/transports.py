"""Where a training script's events go: a JSONL file, runwatch's ``POST /v1/events``, or
(with runwatch's full install) straight to an OTel collector.

Standard library only. Neither transport can block or fail the training: the file is
written with one ``write`` per line on an ``O_APPEND`` descriptor (safe with several
writers and with runwatch's rotation handling), and HTTP goes through a queue sent in
batches by a thread, with a spool on disk for while runwatch is away (see
:class:`HttpTransport`). Every event a transport loses is counted in its ``dropped`` and
said once in a warning; none is lost silently.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import itertools
import json
import logging
import math
import os
import ssl
import threading
import time
import uuid
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from runwatch_sdk.places import local_dir
from runwatch_sdk.spool import Spool
from runwatch_sdk.values import encode

log = logging.getLogger(__name__)

BATCH_SECONDS = 1.0  # the training dashboard's SDK batches every second
BATCH_EVENTS = 5000
"""Events that make a batch leave before its second is up."""
BATCH_BYTES = 1 << 20
"""Largest request (runwatch takes 16 MiB by default: --max-body-bytes)."""
MAX_QUEUED_EVENTS = 200_000
"""Events waiting in memory for the sender thread, past which metric updates are dropped."""
SPOOL_BYTES = 1 << 30
"""The spool's bound on disk: about 4 million metric updates of 10 keys."""
DROPPABLE = ("metric_update", "progress")
"""What goes first when a bound is reached; every other type is a lifecycle event."""
MAX_ANSWER_BYTES = 1 << 16
BACKOFF_SECONDS = (1, 2, 4, 8, 16, 30)
CLOSE_SECONDS = 5.0
"""Longest ``close`` (and so a script's exit) waits to deliver what is still undelivered."""


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
    """Sends events to runwatch's ``POST /v1/events`` in batches, from a thread, over one
    kept-alive connection; what runwatch cannot take yet waits in a spool on disk.

    ``send`` only queues the encoded line (the training loop never waits on the network).
    The thread sends what is queued every ``batch_seconds``, sooner once
    :data:`BATCH_EVENTS` wait, in requests of at most :data:`BATCH_BYTES`. When a request
    fails (runwatch away, 5xx, 429), that batch and every later one are appended to the
    spool (``<spool_dir>/<sender>.jsonl``) and, backing off 1, 2, 4 … 30 s, sent again from
    its front, in order, once runwatch answers. Each event carries ``event_id``
    (``<sender>.<n>``), so a batch sent twice (its answer lost) is applied once.

    Nothing is dropped until a bound is reached, and then metric updates (and progress)
    go first: lifecycle events (run start, status, stages, targets, checkpoints, errors)
    are always queued and spooled. Bounds: ``max_queued`` events in memory (a thread that
    cannot keep up), ``spool_bytes`` on disk. ``close`` (also run at exit) delivers for up
    to ``close_timeout`` seconds; what is still undelivered stays in the spool, said once.

    ``username``/``password`` answer ``serve --basic-auth-user`` (default:
    ``RUNWATCH_USERNAME``/``RUNWATCH_PASSWORD``); ``ca_file`` verifies a runwatch serving
    HTTPS with its own CA (default ``RUNWATCH_CA_FILE``, else the system's). After
    ``os.fork`` the child starts with an empty queue and a sender (and spool) of its own.

    Counters, each event in one of them: ``sent`` (accepted by runwatch), ``refused``
    (runwatch answered 400 for them: counted there by reason), ``dropped`` (lost here: a
    bound reached, or the spool unwritable), ``pending`` (queued or spooled, not yet
    delivered). ``failed_posts`` counts requests that did not reach runwatch.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        close_timeout: float = CLOSE_SECONDS,
        batch_seconds: float = BATCH_SECONDS,
        max_queued: int = MAX_QUEUED_EVENTS,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_bytes: int = SPOOL_BYTES,
    ) -> None:
        base = url.rstrip("/")
        self.url = base if base.endswith("/v1/events") else base + "/v1/events"
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"runwatch URL {url!r}: give http(s)://host:port")
        self._address = parts
        self.timeout = timeout
        self.close_timeout = close_timeout
        self.batch_seconds = batch_seconds
        self.max_queued = max_queued
        self.spool_dir = Path(spool_dir) if spool_dir else local_dir() / "spool"
        self.spool_bytes = spool_bytes
        self._headers = {"Content-Type": "application/x-ndjson", "Connection": "keep-alive"}
        username = username or os.environ.get("RUNWATCH_USERNAME")
        if username:
            secret = f"{username}:{password or os.environ.get('RUNWATCH_PASSWORD', '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
        ca_file = ca_file or os.environ.get("RUNWATCH_CA_FILE")
        self._tls = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file else None)
        self._closed = False
        self._count_afresh()
        self._start()
        _open_transports.add(self)

    def _count_afresh(self) -> None:
        self.sent = self.refused = self.dropped = self.failed_posts = 0
        self._warned: set[str] = set()

    def _start(self) -> None:
        """The sender thread and what it shares with ``send``: again when used after
        ``close``, and in a forked child (counting afresh)."""
        self.sender = uuid.uuid4().hex[:16]
        self._sequence = itertools.count(1)
        self._queue: deque[bytes] = deque()
        self._spool = Spool(self.spool_dir, self.sender, self.spool_bytes)
        self._connection: http.client.HTTPConnection | None = None
        self._wake = threading.Event()
        self._flushing = threading.Event()  # flush(): send now, and say when all is sent
        self._drained = threading.Event()
        self._closing = threading.Event()
        self._deadline = math.inf
        self._thread = threading.Thread(target=self._run, name="runwatch-sdk-http", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Events queued or spooled, not yet delivered."""
        return len(self._queue) + self._spool.events

    @property
    def spool_path(self) -> Path:
        return self._spool.path

    def send(self, event: dict[str, Any]) -> None:
        line = encode(event)
        if self._closed:  # used again after close (one transport, several runs)
            with _reopening:
                if self._closed:
                    self._closed = False
                    self._start()
                    _open_transports.add(self)
        queue = self._queue
        if len(queue) >= self.max_queued and event.get("event_type") in DROPPABLE:
            self._lose(1, "queue", "runwatch events: %d events queued (the sender cannot "
                       "keep up with the training); metric updates are dropped",
                       self.max_queued)  # fmt: skip
            return
        queue.append(line)  # atomic: no lock on the training loop's path
        if len(queue) == BATCH_EVENTS:
            self._wake.set()

    def flush(self, timeout: float = CLOSE_SECONDS) -> bool:
        """Send what is queued now rather than at its batch's second; whether all of it
        (and the spool) was delivered within ``timeout`` seconds."""
        if self._closed:
            return self.pending == 0
        self._drained.clear()
        self._flushing.set()
        self._wake.set()
        return self._drained.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued and spooled (trying for up to ``timeout`` seconds, by
        default ``close_timeout``), then stop; what is undelivered stays in the spool."""
        if self._closed:
            return
        self._closed = True
        self._deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        self._closing.set()
        self._wake.set()
        self._thread.join(max(0.0, self._deadline - time.monotonic()) + self.timeout + 1)
        if self._thread.is_alive():  # a request hanging past its timeout: its queue is lost
            self._lose(len(self._queue), "hung", "runwatch events: %s did not answer",
                       self.url)  # fmt: skip
        if self.dropped:
            log.warning("runwatch events: %d events were lost on the way to %s (bounds "
                        "reached; see HttpTransport)", self.dropped, self.url)  # fmt: skip
        if self._spool:
            log.warning("runwatch events: %d events not delivered to %s are kept in %s; "
                        "runwatch serve reads them from there (it follows %s by default, or "
                        "give it --events %s)", self._spool.events, self.url, self._spool.path,
                        self.spool_dir / "*.jsonl", self._spool.path)  # fmt: skip
        _open_transports.discard(self)

    # --- the sender thread ------------------------------------------------------------

    def _run(self) -> None:
        queue, spool = self._queue, self._spool
        next_batch = time.monotonic() + self.batch_seconds
        retry_at = 0.0  # while runwatch is away: when to try the spool's front again
        attempt = 0
        while True:
            closing = self._closing.is_set()
            now = time.monotonic()
            if closing and now >= self._deadline:  # out of time: the rest waits on disk
                self._spill(self._take(len(queue)))
                break
            flushing = self._flushing.is_set()
            due = closing or flushing or now >= next_batch or len(queue) >= BATCH_EVENTS
            if queue and due and (spool or now < retry_at):  # runwatch away: in order, to disk
                self._spill(self._take(len(queue)))
            if spool and now >= retry_at:
                chunk, events = spool.read(BATCH_BYTES)
                if self._deliver(chunk, events):
                    spool.delivered(len(chunk), events)
                    attempt = 0
                else:
                    delay = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
                    retry_at = now + (min(delay, 1.0) if closing else delay)  # exit is near
                    attempt += 1
                continue
            if queue and due and not spool:
                batch = self._take(BATCH_EVENTS)
                if not self._deliver(b"".join(batch), len(batch)):
                    self._spill(batch)
                    retry_at, attempt = now + BACKOFF_SECONDS[0], 1
                if not queue:
                    next_batch = now + self.batch_seconds
                continue
            if flushing and not queue and not spool:
                self._flushing.clear()
                self._drained.set()
                continue
            if closing and not queue and not spool:
                break
            if now >= next_batch:  # the second is up with nothing queued: the next one
                next_batch = now + self.batch_seconds
            wake_at = min(next_batch, retry_at) if spool else next_batch
            if closing:
                wake_at = min(wake_at, self._deadline)
            if self._wake.wait(max(0.0, wake_at - now)):
                self._wake.clear()
        self._disconnect()

    def _take(self, most: int) -> list[bytes]:
        """Up to ``most`` queued lines (and BATCH_BYTES), each given its event_id."""
        queue, numbers, sender = self._queue, self._sequence, self.sender.encode()
        lines: list[bytes] = []
        size = 0
        while queue and len(lines) < most and size < BATCH_BYTES:
            line = b'%s,"event_id":"%s.%d"}\n' % (queue.popleft()[:-2], sender, next(numbers))
            lines.append(line)
            size += len(line)
        return lines

    def _spill(self, lines: list[bytes]) -> None:
        """Append to the spool; past its bound, metric updates are dropped (counted)."""
        spool = self._spool
        if not spool.fits(sum(map(len, lines))):
            kept = [line for line in lines if not _droppable(line) or spool.fits(len(line))]
            self._lose(len(lines) - len(kept), "spool", "runwatch events: the spool %s is "
                       "full (%d bytes); metric updates are dropped", spool.path,
                       spool.max_bytes)  # fmt: skip
            lines = kept
        try:
            spool.append(lines)
        except OSError as exc:
            self._lose(len(lines), "spool_error", "runwatch events: cannot write the spool "
                       "%s: %s", spool.path, exc)  # fmt: skip

    def _deliver(self, body: bytes, events: int) -> bool:
        """POST one batch; whether runwatch took it (refusing some of it counts as taken)."""
        refused = self._post(body, events)
        if refused is None:
            self.failed_posts += 1
            return False
        self.refused += refused
        self.sent += events - refused
        return True

    def _post(self, body: bytes, events: int) -> int | None:
        """How many events of the batch runwatch refused, or None when it did not take it."""
        try:
            connection = self._connect()
            connection.request("POST", self._address.path, body, self._headers)
            response = connection.getresponse()
            answer = response.read(MAX_ANSWER_BYTES)
            if response.getheader("Connection", "").lower() == "close" or response.will_close:
                self._disconnect()
        except (OSError, http.client.HTTPException) as exc:
            self._disconnect()
            if isinstance(exc, ssl.SSLError):
                self._warn("tls", "runwatch events: TLS to %s failed: %s (ca_file or "
                           "RUNWATCH_CA_FILE names runwatch's CA)", self.url, exc)  # fmt: skip
            log.debug("runwatch events: %s: %s", self.url, exc)
            return None
        status = response.status
        if status < 300:
            return 0
        if status == 400:  # some events refused: runwatch counted them; the rest landed
            try:
                return int(json.loads(answer)["rejected"])
            except (ValueError, KeyError, TypeError):
                return events
        if status in (401, 403):
            self._warn("auth", "runwatch events: %s answered %s: give HttpTransport "
                       "username/password (or RUNWATCH_USERNAME/RUNWATCH_PASSWORD)",
                       self.url, status)  # fmt: skip
        else:
            log.debug("runwatch events: %s answered %s", self.url, status)
        return None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            host, port = self._address.hostname or "", self._address.port
            if self._address.scheme == "https":
                self._connection = http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=self._tls
                )
            else:
                self._connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
        return self._connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _lose(self, events: int, kind: str, message: str, *args: Any) -> None:
        if events:
            self.dropped += events
            self._warn(kind, message, *args)

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message, *args)


def _droppable(line: bytes) -> bool:
    """Whether an encoded event is a metric update or progress (see DROPPABLE)."""
    return any(b'"event_type":"%s"' % kind.encode() in line for kind in DROPPABLE)


_reopening = threading.Lock()
_open_transports: weakref.WeakSet[HttpTransport | OtelTransport] = weakref.WeakSet()
"""Transports closed at exit, after the monitors' own exit handler has ended their runs."""


def _close_all() -> None:
    for transport in list(_open_transports):
        transport.close()


def _restart_in_child() -> None:
    for transport in list(_open_transports):
        if isinstance(transport, HttpTransport) and not transport._closed:
            transport._count_afresh()
            transport._start()


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
