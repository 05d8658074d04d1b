"""Tailing JSONL event files: inotify through watchfiles, with a polling fallback.

A file is read from its start (state recovery), then followed:

* a partial last line is held until its newline arrives;
* a line longer than the limit is skipped as it streams (never buffered whole)
  and counted once as ``line_too_long``;
* rotation (the path now names another file): the old file is drained to its
  end and kept open while writers still append to it, then the new one is read
  from its start;
* rewriting in place (copytruncate, or ``open("w")`` by a restarted writer: the
  same file, now shorter than what was read, or whose bytes already read have
  changed, even when it has grown past the read offset by the next look): read
  again from the start. The bytes already read are fingerprinted by the first
  :data:`HEAD_BYTES` of the file and the :data:`TAIL_BYTES` before the read offset,
  the way Vector's file source fingerprints a file's head;
* a path or glob with no file yet is waited for (and said so in the log, once);
* each file is followed once, by identity (device, inode): a glob matching a
  file and a symlink to it (``latest.jsonl -> run-7.jsonl``) reads it once;
* a path that is not a regular file (a FIFO, a device, a directory) is refused,
  counted once and logged once, never opened: a FIFO would block the tailer;
* a file with much to read is read :data:`READ_BUDGET` bytes at a time, in turn
  with the others, so one big file does not hold up the rest;
* at most :data:`MAX_OPEN_FILES` files are held open: beyond that, those written least
  recently are closed after their read, looked at by ``stat`` alone while they stay as
  they were, and opened again (the same file, by identity) when they change. A glob of
  thousands of files then never uses up the process's descriptors, which the HTTP server
  needs to accept scrapes. The price: a closed file that is written and renamed away
  before the next look loses those last lines (an open one is drained).

With a cursor file, each file's identity (device, inode, hash of its first
bytes), the offset read so far and the offset up to which the collector accepted
the spans and log records of its lines are saved (see :mod:`.delivery`; both are
the offset read unless the file's delivery is tracked), so a restart rebuilds the
state from the whole file, sends again what the lines between the two offsets
send, and sends the spans of no line before them.
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import glob
import hashlib
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec
import orjson
import watchfiles

from exporter.core.events import Refused
from exporter.pipeline.delivery import Ledger, Origin
from exporter.pipeline.regular_files import NotRegularFile, open_regular, read_regular
from exporter.pipeline.self_stats import FileProgressTable
from exporter.sources.files.rejection_log import RejectionLog
from exporter.sources.worker import Worker

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
READ_BUDGET = 16 << 20  # bytes read from one file before the others get their turn
HEAD_BYTES = 4096  # bytes hashed into a file's identity, against inode reuse
TAIL_BYTES = 256  # bytes before the read offset compared, to see a file rewritten in place
CURSOR_VERSION = 1
SAVE_WAITING_SECONDS = 0.25  # the soonest a save follows the last one for what waits on it
ROTATED_IDLE_SECONDS = 5.0  # how long a rotated-away file is kept open after its last write
MAX_OPEN_FILES = 128  # files a tailer holds open at once; the least recently written are closed
GLOB_CHARS = frozenset("*?[")

Refusals = list[tuple[int, Refused]]
LineSink = Callable[[list[bytes], int, Origin], Refusals | None]
"""Receives complete lines (no newlines; empty ones are to be skipped), the index of the
first line whose spans are to be emitted and where the lines were read (which of them were
read before a restart, and where each starts when the file's delivery is tracked); may
return the (index, Refused) of lines it refused, which are then logged with their file and
line number."""


@dataclass(frozen=True, slots=True)
class Cursor:
    device: int
    inode: int
    head: str  # sha256 of the first head_len bytes
    head_len: int
    offset: int  # read up to here
    delivered: int | None = None  # spans and log records accepted up to here (None: offset)


class _StateFile(msgspec.Struct):
    version: int
    files: list[Cursor]


MAX_STATE_FILE_BYTES = 16 << 20


class CursorStore:
    """The state file: a JSON list of cursors, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[tuple[int, int], Cursor]:
        """The saved cursors; none (and one warning saying why and what follows) when the
        file is missing, empty, corrupt, not a regular file or of another version."""
        try:
            content = read_regular(str(self.path), MAX_STATE_FILE_BYTES)
            version = orjson.loads(content).get("version") if content.strip() else None
            if version != CURSOR_VERSION:
                raise ValueError(f"version {version!r}, this runwatch writes {CURSOR_VERSION}")
            cursors = msgspec.json.decode(content, type=_StateFile).files
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError, msgspec.DecodeError) as exc:
            log.warning("state file %s is not usable (%s); starting without cursors: existing "
                        "event files are read again and their finished spans sent again",
                        self.path, exc)  # fmt: skip
            return {}
        return {(c.device, c.inode): c for c in cursors}

    def save(self, cursors: list[Cursor]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        payload = {"version": CURSOR_VERSION, "files": [dataclasses.asdict(c) for c in cursors]}
        tmp.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.path)


def _head_hash(fh, length: int) -> str:
    return hashlib.sha256(os.pread(fh.fileno(), length, 0)).hexdigest()


def _first_ending_after(pieces: list[bytes], start: int, position: int) -> int:
    """Index of the first newline-terminated piece read from ``start`` that ends after
    ``position``; len(pieces) when none does."""
    if position <= start:
        return 0
    end = start
    for index, piece in enumerate(pieces):
        end += len(piece) + 1
        if end > position:
            return index
    return len(pieces)


class FileReplaced(OSError):
    """A closed reader's path names another file now: it cannot be opened again."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ESTALE, "the path names another file now", path)


def _line_starts(pieces: list[bytes], start: int, carried: int) -> list[int]:
    """Where the line of each newline-terminated piece read from ``start`` starts: the
    first one ``carried`` bytes earlier (its beginning came with an earlier read)."""
    starts = list(itertools.accumulate((len(piece) + 1 for piece in pieces), initial=start))
    starts.pop()
    starts[0] -= carried
    return starts


class FileReader:
    """One file, by identity: reads what is new and cuts it into lines. Its descriptor
    may be closed (:meth:`release_descriptor`) and is opened again, from the same file, when it is
    next needed."""

    def __init__(
        self,
        path: str,
        sink: LineSink,
        max_line_bytes: int,
        on_too_long: Callable[[], None] = lambda: None,
        on_rejected: Callable[[str, int, Refusals], None] = lambda path, line, refused: None,
        track: bool = False,
    ) -> None:
        self.path = path
        self._fh: BinaryIO | None = os.fdopen(open_regular(path), "rb")
        info = os.fstat(self._fh.fileno())
        self.identity = (info.st_dev, info.st_ino)
        self._seen_whole = (-1, -1)  # size and mtime when last read to its end, if it was
        self.offset = 0  # end of the last complete line handed on
        self._read_pos = 0  # end of what has been read from the file
        self._head = bytearray()  # the file's first bytes read (up to HEAD_BYTES)
        self._tail = b""  # the bytes read just before _read_pos (up to TAIL_BYTES)
        self._partial = bytearray()
        self._skipping = False  # inside a line that is over the limit
        self._sink = sink
        self._max = max_line_bytes
        self.spans_from = 0  # lines ending at or before this offset emit no spans
        self.fresh_from = 0  # lines ending at or before this offset were read before a restart
        self._track = track
        self.ledger = Ledger() if track else None  # what the collector has not accepted yet
        self.last_growth = time.monotonic()
        self.on_too_long = on_too_long  # a line over the limit was cut while it streamed
        self.on_rejected = on_rejected  # (path, line number of the batch's first, rejections)
        self.lines_read = 0  # lines handed on since the file was opened (or restarted)
        self.unreported = (0, 0)  # lines and bytes read since the tailer last took them

    def cursor(self) -> Cursor:
        """What the state file keeps: the offsets read and delivered, counting what was read
        and delivered before a restart and has not been read again yet."""
        head_len = min(HEAD_BYTES, self.offset)
        head = hashlib.sha256(self._head[:head_len]).hexdigest()  # the bytes read, kept
        delivered = max(self.offset, self.spans_from)
        if self.ledger is not None:
            delivered = self.ledger.delivered(delivered)
        read = max(self.offset, self.fresh_from)
        return Cursor(*self.identity, head, head_len, read, delivered)

    @property
    def is_open(self) -> bool:
        return self._fh is not None

    def _file(self) -> BinaryIO:
        """The open file, opened again at the read position if it was closed; FileReplaced
        when the path names another file now."""
        if self._fh is None:
            fd = open_regular(self.path)
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != self.identity:
                os.close(fd)
                raise FileReplaced(self.path)
            self._fh = os.fdopen(fd, "rb")
            self._fh.seek(self._read_pos)
        return self._fh

    def unchanged_since_closed(self, info: os.stat_result) -> bool:
        """Whether a closed file is as it was when last read to its end (``info``: its
        ``stat`` now), so there is nothing to read and no need to open it."""
        return self._fh is None and (info.st_size, info.st_mtime_ns) == self._seen_whole

    def size(self) -> int:
        """The file's size now, or for a closed one, when it was last read."""
        if self._fh is None:
            return max(self._seen_whole[0], self._read_pos)
        return os.fstat(self._fh.fileno()).st_size

    def resume(self, cursor: Cursor) -> None:
        """Adopt a saved cursor if it describes this very file: lines up to its delivered
        offset emit no spans; up to its read offset, what they emit is sent again. Without
        tracking, nothing is sent again (every line read counts as delivered)."""
        fh = self._file()
        size = os.fstat(fh.fileno()).st_size
        same = (
            cursor.head_len <= size
            and cursor.offset <= size
            and _head_hash(fh, cursor.head_len) == cursor.head
        )
        if same:
            delivered = cursor.offset if cursor.delivered is None else cursor.delivered
            self.spans_from = (
                max(0, min(delivered, cursor.offset)) if self._track else cursor.offset
            )
            self.fresh_from = cursor.offset
            if self.ledger is not None:  # the state file says so already
                self.ledger.release(cursor.offset)

    def rewritten(self) -> bool:
        """Whether the bytes already read are no longer the file's: it was truncated, or
        rewritten in place (perhaps already past the read offset)."""
        fd = self._file().fileno()
        if os.fstat(fd).st_size < self._read_pos:
            return True
        if os.pread(fd, len(self._head), 0) != self._head:
            return True
        return os.pread(fd, len(self._tail), self._read_pos - len(self._tail)) != self._tail

    def restart(self) -> None:
        """The file was truncated or rewritten: read it again from its start."""
        self._file().seek(0)
        self.offset = 0
        self._read_pos = 0
        self._head.clear()
        self._tail = b""
        self.spans_from = 0
        self.fresh_from = 0
        if self.ledger is not None:  # what it holds is of the old bytes
            self.ledger.release_all()
            self.ledger = Ledger()
        self._partial.clear()
        self._skipping = False
        self.lines_read = 0

    def take_unreported(self) -> tuple[int, int]:
        """Lines and bytes read since the last call (for the per-file series)."""
        taken, self.unreported = self.unreported, (0, 0)
        return taken

    def _deliver(self, lines: list[bytes], spans_from: int, origin: Origin) -> None:
        """Count the lines read and give them to the sink; report the lines it refused."""
        first = self.lines_read + 1
        self.lines_read += len(lines)
        self.unreported = (self.unreported[0] + len(lines), self.unreported[1])
        rejections = self._sink(lines, spans_from, origin)
        if rejections:
            self.on_rejected(self.path, first, rejections)

    def read_available(self, budget: int | None = None) -> int:
        """Hand on every complete line written since the last call, or those in the next
        ``budget`` bytes; returns the bytes read."""
        total = 0
        fh = self._file()
        self._seen_whole = (-1, -1)
        while budget is None or total < budget:
            chunk = fh.read(READ_CHUNK)
            if not chunk:
                info = os.fstat(fh.fileno())
                if info.st_size == self._read_pos:  # else written meanwhile: look again
                    self._seen_whole = (info.st_size, info.st_mtime_ns)
                break
            total += len(chunk)
            self.unreported = (self.unreported[0], self.unreported[1] + len(chunk))
            self._feed(chunk)
        if total:
            self.last_growth = time.monotonic()
        return total

    def _feed(self, chunk: bytes) -> None:
        start = self._read_pos
        self._read_pos += len(chunk)
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]
        self._tail = (self._tail + chunk[-TAIL_BYTES:])[-TAIL_BYTES:]
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if lines:
            spans_from = _first_ending_after(lines, start, self.spans_from)
            fresh_from = _first_ending_after(lines, start, self.fresh_from)
            starts = () if self.ledger is None else _line_starts(lines, start, len(self._partial))
            if self._skipping:  # the first piece ends an over-long line
                self._skipping = False
                lines[0] = b""
            elif self._partial:
                self._partial += lines[0]
                lines[0] = bytes(self._partial)
                self._partial.clear()
            if b"\r" in chunk:
                lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
            elif lines[0].endswith(b"\r"):  # a CRLF whose \r came with the previous read
                lines[0] = lines[0][:-1]
            self.offset = self._read_pos - len(tail)
            self._deliver(lines, spans_from, Origin(fresh_from, self.ledger, starts))
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
            origin = Origin(
                int(self.offset <= self.fresh_from), self.ledger, (self.offset - len(line),)
            )
            self._deliver([line], int(self.offset <= self.spans_from), origin)

    def release_descriptor(self) -> None:
        """Close the file while it stays followed; a later read opens it again."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        """The file is no longer followed: its cursor no longer speaks for what it sent."""
        if self.ledger is not None:
            self.ledger.release_all()
        self.release_descriptor()


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
        except OSError as exc:
            if exc.filename is None:  # a read that failed names no file: say which
                raise OSError(exc.errno, exc.strerror, path) from exc
            raise
        finally:
            reader.close()


class Tailer(Worker):
    """Follows every file matching the given paths or globs, in a thread of its own."""

    def __init__(
        self,
        patterns: list[str],
        sink: LineSink,
        *,
        max_line_bytes: int = 1 << 20,
        on_too_long: Callable[[], None] = lambda: None,
        on_rotation: Callable[[str], None] = lambda kind: None,
        on_refused: Callable[[str], None] = lambda path: None,
        cursor_store: CursorStore | None = None,
        poll_interval: float = 1.0,
        force_polling: bool = False,
        progress: FileProgressTable | None = None,
        source: str = "jsonl",
        max_open_files: int = MAX_OPEN_FILES,
        track_delivery: bool = False,
    ) -> None:
        super().__init__("runwatch-tail", join_timeout=10)
        self.patterns = [os.path.abspath(p) for p in patterns]
        self._sink = sink
        self._max = max_line_bytes
        self._on_too_long = on_too_long
        self._on_rotation = on_rotation
        self._on_refused = on_refused
        self._store = cursor_store
        self._saved = cursor_store.load() if cursor_store else {}
        self._poll_ms = max(10, int(poll_interval * 1000))
        self._force_polling = force_polling
        self.files: dict[str, FileReader] = {}
        self._rotated: list[FileReader] = []
        self.ready = threading.Event()  # set once the existing content has been read
        self._last_save = 0.0
        self._unreadable: set[str] = set()  # warned about once each
        self._refused: set[str] = set()  # paths that are not regular files, counted once each
        self._save_failed = False  # the state file could not be written (warned once)
        self._closed = False  # stopped, cursors saved and files closed
        self._progress = progress
        self._source = source
        self._rejections = RejectionLog()
        self._waiting: set[str] = set()  # patterns said to match nothing yet
        self._max_open = max_open_files
        self._open: set[FileReader] = set()  # readers holding a descriptor
        # the OTLP output says what its collector accepted, and the cursors keep it
        self._track = track_delivery and cursor_store is not None

    # -- lifecycle ---------------------------------------------------------------------------------

    def join(self, timeout: float) -> None:
        """Wait for the thread, then save the cursors and close the files (once; a thread
        still reading past ``timeout`` keeps its files)."""
        super().join(timeout)
        if self._closed:
            return
        self.save_cursors()
        if self._thread is not None and self._thread.is_alive():
            return
        self._closed = True
        for reader in [*self.files.values(), *self._rotated]:
            reader.close()

    def save_delivered(self) -> None:
        """Once stopped, save the cursors again after the outputs' last sends: what these
        delivered moves the delivered offsets on, so a restart sends none of it again."""
        if self._closed:
            self.save_cursors()

    def save_cursors(self) -> None:
        """Save the cursors; then what the files' lines sent may leave (see delivery.py),
        even when the file could not be written (warned: a restart sends it again)."""
        if self._store is None:
            return
        self._last_save = time.monotonic()
        readers = [*self.files.values(), *self._rotated]
        cursors = [r.cursor() for r in readers]
        try:
            self._store.save(cursors)
        except OSError as exc:
            if not self._save_failed:
                log.warning("cannot write state file %s: %s (retrying; a restart meanwhile "
                            "sends finished spans again)", self._store.path, exc)  # fmt: skip
            self._save_failed = True
        else:
            if self._save_failed:
                log.info("state file %s written again", self._store.path)
                self._save_failed = False
        for reader, cursor in zip(readers, cursors, strict=True):
            if reader.ledger is not None:
                reader.ledger.release(cursor.offset)

    def _save_if_due(self) -> None:
        """Every second, or sooner (SAVE_WAITING_SECONDS) while spans and log records wait
        for a saved read offset to leave."""
        since = time.monotonic() - self._last_save
        readers = [*self.files.values(), *self._rotated]
        waiting = any(r.ledger is not None and r.ledger.waiting for r in readers)
        if since > 1.0 or (waiting and since > SAVE_WAITING_SECONDS):
            self.save_cursors()

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
        ones, follow rotations, read what is new, each file a budget at a time in turn."""
        behind: list[FileReader] = []  # files with more to read than one budget
        for path in self._matching_paths() if paths is None else sorted(paths):
            try:
                reader = self._scan_path(path)
                if reader is not None and self._read(reader, READ_BUDGET) >= READ_BUDGET:
                    behind.append(reader)
                self._unreadable.discard(path)
            except NotRegularFile as exc:
                self._refuse(path, exc)
            except OSError as exc:
                if path not in self._unreadable:
                    self._unreadable.add(path)
                    log.warning("cannot read %s: %s", path, exc)
        while behind and not self._stop.is_set():
            behind = [r for r in behind if self._read(r, READ_BUDGET) >= READ_BUDGET]
            self._save_if_due()
        for reader in list(self._rotated):
            reader.read_available()
            if time.monotonic() - reader.last_growth > ROTATED_IDLE_SECONDS:
                self._let_go(reader)
        self._report(full=paths is None)
        self._rejections.summarise()
        self._save_if_due()

    def _read(self, reader: FileReader, budget: int) -> int:
        """Read the next budget of a followed file, then keep within the open-file cap."""
        try:
            return reader.read_available(budget)
        finally:
            self._opened(reader)

    def _opened(self, reader: FileReader) -> None:
        """``reader`` may hold a descriptor now: beyond the cap, close the files written
        least recently (a rotated-away one cannot be opened again: it is let go)."""
        if reader.is_open:
            self._open.add(reader)
        if len(self._open) <= self._max_open:
            return
        for victim in sorted(self._open - {reader}, key=lambda r: r.last_growth):
            if len(self._open) <= self._max_open:
                break
            if victim in self._rotated:
                self._let_go(victim)
            else:
                victim.release_descriptor()
                self._open.discard(victim)

    def _let_go(self, reader: FileReader) -> None:
        """A rotated-away file is done with: its last line is handed on, it is closed."""
        reader.read_available()
        reader.flush_partial()
        reader.close()
        self._open.discard(reader)
        self._rotated.remove(reader)

    def _report(self, full: bool) -> None:
        """Per-file progress into the table; on a full pass, files no longer followed leave
        it and patterns that match nothing are said so (once, until they match)."""
        if self._progress is not None:
            now = time.time()
            for reader in [*self._rotated, *self.files.values()]:
                lines, read = reader.take_unreported()
                current = self.files.get(reader.path) is reader
                try:
                    size = reader.size() if current else 0
                except OSError:
                    size = 0
                if current:
                    self._progress.update(self._source, reader.path, lines, read,
                                          reader.offset, size, now if read else None)  # fmt: skip
                elif lines or read:  # a rotated file's last lines count to its path
                    self._progress.update(self._source, reader.path, lines, read, 0, 0, now)
            if full:
                followed = {r.path for r in [*self._rotated, *self.files.values()]}
                self._progress.retain(self._source, followed)
        if full:
            self._say_what_is_missing()

    def _say_what_is_missing(self) -> None:
        for pattern in self.patterns:
            if any(fnmatch.fnmatchcase(path, pattern) for path in self.files):
                self._waiting.discard(pattern)
                continue
            if pattern in self._waiting:
                continue
            self._waiting.add(pattern)
            directory = os.path.dirname(pattern)
            if GLOB_CHARS & set(pattern):
                log.warning("no file matches %s yet; waiting for one", pattern)
            elif not os.path.isdir(directory):
                log.warning("%s does not exist, nor does its directory %s; waiting for it "
                            "(a typo?)", pattern, directory)  # fmt: skip
            elif not os.path.lexists(pattern):
                log.warning("%s does not exist yet; waiting for it", pattern)
            else:
                self._waiting.discard(pattern)  # there but refused or unreadable: said so

    def _refuse(self, path: str, exc: NotRegularFile) -> None:
        if path not in self._refused:
            self._refused.add(path)
            self._on_refused(path)
            log.warning("%s; it is not followed", exc)

    def _matching_paths(self) -> list[str]:
        paths: list[str] = []
        for pattern in self.patterns:
            if GLOB_CHARS & set(pattern):
                paths.extend(sorted(p for p in glob.glob(pattern) if not os.path.isdir(p)))
            elif os.path.lexists(pattern) or pattern in self.files:
                paths.append(pattern)
        return list(dict.fromkeys(paths))

    def _scan_path(self, path: str) -> FileReader | None:
        """Follow what ``path`` names now (opening, rotating or restarting its reader);
        returns that reader, or None when the path names no file to read."""
        reader = self.files.get(path)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            info = None
        identity = None if info is None else (info.st_dev, info.st_ino)
        if reader is not None and reader.identity != identity:
            # moved away (and perhaps replaced): drain it, keep it open for late writers
            self.files.pop(path)
            self._on_rotation("rotated")
            if reader.is_open:
                reader.read_available()
                self._rotated.append(reader)
            else:  # closed, and the path names another file: nothing more can be read
                reader.flush_partial()
            reader = None
        if info is None:
            return None
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(path, info.st_mode)
        self._refused.discard(path)
        if reader is None:
            if any(r.identity == identity for r in self.files.values()):
                return None  # the same file under another path (a symlink): followed there
            reader = self._adopt_or_open(path, (info.st_dev, info.st_ino))
        elif reader.unchanged_since_closed(info):
            return None  # closed for the cap, and as it was: nothing to read
        else:
            try:
                if reader.rewritten():
                    reader.restart()
                    self._on_rotation("truncated")
            finally:
                self._opened(reader)
        return reader

    def _adopt_or_open(self, path: str, identity: tuple[int, int]) -> FileReader:
        """A rotated file we still hold, now matched under a followed path, goes on where it
        was; any other file is opened from its start (spans resumed from its saved cursor)."""
        reader = next((r for r in self._rotated if r.identity == identity), None)
        if reader is not None:
            self._rotated.remove(reader)
        else:
            reader = FileReader(path, self._sink, self._max, self._on_too_long,
                                self._rejections.note, self._track)  # fmt: skip
            saved = self._saved.pop(reader.identity, None)
            if saved is not None:
                reader.resume(saved)
            log.info("following %s", path)
        self.files[path] = reader
        self._opened(reader)
        return reader
