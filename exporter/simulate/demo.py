"""``runwatch demo``: a synthetic training run and event router written to files in a
temporary folder, the reference trading bridge and training backend on a loopback port,
and a real :class:`~exporter.app.runtime.Runtime` following all of it, as ``serve`` would
follow a user's processes."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import orjson

from exporter.app.config import Settings, listen_address
from exporter.simulate.synthetic import synthetic_router_cycle, synthetic_run


def run_demo(settings: Settings, interval: float) -> int:
    """The demo, in a temporary folder removed when it ends (however it ends)."""
    directory = Path(tempfile.mkdtemp(prefix="runwatch-demo-"))
    # The server re-raises the SIGTERM it stopped on; as SystemExit, this finally still runs.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        return _demo(settings, interval, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _demo(settings: Settings, interval: float, directory: Path) -> int:
    events = directory / "events.jsonl"
    events.touch()
    pid_file = directory / "run.pid"
    router_trace = directory / "router.jsonl"
    router_trace.touch()
    needs_reference = not (settings.bridge_url and settings.backend_url)
    reference = _start_reference_bridge() if needs_reference else None
    settings = dataclasses.replace(
        settings,
        events=[str(events)],
        router_events=[*settings.router_events, str(router_trace)],
        state_file=None,
        pid_file=[*settings.pid_file, str(pid_file)],
        bridge_url=settings.bridge_url or reference,
        backend_url=settings.backend_url or reference,
    )
    from exporter.app.runtime import Runtime

    # The demo plays the training process: its PID file names this process, which the
    # fake GPUs (with --fake-gpus) show as their compute process, attributed to the run.
    runtime = Runtime(settings, fake_gpu_pids=(os.getpid(),))
    threading.Thread(target=_generate, args=(events, pid_file, interval), daemon=True).start()
    threading.Thread(target=_route, args=(router_trace, interval), daemon=True).start()
    host, port = settings.listen[0]
    address = listen_address("127.0.0.1" if host in ("", "0.0.0.0", "::") else host, port)
    base = f"{'https' if runtime.web and runtime.web.tls_at_start else 'http'}://{address}"
    print(
        f"runwatch demo: open {base}/ (the live view: runs, charts, checkpoints, trading)\n"
        f"  a synthetic training run is being written to {events}\n"
        f"  metrics:   {base}/metrics\n"
        f"  runs:      {base}/api/runs\n"
        f"  router:    events of a synthetic event router in {router_trace} (router_*)\n"
        f"  bridge:    {settings.bridge_url} (trading_* metrics)\n"
        f"  backend:   {settings.backend_url} (jobs as runs, training_job_*)\n"
        f"  GPUs:      {settings.fake_gpus or 'NVML, if a driver is present'}"
        f"{' simulated (--fake-gpus)' if settings.fake_gpus else ''}\n"
        f"  Prometheus: add to prometheus.yml\n"
        f"    scrape_configs:\n"
        f"      - job_name: runwatch\n"
        f"        static_configs: [{{targets: ['{address}']}}]\n"
        f"  Ctrl-C stops.",
        flush=True,
    )
    runtime.serve()
    return 0


def _start_reference_bridge() -> str:
    """The reference trading bridge and training backend on a free loopback port, in a
    thread; its URL."""
    import uvicorn

    from exporter.simulate.reference_bridge import create_bridge_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_bridge_app(), host="127.0.0.1", port=port, log_level="warning")
    threading.Thread(
        target=uvicorn.Server(config).run, name="reference-bridge", daemon=True
    ).start()
    return f"http://127.0.0.1:{port}"


def _generate(path: Path, pid_file: Path, interval: float) -> None:
    """Write synthetic runs forever, each event at the wall-clock time it carries, and a
    PID file naming this process for the run in progress."""
    number = 0
    while True:
        number += 1
        run_id = f"demo_{time.strftime('%Y%m%d_%H%M%S')}_{number:03d}"
        record = {"pid": os.getpid(), "run_id": run_id, "started_at": time.time()}
        staged = pid_file.with_suffix(".tmp")  # renamed into place: never read half-written
        staged.write_bytes(orjson.dumps(record))
        staged.replace(pid_file)
        fail_at = 300 if number % 3 == 0 else None
        crash_at = 450 if number % 3 == 1 else None  # and resumed: lost work, a restart
        with path.open("ab") as out:
            for event in synthetic_run(
                run_id,
                time.time(),
                step_seconds=interval,
                steps=600,
                fail_at_step=fail_at,
                crash_at_step=crash_at,
                seed=number,
            ):
                wait = datetime.fromisoformat(event["timestamp"]).timestamp() - time.time()
                if wait > 0:
                    time.sleep(wait)
                out.write(orjson.dumps(event) + b"\n")
                out.flush()
        time.sleep(5 * interval)


def _route(path: Path, interval: float) -> None:
    """Write a synthetic event router's trace forever, a pipeline pass at a time."""
    cycle = 0
    with path.open("ab") as out:
        while True:
            for event in synthetic_router_cycle(cycle, time.time(), 0.0):
                event["timestamp"] = time.time()  # as it happens, so spans have durations
                out.write(orjson.dumps(event) + b"\n")
                out.flush()
                time.sleep(10 * interval)
            cycle += 1
