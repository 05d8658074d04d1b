"""HTTP basic auth against bcrypt hashes, as the exporter-toolkit checks ``basic_auth_users``.

bcrypt is slow on purpose (about 50 ms at cost 10), so a user and password that passed is
remembered, under a digest of the password and the hash it matched, as the toolkit caches
it; a scrape every 15 s pays it once. A user that does not exist costs a check against a
dummy hash, so timing does not tell which users exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading

import bcrypt

DUMMY_HASH = bcrypt.hashpw(b"runwatch", bcrypt.gensalt(rounds=10))
MAX_REMEMBERED = 1024


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


class BcryptUsers:
    """Checks credentials against a ``user -> bcrypt hash`` table, remembering successes."""

    def __init__(self) -> None:
        self._passed: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, users: dict[str, bytes], user: str, password: bytes) -> bool:
        hashed = users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), hashed or b"", password))).digest()
        with self._lock:
            if hashed is not None and key in self._passed:
                return True
        try:
            passed = bcrypt.checkpw(password, hashed or DUMMY_HASH)
        except ValueError:  # a hash bcrypt cannot read (checked at load, so unlikely)
            passed = False
        if not passed or hashed is None:
            return False
        with self._lock:
            if len(self._passed) >= MAX_REMEMBERED:
                self._passed.clear()
            self._passed.add(key)
        return True


def hash_password(password: str) -> bytes:
    """A bcrypt hash of a plain password (the legacy --basic-auth-user flags)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10))
