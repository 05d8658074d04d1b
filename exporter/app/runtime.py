"""The long-running exporter: sources and outputs started and stopped with the HTTP server."""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from exporter.app.basic_auth import hash_password
from exporter.app.config import (
    ConfigError,
    Settings,
    followed_files,
    listen_address,
)
from exporter.app.connections import ConnectionGuard, guarded_protocol
from exporter.app.descriptors import (
    ListeningSocket,
    connection_cap,
    raise_open_file_limit,
    summarise_accept_failures,
)
from exporter.app.live import MAX_MESSAGE_BYTES
from exporter.app.retention import RetentionSweeper
from exporter.app.server import create_app
from exporter.app.web_config import LiveWebConfig, ReloadingServerContext, TlsSettings, WebConfig
from exporter.app.wiring import (
    attach_remote_write,
    backend_authorization,
    build_background,
    build_pipeline,
    file_tailer,
)
from exporter.pipeline.regular_files import SECRET_FILE_BYTES, read_regular
from exporter.pipeline.self_stats import HTTP_REFUSALS
from exporter.pipeline.source_names import PID_FILE_SOURCE
from exporter.sources.attribution import no_runs
from exporter.sources.files.jsonl import CursorStore, Tailer
from exporter.sources.peers.start_proxy import StartProxyLimits, add_start_proxy
from exporter.sources.pidfile import PidFileWatcher
from exporter.sources.worker import Worker
from exporter.telemetry.exposition import Exposition

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 5.0
"""Longest a shutdown waits for threads and the last OTLP export, after the cursors."""
SWITCH_INTERVAL_SECONDS = 0.0005
"""How long a thread may keep the interpreter lock when another asks for it (Python's
default is 5 ms). A scrape renders on the event loop in a few milliseconds of its own but
takes the lock back many times while a POST is parsed and applied beside it; each time it
may wait this long (bench/contention.py: the scrape's median during 10 MB POSTs 24 ms at
0.5 ms against 72 ms at 5 ms)."""
GRACEFUL_SHUTDOWN_SECONDS = 3  # uvicorn takes whole seconds
"""Longest the server waits for open connections (a stalled client) before stopping."""


LEGACY_WEB_FLAGS = ("tls_cert_file", "tls_key_file", "basic_auth_user", "basic_auth_password_file")
LISTEN_BACKLOG = 2048


def web_config(settings: Settings) -> LiveWebConfig | None:
    """The web configuration: --web.config.file's, or the one the older TLS and basic-auth
    flags describe; None when neither asks for anything."""
    legacy = [name for name in LEGACY_WEB_FLAGS if getattr(settings, name)]
    path = settings.web_config_file
    if path and legacy:
        flags = ", ".join("--" + name.replace("_", "-") for name in legacy)
        raise ConfigError(f"--web.config.file replaces {flags}: give one or the other")
    if path:
        return LiveWebConfig(path)
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if bool(cert) != bool(key):
        raise ConfigError("--tls-cert-file and --tls-key-file go together")
    user = settings.basic_auth_user
    users = {user: hash_password(_legacy_password(settings))} if user else {}
    if not (cert or users):
        return None
    return LiveWebConfig(None, WebConfig(TlsSettings(cert, key) if cert else None, users))


def _legacy_password(settings: Settings) -> str:
    password = os.environ.get("RUNWATCH_BASIC_AUTH_PASSWORD")
    if settings.basic_auth_password_file:
        try:
            read = read_regular(settings.basic_auth_password_file, SECRET_FILE_BYTES)
            password = read.decode().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--basic-auth-password-file: {exc}") from None
    if not password:
        raise ConfigError(
            "--basic-auth-user needs a password: --basic-auth-password-file or "
            "RUNWATCH_BASIC_AUTH_PASSWORD"
        )
    return password


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to HOST:PORT (every interface for an empty host: IPv6 and IPv4 where
    the host has IPv6), so a port in use fails at start, before anything else runs."""
    address = listen_address(host, port)
    try:
        if host == "":
            return _bind_any(port)
        family, kind, proto, _, where = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(where)
        except OSError:
            sock.close()
            raise
        return sock
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot listen on {address}: {reason}") from None


def _bind_any(port: int) -> socket.socket:
    if socket.has_ipv6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in (97, 99):  # EAFNOSUPPORT, EADDRNOTAVAIL: no IPv6 here
                raise
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
    except OSError:
        sock.close()
        raise
    return sock


class Runtime:
    """Everything ``runwatch serve`` runs; started and stopped with the HTTP server."""

    def __init__(self, settings: Settings, fake_gpu_pids: tuple[int, ...] = ()) -> None:
        self.settings = settings
        open_file_limit = raise_open_file_limit()
        self.web = web_config(settings)
        self.pipeline, self.otlp = build_pipeline(settings)
        stats = self.pipeline.stats
        stats.declare(stats.http_refused, HTTP_REFUSALS)
        self.guard = ConnectionGuard(
            settings.header_timeout,
            settings.idle_timeout,
            connection_cap(settings.max_connections, open_file_limit),
            on_refused=lambda reason: stats.count(stats.http_refused, reason),
        )
        self.remote_write = attach_remote_write(self.pipeline, settings)
        self.tailer: Tailer | None = None
        events, pid_files = followed_files(settings)
        if events:
            store = CursorStore(Path(settings.state_file)) if settings.state_file else None
            self.tailer = file_tailer(
                self.pipeline,
                events,
                cursor_store=store,
                poll_interval=settings.poll_interval,
                force_polling=settings.force_polling,
                # the cursors say what the collector accepted, not only what was read
                track_delivery=self.otlp is not None and self.otlp.delivers_from_files,
            )
        self.pid_watcher: PidFileWatcher | None = None
        if pid_files:
            self.pid_watcher = PidFileWatcher(
                pid_files,
                self.pipeline.observe_process,
                lambda rejected: self.pipeline.rejections.count(PID_FILE_SOURCE, rejected),
                settings.pid_interval,
                # what it knew outlives a restart; it judges the runs the tailer recovers
                memory=Path(settings.state_file + ".pids") if settings.state_file else None,
                after=self.tailer.ready if self.tailer is not None else None,
            )
        authorization = backend_authorization(settings)  # refused before any thread starts
        self.background = build_background(
            settings,
            self.pipeline,
            self.pid_watcher.live_roots if self.pid_watcher is not None else no_runs,
            fake_gpu_pids,
        )
        self.background.append(RetentionSweeper(self.pipeline))
        self.app = create_app(
            self.pipeline,
            Exposition(self.pipeline, own_process=True),
            ready=lambda: self.tailer is None or self.tailer.ready.is_set(),
            max_body_bytes=settings.max_body_bytes,
            body_timeout=settings.body_timeout,
            web=self.web,
            telemetry_path=settings.telemetry_path,
            grafana_url=settings.grafana_url,
            lifespan=self._lifespan,
        )
        if settings.backend_url:
            limits = StartProxyLimits(
                settings.max_body_bytes,
                settings.body_timeout,
                settings.max_response_bytes,
                settings.backend_timeout,
            )
            add_start_proxy(
                self.app,
                self.pipeline,
                settings.backend_url,
                limits,
                authorization,
            )
        self.sockets: list[socket.socket] = []
        try:  # last: a port in use is refused before any thread starts
            for host, port in settings.listen:
                self.sockets.append(ListeningSocket.adopt(bind(host, port)))
        except ConfigError:
            for sock in self.sockets:
                sock.close()
            raise

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
        is left; then the cursors again, with what that export delivered.
        A second SIGINT or SIGTERM meanwhile exits at once."""
        with _second_signal_exits():
            log.info("stopping within %g s (a second SIGINT or SIGTERM exits at once)",
                     SHUTDOWN_SECONDS)  # fmt: skip
            deadline = time.monotonic() + SHUTDOWN_SECONDS
            workers: list[Worker] = [w for w in (self.tailer, self.pid_watcher) if w is not None]
            workers += self.background
            for worker in workers:
                worker.request_stop()
            for worker in workers:  # the tailer first: it saves the cursors
                worker.join(deadline - time.monotonic())
            for output in (self.remote_write, self.otlp):
                if output is not None:
                    output.close(max(1.0, deadline - time.monotonic()))
            if self.tailer is not None:
                self.tailer.save_delivered()

    def serve(self) -> None:
        config = uvicorn.Config(
            self.app,
            log_config=None,  # runwatch's handler and format (exporter.app.log_format)
            log_level=self.settings.log_level,
            access_log=False,
            http=guarded_protocol(self.guard),  # header and idle timeouts, a connection cap
            # stalled clients do not hold up an exit
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            ws_max_size=MAX_MESSAGE_BYTES,  # what a /ws client may send in one message
        )
        config.load()
        tls = self.web is not None and self.web.tls_at_start
        if tls:
            assert self.web is not None
            config.ssl = ReloadingServerContext(self.web)
        for sock in self.sockets:
            log.info("listening on %s://%s", "https" if tls else "http",
                     listen_address(*sock.getsockname()[:2]))  # fmt: skip
        self._warn_if_writable_by_anyone()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, _sighup)
        summarise_accept_failures()
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        gc.freeze()  # what start-up made lives as long as the process: out of every pass
        uvicorn.Server(config).run(sockets=self.sockets)

    def _warn_if_writable_by_anyone(self) -> None:
        """One warning when the endpoints that change state are open to the network."""
        if self.web is not None:
            config = self.web.current()
            verified = config.tls is not None and config.tls.client_auth_type == (
                "RequireAndVerifyClientCert"
            )
            if config.users or verified:  # a password or a client certificate is asked for
                return
        exposed = [sock for sock in self.sockets if not _loopback(sock.getsockname()[0])]
        if not exposed:
            return
        writes, can = "POST /v1/events", "write runs"
        if self.settings.backend_url:
            writes, can = writes + " and POST /start_training", can + " and start jobs"
        where = ", ".join(listen_address(*sock.getsockname()[:2]) for sock in exposed)
        log.warning("%s can be reached without credentials on %s: anyone who can connect can "
                    "%s; set basic_auth_users in --web.config.file, or listen on 127.0.0.1",
                    writes, where, can)  # fmt: skip


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _sighup(signum: int, frame: object) -> None:
    log.warning("SIGHUP: runwatch reads its flags, config file and router mapping at start "
                "only; restart it to apply changes (--web.config.file is re-read by itself "
                "when it changes)")  # fmt: skip


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
