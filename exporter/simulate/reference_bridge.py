"""A reference trading bridge and training backend: the contracts of
:mod:`exporter.sources.peers.bridge_contract` and :mod:`exporter.sources.peers.backend`, served over
real HTTP and WebSocket by a simulated engine and job runner
(:mod:`exporter.simulate.reference_backend`).

It is the executable specification runwatch's bridge source is tested against, and
what ``runwatch demo`` shows on the trading panels. The engine walks a stage cycle,
moves prices, opens and closes positions, trades, updates bandit arms and risk, and
publishes each step on ``/ws/events``; ``/ws/training`` streams training runs in the
core event format, one event per tick. ``POST /_faults`` makes it hostile for tests:
slow answers, garbage bodies, errors, garbage or dropped WebSocket frames.

    python -m exporter.simulate.reference_bridge --listen 127.0.0.1:8765
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from exporter.app.help_text import plain
from exporter.simulate.reference_backend import TrainingBackend, add_backend_routes
from exporter.simulate.synthetic import synthetic_run

STAGES = ("market_data", "features", "prediction", "decision", "execution", "reconcile")
SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
ARMS = ("momentum", "mean_reversion", "breakout")


@dataclass
class Faults:
    """How the bridge misbehaves; set over ``POST /_faults``."""

    delay: float = 0.0  # seconds before every REST answer
    status: int = 0  # answer every REST call with this status (0: normal)
    garbage: bool = False  # REST bodies that are not JSON
    off_contract: bool = False  # JSON of the wrong shape
    ws_garbage: bool = False  # WebSocket frames that are not JSON
    ws_drop: bool = False  # close every WebSocket after its first frame
    never_start: bool = False  # the training backend accepts jobs but never starts them
    fail_jobs: bool = False  # the training backend's jobs fail


@dataclass
class Engine:
    """A simulated trading engine, stepped by the app's clock."""

    seed: int = 7
    cash: float = 100_000.0
    prices: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SYMBOLS, 100.0))
    positions: dict[str, float] = field(default_factory=dict)  # symbol -> quantity
    entries: dict[str, float] = field(default_factory=dict)  # symbol -> average entry price
    trades: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    decisions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    arms: dict[str, dict[str, float]] = field(
        default_factory=lambda: {a: {"weight": 1 / len(ARMS), "pulls": 0, "mean_reward": 0.0}
                                 for a in ARMS})  # fmt: skip
    stage_index: int = 0
    cycles: int = 0
    trades_total: int = 0
    errors_total: int = 0
    peak_value: float = 100_000.0
    day_start_value: float = 100_000.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @property
    def stage(self) -> str:
        return STAGES[self.stage_index]

    def portfolio_value(self) -> float:
        return self.cash + sum(q * self.prices[s] for s, q in self.positions.items())

    def step(self) -> list[dict[str, Any]]:
        """Advance one stage; returns the bus events that step published."""
        previous = self.stage
        self.stage_index = (self.stage_index + 1) % len(STAGES)
        now = time.time()
        events = [{"type": "STAGE_CHANGE", "timestamp": now,
                   "data": {"previous_stage": previous, "new_stage": self.stage}}]  # fmt: skip
        for symbol in SYMBOLS:
            self.prices[symbol] *= math.exp(self.rng.gauss(0, 0.004))
        if self.stage == "decision":
            symbol = self.rng.choice(SYMBOLS)
            action = self.rng.choice(("buy", "sell", "hold"))
            self.decisions.append({"symbol": symbol, "action": action, "timestamp": now})
            events.append({"type": "DECISION", "timestamp": now,
                           "data": {"symbol": symbol, "action": action}})  # fmt: skip
            if action != "hold":
                events.append(self._trade(symbol, action, now))
        if self.stage == "reconcile":
            self.cycles += 1
            arm = self.rng.choice(ARMS)
            stats = self.arms[arm]
            reward = self.rng.gauss(0.001, 0.01)
            stats["pulls"] += 1
            stats["mean_reward"] += (reward - stats["mean_reward"]) / stats["pulls"]
            total = sum(math.exp(50 * a["mean_reward"]) for a in self.arms.values())
            for values in self.arms.values():
                values["weight"] = math.exp(50 * values["mean_reward"]) / total
            events.append({"type": "CYCLE_COMPLETE", "timestamp": now,
                           "data": {"cycle": self.cycles, "arm": arm}})  # fmt: skip
        self.peak_value = max(self.peak_value, self.portfolio_value())
        return events

    def _trade(self, symbol: str, side: str, now: float) -> dict[str, Any]:
        quantity = float(self.rng.randint(1, 20))
        price = self.prices[symbol]
        held = self.positions.get(symbol, 0.0)
        if side == "buy":
            cost = self.entries.get(symbol, price) * held + price * quantity
            self.positions[symbol] = held + quantity
            self.entries[symbol] = cost / self.positions[symbol]
            self.cash -= quantity * price
        else:
            quantity = min(quantity, held) or quantity
            self.positions[symbol] = held - quantity
            self.cash += quantity * price
            if self.positions[symbol] == 0:
                del self.positions[symbol]
                self.entries.pop(symbol, None)
        self.trades_total += 1
        trade = {"symbol": symbol, "side": side, "quantity": quantity, "price": price,
                 "timestamp": now}  # fmt: skip
        self.trades.append(trade)
        return {"type": "TRADE_EXECUTED", "timestamp": now, "data": trade}

    # --- the REST bodies ----------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        value = self.portfolio_value()
        return {"portfolio_value": value, "daily_pnl": value - self.day_start_value,
                "cash": self.cash, "positions_count": len(self.positions),
                "trades_total": self.trades_total, "cycles_total": self.cycles,
                "errors_total": self.errors_total}  # fmt: skip

    def state(self) -> dict[str, Any]:
        return {"status": "running", "current_stage": self.stage, "uptime_seconds": 1.0}

    def position_list(self) -> dict[str, Any]:
        return {"positions": [
            {"symbol": s, "quantity": q, "market_value": q * self.prices[s],
             "unrealized_pnl": q * (self.prices[s] - self.entries.get(s, self.prices[s])),
             "avg_entry_price": self.entries.get(s), "current_price": self.prices[s],
             "side": "long" if q > 0 else "short"}
            for s, q in sorted(self.positions.items())
        ]}  # fmt: skip

    def history(self) -> dict[str, Any]:
        return {"trades": list(self.trades), "decisions": list(self.decisions)}

    def cils(self) -> dict[str, Any]:
        return {"arms": [{"arm": name, **stats} for name, stats in self.arms.items()]}

    def risk(self) -> dict[str, Any]:
        value = self.portfolio_value()
        exposure = sum(abs(q) * self.prices[s] for s, q in self.positions.items())
        return {"drawdown_pct": 100 * (self.peak_value - value) / self.peak_value,
                "exposure_pct": 100 * exposure / value,
                "daily_pnl_pct": 100 * (value - self.day_start_value) / self.day_start_value,
                "trading_allowed": True}  # fmt: skip


def create_bridge_app(
    engine: Engine | None = None, tick: float = 0.5, backend: TrainingBackend | None = None
) -> FastAPI:
    """The bridge and backend app; both step every ``tick`` seconds while the app runs."""
    engine = engine or Engine()
    backend = backend or TrainingBackend()
    faults = Faults()
    channels: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {
        "events": set(), "training": set(), "backend": set(),
    }  # fmt: skip
    training = _training_runs(tick)

    def publish(channel: str, event: dict[str, Any]) -> None:
        for queue in list(channels[channel]):
            if queue.qsize() < 1000:  # a stalled subscriber loses events, not memory
                queue.put_nowait(event)

    async def clock() -> None:
        while True:
            await asyncio.sleep(tick)
            for event in engine.step():
                publish("events", event)
            publish("training", next(training))
            backend.never_start, backend.fail_jobs = faults.never_start, faults.fail_jobs
            for message in backend.step():
                publish("backend", message)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(clock())
        yield
        task.cancel()

    app = FastAPI(title="runwatch reference trading bridge", lifespan=lifespan)
    app.state.engine, app.state.faults = engine, faults

    async def answer(body: dict[str, Any]) -> Response:
        if faults.delay:
            await asyncio.sleep(faults.delay)
        if faults.status:
            return JSONResponse({"error": "simulated"}, status_code=faults.status)
        if faults.garbage:
            return Response(b"\x00<html>not json", media_type="application/json")
        if faults.off_contract:
            return JSONResponse(["unexpected", {"shape": True}])
        return JSONResponse(body)

    routes = {
        "/api/metrics": engine.metrics, "/api/state": engine.state,
        "/api/positions": engine.position_list, "/api/trades/history": engine.history,
        "/api/cils/stats": engine.cils, "/api/risk/status": engine.risk,
    }  # fmt: skip
    for path, body in routes.items():
        app.add_api_route(path, _endpoint(answer, body), methods=["GET"])

    @app.post("/_faults")
    async def set_faults(request: Request) -> dict[str, Any]:
        for name, value in (await request.json()).items():
            setattr(faults, name, type(getattr(faults, name))(value))
        return asdict(faults)

    async def stream(websocket: WebSocket, channel: str) -> None:
        await websocket.accept()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        channels[channel].add(queue)
        try:
            while True:
                event = await queue.get()
                if faults.ws_garbage:
                    await websocket.send_text("{not json")
                else:
                    await websocket.send_json(event)
                if faults.ws_drop:
                    await websocket.close()
                    return
        except WebSocketDisconnect:
            pass
        finally:
            channels[channel].discard(queue)

    @app.websocket("/ws/events")
    async def events(websocket: WebSocket) -> None:
        await stream(websocket, "events")

    @app.websocket("/ws/training")
    async def training_progress(websocket: WebSocket) -> None:
        await stream(websocket, "training")

    @app.websocket("/ws")
    async def backend_messages(websocket: WebSocket) -> None:
        await stream(websocket, "backend")

    add_backend_routes(app, backend, lambda message: publish("backend", message))

    return app


def _training_runs(tick: float) -> Iterator[dict[str, Any]]:
    """Training runs in the core event format, one event per tick, timed by the wall clock."""
    number = 0
    while True:
        number += 1
        run_id = f"bridge_run_{number:03d}"
        yield from synthetic_run(run_id, time.time(), step_seconds=tick, steps=100, seed=number)


def _endpoint(
    answer: Callable[[dict[str, Any]], Awaitable[Response]], body: Callable[[], dict[str, Any]]
) -> Callable[[], Awaitable[Response]]:
    async def endpoint() -> Response:
        return await answer(body())

    return endpoint


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", default="127.0.0.1:8765", help="HOST:PORT")
    parser.add_argument("--tick", type=float, default=0.5, help="seconds per engine stage")
    parser.add_argument("--warmup", type=int, default=0, metavar="STEPS",
                        help="step the engine this many times before serving")  # fmt: skip
    args = parser.parse_args()
    engine = Engine()
    for _ in range(args.warmup):
        engine.step()
    host, _, port = args.listen.rpartition(":")
    app = create_bridge_app(engine, tick=args.tick)
    uvicorn.run(app, host=host, port=int(port), log_level="warning")


if __name__ == "__main__":
    main()
