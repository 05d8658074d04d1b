"""Engine cycles as spans: the trading engine's STAGE_CHANGE events, reduced.

Pure, like :mod:`exporter.state`: time comes only from the events. Each stage
visit is a span ``stage <name>``; the visits of one cycle are children of a root
span ``engine cycle`` in a trace of their own. A cycle ends when the engine
enters a stage it has already visited in that cycle (the pipeline wrapped
around), so no cycle marker is needed from the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.state import FinishedSpan, OpenSpan


@dataclass(slots=True)
class _Cycle:
    root: OpenSpan
    stage: OpenSpan | None = None
    visited: set[str] = field(default_factory=set)


class EngineCycles:
    """Turns (engine, stage, time) observations into finished cycle and stage spans."""

    def __init__(self) -> None:
        self._cycles: dict[str, _Cycle] = {}

    def observe(self, engine: str, stage: str, at: float) -> list[FinishedSpan]:
        """The engine entered ``stage`` at ``at``; returns the spans that ended."""
        out: list[FinishedSpan] = []
        cycle = self._cycles.get(engine)
        if cycle is not None and stage in cycle.visited:
            self._end_stage(engine, cycle, at, out)
            out.append(_finished(engine, cycle.root, cycle.root, at))
            cycle = None
        if cycle is None:
            root = OpenSpan("engine", "cycle", at, None, {"trading.engine": engine})
            cycle = self._cycles[engine] = _Cycle(root)
        else:
            self._end_stage(engine, cycle, at, out)
        cycle.stage = OpenSpan("stage", stage, at, cycle.root, {"trading.stage": stage})
        cycle.visited.add(stage)
        return out

    @staticmethod
    def _end_stage(engine: str, cycle: _Cycle, at: float, out: list[FinishedSpan]) -> None:
        if cycle.stage is not None:
            out.append(_finished(engine, cycle.root, cycle.stage, at))
            cycle.stage = None


def _finished(engine: str, root: OpenSpan, span: OpenSpan, at: float) -> FinishedSpan:
    # The trace key names the engine and the cycle's start: one trace per cycle.
    key = f"{engine} cycle {root.start!r}"
    return FinishedSpan(key, span, max(at, span.start), None, "trading.engine.cycle")
