"""A real process tree for attribution tests: a root that starts two children, each of
which allocates and touches memory, and a PID file naming the root."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil

CHILD_BYTES = 48 << 20
_CHILD = (
    f"import time; b = bytearray({CHILD_BYTES}); "
    f"b[::4096] = b'\\x01' * len(range(0, {CHILD_BYTES}, 4096)); "
    "print('ready', flush=True); time.sleep(600)"
)
_ROOT = f"""
import subprocess, sys, time
children = [subprocess.Popen([sys.executable, "-c", {_CHILD!r}], stdout=subprocess.PIPE)
            for _ in range(2)]
for child in children:
    child.stdout.readline()  # each child says it holds its memory
sys.stdout.write("pids " + " ".join(str(c.pid) for c in children) + "\\n")  # one write
sys.stdout.flush()
time.sleep(600)
"""


@dataclass
class ProcessTree:
    root: subprocess.Popen[bytes]
    children: list[int]
    pid_file: Path
    run_id: str

    def kill_child(self, pid: int) -> None:
        psutil.Process(pid).kill()
        self.children.remove(pid)

    def kill(self) -> None:
        for pid in self.children:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        self.root.kill()
        self.root.wait()
        if self.root.stdout is not None:
            self.root.stdout.close()


def start_tree(tmp: Path, run_id: str = "tree_run") -> ProcessTree:
    """Start the tree and return once both children hold their memory."""
    root = subprocess.Popen([sys.executable, "-c", _ROOT], stdout=subprocess.PIPE)
    assert root.stdout is not None
    line = root.stdout.readline().decode().split()
    assert line[:1] == ["pids"], f"the process tree did not start: {line!r}, {root.poll()}"
    children = [int(pid) for pid in line[1:]]
    pid_file = tmp / f"{run_id}.pid"
    record = {"pid": root.pid, "run_id": run_id, "started_at": time.time()}
    pid_file.write_bytes(orjson.dumps(record))
    return ProcessTree(root, children, pid_file, run_id)
