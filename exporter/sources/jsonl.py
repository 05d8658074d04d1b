"""Tailing JSONL event files: inotify through watchfiles, with a polling fallback.

A file is read from its start (state recovery, seed 000), then followed:

* a partial last line is held until its newline arrives;
* a line longer than the limit is skipped as it streams (never buffered whole)
  and counted once as ``line_too_long``;
* rotation (the path now names another file): the old file is drained to its
  end and kept open while writers still append to it, then the new one is read
  from its start;
* truncation (copytruncate: same file, now shorter than what was read): read
  again from the start;
* a path or glob with no file yet is waited for.

With a cursor file, each file's identity (device, inode, hash of its first
bytes) and the offset read so far are saved, so a restart rebuilds the state
from the whole file but emits spans only for lines past the saved offset.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import watchfiles

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
HEAD_BYTES = 4096  # bytes hashed into a file's identity, against inode reuse
ROTATED_IDLE_SECONDS = 5.0  # how long a rotated-away file is kept open after its last write
GLOB_CHARS = frozenset("*?[")

LineSink = Callable[[list[bytes], int], object]
"""Receives complete lines (no newlines; empty ones are to be skipped) and the index of the
first line whose spans are to be emitted."""


@dataclass(frozen=True, slots=True)
class Cursor:
    device: int
    inode: int
    head: str  # sha256 of the first head_len bytes
    head_len: int
    offset: int


class CursorStore:
    """The state file: a JSON list of cursors, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[tuple[int, int], Cursor]:
        try:
            entries = orjson.loads(self.path.read_bytes())["files"]
            cursors = [Cursor(**entry) for entry in entries]
        except FileNotFoundError:
            return {}
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("state file %s unreadable (%s); starting without cursors", self.path, exc)
            return {}
        return {(c.device, c.inode): c for c in cursors}

    def save(self, cursors: list[Cursor]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        payload = {"version": 1, "files": [dataclasses.asdict(c) for c in cursors]}
        tmp.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.path)


def _head_hash(fh, length: int) -> str:
    return hashlib.sha256(os.pread(fh.fileno(), length, 0)).hexdigest()


def _first_ending_after(pieces: list[bytes], start: int, position: int) -> int:
    """Index of the first newline-terminated piece read from ``start`` that ends after
    ``position``; len(pieces) when none does."""
    end = start
    for index, piece in enumerate(pieces):
        end += len(piece) + 1
        if end > position:
            return index
    return len(pieces)


class FileReader:
    """One open file: reads what is new and cuts it into lines."""

    def __init__(
        self,
        path: str,
        sink: LineSink,
        max_line_bytes: int,
        on_too_long: Callable[[], None] = lambda: None,
    ) -> None:
        self.path = path
        self._fh = open(path, "rb")  # noqa: SIM115 - kept open across reads on purpose
        stat = os.fstat(self._fh.fileno())
        self.identity = (stat.st_dev, stat.st_ino)
        self.offset = 0  # end of the last complete line handed on
        self._read_pos = 0  # end of what has been read from the file
        self._partial = bytearray()
        self._skipping = False  # inside a line that is over the limit
        self._sink = sink
        self._max = max_line_bytes
        self.spans_from = 0  # lines ending at or before this offset emit no spans
        self.last_growth = time.monotonic()
        self.on_too_long = on_too_long  # a line over the limit was cut while it streamed

    def cursor(self) -> Cursor:
        head_len = min(HEAD_BYTES, self.offset)
        return Cursor(*self.identity, _head_hash(self._fh, head_len), head_len, self.offset)

    def resume(self, cursor: Cursor) -> None:
        """Adopt a saved cursor if it describes this very file."""
        size = os.fstat(self._fh.fileno()).st_size
        same = (
            cursor.head_len <= size
            and cursor.offset <= size
            and _head_hash(self._fh, cursor.head_len) == cursor.head
        )
        if same:
            self.spans_from = cursor.offset

    def size(self) -> int:
        return os.fstat(self._fh.fileno()).st_size

    def restart(self) -> None:
        """The file was truncated: read it again from its start."""
        self._fh.seek(0)
        self.offset = 0
        self._read_pos = 0
        self.spans_from = 0
        self._partial.clear()
        self._skipping = False

    def read_available(self) -> int:
        """Hand on every complete line written since the last call; returns bytes read."""
        total = 0
        while True:
            chunk = self._fh.read(READ_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            self._feed(chunk)
        if total:
            self.last_growth = time.monotonic()
        return total

    def _feed(self, chunk: bytes) -> None:
        start = self._read_pos
        self._read_pos += len(chunk)
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if lines:
            spans_from = (
                0
                if self.spans_from <= start
                else _first_ending_after(lines, start, self.spans_from)
            )
            if self._skipping:  # the first piece ends an over-long line
                self._skipping = False
                lines[0] = b""
            elif self._partial:
                self._partial += lines[0]
                lines[0] = bytes(self._partial)
                self._partial.clear()
            if b"\r" in chunk:
                lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
            self.offset = self._read_pos - len(tail)
            self._sink(lines, spans_from)
        if not tail or self._skipping:
            return
        if len(self._partial) + len(tail) > self._max:
            self._skipping = True
            self._partial.clear()
            self.on_too_long()
        else:
            self._partial += tail

    def flush_partial(self) -> None:
        """A file that will not grow any more: its unterminated last line is handed on."""
        if self._partial and not self._skipping:
            line = bytes(self._partial)
            self._partial.clear()
            self.offset = self._read_pos
            self._sink([line], 0 if self.offset > self.spans_from else 1)

    def close(self) -> None:
        self._fh.close()


def read_whole_files(
    paths: list[str], sink: LineSink, max_line_bytes: int, on_too_long: Callable[[], None]
) -> None:
    """Read files once, start to end, the last line even without its newline (replay).
    Raises OSError for a file that cannot be read."""
    for path in paths:
        reader = FileReader(path, sink, max_line_bytes, on_too_long)
        try:
            reader.read_available()
            reader.flush_partial()
        finally:
            reader.close()


class Tailer:
    """Follows every file matching the given paths or globs, in a thread of its own."""

    def __init__(
        self,
        patterns: list[str],
        sink: LineSink,
        *,
        max_line_bytes: int = 1 << 20,
        on_too_long: Callable[[], None] = lambda: None,
        on_rotation: Callable[[str], None] = lambda kind: None,
        cursor_store: CursorStore | None = None,
        poll_interval: float = 1.0,
        force_polling: bool = False,
    ) -> None:
        self.patterns = [os.path.abspath(p) for p in patterns]
        self._sink = sink
        self._max = max_line_bytes
        self._on_too_long = on_too_long
        self._on_rotation = on_rotation
        self._store = cursor_store
        self._saved = cursor_store.load() if cursor_store else {}
        self._poll_ms = max(10, int(poll_interval * 1000))
        self._force_polling = force_polling
        self.files: dict[str, FileReader] = {}
        self._rotated: list[FileReader] = []
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once the existing content has been read
        self._thread: threading.Thread | None = None
        self._last_save = 0.0
        self._unreadable: set[str] = set()  # warned about once each

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="runwatch-tail", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following, save the cursors and close the files; a second call does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.save_cursors()
        for reader in [*self.files.values(), *self._rotated]:
            reader.close()

    def save_cursors(self) -> None:
        if self._store is None:
            return
        try:
            self._store.save([r.cursor() for r in [*self.files.values(), *self._rotated]])
        except OSError as exc:
            log.warning("cannot write state file %s: %s", self._store.path, exc)

    # -- the loop ----------------------------------------------------------------------------------

    def _run(self) -> None:
        self._guarded(self.scan)
        self.ready.set()
        while not self._stop.is_set():
            self._guarded(self._follow)

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # a bug here must not stop following for good
            log.exception("file tailer failed; going on after %d ms", self._poll_ms)
            self._stop.wait(self._poll_ms / 1000)

    def _follow(self) -> None:
        dirs = self._watchable_dirs()
        if not dirs or self._force_polling:
            self._stop.wait(self._poll_ms / 1000)
            self.scan()
            return
        try:
            self._watch(dirs)
        except (OSError, RuntimeError) as exc:  # watcher lost its directory, or inotify limits
            log.warning("file watcher failed (%s); polling instead until it recovers", exc)
            self._stop.wait(self._poll_ms / 1000)
            self.scan()

    def _watch(self, dirs: set[str]) -> None:
        for changes in watchfiles.watch(
            *sorted(dirs),
            watch_filter=None,
            debounce=10,
            step=1,
            rust_timeout=self._poll_ms,
            yield_on_timeout=True,
            stop_event=self._stop,
            recursive=False,
            raise_interrupt=False,
        ):
            # Writes to files already followed: read just those. Anything else (a new
            # file, a rename) or a timeout without changes: a full pass.
            changed = {path for _, path in changes}
            self.scan(changed if changed and changed <= self.files.keys() else None)
            if self._watchable_dirs() != dirs:
                return  # a directory appeared or vanished: watch the new set

    def _watchable_dirs(self) -> set[str]:
        dirs = set()
        for pattern in self.patterns:
            directory = os.path.dirname(pattern)
            if not GLOB_CHARS & set(directory) and os.path.isdir(directory):
                dirs.add(directory)
        return dirs

    def scan(self, paths: set[str] | None = None) -> None:
        """A pass over the given followed files, or over every matching file: open new
        ones, follow rotations, read what is new."""
        for path in self._matching_paths() if paths is None else sorted(paths):
            try:
                self._scan_path(path)
                self._unreadable.discard(path)
            except OSError as exc:
                if path not in self._unreadable:
                    self._unreadable.add(path)
                    log.warning("cannot read %s: %s", path, exc)
        for reader in list(self._rotated):
            reader.read_available()
            if time.monotonic() - reader.last_growth > ROTATED_IDLE_SECONDS:
                reader.flush_partial()
                reader.close()
                self._rotated.remove(reader)
        if self._store is not None and time.monotonic() - self._last_save > 1.0:
            self._last_save = time.monotonic()
            self.save_cursors()

    def _matching_paths(self) -> list[str]:
        paths: list[str] = []
        for pattern in self.patterns:
            if GLOB_CHARS & set(pattern):
                paths.extend(sorted(p for p in glob.glob(pattern) if os.path.isfile(p)))
            elif os.path.exists(pattern) or pattern in self.files:
                paths.append(pattern)
        return list(dict.fromkeys(paths))

    def _scan_path(self, path: str) -> None:
        reader = self.files.get(path)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            stat = None
        identity = stat and (stat.st_dev, stat.st_ino)
        if reader is not None and reader.identity != identity:
            # moved away (and perhaps replaced): drain it, keep it open for late writers
            reader.read_available()
            self._rotated.append(self.files.pop(path))
            self._on_rotation("rotated")
            reader = None
        if identity is None:
            return
        if reader is None:
            reader = self._adopt_or_open(path, identity)
        elif reader.size() < reader.offset:
            reader.restart()
            self._on_rotation("truncated")
        reader.read_available()

    def _adopt_or_open(self, path: str, identity: tuple[int, int]) -> FileReader:
        """A rotated file we still hold, now matched under a followed path, goes on where it
        was; any other file is opened from its start (spans resumed from its saved cursor)."""
        reader = next((r for r in self._rotated if r.identity == identity), None)
        if reader is not None:
            self._rotated.remove(reader)
        else:
            reader = FileReader(path, self._sink, self._max, self._on_too_long)
            saved = self._saved.pop(reader.identity, None)
            if saved is not None:
                reader.resume(saved)
        self.files[path] = reader
        return reader
