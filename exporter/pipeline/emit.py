"""How the outputs of one reduction go out, and to whom: the sinks the outputs asked
to be (spans, step values, log lines), each told how the line it came from was read."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from exporter.core.outputs import Output
from exporter.pipeline.delivery import Origin, Receipt

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Emit:
    """What the outputs of one reduction go out as, by how its line was read. After a
    restart, a line before the delivered offset only rebuilds the state; one before the
    read offset sends its spans and log records again (``fresh`` off) and nothing else
    (its step samples went out when it was first read); any other line sends everything."""

    spans: bool  # spans and log records go out
    fresh: bool  # read for the first time: step samples go out too
    receipt: Receipt | None = None  # the line's place in its file's ledger, when tracked


NOTHING = Emit(spans=False, fresh=False)
EVERYTHING = Emit(spans=True, fresh=True)
AGAIN = Emit(spans=True, fresh=False)


def emit_for(index: int, spans_from: int, origin: Origin | None) -> Emit:
    """How the outputs of line ``index`` of a batch go out."""
    if index < spans_from:
        return NOTHING
    if origin is None:
        return EVERYTHING
    fresh = index >= origin.fresh_from
    receipt = origin.receipt(index)
    if receipt is None:
        return EVERYTHING if fresh else AGAIN
    return Emit(spans=True, fresh=fresh, receipt=receipt)


class OutputSink(Protocol):
    def handle(self, outputs: Sequence[Output], emit: Emit) -> None:
        """Receive spans that ended and durations observed by one reduction."""


class Sinks:
    """The outputs' sinks, called under the pipeline lock in the order added; one that
    raises is logged once and the others still get their outputs."""

    def __init__(self) -> None:
        self._sinks: list[OutputSink] = []
        self._failed: set[int] = set()  # id() of sinks logged as failed

    def add(self, sink: OutputSink) -> None:
        self._sinks.append(sink)

    def hand_on(self, outputs: Sequence[Output], emit: Emit) -> None:
        for sink in self._sinks:
            try:
                sink.handle(outputs, emit)
            except Exception:  # an output's failure must not stop ingestion
                if id(sink) not in self._failed:
                    self._failed.add(id(sink))
                    log.exception("output %r failed; ingestion goes on", sink)
