"""What each run's samples became in an output, kept until the run changes.

:meth:`~exporter.core.state.State.snapshot` copies only the runs that changed since the
last snapshot and hands out the same copy of every other run, so "this run has not
changed" is "this is the same object as last time". A cluster's day of jobs is mostly
finished runs that never change again: each is rendered once, and a scrape costs the live
runs plus a copy of the rest. Runs are kept in blocks, in the snapshot's order: what an
output joins over a block (the block's lines of each family, its observations of each
instrument) is kept while the block holds the same run objects, so a collection joins a
few dozen blocks rather than every run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from exporter.core.state import Run

R = TypeVar("R")  # what one run became
B = TypeVar("B")  # what a block of runs became

RUNS_PER_BLOCK = 64
"""Runs joined as one piece: the unit joined again when one of its runs changes (new runs
are added at the end, so the live runs of a long-lived server gather in its last blocks)."""


class RunBlocks(Generic[R, B]):
    """``render`` of each run and ``join`` of each block of runs, kept while unchanged.

    One collection at a time: the caller holds a lock around :meth:`blocks`."""

    def __init__(self, render: Callable[[Run], R], join: Callable[[Sequence[R]], B]) -> None:
        self._render = render
        self._join = join
        self._rows: dict[str, tuple[Run, R]] = {}
        self._blocks: list[tuple[tuple[Run, ...], B]] = []

    def blocks(self, runs: Sequence[Run]) -> list[B]:
        """The joined blocks of ``runs``, in order; what ``runs`` no longer holds is
        forgotten."""
        before, rows, rendered = self._rows, {}, []
        for run in runs:
            row = before.get(run.run_id)
            if row is None or row[0] is not run:
                row = (run, self._render(run))
            rows[run.run_id] = row
            rendered.append(row[1])
        self._rows = rows
        by_first = {members[0].run_id: (members, joined) for members, joined in self._blocks}

        def kept(at: int) -> tuple[tuple[Run, ...], B] | None:
            """The kept block that starts at ``runs[at]`` and still holds the same runs."""
            block = by_first.get(runs[at].run_id)
            if block is None or len(block[0]) > len(runs) - at:
                return None
            here = runs[at : at + len(block[0])]
            return None if any(a is not b for a, b in zip(block[0], here, strict=True)) else block

        blocks: list[tuple[tuple[Run, ...], B]] = []
        at = 0
        while at < len(runs):
            block = kept(at)
            end = at + len(block[0]) if block is not None else at
            # a block short of full is kept only where a kept block or the end follows;
            # else it is joined again with the runs after it (new runs fill the last one)
            if block is not None and (
                len(block[0]) == RUNS_PER_BLOCK or end == len(runs) or kept(end) is not None
            ):
                blocks.append(block)
                at = end
                continue
            end = at + 1  # a new block: up to the next kept block, at most RUNS_PER_BLOCK
            while end < len(runs) and end - at < RUNS_PER_BLOCK and kept(end) is None:
                end += 1
            blocks.append((tuple(runs[at:end]), self._join(rendered[at:end])))
            at = end
        self._blocks = blocks
        return [joined for _, joined in blocks]
