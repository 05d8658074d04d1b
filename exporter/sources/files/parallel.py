"""Reading whole files on two cores: a forked process parses, this one reduces.

For ``runwatch replay`` of large files. The worker reads the files with the same
FileReader as the serial path and parses each batch of lines as the serial path does
(training events by :func:`~exporter.core.events.parse_lines`, router events decoded and
planned by the mapping's rules, :func:`router_lines_planner`), and sends the batch (with
its refusals) as msgpack over a pipe; this process decodes the batch (a C pass) and
applies it in order. The result is the serial result: tests compare the expositions.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from exporter.core.events import AnyEvent, Refused, parse_lines
from exporter.core.router.reducer import EventPlan, RouterState
from exporter.sources.files.jsonl import read_whole_files
from exporter.sources.peers.router import router_lines_planner

MIN_BYTES = 8 << 20
"""Below this much input, forking costs more than it saves."""

PIPE_BYTES = 1 << 20
"""The pipe's capacity asked for: Linux's default most (/proc/sys/fs/pipe-max-size)."""

Parse = Callable[[list[bytes]], list[Any]]


def worth_it(paths: list[str]) -> bool:
    return (os.cpu_count() or 1) >= 2 and sum(os.path.getsize(p) for p in paths) >= MIN_BYTES


class Unparsed(msgspec.Struct, tag=True):
    """Lines the worker parsed but could not send (an integer past 64 bits in a config,
    which msgpack cannot carry): this process parses them again itself."""

    lines: list[bytes]


class ParallelReader:
    """Forks the parsing worker at construction: do it before any thread is started.
    ``parse`` turns a batch of lines into items of type ``item`` (what msgpack carries)."""

    def __init__(self, paths: list[str], max_line_bytes: int, parse: Parse, item: Any) -> None:
        self._parse = parse
        self._decode = msgspec.msgpack.Decoder(list[item] | Unparsed | str).decode
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        _widen(send)
        self._worker = context.Process(
            target=_parse_files, args=(paths, max_line_bytes, parse, send), daemon=True
        )
        self._worker.start()
        send.close()

    def feed(self, apply: Callable[[list[Any]], object]) -> None:
        """Apply every batch the worker parses, in order; raises OSError if it could not
        read a file, or ended before it said it had read them all."""
        try:
            while True:
                try:
                    data = self._receive.recv_bytes()
                except EOFError:  # killed, or out of memory: never a silent short read
                    self._worker.join(timeout=5)
                    raise OSError(
                        f"the parsing worker ended before the end of the input "
                        f"(exit code {self._worker.exitcode})"
                    ) from None
                if not data:
                    break
                message = self._decode(data)
                if isinstance(message, str):
                    raise OSError(message)
                apply(self._parse(message.lines) if type(message) is Unparsed else message)
        finally:
            self._receive.close()
            self._worker.join(timeout=30)


def event_reader(paths: list[str], max_line_bytes: int) -> ParallelReader:
    """Training events: each line parsed into its event (or its refusal)."""
    return ParallelReader(
        paths,
        max_line_bytes,
        lambda lines: parse_lines(lines, max_line_bytes),
        AnyEvent | Refused | None,
    )


def router_reader(paths: list[str], max_line_bytes: int, router: RouterState) -> ParallelReader:
    """Router events: each line decoded and planned by ``router``'s rules (with its log
    line when ``router.logging``), for :meth:`~exporter.pipeline.Pipeline.apply_router_plans`."""
    return ParallelReader(
        paths, max_line_bytes, router_lines_planner(router), EventPlan | Refused | None
    )


def _widen(pipe: Connection) -> None:
    """A pipe that holds a whole batch (Linux: 64 KB by default, a batch is about 1 MB of
    msgpack), so the worker hands it over in one write and goes on parsing, rather than
    waiting for this process to read it 64 KB at a time."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or past the most
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _parse_files(paths: list[str], max_line_bytes: int, parse: Parse, send: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    encode = msgspec.msgpack.Encoder().encode

    def sink(lines: list[bytes], spans_from: int, origin: object) -> None:
        try:
            message = encode(parse(lines))
        except OverflowError:  # an integer msgpack cannot carry: parsed again over there
            message = encode(Unparsed(lines))
        send.send_bytes(message)

    too_long = Refused("line_too_long", f"over {max_line_bytes} bytes")
    try:
        read_whole_files(paths, sink, max_line_bytes, lambda: send.send_bytes(encode([too_long])))
    except OSError as exc:
        send.send_bytes(encode(f"{exc.filename}: {exc.strerror or exc}"))
    send.send_bytes(b"")
    send.close()
