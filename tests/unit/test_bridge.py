"""The trading bridge source in-process: the contract's accepted shapes, positions past
the bound, bus events counted by type, engine cycles. The source against the reference
bridge over real HTTP and WebSocket is in tests/e2e/test_bridge.py."""

from __future__ import annotations

from exporter.core.engine_cycles import EngineCycles
from exporter.pipeline.self_stats import Stats
from exporter.sources.peers.bridge import BridgePoller, BusEvents
from exporter.sources.peers.bridge_contract import arms_from, positions_from


def test_the_contract_accepts_the_shapes_the_seed_allows() -> None:
    assert positions_from([{"symbol": "A", "qty": 2, "extra": 1}]).positions[0].quantity == 2
    assert positions_from({"positions": []}).positions == []
    arms = arms_from({"arms": {"x": {"weight": 0.5}, "y": {"pulls": 3}}}).arms
    assert [(a.arm, a.weight, a.pulls) for a in arms] == [("x", 0.5, None), ("y", None, 3)]


def test_positions_beyond_the_bound_are_cut_largest_kept_and_counted() -> None:
    stats = Stats()
    poller = BridgePoller("http://unused", 1.0, stats, max_positions=2, max_bytes=1 << 20)
    values = {"A": 10.0, "B": -500.0, "C": 30.0, "D": 1.0}
    body = [{"symbol": s, "quantity": 1, "market_value": v} for s, v in values.items()]
    sample = poller._assemble({"/api/positions": positions_from(body)})
    assert [p.symbol for p in sample.positions] == ["B", "C"]
    assert stats.series_dropped["max_positions"] == 2


def test_bus_events_are_counted_by_type_bounded_and_stage_changes_reported() -> None:
    stats, stages = Stats(), []
    bus = BusEvents(stats, lambda stage, at: stages.append((stage, at)), lambda *event: None)
    for index in range(100):
        bus(f'{{"type": "T{index}"}}')
    bus(b"\xff not json")
    bus('{"no_type": 1}')
    bus('{"type": "STAGE_CHANGE", "data": {}}')  # a stage change without its stage
    bus('{"event_type": "STAGE_CHANGE", "timestamp": 5.0, "data": {"new_stage": "fetch"}}')
    assert len(stats.trading_events) == 64  # 63 types kept, the rest (and STAGE_CHANGE) other
    assert stats.trading_events["other"] == 38
    assert stats.rejected[("bridge", "invalid_json")] == 1
    assert stats.rejected[("bridge", "contract_violation")] == 2
    assert stages == [("fetch", 5.0)]


def test_engine_cycles_wrap_when_a_stage_comes_round_again() -> None:
    cycles = EngineCycles()
    ended = [span for at, stage in enumerate(["a", "b", "c", "a", "b"])
             for span in cycles.observe("engine", stage, float(at))]  # fmt: skip
    names = [(s.span.kind, s.span.name, s.span.start, s.end) for s in ended]
    assert names == [("stage", "a", 0.0, 1.0), ("stage", "b", 1.0, 2.0),
                     ("stage", "c", 2.0, 3.0), ("engine", "cycle", 0.0, 3.0),
                     ("stage", "a", 3.0, 4.0)]  # fmt: skip
    assert len({s.run_id for s in ended[:4]}) == 1 and ended[4].run_id != ended[0].run_id
    assert all(s.span.parent is ended[3].span for s in ended[:3])
