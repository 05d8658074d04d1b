"""Opening input files that must be regular files: event files, PID files, state files.

A FIFO named where an event or PID file is expected would block ``open`` until a
writer comes, and a device like ``/dev/zero`` never ends; both are refused before
any read, and the open itself is non-blocking so a path swapped for a FIFO after the
check cannot block the caller either.
"""

from __future__ import annotations

import errno
import os
import stat


class FileTooLarge(OSError):
    """A file over the size its reader accepts: refused unread, never truncated."""

    def __init__(self, path: str, limit: int) -> None:
        super().__init__(errno.EFBIG, f"over {limit} bytes", path)

    def __str__(self) -> str:
        return f"{self.filename} is {self.strerror}"


class NotRegularFile(OSError):
    """A path that names a FIFO, a device, a socket or a directory: never read as events."""

    def __init__(self, path: str, mode: int) -> None:
        super().__init__(errno.EINVAL, f"not a regular file ({describe_mode(mode)})", path)

    def __str__(self) -> str:
        return f"{self.filename} is {self.strerror}"


def open_regular(path: str) -> int:
    """A read-only descriptor of ``path``, refused (NotRegularFile) unless it is a regular
    file; opened non-blocking, so a FIFO put there meanwhile cannot block the caller."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(path, mode)
    os.set_blocking(fd, True)
    return fd


SECRET_FILE_BYTES = 64 << 10
"""Largest password or token file read (a line is expected)."""


def read_regular(path: str, limit: int) -> bytes:
    """A regular file's content: OSError when it cannot be read, NotRegularFile for anything
    but a regular file, FileTooLarge past ``limit`` bytes (read no further)."""
    fd = open_regular(path)
    try:
        content = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(content) > limit:
        raise FileTooLarge(path, limit)
    return content


def describe_mode(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return kind
    return "not a regular file"
