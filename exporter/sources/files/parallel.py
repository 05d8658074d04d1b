"""Reading whole files on two cores: a forked process parses, this one reduces.

For ``runwatch replay`` of large files. The worker runs the same FileReader and
:func:`~exporter.pipeline.parse_lines` as the serial path and sends each batch of
parsed events (and refusals) as msgpack over a pipe; this process decodes the
batch (a C pass, timestamps already in epoch seconds) and applies it in order.
The result is the serial result: a test compares the two expositions.
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from exporter.core.events import AnyEvent, Refused, parse_lines
from exporter.pipeline import Pipeline
from exporter.pipeline.delivery import Origin
from exporter.sources.files.jsonl import read_whole_files

MIN_BYTES = 8 << 20
"""Below this much input, forking costs more than it saves."""


Message = list[AnyEvent | Refused | None] | str  # a batch, or the error that stopped the worker


def worth_it(paths: list[str]) -> bool:
    return (os.cpu_count() or 1) >= 2 and sum(os.path.getsize(p) for p in paths) >= MIN_BYTES


class ParallelReader:
    """Forks the parsing worker at construction: do it before any thread is started."""

    def __init__(self, paths: list[str], max_line_bytes: int) -> None:
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        self._worker = context.Process(
            target=_parse_files, args=(paths, max_line_bytes, send), daemon=True
        )
        self._worker.start()
        send.close()

    def feed(self, pipeline: Pipeline, source: str) -> None:
        """Apply everything the worker parses; raises OSError if it could not read a file."""
        decode = msgspec.msgpack.Decoder(Message).decode
        try:
            while data := self._receive.recv_bytes():
                message = decode(data)
                if isinstance(message, str):
                    raise OSError(message)
                pipeline.apply_parsed(message, source)
        finally:
            self._receive.close()
            self._worker.join(timeout=30)


def _parse_files(paths: list[str], max_line_bytes: int, send: Connection) -> None:
    encode = msgspec.msgpack.Encoder().encode

    def ship(items: list[Any]) -> None:
        send.send_bytes(encode(items))

    def sink(lines: list[bytes], spans_from: int, origin: Origin) -> None:
        ship(parse_lines(lines, max_line_bytes))

    too_long = Refused("line_too_long", f"over {max_line_bytes} bytes")
    try:
        read_whole_files(paths, sink, max_line_bytes, lambda: ship([too_long]))
    except OSError as exc:
        send.send_bytes(encode(f"{exc.filename}: {exc.strerror or exc}"))
    send.send_bytes(b"")
    send.close()
