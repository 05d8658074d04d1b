"""One gzip stream from pieces, so the pieces that did not change since the last response
are not compressed again (the way pigz joins its blocks), and a response never waits on
zlib.

Each piece is raw deflate ended by a full flush: its blocks are not final, end on a byte
boundary and refer to nothing before the piece, so pieces joined in any order are one
valid deflate stream. A piece not compressed yet goes out as stored (uncompressed)
deflate blocks, written here without zlib. Compressing is left to a thread of its own
(:class:`BackgroundDeflater`): every zlib call releases the interpreter lock, and under
ingestion load each release can cost a thread waiting to take it back several
milliseconds, so a response that compressed its changes itself would wait for dozens. The
gzip trailer's CRC-32 is computed over the uncompressed pieces in slices small enough that
zlib keeps the lock.
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
import zlib
from collections.abc import Iterable
from typing import Protocol

log = logging.getLogger(__name__)

LEVEL = 6
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, OS unknown
_END = zlib.compressobj(LEVEL, zlib.DEFLATED, -15).flush()  # an empty final block
_CRC_SLICE = 4096  # zlib.crc32 keeps the interpreter lock below 5 KiB
_STORED_MAX = 65535  # bytes in one stored block


def stored(plain: bytes) -> bytes:
    """``plain`` as stored deflate blocks (no compression), starting on a byte boundary."""
    out: list[bytes] = []
    for first in range(0, len(plain), _STORED_MAX):
        chunk = plain[first : first + _STORED_MAX]
        out += (b"\x00", struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF), chunk)
    return b"".join(out)


class Deflater:
    """Compresses pieces one after another; each piece stands alone (one compressor for
    many pieces, as making one costs more than a small piece does). One thread's."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)

    def piece(self, plain: bytes) -> bytes:
        compressor = self._compressor
        return compressor.compress(plain) + compressor.flush(zlib.Z_FULL_FLUSH)


def gzip_stream(pieces: Iterable[tuple[bytes, bytes | None]]) -> bytes:
    """The gzip stream of the text the ``(plain, Deflater.piece(plain) or None)`` pieces
    make; a piece without its compressed form goes out stored."""
    crc, length, out = 0, 0, [_HEADER]
    for plain, compressed in pieces:
        view = memoryview(plain)
        for first in range(0, len(view), _CRC_SLICE):
            crc = zlib.crc32(view[first : first + _CRC_SLICE], crc)
        length += len(plain)
        out.append(compressed if compressed is not None else stored(plain))
    out += (_END, struct.pack("<II", crc, length & 0xFFFFFFFF))
    return b"".join(out)


class Compressible(Protocol):
    """Pieces whose compressed forms are filled in once, by the background thread."""

    plain: tuple[bytes, ...]
    compressed: tuple[bytes, ...] | None
    queued: bool


class BackgroundDeflater:
    """Compresses what it is given, in a daemon thread started at the first; a response
    uses the compressed forms once they are there. Queued pieces that change before their
    turn are compressed for nothing: bounded by what changes between scrapes."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Compressible] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()  # guards _thread

    def compress(self, pieces: Compressible) -> None:
        if pieces.queued:
            return
        pieces.queued = True
        self._queue.put(pieces)
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="runwatch-gzip",
                                                daemon=True)  # fmt: skip
                self._thread.start()

    def _run(self) -> None:
        deflater = Deflater()
        while True:
            pieces = self._queue.get()
            try:
                pieces.compressed = tuple(map(deflater.piece, pieces.plain))
            except Exception:  # a compressor bug costs compression, not the responses
                log.exception("gzip: pieces could not be compressed; they go out stored")
                deflater = Deflater()
