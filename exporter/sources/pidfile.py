"""PID files (seed 000): ``{"pid": 12345, "run_id": "...", "started_at": "<ISO-8601>"}``.

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
"""

from __future__ import annotations

import glob
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec
import psutil

from exporter.core.events import Ident, Rejected, Timestamp, epoch_seconds
from exporter.core.state import ProcessObservation
from exporter.sources.files.regular_files import FileTooLarge, NotRegularFile, read_regular
from exporter.sources.worker import Worker

log = logging.getLogger(__name__)

CREATE_TIME_TOLERANCE_SECONDS = 1.0
MAX_PID_FILE_BYTES = 64 << 10  # a PID file is a few dozen bytes; never read a huge one whole
PID_MAX = 1 << 22  # Linux's PID_MAX_LIMIT: no pid is larger
MAX_PID_FILES = 1024  # files a glob may bring in; more are left out (with a warning)


class PidFile(msgspec.Struct):
    pid: Annotated[int, msgspec.Meta(gt=0, le=PID_MAX)]
    run_id: Ident
    started_at: Timestamp


@dataclass(frozen=True, slots=True)
class PidRecord:
    pid: int
    run_id: str
    started_at: float


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
    """Reports the liveness of each PID file's process every ``interval`` seconds."""

    def __init__(
        self,
        paths: list[str],
        observe: Callable[[ProcessObservation], None],
        reject: Callable[[Rejected], None],
        interval: float = 1.0,
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

    def _run(self) -> None:
        while True:
            self.check()
            if self._stop.wait(self._interval):
                return

    def check(self) -> None:
        for path in self._paths():
            self._read(path)
        for path, record in list(self._records.items()):
            alive = process_alive(record)
            closed = alive and path in self._gone
            self._observe(
                ProcessObservation(record.run_id, alive, record.started_at, time.time(), closed)
            )
            if closed:  # a clean end: this process is the run no more
                del self._records[path]
                self._content.pop(path, None)

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
        records = list(self._records.values())  # a copy: the watcher thread updates the dict
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
            self._records[path] = parse_pid_file(content)
        except Rejected as rejected:
            self._reject(rejected)
            log.warning("PID file %s: %s", path, rejected.detail)
