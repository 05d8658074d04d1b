"""HTTP ingest: ``POST /v1/events`` with one event, a JSON array of events, or NDJSON.

A body is cut into one JSON text per event (:func:`split_body`) and each goes
through the same parser as a line of an event file, so an item that cannot be
parsed, however it fails, is a counted rejection of that item alone: the valid
ones of a batch are applied even when others are refused, and the answer lists
which were refused and why.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import msgspec
from starlette.requests import ClientDisconnect, Request

from exporter.pipeline import Pipeline
from exporter.pipeline.source_names import HTTP_SOURCE

MAX_LISTED_REJECTIONS = 100
SPLIT_SEGMENT_BYTES = 256 << 10

_split_array_fast = msgspec.json.Decoder(list[msgspec.Raw]).decode
_one_value = msgspec.json.Decoder(msgspec.Raw).decode
# A JSON string (to its end, even unterminated) or a structural character.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{},]', re.DOTALL)


@dataclass(slots=True)
class IngestResult:
    accepted: int = 0
    rejected: int = 0
    rejections: list[dict[str, object]] = field(default_factory=list)  # the first ones


class BodyError(Exception):
    """A request body refused before it was read whole: its HTTP status, the rejection
    reason it counts as, and a message for the client."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


async def read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The whole body of ``request``, read as it streams: refused (BodyError) once it is over
    ``max_bytes`` (413), never buffered whole, or when it has not arrived within ``timeout``
    seconds or its client went away (408)."""
    declared = request.headers.get("content-length", "")
    too_large = BodyError(
        413, "body_too_large", f"body over the limit of {max_bytes} bytes (--max-body-bytes)"
    )
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_bytes:
                    raise too_large
    except (TimeoutError, ClientDisconnect):
        raise BodyError(
            408, "body_incomplete", f"the body did not arrive whole within {timeout:g} s"
        ) from None
    return bytes(body)


def split_body(body: bytes) -> list[bytes]:
    """The JSON text of each event in a body: the elements of a JSON array, the body itself
    when it is one JSON value (a pretty-printed object too), else its non-blank lines."""
    text = body.strip()
    if text.startswith(b"["):
        try:
            return [bytes(raw) for raw in _split_array_fast(text)]
        except (RecursionError, msgspec.DecodeError):
            # an element nested past the decoder's limit, or one the strict decoder refuses
            # (a bare NaN, a lone surrogate escape, a cut): the elements one by one, so
            # each is applied or refused on its own; unless the array ends on its first
            # line and more lines follow: NDJSON, whose first line is not an event
            first, newline, _ = text.partition(b"\n")
            if not (newline and _closes(first)):
                return _split_array_slowly(text)
    lines, unusual = _split_lines(text)
    if unusual:  # \r\n, blank lines: each line looked at
        lines = [line.rstrip(b"\r") for line in lines if line.strip()]
    if len(lines) > 1:
        try:
            _one_value(text)
            return [text]
        except (msgspec.DecodeError, RecursionError):
            # one pretty-printed value the strict decoder refuses (a NaN metric, a stray
            # comma): its first line opens what it does not close, the next is not a
            # value of its own and no line is a whole value; parsed (and accepted or
            # refused) as one event. Else NDJSON with bad lines: each line on its own, so
            # no event beside a garbage line is lost
            if (lines[0].lstrip().startswith((b"{", b"[")) and not _closes(lines[0])
                    and not lines[1].lstrip().startswith((b"{", b"["))
                    and not any(_is_whole_value(line) for line in lines[2:])):  # fmt: skip
                return [text]
    return lines


def _split_lines(text: bytes) -> tuple[list[bytes], bool]:
    """``text.split(b"\n")``, a segment of about SPLIT_SEGMENT_BYTES at a time (one split of
    a 10 MB body, or one search of it for two bytes, holds the interpreter lock for as long
    as a scrape takes), and whether a line may need looking at: a ``\r``, or a line that is
    blank or starts with white space (the least line of a segment, which sorts first,
    tells)."""
    lines: list[bytes] = []
    unusual = False
    start = 0
    while start <= len(text):
        end = text.find(b"\n", start + SPLIT_SEGMENT_BYTES)
        segment = text[start:] if end < 0 else text[start:end]
        part = segment.split(b"\n")
        if not unusual:
            least = min(part)
            unusual = not least or least[0] <= ord(" ") or b"\r" in segment
        lines += part
        if end < 0:
            break
        start = end + 1
    return lines, unusual


def _is_whole_value(line: bytes) -> bool:
    """Whether ``line`` is an object or array that opens and closes on it: an NDJSON line."""
    return line.lstrip().startswith((b"{", b"[")) and _closes(line)


def _closes(line: bytes) -> bool:
    """Whether the brackets opened on ``line`` all close on it."""
    depth = 0
    for token in _TOKENS.finditer(line):
        char = line[token.start()]
        depth += (char in b"[{") - (char in b"]}")
        if depth == 0:
            return True
    return False


def _split_array_slowly(text: bytes) -> list[bytes]:
    """The elements of a JSON array, found without decoding them or recursing (for arrays
    holding something the decoder refuses, whose neighbours must still be applied). What
    follows the array, or the rest of one cut short, is one more item, refused on its own."""
    items: list[bytes] = []
    depth, start = 0, 1
    for token in _TOKENS.finditer(text):
        char = text[token.start()]
        if char in b"[{":
            depth += 1
        elif char in b"]}":
            depth -= 1
            if depth == 0:
                items.append(text[start : token.start()])
                items.append(text[token.end() :])
                break
        elif char == ord(",") and depth == 1:
            items.append(text[start : token.start()])
            start = token.end()
    else:
        items.append(text[start:])  # the array never closed
    return [item.strip() for item in items if item.strip()]


def ingest_body(body: bytes, pipeline: Pipeline) -> IngestResult:
    """Apply every event of a request body; rejections are counted by the pipeline."""
    items = split_body(body)
    refused = pipeline.ingest_lines(items, HTTP_SOURCE)  # in index order
    listed = [{"index": index, "reason": rejection.reason, "detail": rejection.detail}
              for index, rejection in refused[:MAX_LISTED_REJECTIONS]]  # fmt: skip
    return IngestResult(len(items) - len(refused), len(refused), listed)
