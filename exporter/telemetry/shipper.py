"""A bounded queue drained by one thread in batches: how every pushed output leaves.

Spans, log records and step samples are put here by ingestion, which never waits:
a full queue drops its oldest item, counted; a batch the sender could not deliver
is counted under the reason it gives. Used instead of the SDK's batch processors
because those drop on a full queue with only a log line, and runwatch promises
every loss is counted.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

T = TypeVar("T")

Send = Callable[[list[T]], str | None]
"""Delivers a batch; returns None, or why it was lost (a reason for the drop counter)."""


class Shipper(Generic[T]):
    """One thread sending what ``put`` queued, ``batch_size`` at a time, at least every
    ``delay_seconds``; ``on_sent(n)`` and ``on_dropped(reason, n)`` count the outcome."""

    def __init__(
        self,
        send: Send[T],
        on_sent: Callable[[int], None],
        on_dropped: Callable[[str, int], None],
        *,
        name: str,
        max_queue: int = 8192,
        batch_size: int = 512,
        delay_seconds: float = 1.0,
    ) -> None:
        self._send = send
        self._on_sent = on_sent
        self._on_dropped = on_dropped
        self._queue: collections.deque[T] = collections.deque()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._delay = delay_seconds
        self._wake = threading.Event()
        self._stopping = False
        self._send_lock = threading.Lock()
        self._in_flight = 0  # items in the send under way
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        if len(self._queue) >= self._max_queue:
            try:
                self._queue.popleft()
                self._on_dropped("queue_full", 1)
            except IndexError:
                pass  # the sending thread emptied it meanwhile
        self._queue.append(item)
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    @property
    def unsent(self) -> int:
        """Items queued or in a send that has not returned yet."""
        return len(self._queue) + self._in_flight

    def flush(self) -> None:
        """Send everything queued now, on the caller's thread."""
        self._drain()

    def stop(self) -> None:
        """Stop the thread after a last send of what is queued."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)
        self._drain()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._delay)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        with self._send_lock:
            while self._queue:
                batch: list[T] = []
                while self._queue and len(batch) < self._batch_size:
                    batch.append(self._queue.popleft())
                self._in_flight = len(batch)
                try:
                    lost = self._send(batch)
                except Exception:  # a sender bug must not kill the thread
                    lost = "export_failed"
                self._in_flight = 0
                if lost is None:
                    self._on_sent(len(batch))
                else:
                    self._on_dropped(lost, len(batch))


class _Queued(Generic[T]):
    """What the SDK's span and log-record processors share: flush and shut down a Shipper
    (then the exporter behind it, through ``on_shutdown``)."""

    def __init__(self, shipper: Shipper[T], on_shutdown: Callable[[], None]) -> None:
        self.shipper = shipper
        self._on_shutdown = on_shutdown

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.shipper.flush()
        return True

    def shutdown(self) -> None:
        self.shipper.stop()
        self._on_shutdown()


class SpanQueue(_Queued[ReadableSpan], SpanProcessor):
    """Finished spans into a Shipper: a TracerProvider's processor."""

    def on_end(self, span: ReadableSpan) -> None:
        self.shipper.put(span)


class LogQueue(_Queued[ReadableLogRecord], LogRecordProcessor):
    """Emitted log records into a Shipper: a LoggerProvider's processor."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self.shipper.put(ReadableLogRecord(
            log_record.log_record, log_record.resource or Resource.get_empty(),
            log_record.instrumentation_scope, log_record.limits,
        ))  # fmt: skip
