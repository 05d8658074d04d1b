"""HTTP basic auth against bcrypt hashes, as the exporter-toolkit checks ``basic_auth_users``.

bcrypt is slow on purpose (about 50 ms at cost 10), so a flood of wrong passwords must not
cost the requests that carry the right one. The checks run one at a time in a thread of
their own (the toolkit holds a mutex around them), never in the thread pool the handlers
(``/metrics``) run in; a user and password that passed is remembered, as the toolkit
caches it, so a scrape every 15 s pays once; a wrong one is remembered for a minute, so
repeating it costs nothing; the same credentials arriving while they are being checked wait
for that check. Checks wait in one queue per client address, taken in turn (fair
queueing), so a flood from one address delays another address's check by one bcrypt at
most per address waiting, not by the whole flood: a Prometheus whose password is not
remembered yet (after a restart) is let in within about 50 ms per flooding address. A
client with :data:`MAX_WAITING` checks queued, or a new one when :data:`MAX_CLIENTS`
addresses are, is refused at once (429) instead of joining. A user that does not exist
costs a check against a dummy hash, so timing does not tell which users exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import bcrypt

DUMMY_HASH = bcrypt.hashpw(b"runwatch", bcrypt.gensalt(rounds=10))
MAX_REMEMBERED = 1024  # passed credentials, and as many failed ones
FAILED_SECONDS = 60.0  # how long a wrong password is remembered
MAX_WAITING = 8  # checks one client address may have queued (about 0.4 s of bcrypt)
MAX_CLIENTS = 64  # client addresses with checks queued at once


class TooManyChecks(Exception):
    """More password checks are waiting than are queued: the request is refused at once."""


def credentials(header: str) -> tuple[str, bytes] | None:
    """The user and password of an ``Authorization: Basic`` header, or None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    if not sep:
        return None
    return user.decode("utf-8", "replace"), password


def _matches(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # a hash bcrypt cannot read (checked at load, so unlikely)
        return False


class BcryptUsers:
    """Checks credentials against a ``user -> bcrypt hash`` table (see the module's text);
    used from the event loop's thread only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._passed: set[bytes] = set()
        self._failed: dict[bytes, float] = {}  # key -> until when, oldest first
        self._checking: dict[bytes, asyncio.Future[bool]] = {}
        self._queues: dict[str, deque[tuple[bytes, bytes, asyncio.Future[bool]]]] = {}
        self._waiting: dict[str, int] = {}  # checks queued or running, by client address
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def check(
        self, users: dict[str, bytes], user: str, password: bytes, client: str = ""
    ) -> bool:
        """Whether the password is the user's; TooManyChecks when ``client`` (its address)
        has MAX_WAITING checks queued or running, or MAX_CLIENTS other addresses have."""
        hashed = users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), hashed or b"", password))).digest()
        if hashed is not None and key in self._passed:
            return True
        if self._failed.get(key, 0.0) > self._clock():
            return False
        check = self._checking.get(key)
        if check is None:
            waiting = self._waiting.get(client, 0)
            if waiting >= MAX_WAITING or (not waiting and len(self._waiting) >= MAX_CLIENTS):
                raise TooManyChecks
            self._waiting[client] = waiting + 1
            check = asyncio.get_running_loop().create_future()
            self._queues.setdefault(client, deque()).append((password, hashed or DUMMY_HASH, check))
            self._checking[key] = check
            check.add_done_callback(lambda done: self._remember(key, hashed is not None, done))
            if self._worker is None or self._worker.done():
                self._worker = asyncio.create_task(self._work())
        # shielded: a client that leaves does not cancel a check others may be waiting on
        return await asyncio.shield(check) and hashed is not None

    async def _work(self) -> None:
        """Run the queued checks one at a time in the bcrypt thread, one client per turn."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="runwatch-bcrypt")
        loop = asyncio.get_running_loop()
        while self._queues:
            for client in list(self._queues):
                queue = self._queues[client]
                password, hashed, check = queue.popleft()
                if not queue:
                    del self._queues[client]
                try:
                    matched = await loop.run_in_executor(self._executor, _matches, password, hashed)
                except Exception as exc:  # whoever waits on it sees it
                    check.set_exception(exc)
                else:
                    check.set_result(matched)
                finally:
                    self._waiting[client] -= 1
                    if not self._waiting[client]:
                        del self._waiting[client]

    def _remember(self, key: bytes, known: bool, check: asyncio.Future[bool]) -> None:
        del self._checking[key]
        if check.cancelled() or check.exception() is not None:
            return
        if check.result() and known:
            if len(self._passed) >= MAX_REMEMBERED:
                self._passed.clear()
            self._passed.add(key)
            return
        self._failed.pop(key, None)
        while len(self._failed) >= MAX_REMEMBERED:
            del self._failed[next(iter(self._failed))]
        self._failed[key] = self._clock() + FAILED_SECONDS


def hash_password(password: str) -> bytes:
    """A bcrypt hash of a plain password (the legacy --basic-auth-user flags)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10))
