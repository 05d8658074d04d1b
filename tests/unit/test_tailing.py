"""Following real files: partial lines, rotation, truncation, late files, globs, restarts."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.pipeline.delivery import Origin
from exporter.sources.files import jsonl
from exporter.sources.files.jsonl import CursorStore, Tailer
from tests.support import wait_for


class Collected:
    """A line sink; like the pipeline, it refuses complete lines over the limit itself
    (the reader only cuts lines that stream in over several reads)."""

    def __init__(self, max_line: int) -> None:
        self.lines: list[tuple[bytes, bool]] = []
        self.too_long = 0
        self.rotations: list[str] = []
        self.max_line = max_line

    def sink(self, lines: list[bytes], spans_from: int, origin: Origin) -> None:
        for i, line in enumerate(lines):
            if len(line) > self.max_line:
                self.too_long += 1
            elif line:
                self.lines.append((line, i >= spans_from))

    def texts(self) -> list[bytes]:
        return [line for line, _ in self.lines]


@pytest.fixture(params=[False, True], ids=["inotify", "polling"])
def tail(request: pytest.FixtureRequest) -> Iterator:
    tailers: list[Tailer] = []

    def start(*patterns: Path, store: CursorStore | None = None, max_line: int = 1 << 20):
        got = Collected(max_line)
        tailer = Tailer(
            [str(p) for p in patterns],
            got.sink,
            max_line_bytes=max_line,
            on_too_long=lambda: setattr(got, "too_long", got.too_long + 1),
            on_rotation=got.rotations.append,
            cursor_store=store,
            poll_interval=0.05,
            force_polling=request.param,
        )
        tailer.start()
        wait_for(tailer.ready.is_set, what="initial read")
        tailers.append(tailer)
        return tailer, got

    yield start
    for tailer in tailers:
        tailer.stop()


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


def test_existing_lines_then_new_ones_and_a_partial_line_held(tmp_path: Path, tail) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"one\ntwo\n")
    _, got = tail(path)
    assert got.texts() == [b"one", b"two"]
    append(path, b"three\nfou")
    wait_for(lambda: got.texts()[-1] == b"three", what="third line")
    assert b"fou" not in got.texts()
    append(path, b"r\r\n")
    wait_for(lambda: got.texts()[-1] == b"four", what="completed partial line")
    assert got.texts() == [b"one", b"two", b"three", b"four"]


def test_a_file_that_does_not_exist_yet_is_waited_for(tmp_path: Path, tail) -> None:
    path = tmp_path / "later" / "events.jsonl"
    _, got = tail(path)
    path.parent.mkdir()
    path.write_bytes(b"hello\n")
    wait_for(lambda: got.texts() == [b"hello"], what="line of the late file")


def test_rotation_by_rename_loses_and_repeats_nothing(tmp_path: Path, tail) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"a1\n")
    _, got = tail(path)
    append(path, b"a2\n")
    rotated = tmp_path / "events.jsonl.1"
    os.rename(path, rotated)
    append(rotated, b"a3 late writer\n")  # a writer still holding the old file
    path.write_bytes(b"b1\n")
    wait_for(lambda: len(got.lines) == 4, what="four lines")
    append(path, b"b2\n")
    wait_for(lambda: len(got.lines) == 5, what="five lines")
    assert sorted(got.texts()) == [b"a1", b"a2", b"a3 late writer", b"b1", b"b2"]
    assert got.texts().index(b"b2") == 4
    assert "rotated" in got.rotations


def test_copytruncate_is_followed(tmp_path: Path, tail) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"x1\nx2\n")
    _, got = tail(path)
    shutil.copy(path, tmp_path / "events.jsonl.1")
    with path.open("r+b") as handle:
        handle.truncate(0)
    wait_for(lambda: got.rotations == ["truncated"], what="truncation noticed")
    append(path, b"y1\n")
    wait_for(lambda: got.texts() == [b"x1", b"x2", b"y1"], what="line after truncation")


def test_a_glob_follows_every_matching_file_including_new_ones(tmp_path: Path, tail) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"a\n")
    (tmp_path / "ignored.txt").write_bytes(b"no\n")
    _, got = tail(tmp_path / "*.jsonl")
    (tmp_path / "b.jsonl").write_bytes(b"b\n")
    wait_for(lambda: sorted(got.texts()) == [b"a", b"b"], what="both files")


def test_an_over_long_line_is_skipped_as_it_streams_and_counted_once(tmp_path, tail) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    _, got = tail(path, max_line=100)
    append(path, b"ok1\n" + b"x" * 80)
    wait_for(lambda: got.texts() == [b"ok1"], what="first line")
    append(path, b"y" * 80)
    wait_for(lambda: got.too_long == 1, what="the long line cut while it streams")
    append(path, b"z" * 500)
    append(path, b"\nok2\n")
    wait_for(lambda: got.texts() == [b"ok1", b"ok2"], what="line after the long one")
    append(path, b"w" * 300 + b"\nok3\n")  # a complete long line is refused by the sink
    wait_for(lambda: got.texts() == [b"ok1", b"ok2", b"ok3"], what="line after the second")
    assert got.too_long == 2


def test_a_restart_with_a_cursor_emits_no_span_twice(tmp_path: Path, tail) -> None:
    path = tmp_path / "events.jsonl"
    store = CursorStore(tmp_path / "state" / "cursor.json")
    path.write_bytes(b"l1\nl2\n")
    first, got = tail(path, store=store)
    assert got.lines == [(b"l1", True), (b"l2", True)]
    first.stop()
    append(path, b"l3\n")
    _, again = tail(path, store=store)
    # the whole file is read again to rebuild state, but only l3 is new to the spans
    assert again.lines == [(b"l1", False), (b"l2", False), (b"l3", True)]
    append(path, b"l4\n")
    wait_for(lambda: again.lines[-1] == (b"l4", True), what="new line after restart")


def test_a_cursor_of_another_file_with_the_same_name_is_ignored(tmp_path: Path, tail) -> None:
    path = tmp_path / "events.jsonl"
    store = CursorStore(tmp_path / "cursor.json")
    path.write_bytes(b"old1\nold2\n")
    first, _ = tail(path, store=store)
    first.stop()
    path.unlink()
    path.write_bytes(b"new1\n")  # a new file: a different identity, or the same inode reused
    _, again = tail(path, store=store)
    assert again.lines == [(b"new1", True)]


def test_an_unreadable_state_file_is_ignored(tmp_path: Path, tail) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"l1\n")
    state = tmp_path / "cursor.json"
    state.write_bytes(b"{garbage")
    _, got = tail(path, store=CursorStore(state))
    assert got.lines == [(b"l1", True)]


def test_a_truncation_and_a_longer_rewrite_between_two_looks_is_read_from_the_start(
    tmp_path: Path,
) -> None:
    """copytruncate, then a fast writer past the old offset before the next scan: the bytes
    already read have changed, so the file is read again from its start."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"a1\na2\n")
    got = Collected(1 << 20)
    tailer = Tailer([str(path)], got.sink, on_rotation=got.rotations.append)
    tailer.scan()
    with path.open("r+b") as handle:
        handle.truncate(0)
    append(path, b"b1\nb2\nb3\n")  # longer than what was read, before the tailer looks again
    tailer.scan()
    tailer.stop()
    assert got.texts() == [b"a1", b"a2", b"b1", b"b2", b"b3"]
    assert got.rotations == ["truncated"]


def test_a_rewrite_that_keeps_the_bytes_read_is_an_append(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"a1\na2\n")
    got = Collected(1 << 20)
    tailer = Tailer([str(path)], got.sink, on_rotation=got.rotations.append)
    tailer.scan()
    path.write_bytes(b"a1\na2\na3\n")  # a writer that rewrites the whole file each time
    tailer.scan()
    tailer.stop()
    assert got.texts() == [b"a1", b"a2", b"a3"] and got.rotations == []


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "version None"),
        (b"{garbage", "unexpected"),
        (b'{"version": 7, "files": []}', "version 7"),
        (b'{"version": 1, "files": [{"device": "x"}]}', "Expected `int`"),
        (b"[1, 2]", "object has no attribute"),
    ],
)
def test_a_state_file_that_is_empty_corrupt_or_of_another_version_is_set_aside(
    tmp_path: Path, content: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state.json"
    state.write_bytes(content)
    assert CursorStore(state).load() == {}
    (record,) = caplog.records
    assert why in record.getMessage() and "starting without cursors" in record.getMessage()


def test_a_state_file_that_cannot_be_written_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"l1\n")
    blocker = tmp_path / "state"  # a file where the state file's folder should be
    blocker.write_bytes(b"")
    store = CursorStore(blocker / "cursor.json")
    tailer = Tailer([str(path)], Collected(100).sink, cursor_store=store)
    tailer.scan()
    for _ in range(3):
        tailer.save_cursors()
    blocker.unlink()  # writable again
    tailer.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot write state file" in m for m in messages) == 1
    assert any("written again" in m for m in messages)
    assert store.load() != {}


# -- more files than the open-file cap ------------------------------------------------------------


def open_readers(tailer: Tailer) -> int:
    return sum(reader.is_open for reader in [*tailer.files.values(), *tailer._rotated])


def test_more_files_than_the_cap_are_all_read_with_at_most_the_cap_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [tmp_path / f"f{i:02d}.jsonl" for i in range(10)]
    for i, path in enumerate(paths):
        path.write_bytes(b"first %d\n" % i)
    got = Collected(1 << 20)
    tailer = Tailer([str(tmp_path / "*.jsonl")], got.sink, max_open_files=3)
    tailer.scan()
    assert sorted(got.texts()) == sorted(b"first %d" % i for i in range(10))
    assert open_readers(tailer) == 3
    for i, path in enumerate(paths):
        append(path, b"second %d\n" % i)
    tailer.scan()
    assert sorted(got.texts()[10:]) == sorted(b"second %d" % i for i in range(10))
    assert open_readers(tailer) == 3
    opened: list[str] = []
    real_open = jsonl.open_regular
    monkeypatch.setattr(jsonl, "open_regular", lambda path: opened.append(path) or real_open(path))
    tailer.scan()  # files as they were are looked at, not opened
    assert opened == []
    append(paths[0], b"third 0\n")
    tailer.scan()
    tailer.stop()
    assert opened == [str(paths[0])] and got.texts()[-1] == b"third 0"


def test_a_closed_file_truncated_or_rotated_is_followed(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(b"a1\na2\n")
    second.write_bytes(b"b1\n")
    got = Collected(1 << 20)
    tailer = Tailer([str(tmp_path / "*.jsonl")], got.sink, on_rotation=got.rotations.append,
                    max_open_files=1)  # fmt: skip
    tailer.scan()
    assert not tailer.files[str(first)].is_open
    first.write_bytes(b"c1\n")  # rewritten in place while closed
    tailer.scan()
    assert not tailer.files[str(second)].is_open
    os.rename(second, tmp_path / "b.jsonl.1")  # rotated while closed
    second.write_bytes(b"d1\n")
    tailer.scan()
    tailer.stop()
    assert got.texts() == [b"a1", b"a2", b"b1", b"c1", b"d1"]
    assert sorted(got.rotations) == ["rotated", "truncated"]
