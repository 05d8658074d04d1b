"""Configuration: command-line flags, then ``RUNWATCH_*`` variables, then a YAML file.

Every option is declared once, as a field of :class:`Settings` (typed, with its default
and help); the argparse flags, the environment variable names, the YAML keys and
``--help`` all come from it, and every command is built from the frozen Settings.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import yaml

from exporter.pipeline.regular_files import read_regular

MAX_CONFIG_BYTES = 1 << 20


class ConfigError(Exception):
    """A bad setting; the CLI prints it on one line and exits 2."""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise ValueError(f"{value} is not positive")
    return value


BYTE_UNITS = {"": 1, "B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
              "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}  # fmt: skip
_BYTE_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def _byte_size(text: str) -> int:
    """A size in bytes: a whole number, or a number with a unit (``64KiB``, ``1MiB``, ``2MB``)."""
    match = _BYTE_SIZE.fullmatch(text)
    if text.strip().startswith("-"):
        raise ValueError(f"{text!r} is not positive")
    if match is None or match[2] not in BYTE_UNITS:
        raise ValueError(f"{text!r} is not a size (a number of bytes, or with a unit: "
                         f"{', '.join(u for u in BYTE_UNITS if u)})")  # fmt: skip
    value = int(float(match[1]) * BYTE_UNITS[match[2]])
    if value <= 0:
        raise ValueError(f"{text!r} is not positive")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if not 0 < value < math.inf:  # NaN fails this too
        raise ValueError(f"{value} is not a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if not 0 <= value < math.inf:
        raise ValueError(f"{value} is not a number of seconds")
    return value


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """Seconds, or a number with a unit as Prometheus writes them: 90s, 30m, 24h, 7d."""
    text = str(text).strip()
    scale = DURATION_UNITS.get(text[-1:])
    try:
        value = float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(f"{text!r} is not a positive duration (seconds, or 90s, 30m, 24h, 7d)")
    return value


def _bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean")


def _one_of(*choices: str, fold_case: bool = False) -> Callable[[str], str]:
    """A parser accepting only ``choices`` (case-insensitively with ``fold_case``)."""

    def parse(text: str) -> str:
        value = text.lower() if fold_case else text
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("logfmt", "json")
OTLP_NAMINGS = ("semconv", "prometheus")
OTLP_PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_PORT = 19464
"""Outside Prometheus's default port allocations (9100-9999, all given away since 2023, and
the 10000s that followed) and not 9464, the OpenTelemetry SDK's Prometheus exporter's."""


def _listen(text: str) -> tuple[str, int]:
    """HOST:PORT; an empty host (``:19464``) means every interface, as for Go exporters."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (or :PORT for every interface)")
    return host.strip("[]"), int(port)


def listen_address(host: str, port: int) -> str:
    """An address as HOST:PORT, brackets around an IPv6 host, ``:PORT`` for every one."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


RESERVED_PATHS = ("/", "/healthz", "/readyz", "/api/runs", "/v1/events", "/start_training")


def _telemetry_path(text: str) -> str:
    if not text.startswith("/") or any(c in text for c in "?#{} "):
        raise ValueError(f"{text!r} is not a URL path such as /metrics")
    if text in RESERVED_PATHS:
        raise ValueError(f"{text} is taken by another endpoint")
    return text


@dataclass(frozen=True, slots=True)
class Option:
    """How one :class:`Settings` field is set: its flag, variable, YAML key and help."""

    name: str  # attribute, YAML key; flag is --name-with-dashes, env RUNWATCH_NAME
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    many: bool = False  # a list: repeat the flag, or comma-separate in the environment
    group: str = "general"
    metavar: str = ""  # the flag's argument in --help; the option's name by default
    standard: str = ""  # the flag exporters share (--web.listen-address), shown first

    @property
    def flag(self) -> str:
        return self.standard or self.own_flag

    @property
    def own_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.standard, self.own_flag) if self.standard else (self.own_flag,)

    @property
    def env(self) -> str:
        return "RUNWATCH_" + self.name.upper()


OPTION = "runwatch.option"  # the metadata key of a Settings field's Option


def option(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = str,
    *,
    many: bool = False,
    group: str = "general",
    metavar: str = "",
    standard: str = "",
) -> Any:
    """A :class:`Settings` field with its :class:`Option` (named after the field) as metadata."""
    spec = Option("", default, help, parse, many, group, metavar, standard)
    if isinstance(default, list):  # each Settings gets its own list
        return field(default_factory=lambda: list(default), metadata={OPTION: spec})
    return field(default=default, metadata={OPTION: spec})


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every option, typed: what :func:`resolve` returns and every command is built from.
    Each is declared once, here, with its default and help; its flag, environment variable,
    YAML key and ``--help`` (:data:`OPTIONS`) all come from the field."""

    # fmt: off
    events: list[str] = option(
        [], "JSONL event file or glob to follow (repeatable). Read from the start "
        "to recover runs in progress, then tailed; rotation and truncation are followed and "
        "files that do not exist yet are waited for.", many=True, group="inputs",
        metavar="PATH_OR_GLOB"
    )
    pid_file: list[str] = option(
        [], "PID file of a training process (repeatable): JSON with pid, run_id "
        "and started_at. Gives training_process_up; a run whose process is gone without "
        "run_complete becomes 'crashed'.", many=True, group="inputs", metavar="PATH"
    )
    local_dir: str = option(
        "/tmp/runwatch", "The folder a training script's SDK writes to when told no "
        "other place (its RUNWATCH_LOCAL_DIR, the same variable). With no --events, serve "
        "follows DIR/*.jsonl and DIR/spool/*.jsonl (what an SDK sender could not deliver); "
        "with no --pid-file, DIR/pids/*.pid. An empty value follows nothing unless told.",
        group="inputs", metavar="DIR"
    )
    state_file: str | None = option(
        None, "Where to keep the file cursors (identity, offsets read and "
        "delivered) so a restart sends again only the spans and log records the OTLP "
        "collector had not accepted; and, in PATH.pids, the PID files seen, so a restart "
        "judges the runs it recovers (a process that died or a file removed while "
        "runwatch was down).", group="inputs",
        metavar="PATH"
    )
    poll_interval: float = option(
        1.0, "Seconds between file rescans when inotify is unavailable, "
        "and the safety rescan period when it is.", _positive_float, group="inputs"
    )
    force_polling: bool = option(
        False, "Poll files instead of using inotify (network filesystems).",
        _bool, group="inputs"
    )
    pid_interval: float = option(1.0, "Seconds between PID-file liveness checks.", _positive_float,
                                 group="inputs")
    max_line_bytes: int = option(
        1 << 20, "Longest event line accepted; longer ones are skipped and "
        "counted as line_too_long. SIZE: bytes, or with a unit (64KiB, 1MiB, 2MB).",
        _byte_size, group="inputs", metavar="SIZE"
    )
    strict_events: bool = option(
        False, "Refuse events that lack a UTC offset, a timestamp or a "
        "run_id (counted as invalid_timestamp / missing_field) instead of completing them "
        "as the training dashboard's own reader does (counted in "
        "runwatch_events_lenient_total).", _bool,
        group="inputs"
    )
    max_body_bytes: int = option(
        16 << 20, "Largest POST /v1/events and POST /start_training body; larger "
        "ones get 413. SIZE: bytes, or with a unit (64KiB, 1MiB, 2MB).", _byte_size,
        group="inputs", metavar="SIZE"
    )
    body_timeout: float = option(
        30.0, "Seconds a POST /v1/events or POST /start_training body may take to "
        "arrive; a client that stalls longer gets 408 and its body is counted as "
        "body_incomplete.",
        _positive_float, group="inputs"
    )
    max_response_bytes: int = option(
        8 << 20, "Largest REST response read from the trading "
        "bridge or the training backend; a larger one is cut off, left out of that poll "
        "and counted as response_too_large. SIZE: bytes, or with a unit (64KiB, 1MiB, "
        "2MB).", _byte_size, group="inputs", metavar="SIZE"
    )
    listen: list[tuple[str, int]] = option(
        [("127.0.0.1", DEFAULT_PORT)], "HOST:PORT to serve /metrics, /healthz, "
        "/readyz, /api/runs and POST /v1/events on (repeatable: several addresses); "
        ":PORT listens on every interface.", _listen, many=True, group="server",
        metavar="HOST:PORT", standard="--web.listen-address"
    )
    web_config_file: str | None = option(
        None, "Web configuration in the exporter-toolkit format "
        "(node_exporter's): tls_server_config (certificate, key, client certificates, "
        "min/max TLS version), basic_auth_users (bcrypt hashes), http_server_config "
        "headers. Re-read when it or its certificates change, for each new connection.",
        group="server", metavar="FILE", standard="--web.config.file"
    )
    telemetry_path: str = option(
        "/metrics", "The path the metrics are served on.",
        _telemetry_path, group="server", metavar="PATH", standard="--web.telemetry-path"
    )
    grafana_url: str = option(
        "http://127.0.0.1:3000", "Where the view at / links to the Grafana boards "
        "(compose.yaml's Grafana by default).", group="server", metavar="URL"
    )
    header_timeout: float = option(
        10.0, "How long a client has to send a whole request head (request line "
        "and headers), from connecting or from its first byte after a kept-alive wait; a "
        "slower connection is closed and counted in runwatch_http_refused_total"
        "{reason=\"header_timeout\"}. Seconds or 10s, 1m.", _duration, group="server",
        metavar="DURATION"
    )
    idle_timeout: float = option(
        5.0, "How long a kept-alive connection may wait for its next request before "
        "it is closed. Seconds or 5s, 1m.", _duration, group="server", metavar="DURATION"
    )
    max_connections: int = option(
        512, "Open HTTP connections at most. At the cap, a new connection makes "
        "room by closing the one that has waited longest for a request (a scraper sends "
        "its request at once), or gets 503 when every one is busy; counted as "
        "max_connections. Lowered at start to what the open-file limit leaves room for.",
        _positive_int, group="server", metavar="N"
    )
    tls_cert_file: str | None = option(None, "PEM certificate: serve HTTPS (with --tls-key-file); "
                                       "--web.config.file does this and more.", group="server")
    tls_key_file: str | None = option(None, "PEM private key for --tls-cert-file.", group="server")
    basic_auth_user: str | None = option(
        None, "Require HTTP basic auth with this user (all endpoints but "
        "the probes /healthz and /readyz); --web.config.file's basic_auth_users takes "
        "several.", group="server"
    )
    basic_auth_password_file: str | None = option(
        None, "File holding the basic-auth password "
        "(or set RUNWATCH_BASIC_AUTH_PASSWORD).", group="server"
    )
    otlp_endpoint: str | None = option(
        None, "OTLP endpoint, e.g. http://localhost:4318 (HTTP) or "
        "http://localhost:4317 (gRPC). Default: OTEL_EXPORTER_OTLP_ENDPOINT; OTLP is off "
        "when neither is set.", group="otlp"
    )
    otlp_protocol: str | None = option(
        None, "grpc or http/protobuf. Default: OTEL_EXPORTER_OTLP_PROTOCOL, "
        "else http/protobuf.", _one_of(*OTLP_PROTOCOLS), group="otlp"
    )
    service_name: str | None = option(
        None, "service.name resource attribute. Default: OTEL_SERVICE_NAME, "
        "else runwatch.", group="otlp"
    )
    otlp_naming: str = option(
        "semconv", "OTel metric names: 'semconv' (semantic conventions: "
        "hw.gpu.utilization, hw.power, process.cpu.time, ...) or 'prometheus' (names that "
        "translate to exactly those on /metrics, so the shipped dashboards and rules work "
        "through a collector or Prometheus 3's OTLP receiver unchanged).",
        _one_of(*OTLP_NAMINGS),
        group="otlp",
    )
    otlp_metrics: bool = option(
        True, "Send metrics over OTLP as well as spans; --no-otlp-metrics "
        "when Prometheus scrapes /metrics and OTLP should carry only the traces (no "
        "duplicate series).", _bool, group="otlp"
    )
    otlp_traces: bool = option(
        True, "Send spans (one trace per run); --no-otlp-traces with "
        "--no-otlp-logs sends metrics only, e.g. straight to Prometheus 3's OTLP receiver "
        "(--otlp-endpoint http://HOST:9090/api/v1/otlp --otlp-naming prometheus).", _bool,
        group="otlp"
    )
    otlp_logs: bool = option(
        True, "Send every event as an OTLP log record (the event log: a "
        "readable line, its severity, and the trace and span ids of its run, stage or "
        "target span); --no-otlp-logs for spans and metrics only.", _bool, group="otlp"
    )
    remote_write_url: str | None = option(
        None, "Prometheus remote-write receiver, e.g. "
        "http://127.0.0.1:9090/api/v1/write (Prometheus started with "
        "--web.enable-remote-write-receiver): every logged step's values are written as "
        "training_step_metric{run_id, key} at the event's time, up to "
        "--max-history-steps-per-second per run. Off when unset.", group="step history",
        metavar="URL"
    )
    history_job: str = option(
        "runwatch", "The job label of training_step_metric: the job "
        "Prometheus scrapes runwatch as, so the boards' $job filter finds both.",
        group="step history", metavar="JOB"
    )
    history_instance: str | None = option(
        None, "The instance label of training_step_metric: the "
        "address Prometheus scrapes runwatch at. Default: --listen (this host's name "
        "instead of a wildcard address); replay: 'replay'.", group="step history",
        metavar="HOST:PORT"
    )
    nvml: bool = option(
        True, "Sample GPUs through NVML (nvidia-ml-py). Without a driver the nvml "
        "source reports runwatch_source_up 0, says why once, retries every minute, and the "
        "rest runs.", _bool, group="gpu and system"
    )
    gpu_interval: float = option(5.0, "Seconds between GPU samples (scrapes read the last one).",
                                 _positive_float, group="gpu and system")
    gpu_pcie_throughput: bool = option(
        False, "Also sample PCIe throughput (NVML measures a 20 ms "
        "window per direction, per GPU, per sample).", _bool, group="gpu and system"
    )
    fake_gpus: int = option(0, "Simulate this many GPUs instead of NVML (moving readings; for "
                            "trying dashboards and alerts without a GPU).", _non_negative_int,
                            group="gpu and system", metavar="N")
    system: bool = option(
        True, "Sample the host (CPU, load, memory, disk, network) and each run's "
        "process tree (from its PID file) with psutil.", _bool, group="gpu and system"
    )
    system_interval: float = option(5.0, "Seconds between host and process samples.",
                                    _positive_float, group="gpu and system")
    bridge_url: str | None = option(
        None, "Base URL of a trading bridge, e.g. "
        "http://127.0.0.1:8765: its REST endpoints are polled and its /ws/events followed.",
        group="trading bridge", metavar="URL"
    )
    bridge_interval: float = option(5.0, "Seconds between polls of the bridge's REST endpoints.",
                                    _positive_float, group="trading bridge")
    bridge_timeout: float = option(
        2.0, "Seconds one bridge request may take, from connecting to "
        "its last byte; a slower one is cut off and counted as a timeout.", _positive_float,
        group="trading bridge"
    )
    backend_url: str | None = option(
        None, "Base URL of a training backend, e.g. "
        "http://127.0.0.1:8000: its /ws messages become runs (job_id as run_id), GET / is "
        "its health; runwatch's own POST /start_training passes starts through to it (the "
        "202 and its job_id start the handshake clock; so does GET /jobs where the backend "
        "has one).", group="training backend",
        metavar="URL"
    )
    backend_interval: float = option(
        10.0, "Seconds between REST checks of the backend (health, "
        "job listing, job status while the WebSocket is down).", _positive_float,
        group="training backend"
    )
    backend_timeout: float = option(2.0, "Seconds one backend request may take, from connecting to "
                                    "its last byte.", _positive_float, group="training backend")
    backend_authorization_file: str | None = option(
        None, "A file holding the Authorization header runwatch sends "
        "to the backend (e.g. 'Bearer <token>'), on POST /start_training and its REST "
        "checks; a client's own Authorization is never passed on.",
        group="training backend", metavar="FILE"
    )
    backend_ack_timeout: float = option(
        30.0, "Seconds a job may wait between accepted and "
        "training.started before it counts in training_job_ack_timeouts_total.",
        _positive_float, group="training backend"
    )
    router_events: list[str] = option(
        [], "JSONL trace of an event router (path or glob, repeatable): "
        "each line a JSON event with a type field, turned into telemetry by the router "
        "mapping; followed like --events (replay reads each once).", many=True,
        group="event router",
        metavar="PATH_OR_GLOB"
    )
    router_sqlite: str | None = option(
        None, "SQLite database of an event router's cross-process queue, "
        "read-only: its table (--router-sqlite-table) is polled by rowid, columns as "
        "fields, the payload column's JSON decoded.", group="event router", metavar="PATH"
    )
    router_sqlite_table: str = option("events", "The table of --router-sqlite holding the events.",
                                      group="event router", metavar="TABLE")
    router_interval: float = option(
        2.0, "Seconds between polls of --router-sqlite.", _positive_float,
        group="event router"
    )
    router_mapping: str | None = option(
        None, "YAML mapping from router events to counters, spans, gauges, histograms "
        "and flows (docs/router.md; `runwatch router` checks one). Default: the built-in "
        "mapping of the event router's catalogue (training, evaluation, model, data sync, "
        "curriculum, cluster, daemon and recovery events).",
        group="event router", metavar="FILE"
    )
    max_runs: int = option(
        100, "Runs kept. When a new run would pass it, the finished run that "
        "ended first is forgotten (failed and crashed ones last, so their alerts stay); "
        "only when all are live is one cut, counted in runwatch_series_dropped_total.",
        _positive_int, group="limits"
    )
    finished_run_retention: float = option(
        86400.0, "How long a finished run (completed, failed, "
        "crashed, ...) is kept, from when runwatch saw it end: its series, and the alert "
        "on a failed or crashed run, last this long. Seconds or 90s, 30m, 24h, 7d.",
        _duration, group="limits", metavar="DURATION"
    )
    max_positions: int = option(100, "Positions with series, the largest by market value first.",
                                _positive_int, group="limits")
    max_stages_per_run: int = option(32, "Stages kept per run.", _positive_int, group="limits")
    max_targets_per_run: int = option(500, "Targets with a best-AUC series per run.", _positive_int,
                                      group="limits")
    max_metric_keys_per_run: int = option(100, "Step-metric keys per run (first come, kept).",
                                          _positive_int, group="limits")
    max_checkpoints_per_run: int = option(50, "Checkpoints per run; the oldest non-best go first.",
                                          _positive_int, group="limits")
    max_error_types_per_run: int = option(32, "Error types per run; more fold into 'other'.",
                                          _positive_int, group="limits")
    max_history_steps_per_second: int = option(
        100, "Steps of step history kept per run per "
        "second of event time; above it every Nth step is kept (N from the second before) "
        "and the values thinned out are counted in runwatch_series_dropped_total"
        "{reason=\"step_rate\"}.", _positive_int, group="limits"
    )
    max_clock_skew: float = option(
        5.0, "Seconds an event may be older than its run's latest (or "
        "start) before it is rejected as out_of_order (before_run_start).",
        _non_negative_float, group="limits"
    )
    max_series_per_run: int = option(
        2000, "Series budget of a run: each metric key, checkpoint metric "
        "value and target best-AUC it names costs one (the dimensions that multiply); "
        "past it new ones are cut and counted as max_series_per_run.", _positive_int,
        group="limits"
    )
    max_series: int = option(
        20000, "The same budget over all runs (counted as max_series); with "
        "the per-field bounds it caps the scrape (see docs/reliability.md).", _positive_int,
        group="limits"
    )
    max_text_bytes_per_run: int = option(
        256 << 10, "Text budget of a run, in bytes: its config, checkpoint paths "
        "and, with OTLP on, its open spans and their events (errors, progress messages); "
        "past it the config's last keys, a path or a span event are cut and counted as "
        "max_text_bytes_per_run. SIZE: bytes, or with a unit (64KiB, 1MiB, 2MB).",
        _byte_size, group="limits", metavar="SIZE"
    )
    max_time_ahead: float = option(
        60.0, "Seconds an event's time may be ahead of runwatch's clock; "
        "a later one is refused as in_the_future (one event dated years ahead would "
        "otherwise hold its run's clock, and every correct event after it would be "
        "out_of_order).", _non_negative_float, group="limits"
    )
    log_level: str = option(
        "info", "debug, info, warning or error.",
        _one_of(*LOG_LEVELS, fold_case=True), group="general", standard="--log.level"
    )
    log_format: str = option(
        "logfmt", "logfmt (key=value, as Prometheus and its exporters log) or "
        "json, for runwatch's and the web server's lines alike.", _one_of(*LOG_FORMATS),
        group="general", standard="--log.format"
    )
    # fmt: on


def followed_files(settings: Settings) -> tuple[list[str], list[str]]:
    """The event files and the PID files serve follows: those given, else the local
    folder's (where the SDK writes when told nothing), so the two meet with no settings."""
    local = settings.local_dir.rstrip("/") or ("/" if settings.local_dir else "")
    events = settings.events or ([f"{local}/*.jsonl", f"{local}/spool/*.jsonl"] if local else [])
    pid_files = settings.pid_file or ([f"{local}/pids/*.pid"] if local else [])
    return events, pid_files


SDK_VARIABLES = frozenset({
    "RUNWATCH_URL", "RUNWATCH_EVENTS_FILE", "RUNWATCH_LOCAL_DIR", "RUNWATCH_PID_DIR",
    "RUNWATCH_PID_FILE", "RUNWATCH_USERNAME", "RUNWATCH_PASSWORD", "RUNWATCH_CA_FILE",
    "RUNWATCH_QUIET",
})  # fmt: skip
"""The SDK's variables (runwatch_sdk.places.SDK_VARIABLES; a test keeps them equal): they
share the RUNWATCH_ namespace with the options."""
OTHER_VARIABLES = frozenset({
    "RUNWATCH_BASIC_AUTH_PASSWORD",  # --basic-auth-user's password
    "RUNWATCH_BIN",  # scripts/test: where the stack's programs are
})  # fmt: skip


def unknown_variables() -> list[str]:
    """The ``RUNWATCH_*`` variables set that are neither an option nor the SDK's, each
    with the nearest known name: a misspelled one is said, as a misspelled YAML key is."""
    known = {option.env for option in OPTIONS} | SDK_VARIABLES | OTHER_VARIABLES
    problems = []
    for name in sorted(os.environ):
        if name.startswith("RUNWATCH_") and name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            problems.append(f"{name} is set but is no runwatch variable{hint}")
    return problems


OPTIONS: tuple[Option, ...] = tuple(
    replace(f.metadata[OPTION], name=f.name) for f in fields(Settings)
)
_BY_NAME = {option.name: option for option in OPTIONS}


def add_arguments(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """Add the flags of the named options; their defaults stay None so precedence works."""
    groups: dict[str, Any] = {}
    for name in names:
        option = _BY_NAME[name]
        group = groups.get(option.group) or parser.add_argument_group(option.group)
        groups[option.group] = group
        default = option.default
        shown = listen_address(*default[0]) if name == "listen" else default
        help_text = f"{option.help} [env {option.env}; default {shown!r}]"
        if option.parse is _bool:  # --flag / --no-flag
            group.add_argument(
                *option.flags,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            group.add_argument(
                *option.flags,
                dest=name,
                action="append" if option.many else "store",
                default=None,
                metavar=option.metavar or name.upper(),
                help=help_text,
            )


def resolve(args: argparse.Namespace, names: list[str]) -> Settings:
    """The named options from flags, then environment, then the YAML file of --config; the
    others, and those set nowhere, at their defaults."""
    from_file = _load_yaml(getattr(args, "config", None), names)
    given: dict[str, Any] = {}
    for name in names:
        option = _BY_NAME[name]
        value = getattr(args, name, None)
        origin = option.flag
        if value is None and option.env in os.environ:
            value, origin = os.environ[option.env], option.env
            if option.many:
                value = [item for item in value.split(",") if item]
        if value is None and name in from_file:
            value, origin = from_file[name], f"{name} in the config file"
        if value is not None:
            given[name] = _parse(option, value, origin)
    return Settings(**given)


def _parse(option: Option, value: Any, origin: str) -> Any:
    try:
        if option.many:
            items = value if isinstance(value, list) else [value]
            return [option.parse(str(item)) for item in items]
        return option.parse(str(value))  # YAML's true is "True", which _bool reads
    except ValueError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line, placed in the file by line and column (its own text names
    the stream, ``<unicode string>``, not the file)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def read_yaml_file(
    path: str, limit: int, where: str, error: type[ConfigError] = ConfigError
) -> Any:
    """A YAML file's document, or ``error`` with one line that starts with ``where`` (a file
    that cannot be read, is not UTF-8 or not YAML, or nests too deep)."""
    try:
        return yaml.safe_load(read_regular(path, limit).decode())
    except OSError as exc:
        raise error(f"{where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not UTF-8 (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise error(f"{where}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise error(f"{where}: nested too deep") from None


def _load_yaml(path: str | None, names: list[str]) -> dict[str, Any]:
    if not path:
        return {}
    loaded = read_yaml_file(path, MAX_CONFIG_BYTES, f"config file {path}") or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected a mapping of option: value")
    unknown = sorted(k if isinstance(k, str) and k.isidentifier() else repr(k)
                     for k in set(loaded) - set(names))  # fmt: skip
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(names)}"
        )
    return loaded
