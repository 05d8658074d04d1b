"""The long-running exporter: sources and outputs started and stopped with the HTTP server."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from exporter.assemble import attach_remote_write, build_background, build_pipeline, file_tailer
from exporter.config import ConfigError
from exporter.retention import RetentionSweeper
from exporter.server import create_app
from exporter.sources.attribution import no_runs
from exporter.sources.jsonl import CursorStore, Tailer
from exporter.sources.pidfile import PidFileWatcher
from exporter.sources.start_proxy import add_start_proxy
from exporter.stats import PID_FILE_SOURCE

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 5.0
"""Longest a shutdown waits for threads and the last OTLP export, after the cursors."""
GRACEFUL_SHUTDOWN_SECONDS = 3.0
"""Longest the server waits for open connections (a stalled client) before stopping."""


def _check_tls(cert: str | None, key: str | None) -> None:
    """Fail at start, on one line, rather than with a traceback from the server."""
    if bool(cert) != bool(key):
        raise ConfigError("--tls-cert-file and --tls-key-file go together")
    if cert and key:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS certificate {cert} / key {key}: {exc}") from None


def _basic_auth(settings: dict[str, Any]) -> tuple[str, str] | None:
    user = settings.get("basic_auth_user")
    if not user:
        return None
    password = os.environ.get("RUNWATCH_BASIC_AUTH_PASSWORD")
    if settings.get("basic_auth_password_file"):
        try:
            password = Path(settings["basic_auth_password_file"]).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--basic-auth-password-file: {exc}") from None
    if not password:
        raise ConfigError(
            "--basic-auth-user needs a password: --basic-auth-password-file or "
            "RUNWATCH_BASIC_AUTH_PASSWORD"
        )
    return user, password


class Runtime:
    """Everything ``runwatch serve`` runs; started and stopped with the HTTP server."""

    def __init__(self, settings: dict[str, Any], fake_gpu_pids: tuple[int, ...] = ()) -> None:
        self.settings = settings
        _check_tls(settings.get("tls_cert_file"), settings.get("tls_key_file"))
        basic_auth = _basic_auth(settings)
        self.pipeline, self.otlp = build_pipeline(settings)
        self.remote_write = attach_remote_write(self.pipeline, settings)
        self.tailer: Tailer | None = None
        if settings["events"]:
            store = CursorStore(Path(settings["state_file"])) if settings["state_file"] else None
            self.tailer = file_tailer(
                self.pipeline,
                settings["events"],
                cursor_store=store,
                poll_interval=settings["poll_interval"],
                force_polling=settings["force_polling"],
            )
        self.pid_watcher: PidFileWatcher | None = None
        if settings["pid_file"]:
            self.pid_watcher = PidFileWatcher(
                settings["pid_file"],
                self.pipeline.observe_process,
                lambda rejected: self.pipeline.reject(PID_FILE_SOURCE, rejected),
                settings["pid_interval"],
            )
        self.background = build_background(
            settings,
            self.pipeline,
            self.pid_watcher.live_roots if self.pid_watcher is not None else no_runs,
            fake_gpu_pids,
        )
        self.background.append(RetentionSweeper(self.pipeline))
        self.app = create_app(
            self.pipeline,
            ready=lambda: self.tailer is None or self.tailer.ready.is_set(),
            max_body_bytes=settings["max_body_bytes"],
            body_timeout=settings["body_timeout"],
            basic_auth=basic_auth,
            lifespan=self._lifespan,
        )
        if settings["backend_url"]:
            add_start_proxy(self.app, self.pipeline, settings["backend_url"])

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self.start()
        try:
            yield
        finally:
            self.stop()

    def start(self) -> None:
        if self.tailer is not None:
            self.tailer.start()
        if self.pid_watcher is not None:
            self.pid_watcher.start()
        for background in self.background:
            background.start()

    def stop(self) -> None:
        """Stop within about SHUTDOWN_SECONDS: the file cursors are saved first, every
        thread is asked to end at once, and the last remote write and OTLP export get what time
        is left.
        A second SIGINT or SIGTERM meanwhile exits at once."""
        with _second_signal_exits():
            log.info("stopping within %g s (a second SIGINT or SIGTERM exits at once)",
                     SHUTDOWN_SECONDS)  # fmt: skip
            deadline = time.monotonic() + SHUTDOWN_SECONDS
            workers = [w for w in (self.tailer, self.pid_watcher) if w is not None]
            workers += self.background
            for worker in workers:
                worker.request_stop()
            for worker in workers:  # the tailer first: it saves the cursors
                worker.join(deadline - time.monotonic())
            for output in (self.remote_write, self.otlp):
                if output is not None:
                    output.close(max(1.0, deadline - time.monotonic()))

    def serve(self) -> None:
        host, port = self.settings["listen"]
        uvicorn.run(
            self.app,
            host=host,
            port=port,
            log_level=self.settings["log_level"],
            access_log=False,
            ssl_certfile=self.settings.get("tls_cert_file"),
            ssl_keyfile=self.settings.get("tls_key_file"),
            # stalled clients do not hold up an exit
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )


@contextmanager
def _second_signal_exits() -> Iterator[None]:
    """While shutting down, a second SIGINT or SIGTERM ends the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_now(signum: int, frame: object) -> None:
        log.warning("second %s while shutting down: exiting now", signal.Signals(signum).name)
        os._exit(128 + signum)

    previous = {sig: signal.signal(sig, exit_now) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
