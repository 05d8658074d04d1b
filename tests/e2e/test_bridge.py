"""The trading bridge source against the reference bridge over real HTTP and WebSocket,
with a real Prometheus scraping: values, staleness, restarts, hostile answers."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import threading

import httpx
import pytest

from exporter.pipeline.self_stats import Stats
from exporter.simulate.reference_bridge import STAGES
from exporter.sources.peers.websocket import WebSocketFollower
from tests.processes import Bridge
from tests.support import wait_for


def serve_bridge(serve, bridge: Bridge, *args: str):
    return serve("--bridge-url", bridge.url, "--bridge-interval", "0.2", "--no-nvml",
                 "--no-system", *args)  # fmt: skip


def test_the_bridge_state_reaches_promql(serve, bridge, prometheus) -> None:
    engine = bridge()  # a still engine: 40 steps taken, then no clock
    server = serve_bridge(serve, engine)
    prom = prometheus(f"127.0.0.1:{server.port}")
    metrics, state = engine.get("/api/metrics"), engine.get("/api/state")
    positions, arms = engine.get("/api/positions")["positions"], engine.get("/api/cils/stats")
    risk = engine.get("/api/risk/status")
    wait_for(lambda: prom.value("trading_portfolio_value") is not None, what="first scrape")
    assert prom.value("trading_portfolio_value") == pytest.approx(metrics["portfolio_value"])
    assert prom.value("trading_cash") == pytest.approx(metrics["cash"])
    assert prom.value("trading_trades_total") == metrics["trades_total"]
    assert prom.value("trading_cycles_total") == metrics["cycles_total"]
    assert prom.query("trading_engine_stage == 1") == {f"stage={state['current_stage']}": 1}
    assert prom.query("trading_position_quantity") == {
        f"symbol={p['symbol']}": p["quantity"] for p in positions
    }
    assert positions, "the warmed-up engine holds positions"
    assert prom.query("trading_cils_arm_weight") == pytest.approx(
        {f"arm={a['arm']}": a["weight"] for a in arms["arms"]}
    )
    assert prom.value("trading_risk_exposure_ratio") == pytest.approx(risk["exposure_pct"] / 100)
    assert prom.value('runwatch_source_up{source="bridge"}') == 1


def test_event_bus_messages_are_counted_by_type(serve, bridge) -> None:
    server = serve_bridge(serve, bridge(tick=0.05))
    wait_for(lambda: (server.sample('trading_events_total{event_type="STAGE_CHANGE"}') or 0) >= 12,
             what="stage changes")  # fmt: skip
    assert server.sample('trading_events_total{event_type="CYCLE_COMPLETE"}') >= 1
    assert server.sample('trading_bridge_websocket_connected{channel="events"}') == 1


def test_a_killed_bridge_goes_stale_and_a_restarted_one_is_picked_up(
    serve, bridge, prometheus
) -> None:
    engine = bridge()
    server = serve_bridge(serve, engine)
    prom = prometheus(f"127.0.0.1:{server.port}")
    wait_for(lambda: prom.value("trading_portfolio_value") is not None, what="first scrape")
    engine.kill()
    wait_for(lambda: prom.value('runwatch_source_up{source="bridge"}') == 0, what="down")
    wait_for(lambda: prom.query("trading_portfolio_value") == {}, what="stale series")
    assert server.sample("trading_portfolio_value") is None  # gone, not frozen
    assert server.sample('trading_bridge_websocket_connected{channel="events"}') == 0
    assert server.sample('runwatch_events_rejected_total{reason="connect_failed",'
                         'source="bridge"}') >= 1  # fmt: skip
    engine.start()  # the same port, runwatch untouched
    wait_for(lambda: prom.value("trading_portfolio_value") is not None, timeout=30,
             what="picked up again")  # fmt: skip
    wait_for(lambda: server.sample('trading_bridge_websocket_connected{channel="events"}') == 1,
             timeout=40, what="WebSocket back")  # fmt: skip
    assert server.sample('trading_bridge_websocket_reconnects_total{channel="events"}') >= 1
    assert "Traceback" not in server.log.read_text()


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        ({"delay": 1.0}, "timeout"),
        ({"status": 500}, "http_error"),
        ({"garbage": True}, "invalid_json"),
        ({"off_contract": True}, "contract_violation"),
    ],
)
def test_a_hostile_bridge_is_counted_and_its_series_vanish(serve, bridge, faults, reason) -> None:
    engine = bridge()
    server = serve_bridge(serve, engine, "--bridge-timeout", "0.3")
    wait_for(lambda: server.sample("trading_portfolio_value") is not None, what="values")
    engine.faults(**faults)
    series = f'runwatch_events_rejected_total{{reason="{reason}",source="bridge"}}'
    wait_for(lambda: server.sample(series) >= 6, what=reason)
    wait_for(lambda: server.sample("trading_portfolio_value") is None, what="no frozen value")
    engine.faults(**dict.fromkeys(faults, 0))
    wait_for(lambda: server.sample("trading_portfolio_value") is not None, what="recovery")
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert "Traceback" not in server.log.read_text()


def test_garbage_and_dropped_websocket_frames_are_counted(serve, bridge) -> None:
    engine = bridge(tick=0.05)
    server = serve_bridge(serve, engine)
    wait_for(lambda: server.sample('trading_bridge_websocket_connected{channel="events"}') == 1,
             what="connected")  # fmt: skip
    engine.faults(ws_garbage=True)
    series = 'runwatch_events_rejected_total{reason="invalid_json",source="bridge"}'
    wait_for(lambda: server.sample(series) >= 5, what="garbage frames counted")
    engine.faults(ws_garbage=False, ws_drop=True)
    reconnects = 'trading_bridge_websocket_reconnects_total{channel="events"}'
    wait_for(lambda: server.sample(reconnects) >= 2, timeout=20, what="reconnects")
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_stage_changes_become_cycle_spans_and_training_frames_become_runs(
    otlp_receiver, serve, bridge
) -> None:
    engine = bridge(tick=0.05)
    server = serve_bridge(serve, engine, "--otlp-endpoint", otlp_receiver.url)

    def cycles() -> list[dict]:
        return [s for s in otlp_receiver.spans if s["name"] == "engine cycle"]

    wait_for(lambda: len(cycles()) >= 2, timeout=30, what="two engine cycles")
    cycle = cycles()[0]
    stages = sorted((s for s in otlp_receiver.spans if s["parent_span_id"] == cycle["span_id"]),
                    key=lambda s: s["start"])  # fmt: skip
    names = [s["name"].removeprefix("stage ") for s in stages]
    first = STAGES.index(names[0])  # runwatch may join mid-cycle: any rotation of the cycle
    assert names == [STAGES[(first + i) % len(STAGES)] for i in range(len(STAGES))]
    assert all(s["trace_id"] == cycle["trace_id"] for s in stages)
    assert [s["end"] for s in stages[:-1]] == [s["start"] for s in stages[1:]]  # contiguous
    assert stages[0]["start"] == cycle["start"] and stages[-1]["end"] == cycle["end"]
    wait_for(lambda: (server.sample('runwatch_events_ingested_total{source="bridge"}') or 0) > 20,
             what="training events from /ws/training")  # fmt: skip
    assert "training_run_info{name=" in server.metrics()
    assert 'run_id="bridge_run_001"' in server.metrics()


def test_a_websocket_broken_mid_frame_is_reconnected_never_fatal() -> None:
    """A server that completes the handshake, sends 12 bytes of a 256-byte frame, hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))
    port, accepted = listener.getsockname()[1], []

    def half_frames() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = re.search(rb"sec-websocket-key: *(\S+)", request, re.IGNORECASE).group(1)
            digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                         + base64.b64encode(digest) + b"\r\n\r\n")  # fmt: skip
            conn.sendall(b"\x81\x7e\x01\x00" + b'{"type": "X"')  # then the connection drops
            conn.close()
            accepted.append(conn)

    threading.Thread(target=half_frames, daemon=True).start()
    stats, received = Stats(), []
    url = f"ws://127.0.0.1:{port}/ws/events"
    follower = WebSocketFollower(url, "events", stats, received.append, print, open_timeout=2.0)
    follower.start()
    try:
        wait_for(lambda: len(accepted) >= 2, what="a reconnect after the broken frame")
    finally:
        follower.stop()
        listener.close()
    assert received == [] and stats.websocket_reconnects["events"] >= 1
    assert stats.websocket_connected["events"] == 0
