"""One gzip stream from pieces compressed apart, so the pieces that did not change since
the last response are not compressed again (the way pigz joins its blocks).

Each piece is raw deflate ended by a full flush: its blocks are not final, end on a byte
boundary and refer to nothing before the piece, so pieces joined in any order are one
valid deflate stream. The gzip trailer needs the CRC-32 and length of the whole text,
computed over the uncompressed pieces.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

LEVEL = 6
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, OS unknown
_END = zlib.compressobj(LEVEL, zlib.DEFLATED, -15).flush()  # an empty final block


class Deflater:
    """Compresses pieces one after another; each piece stands alone (one compressor for
    many pieces, as making one costs more than a small piece does). One thread's."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)

    def piece(self, plain: bytes) -> bytes:
        compressor = self._compressor
        return compressor.compress(plain) + compressor.flush(zlib.Z_FULL_FLUSH)


def gzip_stream(pieces: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The gzip stream of the text the ``(plain, Deflater.piece(plain))`` pieces make."""
    crc, length, out = 0, 0, [_HEADER]
    for plain, compressed in pieces:
        crc = zlib.crc32(plain, crc)
        length += len(plain)
        out.append(compressed)
    out += (_END, struct.pack("<II", crc, length & 0xFFFFFFFF))
    return b"".join(out)
