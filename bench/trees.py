"""Two trees side by side: an earlier commit checked out as a ``git worktree`` and this
one, each run as ``runwatch serve`` with the same Python and packages, so a benchmark
compares code, not installs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.run import free_port

ROOT = Path(__file__).resolve().parent.parent


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that runs ``tree``'s runwatch; checked to import from there."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    where = subprocess.run(
        [sys.executable, "-c", "import exporter; print(exporter.__file__)"],
        cwd=tree, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not Path(where).is_relative_to(tree):
        raise SystemExit(f"{tree}: runwatch imported from {where}")
    return env


@contextmanager
def baseline_worktree(commit: str, work: Path) -> Iterator[Path]:
    """``commit`` checked out under ``work``, removed afterwards."""
    worktree = work / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(worktree), commit],
                   cwd=ROOT, check=True)  # fmt: skip
    try:
        yield worktree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT,
                       check=False)  # fmt: skip


@dataclass(frozen=True)
class Served:
    url: str
    pid: int


@contextmanager
def serve(
    tree: Path, args: list[str], log: Path, preexec_fn: Callable[[], None] | None = None
) -> Iterator[Served]:
    """``runwatch serve`` from ``tree`` (no samplers) until the block ends; its output in
    ``log``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", "--listen", f"127.0.0.1:{port}",
             "--no-nvml", "--no-system", *args],
            cwd=tree, env=tree_env(tree), stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"runwatch from {tree} did not start: {log.read_text()}")
                time.sleep(0.05)
            yield Served(url, server.pid)
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
