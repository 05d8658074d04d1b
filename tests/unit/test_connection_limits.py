"""The pieces that keep hostile clients from costing the scrapes: the password checker, the
rate limit, the open-file limit, the once-a-minute log. The accept loop out of descriptors,
in a child process with real sockets, is in tests/e2e/test_connection_limits.py."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from pathlib import Path

import pytest

from exporter.app import basic_auth
from exporter.app.basic_auth import MAX_WAITING, BcryptUsers, TooManyChecks
from exporter.app.descriptors import RESERVED_DESCRIPTORS, connection_cap
from exporter.app.log_once import LogOnce
from exporter.app.rate_limit import RateLimit, TokenBucket
from exporter.app.web_config import WebConfigError, parse_web_config

HASH = basic_auth.hash_password("right")
USERS = {"prometheus": HASH}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The passwords bcrypt is asked to check, in order."""
    asked: list[bytes] = []
    real = basic_auth._matches

    def counted(password: bytes, hashed: bytes) -> bool:
        asked.append(password)
        return real(password, hashed)

    monkeypatch.setattr(basic_auth, "_matches", counted)
    return asked


def test_a_wrong_password_repeated_is_checked_once_until_forgotten(checks) -> None:
    clock = Clock()
    users = BcryptUsers(clock)

    async def attempts() -> list[bool]:
        return [await users.check(USERS, "prometheus", b"wrong") for _ in range(5)]

    assert asyncio.run(attempts()) == [False] * 5
    assert checks == [b"wrong"]
    clock.now += basic_auth.FAILED_SECONDS + 1
    assert asyncio.run(attempts()) == [False] * 5
    assert checks == [b"wrong", b"wrong"]


def test_the_right_password_is_checked_once_and_an_unknown_user_never_passes(checks) -> None:
    users = BcryptUsers()

    async def attempts() -> list[bool]:
        return [
            await users.check(USERS, "prometheus", b"right"),
            await users.check(USERS, "prometheus", b"right"),
            await users.check(USERS, "nobody", b"runwatch"),  # the dummy hash's password
        ]

    assert asyncio.run(attempts()) == [True, True, False]
    assert checks == [b"right", b"runwatch"]


def test_checks_of_the_same_credentials_at_once_share_one(checks) -> None:
    users = BcryptUsers()

    async def at_once() -> list[bool]:
        return await asyncio.gather(*(users.check(USERS, "prometheus", b"x") for _ in range(20)))

    assert asyncio.run(at_once()) == [False] * 20
    assert checks == [b"x"]


def test_past_max_waiting_checks_a_request_is_refused_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    monkeypatch.setattr(basic_auth, "_matches", lambda password, hashed: release.wait(10) and False)
    users = BcryptUsers()

    async def flood() -> tuple[int, list[object]]:
        waiting = [asyncio.ensure_future(users.check(USERS, "prometheus", b"w%d" % i))
                   for i in range(MAX_WAITING)]  # fmt: skip
        await asyncio.sleep(0.05)
        refused = 0
        for i in range(50):
            try:
                await users.check(USERS, "prometheus", b"more%d" % i)
            except TooManyChecks:
                refused += 1
        release.set()
        return refused, await asyncio.gather(*waiting)

    refused, answered = asyncio.run(flood())
    assert refused == 50 and answered == [False] * MAX_WAITING


def test_the_token_bucket_allows_a_burst_then_one_per_interval() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(interval=1.0, burst=2), clock)
    assert [bucket.allow() for _ in range(3)] == [True, True, False]
    clock.now += 0.5
    assert not bucket.allow()
    clock.now += 0.5
    assert bucket.allow() and not bucket.allow()
    clock.now += 100  # saves up no more than the burst
    assert [bucket.allow() for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ({"interval": "1s"}, "burst 0 with an interval"),
        ({"interval": "1s", "burst": -1}, "burst: expected a whole number"),
        ({"interval": "5", "burst": 1}, "not a duration"),
        ({"interval": "1s", "burst": 1, "rate": 3}, "unknown field(s) rate"),
    ],
)
def test_a_bad_rate_limit_is_a_web_config_error(section: dict, says: str) -> None:
    with pytest.raises(WebConfigError, match=re.escape(says)):
        parse_web_config({"rate_limit": section}, "web.yml", Path("."))


def test_a_rate_limit_as_the_toolkit_writes_it() -> None:
    config = parse_web_config({"rate_limit": {"interval": "1m30s", "burst": 20}}, "w", Path("."))
    assert config.rate_limit == RateLimit(90.0, 20)
    assert parse_web_config({"rate_limit": {"interval": 0}}, "w", Path(".")).rate_limit is None


def test_the_connection_cap_leaves_room_for_files() -> None:
    assert connection_cap(512, 1 << 20) == 512
    assert connection_cap(512, 1024) == 512
    assert connection_cap(512, 600) == 600 - RESERVED_DESCRIPTORS


def test_repeated_lines_are_logged_once_then_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    once = LogOnce(logging.getLogger("test.once"), interval=60, clock=clock)
    with caplog.at_level(logging.INFO, "test.once"):
        for _ in range(400):
            once.log(logging.WARNING, "header_timeout", "closed %s", "one")
            clock.now += 0.25  # 100 s in all
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "closed one (more of these are summed up once a minute)",
        "header_timeout: 240 more in the last 60 s",
    ]


def test_a_flood_from_one_address_delays_another_by_one_check_per_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checks are taken one client address at a time: Prometheus's first check after a
    restart waits for one of the flood's, not for all of them."""
    order: list[bytes] = []

    def matches(password: bytes, hashed: bytes) -> bool:
        order.append(password)
        return password == b"right"

    monkeypatch.setattr(basic_auth, "_matches", matches)
    users = BcryptUsers()

    async def flood_then_scrape() -> bool:
        flood = [asyncio.ensure_future(users.check(USERS, "prometheus", b"w%d" % i, "10.0.0.9"))
                 for i in range(MAX_WAITING)]  # fmt: skip
        await asyncio.sleep(0)
        scrape = await users.check(USERS, "prometheus", b"right", "10.0.0.1")
        await asyncio.gather(*flood)
        return scrape

    assert asyncio.run(flood_then_scrape()) is True
    assert order.index(b"right") <= 1  # behind at most the check already running
