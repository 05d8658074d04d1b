"""The one place where sources meet the state: parse, reduce, hand outputs on.

Sources (file tailer, HTTP ingest, PID files) call in from their own threads or
the event loop; one lock serialises them with scrapes and OTel collections, so
the reducer itself stays single-threaded and free of locking.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from exporter.events import Rejected, parse_line, validate
from exporter.state import Limits, Output, ProcessObservation, State
from exporter.stats import Stats
from exporter.telemetry.catalogue import View


class OutputSink(Protocol):
    def handle(self, outputs: list[Output], emit_spans: bool) -> None:
        """Receive spans that ended and durations observed by one reduction."""


class Pipeline:
    def __init__(self, limits: Limits | None = None, max_line_bytes: int = 1 << 20) -> None:
        self.state = State(limits, tracing=False)
        self.stats = Stats()
        self.max_line_bytes = max_line_bytes
        self._sinks: list[OutputSink] = []
        self._lock = threading.Lock()

    def add_sink(self, sink: OutputSink) -> None:
        """Send spans and durations to ``sink``; the reducer builds them from now on."""
        with self._lock:
            self._sinks.append(sink)
            self.state.tracing = True

    def ingest_line(self, line: bytes, source: str, emit_spans: bool = True) -> Rejected | None:
        """One JSONL line without its newline; returns the rejection, if any (already counted)."""
        rejections = self.ingest_lines([line], source, 0 if emit_spans else 1)
        return rejections[0][1] if rejections else None

    def ingest_lines(
        self, lines: list[bytes], source: str, spans_from: int = 0
    ) -> list[tuple[int, Rejected]]:
        """A batch of lines under one lock; lines before index ``spans_from`` emit no spans
        (they were exported before a restart). Empty lines are skipped. Returns the index
        and rejection of each line refused (already counted)."""
        rejections: list[tuple[int, Rejected]] = []
        limit = self.max_line_bytes
        apply = self.state.apply
        with self._lock:
            for index, line in enumerate(lines):
                if not line:
                    continue
                try:
                    if len(line) > limit:
                        raise Rejected("line_too_long", f"{len(line)} bytes > {limit}")
                    outputs = apply(parse_line(line))
                except Rejected as rejected:
                    self.reject(source, rejected)
                    rejections.append((index, rejected))
                    continue
                if outputs:
                    self._hand_on(outputs, index >= spans_from)
        accepted = len(lines) - lines.count(b"") - len(rejections)
        self.stats.count(self.stats.ingested, source, accepted)
        return rejections

    def ingest_value(self, raw: Any, source: str) -> Rejected | None:
        """One already-decoded JSON value (an element of a POSTed array)."""
        try:
            event = validate(raw)
        except Rejected as rejected:
            self.reject(source, rejected)
            return rejected
        with self._lock:
            try:
                outputs = self.state.apply(event)
            except Rejected as rejected:
                self.reject(source, rejected)
                return rejected
            self.stats.count(self.stats.ingested, source)
            self._hand_on(outputs, True)
        return None

    def observe_process(self, observation: ProcessObservation) -> None:
        with self._lock:
            outputs = self.state.observe_process(observation)
            self._hand_on(outputs, True)

    def reject(self, source: str, rejected: Rejected) -> None:
        self.stats.count(self.stats.rejected, (source, rejected.reason))

    @contextmanager
    def view(self) -> Iterator[View]:
        with self._lock:
            yield View(self.state, self.stats)

    def _hand_on(self, outputs: list[Output], emit_spans: bool) -> None:
        for sink in self._sinks:
            sink.handle(outputs, emit_spans)
