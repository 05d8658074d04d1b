"""Which run a process belongs to: the PID-file process of the run, or any descendant.

A PID file names one process; the work often happens in its
children (data-loader workers, torchrun's per-rank processes), so a process
belongs to a run when the run's PID-file process is it or one of its ancestors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import psutil

RunRoots = Callable[[], Mapping[int, str]]  # live PID-file pids -> run_id


def no_runs() -> Mapping[int, str]:
    return {}


def run_trees(roots: Mapping[int, str]) -> dict[str, list[psutil.Process]]:
    """Each run's live processes, its PID-file process first; disjoint: a process under two
    PID-file processes (one run started inside another) belongs to the innermost run."""
    trees: dict[str, list[psutil.Process]] = {}
    for pid, run_id in roots.items():
        try:
            root = psutil.Process(pid)
            trees.setdefault(run_id, []).extend([root, *root.children(recursive=True)])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    owner: dict[int, str] = {}
    for run_id, members in sorted(trees.items(), key=lambda item: -len(item[1])):
        owner.update(dict.fromkeys((p.pid for p in members), run_id))
    return {
        run_id: kept
        for run_id, members in trees.items()
        if (kept := [p for p in members if owner[p.pid] == run_id])
    }


def runs_by_pid(trees: Mapping[str, list[psutil.Process]]) -> dict[int, str]:
    return {process.pid: run_id for run_id, members in trees.items() for process in members}
