"""PID files, as the training-events module writes them:
``{"pid": 12345, "run_id": "...", "started_at": "<ISO-8601>"}``.

Polled on their own clock. A process counts as alive while its pid exists, is
not a zombie and was created no later than ``started_at`` (a later creation
time means the pid was reused by another process). The last valid content is
remembered, so a PID file removed by a crashing process still lets the crash be
seen. Garbage is counted once per distinct content as ``pid_file_invalid``: so are
a path that is not a regular file (a FIFO would block the watcher), a file over
64 KiB (never read whole), and pid 1 (the init process: every process on the host
would be attributed to the run, and it never exits).

A path may be a glob (``/tmp/runwatch/pids/*.pid``: one file per run, as the SDK's
``TrainingMonitor`` writes them), expanded at every check. A PID file removed while its
process still lives is a clean end (the SDK removes it after the run's last event): the
run ends ``ended`` unless it said otherwise, and the file is no longer watched.

What the watcher knows outlives a restart when it has a memory file (``--state-file``'s
path with ``.pids``): each path's last valid record, the records of files removed while
their process lived, and those whose path now names another run (the training-events
module writes one fixed path, so the next run's file replaces a crashed one's). A
restarted watcher judges by the same rules the runs it recovers from the event files
(its first check waits for their first read): a process that died meanwhile is a crash,
a file removed meanwhile a clean end (or a crash, if its process is gone too), and a run
closed before the restart stays ended. Without the memory, a restart knows only the PID
files there now.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import msgspec
import psutil

from exporter.core.events import Ident, Rejected, Timestamp, epoch_seconds
from exporter.core.state import ProcessObservation
from exporter.pipeline.regular_files import FileTooLarge, NotRegularFile, read_regular
from exporter.sources.worker import Worker

log = logging.getLogger(__name__)

CREATE_TIME_TOLERANCE_SECONDS = 1.0
MAX_PID_FILE_BYTES = 64 << 10  # a PID file is a few dozen bytes; never read a huge one whole
PID_MAX = 1 << 22  # Linux's PID_MAX_LIMIT: no pid is larger
MAX_PID_FILES = 1024  # files a glob may bring in; more are left out (with a warning)
MAX_MEMORY_BYTES = 16 << 20  # the memory file: 3 x MAX_PID_FILES records fit many times
MEMORY_VERSION = 1
K = TypeVar("K")
Kind = Literal["watched", "closed", "retired"]


class PidFile(msgspec.Struct):
    pid: Annotated[int, msgspec.Meta(gt=0, le=PID_MAX)]
    run_id: Ident
    started_at: Timestamp


@dataclass(frozen=True, slots=True)
class PidRecord:
    pid: int
    run_id: str
    started_at: float


class _Remembered(msgspec.Struct):
    """One record of the memory file; ``kind``: watched (the path's record now), closed
    (removed while its process lived) or retired (its path names another run now)."""

    kind: Kind
    path: str
    pid: int
    run_id: str
    started_at: float


def _remembered(kind: Kind, path: str, record: PidRecord) -> _Remembered:
    return _Remembered(kind, path, record.pid, record.run_id, record.started_at)


class _Memory(msgspec.Struct):
    version: int
    records: list[_Remembered]


_decoder = msgspec.json.Decoder(PidFile)


def parse_pid_file(content: bytes) -> PidRecord:
    """Parse a PID file's content, or raise Rejected(pid_file_invalid, ...)."""
    if len(content) > MAX_PID_FILE_BYTES:
        raise Rejected("pid_file_invalid", f"over {MAX_PID_FILE_BYTES} bytes")
    try:
        parsed = _decoder.decode(content)
    except msgspec.DecodeError as exc:
        raise Rejected("pid_file_invalid", str(exc)) from None
    except RecursionError:
        raise Rejected("pid_file_invalid", "JSON nested too deep") from None
    if parsed.pid == 1:
        raise Rejected("pid_file_invalid", "pid 1 is the init process, not a training process")
    return PidRecord(parsed.pid, parsed.run_id, epoch_seconds(parsed.started_at))


def process_alive(record: PidRecord) -> bool:
    try:
        process = psutil.Process(record.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.create_time() <= record.started_at + CREATE_TIME_TOLERANCE_SECONDS
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ValueError):
        return False


class PidFileWatcher(Worker):
    """Reports the liveness of each PID file's process every ``interval`` seconds; the
    first check waits for ``after`` (the event files' first read: the recovered runs),
    and what it remembers is kept in ``memory`` (see the module docstring)."""

    def __init__(
        self,
        paths: list[str],
        observe: Callable[[ProcessObservation], None],
        reject: Callable[[Rejected], None],
        interval: float = 1.0,
        *,
        memory: Path | None = None,
        after: threading.Event | None = None,
    ) -> None:
        super().__init__("runwatch-pid", join_timeout=10)
        self._patterns = list(paths)
        self._observe = observe
        self._reject = reject
        self._interval = interval
        self._content: dict[Path, bytes | None] = {}
        self._records: dict[Path, PidRecord] = {}
        self._refused: set[Path] = set()  # not regular files, or too large: counted once
        self._gone: set[Path] = set()  # paths whose file does not exist (now)
        self._too_many = False
        self._closed: dict[Path, PidRecord] = {}  # removed while the process lived
        self._retired: dict[str, PidRecord] = {}  # run_id -> record its path no longer holds
        self._unsaid: list[Path] = []  # closed before a restart: said once after it
        self._memory, self._after = memory, after
        self._saved = b""
        self._save_failed = False
        if memory is not None:
            self._load(memory)

    def _run(self) -> None:
        while self._after is not None and not self._after.wait(0.1):
            if self._stop.is_set():
                return
        while True:
            self.check()
            if self._stop.wait(self._interval):
                return

    def check(self) -> None:
        for path in self._paths():
            self._read(path)
        for path in self._unsaid:
            record = self._closed.get(path)  # none when the run has a PID file again
            if record is not None:  # not alive: says nothing of a run it does not know
                self._observe(ProcessObservation(record.run_id, False, record.started_at,
                                                 time.time(), closed=True))  # fmt: skip
        self._unsaid.clear()
        for path, record in list(self._records.items()):
            alive = process_alive(record)
            closed = alive and path in self._gone
            self._observe(
                ProcessObservation(record.run_id, alive, record.started_at, time.time(), closed)
            )
            if closed:  # a clean end: this process is the run no more
                del self._records[path]
                self._content.pop(path, None)
                _remember(self._closed, path, record)
        for record in list(self._retired.values()):
            alive = process_alive(record)
            self._observe(ProcessObservation(record.run_id, alive, record.started_at, time.time()))
        self._forget_gone()
        if self._memory is not None:
            self._save(self._memory)

    def _forget_gone(self) -> None:
        """Past MAX_PID_FILES records, forget the oldest whose file is gone."""
        excess = len(self._records) - MAX_PID_FILES
        if excess > 0:
            for path in [path for path in self._records if path in self._gone][:excess]:
                del self._records[path]
                self._content.pop(path, None)

    def _load(self, memory: Path) -> None:
        """What the watcher knew before a restart; nothing (said once) when unreadable."""
        try:
            content = read_regular(str(memory), MAX_MEMORY_BYTES)
            remembered = msgspec.json.decode(content, type=_Memory)
            if remembered.version != MEMORY_VERSION:
                raise ValueError(f"version {remembered.version}, this runwatch writes "
                                 f"{MEMORY_VERSION}")  # fmt: skip
        except FileNotFoundError:
            return
        except (OSError, ValueError, msgspec.DecodeError) as exc:
            log.warning("PID memory %s is not usable (%s): runs recovered from the event "
                        "files are judged by the PID files there now", memory, exc)  # fmt: skip
            return
        for item in remembered.records:
            record, path = PidRecord(item.pid, item.run_id, item.started_at), Path(item.path)
            if item.kind == "watched":
                self._records[path] = record
            elif item.kind == "closed":
                self._closed[path] = record
                self._unsaid.append(path)
            elif item.kind == "retired":
                self._retired[item.run_id] = record

    def _save(self, memory: Path) -> None:
        """Write the memory when it changed, atomically (renamed into place)."""
        records = [_remembered("watched", str(p), r) for p, r in self._records.items()]
        records += [_remembered("closed", str(p), r) for p, r in self._closed.items()]
        records += [_remembered("retired", "", r) for r in self._retired.values()]
        content = msgspec.json.encode(_Memory(MEMORY_VERSION, records))
        if content == self._saved:
            return
        staged = memory.with_name(memory.name + ".tmp")
        try:
            memory.parent.mkdir(parents=True, exist_ok=True)
            staged.write_bytes(content)
            os.replace(staged, memory)
        except OSError as exc:
            if not self._save_failed:
                log.warning("cannot write PID memory %s: %s (retrying)", memory, exc)
            self._save_failed = True
            return
        self._saved, self._save_failed = content, False

    def _paths(self) -> list[Path]:
        """The PID files to read now: the paths given, and what their globs match."""
        paths: dict[Path, None] = {}
        for pattern in self._patterns:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            paths.update(dict.fromkeys(map(Path, matches)))
        paths.update(dict.fromkeys(self._records))  # files gone since: see if removed cleanly
        if len(paths) > MAX_PID_FILES:
            if not self._too_many:
                self._too_many = True
                log.warning("PID files: %d match %s; watching the first %d", len(paths),
                            self._patterns, MAX_PID_FILES)  # fmt: skip
            return list(paths)[:MAX_PID_FILES]
        return list(paths)

    def live_roots(self) -> dict[int, str]:
        """pid -> run_id of each PID file whose process is alive (for run attribution)."""
        # copies: the watcher thread updates the dicts
        records = [*self._retired.values(), *self._records.values()]
        return {record.pid: record.run_id for record in records if process_alive(record)}

    def _read(self, path: Path) -> None:
        self._gone.discard(path)
        try:
            content: bytes | None = read_regular(str(path), MAX_PID_FILE_BYTES)
            self._refused.discard(path)
        except FileNotFoundError:
            self._gone.add(path)
            content = None
        except (NotRegularFile, FileTooLarge) as exc:  # refused unread, once per path
            if path not in self._refused:
                self._refused.add(path)
                self._reject(Rejected("pid_file_invalid", str(exc)))
                log.warning("PID file %s", exc)
            content = None
        except OSError as exc:
            if self._content.get(path, b"") is not None:
                log.warning("cannot read PID file %s: %s", path, exc)
            content = None
        if content == self._content.get(path, b"") or content is None:
            self._content[path] = content
            return
        self._content[path] = content
        try:
            record = parse_pid_file(content)
        except Rejected as rejected:
            self._reject(rejected)
            log.warning("PID file %s: %s", path, rejected.detail)
            return
        previous = self._records.get(path)
        if previous is not None and previous.run_id != record.run_id:
            _remember(self._retired, previous.run_id, previous)  # judged on: dead is a crash
        self._records[path] = record
        # the run has a PID file again (resumed): what was said of it before is past
        self._retired.pop(record.run_id, None)
        said = [p for p, r in self._closed.items() if p == path or r.run_id == record.run_id]
        for closed in said:
            del self._closed[closed]


def _remember(table: dict[K, PidRecord], key: K, record: PidRecord) -> None:
    """Keep ``record`` as the newest of ``table``, which holds at most MAX_PID_FILES."""
    table.pop(key, None)
    table[key] = record
    if len(table) > MAX_PID_FILES:
        del table[next(iter(table))]
