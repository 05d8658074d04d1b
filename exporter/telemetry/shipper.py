"""A bounded queue drained by one thread in batches: how every pushed output leaves.

Spans, log records and step samples are put here by ingestion, which never waits:
a full queue drops its oldest item, counted; the items of a batch the sender could not
deliver are counted under the reason it gives. Used instead of the SDK's batch
processors because those drop on a full queue with only a log line, and runwatch
promises every loss is counted; the callbacks get the items themselves, so that a
span's :class:`~exporter.pipeline.delivery.Receipt` is settled when the collector
accepts it, not when it is read.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from exporter.pipeline.delivery import Receipt

T = TypeVar("T")

Outcomes = list[tuple[str | None, list[T]]]
"""A batch's items by what became of them: None for delivered, or why they were lost (a
reason for the drop counter)."""
Send = Callable[[list[T]], Outcomes[T]]
"""Delivers a batch (or part of it); returns its items by outcome."""


def whole(batch: list[T], lost: str | None) -> Outcomes[T]:
    """The outcome of a batch delivered or lost as one."""
    return [(lost, batch)]


class Shipper(Generic[T]):
    """One thread sending what ``put`` queued, ``batch_size`` at a time, at least every
    ``delay_seconds``, in order and each item once ``ready(item)``; ``on_sent(items)`` and
    ``on_dropped(reason, items)`` count the outcome."""

    def __init__(
        self,
        send: Send[T],
        on_sent: Callable[[list[T]], None],
        on_dropped: Callable[[str, list[T]], None],
        *,
        name: str,
        max_queue: int = 8192,
        batch_size: int = 512,
        delay_seconds: float = 1.0,
        ready: Callable[[T], bool] = lambda item: True,
    ) -> None:
        self._send = send
        self._ready = ready
        self._waiting = False  # the first item queued is not ready: puts wake no one
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
                oldest = self._queue.popleft()
                self._on_dropped("queue_full", [oldest])
            except IndexError:
                pass  # the sending thread emptied it meanwhile
        self._queue.append(item)
        if len(self._queue) >= self._batch_size and not self._waiting:
            self._wake.set()

    @property
    def unsent(self) -> int:
        """Items queued or in a send that has not returned yet."""
        return len(self._queue) + self._in_flight

    def flush(self) -> None:
        """Send everything queued and ready now, on the caller's thread."""
        self._drain()

    def stop(self) -> None:
        """Stop the thread after a last send of what is queued and ready."""
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
            while batch := self._take():
                self._in_flight = len(batch)
                try:
                    outcomes = self._send(batch)
                except Exception:  # a sender bug must not kill the thread
                    outcomes = whole(batch, "export_failed")
                self._in_flight = 0
                for lost, items in outcomes:
                    if lost is None:
                        self._on_sent(items)
                    else:
                        self._on_dropped(lost, items)

    def _take(self) -> list[T]:
        """The next batch: the items at the front of the queue that are ready."""
        batch: list[T] = []
        while self._queue and len(batch) < self._batch_size:
            try:
                item = self._queue.popleft()
            except IndexError:  # put() made room meanwhile
                break
            if not self._ready(item):
                self._queue.appendleft(item)
                break
            batch.append(item)
        self._waiting = bool(self._queue) and len(batch) < self._batch_size
        return batch


Sent = tuple[T, Receipt | None]
"""A span or log record and the receipt of the line it came from (None: not from a file
whose delivery is tracked)."""


def ready(item: Sent[T]) -> bool:
    """Whether a span or log record may leave (see Receipt.ready)."""
    receipt = item[1]
    return receipt is None or receipt.ready()


class _Queued(Generic[T]):
    """What the SDK's span and log-record processors share: queue each item with the
    receipt set just before it was made (under the pipeline lock, as the span ids are),
    held until the item is settled; flush and shut down a Shipper (then the exporter
    behind it, through ``on_shutdown``)."""

    def __init__(self, shipper: Shipper[Sent[T]], on_shutdown: Callable[[], None]) -> None:
        self.shipper = shipper
        self._on_shutdown = on_shutdown
        self.receipt: Receipt | None = None  # the next item's

    def _put(self, item: T) -> None:
        receipt = self.receipt
        if receipt is not None:
            receipt.hold()
        self.shipper.put((item, receipt))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.shipper.flush()
        return True

    def shutdown(self) -> None:
        self.shipper.stop()
        self._on_shutdown()


class SpanQueue(_Queued[ReadableSpan], SpanProcessor):
    """Finished spans into a Shipper: a TracerProvider's processor."""

    def on_end(self, span: ReadableSpan) -> None:
        self._put(span)


class LogQueue(_Queued[ReadableLogRecord], LogRecordProcessor):
    """Emitted log records into a Shipper: a LoggerProvider's processor."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self._put(ReadableLogRecord(
            log_record.log_record, log_record.resource or Resource.get_empty(),
            log_record.instrumentation_scope, log_record.limits,
        ))  # fmt: skip
