"""Router events in: a JSONL trace of an event router, or the SQLite table of its
cross-process queue, decoded into JSON objects for the mapping (:mod:`exporter.core.router`).

The JSONL trace is followed by the same :class:`~exporter.sources.files.jsonl.Tailer` as
training events (rotation, truncation, partial lines). The SQLite table is polled
read-only by rowid on its own clock (:class:`RouterTable`, a sampled source): the
rows there at start rebuild the state without re-sending their spans, then each
poll reads the rows added since. A database that is locked or being written is
waited on briefly, then retried at the next poll and counted in
``runwatch_source_errors_total{source="router",reason="database_locked"}``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from exporter.core.events import Refused, Rejected, failure
from exporter.core.router.reducer import EventPlan, RouterState, plan_each
from exporter.pipeline.delivery import Origin
from exporter.pipeline.source_names import ROUTER_SOURCE
from exporter.sources.sampled.sampling import SourceUnavailable

log = logging.getLogger(__name__)

REJECT_REASONS: tuple[str, ...] = (
    "invalid_utf8", "invalid_json", "not_an_object", "line_too_long", "not_a_regular_file",
    "missing_field", "invalid_timestamp", "unknown_event_type", "processing_failed",
)  # fmt: skip
# (decoded events or their rejections, time read, index of the first that may emit spans)
RouterSink = Callable[[list[Any], float, int], None]
BATCH_ROWS = 1000
MAX_BATCHES_PER_POLL = 50  # a backlog is read over several polls, scrapes stay fresh
BUSY_TIMEOUT_SECONDS = 0.25


def decode_lines(lines: list[bytes]) -> list[Any]:
    """JSONL lines to JSON values; a line that is not JSON becomes its Rejected."""
    values: list[Any] = []
    for line in lines:
        if not line:  # an empty line is nothing; a whitespace-only one is invalid JSON
            continue
        try:
            values.append(orjson.loads(line))
        except orjson.JSONDecodeError:  # orjson refuses nesting past 1024 levels here too
            try:
                line.decode()
            except UnicodeDecodeError:
                values.append(Rejected("invalid_utf8", "a line that is not UTF-8"))
                continue
            values.append(Rejected("invalid_json", "a line that is not JSON"))
        except Exception as exc:  # whatever one line does stays with it
            values.append(failure(exc))
    return values


def router_lines_planner(
    router: RouterState,
) -> Callable[[list[bytes]], list[EventPlan | Refused | None]]:
    """For a parse worker: JSONL lines decoded and planned by ``router``'s rules (see
    :meth:`~exporter.core.router.reducer.RouterState.plan`). A value whose planning raised
    is refused as ``processing_failed``, and the first such is logged with its traceback."""
    logged = False

    def failed(exc: Exception) -> Refused:
        nonlocal logged
        if not logged:
            logged = True
            log.error("a router event could not be processed; it is counted as "
                      "processing_failed and skipped", exc_info=exc)  # fmt: skip
        return failure(exc).as_refused()

    return lambda lines: plan_each(router, decode_lines(lines), time.time(), failed)


def line_sink(deliver: RouterSink) -> Callable[[list[bytes], int, Origin | None], None]:
    """A Tailer sink: lines decoded and delivered with the Tailer's ``spans_from`` (the
    trace's delivery is not tracked: its origin says nothing more)."""

    def sink(lines: list[bytes], spans_from: int, origin: Origin | None = None) -> None:
        # spans_from counts lines; empty ones are dropped, so count them out of it too
        skipped = lines[:spans_from].count(b"")
        deliver(decode_lines(lines), time.time(), spans_from - skipped)

    return sink


@dataclass(frozen=True, slots=True)
class TableRead:
    """What one poll of the table read (the sample stored for the source's health)."""

    rows: int
    last_rowid: int


class RouterTable:
    """A SampledSource over an SQLite table of events: columns are fields, and a column
    named like the mapping's payload field holding JSON text is decoded into an object."""

    name = ROUTER_SOURCE

    def __init__(
        self,
        path: str,
        table: str,
        payload_field: str | None,
        deliver: RouterSink,
        count_error: Callable[[str], None],
    ) -> None:
        self._uri = Path(path).absolute().as_uri() + "?mode=ro"
        self._path = path
        self._table = table
        self._payload_field = payload_field
        self._deliver = deliver
        self._count_error = count_error
        self._last_rowid = 0
        self._history_until: int | None = None  # rows up to this rowid emit no spans

    def open(self) -> None:
        pass  # each poll connects anew: a database replaced or created later is found

    def close(self) -> None:
        pass

    def sample(self) -> TableRead:
        if not Path(self._path).exists():
            raise SourceUnavailable(f"no SQLite database at {self._path} yet")
        try:
            connection = sqlite3.connect(self._uri, uri=True, timeout=BUSY_TIMEOUT_SECONDS)
        except sqlite3.Error as exc:
            raise SourceUnavailable(f"{self._path}: {exc}") from None
        try:
            return self._read(connection)
        except sqlite3.Error as exc:  # locked, no such table, not a database, corrupt
            if "locked" in str(exc) or "busy" in str(exc):
                self._count_error("database_locked")
                return TableRead(0, self._last_rowid)
            raise SourceUnavailable(f"{self._path}: {exc}") from None
        finally:
            connection.close()

    def _read(self, connection: sqlite3.Connection) -> TableRead:
        table = '"' + self._table.replace('"', '""') + '"'
        (highest,) = connection.execute(f"SELECT coalesce(max(rowid), 0) FROM {table}").fetchone()
        if highest < self._last_rowid:  # emptied or re-created: start over
            self._last_rowid = 0
        if self._history_until is None:  # the rows there at the first read: state, no spans
            self._history_until = highest
        read = 0
        for _ in range(MAX_BATCHES_PER_POLL):
            cursor = connection.execute(
                f"SELECT rowid, * FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (self._last_rowid, BATCH_ROWS),
            )
            columns = [description[0] for description in cursor.description][1:]
            rows = cursor.fetchall()
            if not rows:
                break
            events = [self._event(columns, row[1:]) for row in rows]
            history = sum(1 for row in rows if row[0] <= self._history_until)
            self._deliver(events, time.time(), history)
            self._last_rowid = rows[-1][0]
            read += len(rows)
            if len(rows) < BATCH_ROWS:
                break
        return TableRead(read, self._last_rowid)

    def _event(self, columns: list[str], row: tuple[Any, ...]) -> Any:
        event = dict(zip(columns, row, strict=True))
        field = self._payload_field
        payload = event.get(field) if field else None
        if field and isinstance(payload, str | bytes):
            try:
                event[field] = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return Rejected("invalid_json", f"column {self._payload_field} is not JSON")
        return event
