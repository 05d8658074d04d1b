"""Wiring shared by every command: settings to pipeline, OTLP output and file readers."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.app.config import ConfigError, Settings
from exporter.core.events import Rejected
from exporter.core.state import Limits
from exporter.pipeline import Pipeline
from exporter.pipeline.regular_files import SECRET_FILE_BYTES, read_regular
from exporter.pipeline.self_stats import Stats
from exporter.pipeline.source_names import (
    BACKEND_SOURCE,
    BRIDGE_SOURCE,
    JSONL_SOURCE,
    ROUTER_SOURCE,
)
from exporter.sources.attribution import RunRoots
from exporter.sources.files.jsonl import CursorStore, LineSink, Tailer, read_whole_files
from exporter.sources.sampled.sampling import PeriodicSampler
from exporter.sources.worker import Worker
from exporter.telemetry.otlp_settings import OtlpSettings, otlp_settings_from

if TYPE_CHECKING:
    from exporter.core.router.reducer import RouterState
    from exporter.telemetry.otel import OtlpOutput
    from exporter.telemetry.remote_write import RemoteWriteOutput


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_runs=settings.max_runs,
        finished_run_retention=settings.finished_run_retention,
        max_stages_per_run=settings.max_stages_per_run,
        max_targets_per_run=settings.max_targets_per_run,
        max_metric_keys_per_run=settings.max_metric_keys_per_run,
        max_checkpoints_per_run=settings.max_checkpoints_per_run,
        max_error_types_per_run=settings.max_error_types_per_run,
        max_series_per_run=settings.max_series_per_run,
        max_series=settings.max_series,
        max_text_bytes_per_run=settings.max_text_bytes_per_run,
        max_clock_skew_seconds=settings.max_clock_skew,
        max_time_ahead_seconds=settings.max_time_ahead,
        max_history_steps_per_second=settings.max_history_steps_per_second,
    )


def build_pipeline(settings: Settings) -> tuple[Pipeline, OtlpOutput | None]:
    """The pipeline with its OTLP output attached when OTLP is configured."""
    pipeline = Pipeline(limits_from(settings), settings.max_line_bytes, settings.strict_events)
    if settings.router_events or settings.router_sqlite or settings.router_mapping:
        _attach_router(pipeline, router_state(settings.router_mapping))
    otlp_settings = otlp_settings_of(settings)
    if otlp_settings is None:
        return pipeline, None
    from exporter.telemetry.otel import OtlpOutput  # the OTel SDK only when it is used

    otlp = OtlpOutput(pipeline, otlp_settings)
    pipeline.add_sink(otlp, logs=otlp.logs)
    return pipeline, otlp


def otlp_settings_of(settings: Settings) -> OtlpSettings | None:
    """The OTLP output's settings, None when OTLP is not configured (flags or OTEL_*)."""
    try:
        return otlp_settings_from(
            settings.otlp_endpoint,
            settings.otlp_protocol,
            settings.service_name,
            settings.otlp_naming,
            settings.otlp_metrics,
            settings.otlp_logs,
            settings.otlp_traces,
            scraped_instance(settings),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def attach_remote_write(pipeline: Pipeline, settings: Settings) -> RemoteWriteOutput | None:
    """The step history's remote-write output, when --remote-write-url is set."""
    url = settings.remote_write_url
    if not url:
        return None
    if not re.match(r"https?://[^/]", url):
        raise ConfigError(f"--remote-write-url: {url!r} is not an http:// or https:// URL")
    from exporter.telemetry.remote_write import RemoteWriteOutput, RemoteWriteSettings

    instance = scraped_instance(settings)
    output = RemoteWriteOutput(
        RemoteWriteSettings(url, settings.history_job, instance), pipeline.stats
    )
    pipeline.add_sink(output, spans=False, steps=True)
    return output


def scraped_instance(settings: Settings) -> str:
    """The ``instance`` label of what runwatch pushes (step history, OTLP metrics): the
    --history-instance given, else where Prometheus most likely scrapes runwatch: the
    listen address, or this host's name for a wildcard one."""
    if settings.history_instance:
        return settings.history_instance
    host, port = settings.listen[0]
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def router_state(mapping_path: str | None) -> RouterState:
    """The router state of the mapping (built-in without a path); refused here, at start."""
    from exporter.core.router.mapping import MappingError
    from exporter.core.router.reducer import RouterState
    from exporter.sources.files.router_mapping import load_mapping

    try:
        return RouterState(load_mapping(mapping_path))
    except MappingError as exc:
        raise ConfigError(f"router mapping {exc}") from None


def _attach_router(pipeline: Pipeline, router: RouterState) -> None:
    from exporter.sources.peers.router import REJECT_REASONS

    pipeline.router = router
    stats = pipeline.stats
    stats.declare(stats.ingested, [ROUTER_SOURCE])
    stats.declare(stats.rejected, [(ROUTER_SOURCE, reason) for reason in REJECT_REASONS])


def read_files_once(pipeline: Pipeline, paths: list[str]) -> None:
    """Feed whole files to the pipeline (``runwatch replay``); OSError if one can't be read."""
    read_whole_files(
        paths, _line_sink(pipeline), pipeline.max_line_bytes, _too_long_counter(pipeline)
    )


def read_router_files_once(pipeline: Pipeline, paths: list[str]) -> None:
    """Feed whole router traces to the pipeline's mapping (``runwatch replay``)."""
    too_long = _too_long_counter(pipeline, ROUTER_SOURCE)
    read_whole_files(paths, _router_line_sink(pipeline), pipeline.max_line_bytes, too_long)


def file_tailer(
    pipeline: Pipeline,
    patterns: list[str],
    sink: LineSink | None = None,
    source: str = JSONL_SOURCE,
    **options: Any,
) -> Tailer:
    """A Tailer that feeds the pipeline (training events, unless another ``sink`` is given)
    and counts what it cuts, under ``source``, or sees rotate, and how far it has read each
    file (the runwatch_file_* series)."""
    stats = pipeline.stats
    return Tailer(
        patterns,
        sink or _line_sink(pipeline),
        max_line_bytes=pipeline.max_line_bytes,
        on_too_long=_too_long_counter(pipeline, source),
        on_rotation=lambda kind: stats.count(stats.file_rotations, kind),
        on_refused=lambda path: pipeline.rejections.count(source, NOT_REGULAR),
        progress=stats.files,
        source=source,
        **options,
    )


NOT_REGULAR = Rejected("not_a_regular_file", "an event path that is a FIFO, device or directory")


def _line_sink(pipeline: Pipeline) -> LineSink:
    return lambda lines, spans_from, origin: pipeline.ingest_lines(
        lines, JSONL_SOURCE, spans_from, origin
    )


def _router_line_sink(pipeline: Pipeline) -> LineSink:
    from exporter.sources.peers.router import line_sink

    return line_sink(_router_deliver(pipeline))


def _router_deliver(pipeline: Pipeline) -> Callable[[list[Any], float, int], None]:
    """Where both router readers (trace lines, table rows) hand their decoded events."""
    return lambda values, received_at, spans_from: pipeline.ingest_router(
        values, ROUTER_SOURCE, received_at, spans_from
    )


def _too_long_counter(pipeline: Pipeline, source: str = JSONL_SOURCE) -> Callable[[], None]:
    reject = Rejected("line_too_long", f"over {pipeline.max_line_bytes} bytes")
    return lambda: pipeline.rejections.count(source, reject)


def build_background(
    settings: Settings,
    pipeline: Pipeline,
    run_roots: RunRoots,
    fake_gpu_pids: Sequence[int] = (),
) -> list[Worker]:
    """Every source with a thread of its own: the sampled ones (nvml, system, bridge REST,
    backend REST), each on its own clock, and the WebSocket followers."""
    return [
        *_hardware(settings, pipeline, run_roots, fake_gpu_pids),
        *_bridge(settings, pipeline),
        *_backend(settings, pipeline),
        *_router(settings, pipeline),
    ]


def _hardware(
    settings: Settings, pipeline: Pipeline, run_roots: RunRoots, fake_gpu_pids: Sequence[int]
) -> list[Worker]:
    """With ``fake_gpus`` the NVML source talks to a simulated NVML; ``fake_gpu_pids`` are
    processes it shows running on every fake GPU (the demo's own, to show attribution)."""
    samplers: list[Worker] = []
    if settings.nvml or settings.fake_gpus:
        from exporter.sources.sampled.nvml import NVML_SOURCE, NvmlSource

        if settings.fake_gpus:
            from exporter.sources.sampled.fake_nvml import fake_nvml

            nvml: Any = fake_nvml(settings.fake_gpus, fake_gpu_pids)
        else:
            import pynvml

            nvml = pynvml
        stats = pipeline.stats
        source = NvmlSource(
            nvml,
            run_roots,
            lambda reason: stats.count(stats.source_errors, (NVML_SOURCE, reason)),
            pcie_throughput=settings.gpu_pcie_throughput,
            on_run_gpus=pipeline.observe_gpus,
        )
        samplers.append(PeriodicSampler(source, pipeline.readings, settings.gpu_interval))
    if settings.system:
        from exporter.sources.sampled.system import SystemSource

        samplers.append(
            PeriodicSampler(SystemSource(run_roots), pipeline.readings, settings.system_interval)
        )
    return samplers


def _bridge(settings: Settings, pipeline: Pipeline) -> list[Worker]:
    """The trading bridge: REST poller, /ws/events and /ws/training followers."""
    url = settings.bridge_url
    if not url:
        return []
    from exporter.sources.peers.bridge import BridgePoller, BusEvents
    from exporter.sources.peers.websocket import WebSocketFollower

    stats = pipeline.stats
    _declare(stats, BRIDGE_SOURCE)
    stats.declare(stats.series_dropped, ["max_positions"])
    poller = BridgePoller(url, settings.bridge_timeout, stats, settings.max_positions,
                          settings.max_response_bytes)  # fmt: skip
    bus = BusEvents(
        stats,
        lambda stage, at: pipeline.trading.observe_stage(url, stage, at),
        lambda event_type, data, at: pipeline.trading.log_bus_event(url, event_type, data, at),
    )

    def training(message: str | bytes) -> None:  # core-format events, one per frame
        line = message.encode() if isinstance(message, str) else message
        pipeline.ingest_lines([line], BRIDGE_SOURCE)

    base, timeout = _ws_base(url), settings.bridge_timeout
    failed = _failure_counter(pipeline, BRIDGE_SOURCE)
    return [
        PeriodicSampler(poller, pipeline.readings, settings.bridge_interval),
        WebSocketFollower(base + "/ws/events", "events", stats, bus, failed, timeout),
        WebSocketFollower(base + "/ws/training", "training", stats, training, failed, timeout),
    ]


def _backend(settings: Settings, pipeline: Pipeline) -> list[Worker]:
    """The training backend: /ws follower and REST poller sharing one translator."""
    url = settings.backend_url
    if not url:
        return []
    from exporter.sources.peers.backend import BackendEvents, BackendPoller
    from exporter.sources.peers.websocket import WebSocketFollower

    stats = pipeline.stats
    _declare(stats, BACKEND_SOURCE)
    pipeline.jobs.handshakes.timeout = settings.backend_ack_timeout
    events = BackendEvents(pipeline)
    timeout = settings.backend_timeout
    authorization = backend_authorization(settings)
    follower = WebSocketFollower(
        _ws_base(url) + "/ws", "backend", stats, events,
        _failure_counter(pipeline, BACKEND_SOURCE), timeout,
        {"authorization": authorization} if authorization else None,
    )  # fmt: skip
    poller = BackendPoller(
        url, timeout, settings.max_response_bytes, events,
        lambda: stats.websocket_connected.get("backend", 0) == 1, authorization,
    )  # fmt: skip
    return [follower, PeriodicSampler(poller, pipeline.readings, settings.backend_interval)]


def backend_authorization(settings: Settings) -> str | None:
    """The Authorization header for the training backend, from --backend-authorization-file:
    one line of visible ASCII (an HTTP header's value), checked at start."""
    path = settings.backend_authorization_file
    if path is None:
        return None
    if settings.backend_url is None:
        raise ConfigError("--backend-authorization-file is sent to the training backend: "
                          "give --backend-url too")  # fmt: skip
    try:
        value = read_regular(path, SECRET_FILE_BYTES).decode("utf-8-sig").strip()  # BOM dropped
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--backend-authorization-file: {exc}") from None
    if not value or not all(" " <= char <= "~" or char == "\t" for char in value):
        raise ConfigError("--backend-authorization-file: one line of ASCII expected, the "
                          "header's value (e.g. 'Bearer <token>')")  # fmt: skip
    return value


def _router(settings: Settings, pipeline: Pipeline) -> list[Worker]:
    """Router events: the JSONL trace followed, the SQLite queue polled (build_pipeline has
    attached the mapping's state)."""
    if pipeline.router is None:
        return []
    from exporter.sources.peers.router import RouterTable

    background: list[Worker] = []
    if settings.router_events:
        state_file = settings.state_file
        store = CursorStore(Path(state_file + ".router")) if state_file else None
        background.append(file_tailer(
            pipeline, settings.router_events, _router_line_sink(pipeline), ROUTER_SOURCE,
            cursor_store=store, poll_interval=settings.poll_interval,
            force_polling=settings.force_polling,
        ))  # fmt: skip
    if settings.router_sqlite:
        stats = pipeline.stats
        stats.declare(stats.source_errors, [(ROUTER_SOURCE, "database_locked")])
        table = RouterTable(
            settings.router_sqlite,
            settings.router_sqlite_table,
            pipeline.router.mapping.payload_field,
            _router_deliver(pipeline),
            lambda reason: stats.count(stats.source_errors, (ROUTER_SOURCE, reason)),
        )
        background.append(PeriodicSampler(table, pipeline.readings, settings.router_interval))
    return background


def _failure_counter(pipeline: Pipeline, source: str) -> Callable[[Exception], object]:
    return lambda exc: pipeline.rejections.failed(source, exc)


def _declare(stats: Stats, source: str) -> None:
    from exporter.sources.peers.contract import REJECT_REASONS

    stats.declare(stats.ingested, [source])
    stats.declare(stats.rejected, [(source, reason) for reason in REJECT_REASONS])


def _ws_base(url: str) -> str:
    return re.sub(r"^http", "ws", url.rstrip("/"))
