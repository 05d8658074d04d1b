"""File descriptors: as many as the host allows, a share kept for files, and no accept storm
when they run out all the same.

Every connection and every followed file takes a descriptor. The soft limit is often 1024
(a shell, a container, a systemd unit without ``LimitNOFILE``) while the hard limit is far
higher, so ``serve`` raises the soft limit to the hard one at start, as every Go program
(Prometheus and its exporters) has done since Go 1.19. The connection cap is then kept
below the limit, with room left for the files the tailers hold open.

asyncio accepts up to ``backlog`` (2,048) connections in one turn of its loop, before
any of them reaches the protocol that counts it against the cap: a thousand clients
connecting at once would take a thousand descriptors at a stroke. The listening socket
here accepts :data:`ACCEPTS_PER_TURN` a turn, so the cap closes idle connections as new
ones come.

Should descriptors run out all the same, asyncio (3.11) meets ``accept()`` failing with
EMFILE by logging a traceback and scheduling a retry for each of up to ``backlog``
attempts in the same turn, and each retry does it again: tens of thousands of tracebacks a
second and a core at 100 %, while nothing is served. The listening socket lets asyncio
see the failure once (it stops accepting and retries a second later) and answers the
attempts that follow as an empty backlog; the failure is logged once, then summed up once
a minute.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from asyncio import constants

from exporter.app.log_once import LogOnce
from exporter.sources.files.jsonl import MAX_OPEN_FILES

log = logging.getLogger(__name__)

ACCEPTS_PER_TURN = 16
RESERVED_DESCRIPTORS = 2 * MAX_OPEN_FILES + 4 * ACCEPTS_PER_TURN + 64
"""Kept from the connection cap: the event files and router traces held open, connections
accepted but not yet counted, the listening sockets, OTLP and peer clients, the state
file."""
MIN_CONNECTIONS = 16
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        log.debug("open-file limit (RLIMIT_NOFILE) is %d", soft)
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.debug("open-file limit (RLIMIT_NOFILE) stays %d: %s", soft, exc)
        return soft
    log.info("raised the open-file limit (RLIMIT_NOFILE) from %d to %d", soft, target)
    return target


def connection_cap(wanted: int, open_file_limit: int) -> int:
    """``--max-connections``, lowered to what the open-file limit leaves room for."""
    room = max(MIN_CONNECTIONS, open_file_limit - RESERVED_DESCRIPTORS)
    if wanted <= room:
        return wanted
    log.warning("--max-connections %d lowered to %d: the open-file limit is %d, and %d "
                "descriptors are kept for files (raise LimitNOFILE or ulimit -n)", wanted,
                room, open_file_limit, RESERVED_DESCRIPTORS)  # fmt: skip
    return room


class ListeningSocket(socket.socket):
    """A listening socket that accepts ACCEPTS_PER_TURN connections a turn of the event
    loop, and shows asyncio one failure for lack of descriptors per retry period (an empty
    backlog to the attempts that follow)."""

    _quiet_until = 0.0
    _accepted = 0  # in this turn of the loop

    @classmethod
    def adopt(cls, sock: socket.socket) -> ListeningSocket:
        """The same bound socket (the descriptor moves over), as a ListeningSocket."""
        return cls(sock.family, sock.type, sock.proto, fileno=sock.detach())

    def accept(self) -> tuple[socket.socket, object]:
        if self._accepted >= ACCEPTS_PER_TURN or time.monotonic() < self._quiet_until:
            raise BlockingIOError(errno.EAGAIN, "the rest on the loop's next turn")
        try:
            accepted = super().accept()
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:  # asyncio retries after ACCEPT_RETRY_DELAY
                self._quiet_until = time.monotonic() + constants.ACCEPT_RETRY_DELAY / 2
            raise
        if self._accepted == 0:
            asyncio.get_running_loop().call_soon(self._next_turn)
        self._accepted += 1
        return accepted

    def _next_turn(self) -> None:
        self._accepted = 0


class AcceptFailures(logging.Filter):
    """On asyncio's logger: its accept-failure tracebacks become one warning, then a
    summary a minute."""

    def __init__(self) -> None:
        super().__init__()
        self._log = LogOnce(log)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(ACCEPT_FAILED):
            return True
        error = record.exc_info[1] if record.exc_info else None
        self._log.log(logging.WARNING, "accept_failures", "cannot accept connections: %s; "
                      "asyncio retries every second", error)  # fmt: skip
        return False


def summarise_accept_failures() -> None:
    """Put :class:`AcceptFailures` on asyncio's logger (once)."""
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, AcceptFailures) for f in asyncio_log.filters):
        asyncio_log.addFilter(AcceptFailures())
