"""What a followed file delivered: the ledger of lines whose spans and log records the
collector has not accepted, the receipts that leave only once their line is saved as read,
and the offsets a tracked reader hands on and saves."""

from __future__ import annotations

from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from exporter.pipeline.delivery import Ledger, Origin, Receipt
from exporter.sources.files.jsonl import Cursor, FileReader
from exporter.telemetry.shipper import Shipper, whole
from tests.support import read_as_written


def test_the_delivered_offset_is_where_the_first_line_not_accepted_starts() -> None:
    ledger = Ledger()
    for offset in (0, 10, 10, 20):
        ledger.hold(offset)
    assert ledger.delivered(30) == 0
    ledger.settle(0, accepted=True)
    ledger.settle(10, accepted=True)
    assert ledger.delivered(30) == 10  # the line at 10 made two items; one is out
    ledger.settle(20, accepted=True)
    ledger.settle(10, accepted=True)
    assert ledger.delivered(30) == 30


def test_an_item_lost_holds_its_line_for_the_restart_to_send_again() -> None:
    ledger = Ledger()
    ledger.hold(10)
    ledger.hold(20)
    ledger.settle(10, accepted=False)  # refused, or dropped for room: counted, and kept
    ledger.settle(20, accepted=True)
    assert ledger.delivered(30) == 10


def test_an_item_leaves_once_its_line_is_saved_as_read() -> None:
    ledger = Ledger()
    receipt = Receipt(ledger, 10)
    receipt.hold()
    assert not receipt.ready() and ledger.waiting
    ledger.release(10)  # the line starting at 10 is not read yet by this cursor
    assert not receipt.ready()
    ledger.release(25)
    assert receipt.ready() and not ledger.waiting


def test_a_shipper_sends_items_in_order_once_each_is_ready() -> None:
    ready: set[int] = set()
    sent: list[list[int]] = []
    shipper: Shipper[int] = Shipper(
        lambda batch: whole(batch, None), sent.append, lambda reason, items: None,
        name="test", ready=ready.__contains__, delay_seconds=3600,
    )  # fmt: skip
    for item in range(5):
        shipper.put(item)
    ready.update({0, 1, 3})
    shipper.flush()
    assert sent == [[0, 1]]  # 3 waits behind 2: order kept
    ready.update({2, 4})
    shipper.flush()
    assert sent == [[0, 1], [2, 3, 4]]
    shipper.stop()


class Handed:
    """A line sink keeping each line with its index in its batch, and the batch's spans_from
    and origin."""

    def __init__(self) -> None:
        self.lines: list[tuple[bytes, int, int, Origin]] = []

    def sink(self, lines: list[bytes], spans_from: int, origin: Origin) -> None:
        self.lines += [(line, index, spans_from, origin) for index, line in enumerate(lines)]


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r")),
                max_size=20),
       st.lists(st.integers(1, 32), min_size=1, max_size=6), st.booleans())  # fmt: skip
@example([b"a", b"", b"b\r"], [1], True)
def test_a_tracked_reader_hands_on_where_each_line_starts_however_writes_are_cut(
    lines: list[bytes], cuts: list[int], crlf: bool
) -> None:
    data = b"".join(line + (b"\r\n" if crlf else b"\n") for line in lines)
    got = Handed()
    read_as_written(data, cuts, got.sink, track=True)
    assert [line for line, *_ in got.lines] == lines
    ending = b"\r\n" if crlf else b"\n"
    for line, index, _, origin in got.lines:
        receipt = origin.receipt(index)
        assert receipt is not None
        start = receipt.offset
        assert data[start : start + len(line) + len(ending)] == line + ending
        assert start == 0 or data[start - 1 : start] == b"\n"


def restarted(path: Path, track: bool, offset: int, delivered: int) -> tuple[FileReader, Handed]:
    """A reader of ``path`` resumed from a cursor read up to ``offset`` and delivered up to
    ``delivered``, after reading what there is."""
    got = Handed()
    reader = FileReader(str(path), got.sink, 1 << 20, track=track)
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256 of b""
    reader.resume(Cursor(*reader.identity, empty, 0, offset, delivered))
    reader.read_available()
    reader.close()
    return reader, got


def test_after_a_restart_lines_between_delivered_and_read_send_again(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"a\nb\nc\nd\n")  # lines end at 2, 4, 6, 8
    tracked, got = restarted(path, True, offset=6, delivered=2)
    ((_, _, spans_from, origin), *_) = got.lines
    assert (spans_from, origin.fresh_from) == (1, 3)  # a: delivered; b, c: again; d: fresh
    assert tracked.cursor().delivered == tracked.cursor().offset == 8  # nothing held
    untracked, got = restarted(path, False, offset=6, delivered=2)
    ((_, _, spans_from, origin), *_) = got.lines
    assert (spans_from, origin.fresh_from) == (3, 3)  # no collector: as before, d alone
    assert untracked.cursor().delivered == untracked.cursor().offset == 8
