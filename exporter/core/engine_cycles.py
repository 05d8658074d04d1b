"""Engine cycles as spans: the trading engine's STAGE_CHANGE events, reduced.

Pure, like :mod:`exporter.core.state`: time comes only from the events. Each stage
visit is a span ``stage <name>``; the visits of one cycle are children of a root
span ``engine cycle`` in a trace of their own. A cycle ends when the engine
enters a stage it has already visited in that cycle (the pipeline wrapped
around), so no cycle marker is needed from the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.core import event_log
from exporter.core.outputs import FinishedSpan, LogLine, OpenSpan


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

    def log_line(self, engine: str, event_type: str, data: dict[str, Any], at: float) -> LogLine:
        """A bus message as a line of the event log, in the engine's current stage span."""
        cycle = self._cycles.get(engine)
        key, span, stage = "", None, None
        if cycle is not None:
            key, span = _cycle_key(engine, cycle.root), cycle.stage or cycle.root
            stage = cycle.stage.name if cycle.stage is not None else None
        severity, body = event_log.bus_line(event_type, data)
        attributes: dict[str, Any] = {"event_type": event_type, "trading.engine": engine}
        if stage is not None:
            attributes["trading.stage"] = stage
        return LogLine(key, span, at, severity, body, attributes)

    @staticmethod
    def _end_stage(engine: str, cycle: _Cycle, at: float, out: list[FinishedSpan]) -> None:
        if cycle.stage is not None:
            out.append(_finished(engine, cycle.root, cycle.stage, at))
            cycle.stage = None


def _cycle_key(engine: str, root: OpenSpan) -> str:
    """The trace key names the engine and the cycle's start: one trace per cycle."""
    return f"{engine} cycle {root.start!r}"


def _finished(engine: str, root: OpenSpan, span: OpenSpan, at: float) -> FinishedSpan:
    key = _cycle_key(engine, root)
    return FinishedSpan(key, span, max(at, span.start), None, "trading.engine.cycle")
