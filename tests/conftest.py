"""What every layer needs: the environment the tests run in, the hypothesis profiles, the
layer markers, the SDK kept in its place, and the fixtures both integration and e2e take
(the real binaries, a real ``runwatch serve``). Helpers are in tests/support.py and the
modules beside it, imported by name; the fixtures of one layer in its own conftest.py."""

from __future__ import annotations

import os
import subprocess
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.processes import Server
from tests.support import ROOT

# Where the SDK writes and serve reads when told nothing: a folder of this session's, so
# that tests never read or leave anything in the machine's /tmp/runwatch; and quiet.
os.environ["RUNWATCH_LOCAL_DIR"] = tempfile.mkdtemp(prefix="runwatch-tests-")
os.environ.setdefault("RUNWATCH_QUIET", "1")

# Property-based tests: a bounded number of examples in CI; scripts/fuzz runs the "long"
# profile (and atheris) for a long session. No deadline: these machines are noisy.
_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=_SLOW)
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=_SLOW)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked by its folder: ``scripts/test -m unit`` is the quick loop."""
    for item in items:
        layer = item.path.parent.name
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(autouse=True)
def _pid_files_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TrainingMonitor writes a PID file per run: into the test's folder, not /tmp/runwatch."""
    monkeypatch.setenv("RUNWATCH_PID_DIR", str(tmp_path / "pids"))


@pytest.fixture(autouse=True)
def _sdk_closed() -> Iterator[None]:
    """A test ends the SDK monitors and closes the senders it opens. Left open, a sender
    lives on in its thread and a monitor in the SDK's table of open runs: at the
    interpreter's exit, after the summary, the monitor is ended and the sender closed,
    sending to a server long gone and spooling what it could not ("... events not
    delivered ..."). Here they are let go, quietly, and the test fails, naming them."""
    from runwatch_sdk import monitor, transports

    senders, monitors = weakref.WeakSet(transports._open_transports), set(monitor._open_monitors)
    yield
    with monitor._open_lock:
        runs = {name: m for name, m in monitor._open_monitors.items()
                if name not in monitors and not m._ended}  # fmt: skip
        for name in runs:
            del monitor._open_monitors[name]
    left = [t for t in list(transports._open_transports) if t not in senders]
    for transport in left:
        transport.close(timeout=0)
    assert not runs, f"SDK monitors left running (end or close them): {sorted(runs)}"
    assert not left, f"SDK senders left open: {[getattr(t, 'url', t) for t in left]}"


# -- integration and e2e ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """Prometheus, promtool and VictoriaMetrics from Debian, installed into a cache."""
    if os.environ.get("RUNWATCH_BIN"):
        return Path(os.environ["RUNWATCH_BIN"])
    out = subprocess.run(
        [str(ROOT / "scripts" / "install-components")], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start ``runwatch serve`` with the arguments given; each is stopped after the test."""
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, **options: Any) -> Server:
        server = Server(list(args), tmp_path, env, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
