"""What the outputs read of the pipeline at one moment."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.handshake import Handshakes
from exporter.core.router.reducer import RouterState
from exporter.core.state import State
from exporter.pipeline.readings import Readings
from exporter.pipeline.self_stats import Stats


@dataclass(frozen=True, slots=True)
class View:
    """What an output renders: copies of the reducers' state taken under the pipeline lock
    (:meth:`~exporter.pipeline.Pipeline.snapshot`), which nothing changes afterwards, and
    runwatch's own counters, which are live (each counter is read under its own lock)."""

    state: State
    stats: Stats  # live, not a copy
    readings: Readings  # the sampled sources' latest fresh samples
    handshakes: Handshakes  # the training backend's start handshakes
    router: RouterState | None  # router events reduced by a mapping, when one is configured
