"""The metric catalogue: every metric runwatch exposes, declared once.

Both outputs are built from this list, so they cannot drift: the Prometheus
exposition (:mod:`exporter.telemetry.exposition`) and the OTel instruments
(:mod:`exporter.telemetry.otel`). Each entry names the metric twice, as it
appears on ``/metrics`` and as its OTel name and unit (see
:mod:`exporter.telemetry.metric` for the two OTLP namings); tests check the
translation and push to a real OTLP-ingesting store to confirm.

A sampler reads the current state and yields ``(label values, value)``; for the
histogram the value is a :class:`~exporter.core.outputs.Histogram`. This module holds
the training and self metrics; the sampled sources' are in
:mod:`exporter.telemetry.hardware_metrics`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from exporter.core.events import MAX_IDENTIFIER_CHARS, STATUSES
from exporter.core.handshake import ACK_BUCKETS, ACK_METRIC
from exporter.core.outputs import Histogram
from exporter.core.state import TARGET_DURATION_BUCKETS, TARGET_DURATION_METRIC, Checkpoint, Run
from exporter.core.trace_ids import trace_id_hex
from exporter.pipeline import Pipeline, View
from exporter.pipeline.readings import SourceStatus
from exporter.pipeline.self_stats import MAX_FILE_SERIES, FileProgress
from exporter.sources.peers.samples import BackendSample
from exporter.telemetry.build_info import build_labels
from exporter.telemetry.goodput_metrics import GOODPUT_METRICS
from exporter.telemetry.hardware_metrics import HARDWARE_METRICS
from exporter.telemetry.metric import Metric, RunSampler, Sample, Sampler, Type, stats_counter
from exporter.telemetry.router_metrics import ROUTER_METRICS, rule_metrics
from exporter.telemetry.trading_metrics import TRADING_METRICS


def _run_status(run: Run) -> Iterator[Sample]:
    for status in STATUSES:
        yield (run.run_id, status), 1.0 if run.status == status else 0.0


def _run_stage(run: Run) -> Iterator[Sample]:
    for stage in run.stages:
        yield (run.run_id, stage), 1.0 if stage == run.stage else 0.0


def _stage_duration(run: Run) -> Iterator[Sample]:
    for name, stage in run.stages.items():
        if name != run.stage or run.finished:
            yield (run.run_id, name), stage.seconds


def _errors(run: Run) -> Iterator[Sample]:
    for (error_type, recoverable), count in run.errors.items():
        yield (run.run_id, error_type, "true" if recoverable else "false"), count


def _per_checkpoint(value: Callable[[Checkpoint], Any]) -> RunSampler:
    """One sample per checkpoint of each run (left out where ``value`` gives None)."""

    def of_run(run: Run) -> Iterator[Sample]:
        for checkpoint_id, checkpoint in run.checkpoints.items():
            if (number := value(checkpoint)) is not None:
                yield (run.run_id, checkpoint_id), number

    return RunSampler(of_run)


MAX_CONFIG_ITEMS = 32
"""Config keys shown per run (nested keys flattened with dots, in the order given)."""
MAX_CONFIG_VALUE_CHARS = 64


MAX_CONFIG_DEPTH = 4
MAX_TIMED_OUT_SHOWN = 10


def config_items(config: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """A run's config as (dotted key, short text) pairs: nested mappings flattened (to
    MAX_CONFIG_DEPTH levels), keys cut to MAX_IDENTIFIER_CHARS characters as every other
    label, values to MAX_CONFIG_VALUE_CHARS; the caller
    bounds how many it takes."""
    for key, value in config.items():
        if isinstance(value, dict) and prefix.count(".") < MAX_CONFIG_DEPTH - 1:
            yield from config_items(value, f"{prefix}{key}.")
            continue
        if isinstance(value, str):
            text = value
        elif isinstance(value, dict):
            text = "{…}"
        elif isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
            text = f"[{len(value)} items]"
        else:  # a number, a boolean, null, or a flat list of them
            text = json.dumps(value, default=str)
        yield _cut(f"{prefix}{key}", MAX_IDENTIFIER_CHARS), _cut(text, MAX_CONFIG_VALUE_CHARS)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _config(run: Run) -> Iterator[Sample]:
    shown: dict[str, str] = {}  # a dotted key given twice ({"a.b": .., "a": {"b": ..}})
    for key, text in config_items(run.config):
        if len(shown) == MAX_CONFIG_ITEMS:
            break
        shown.setdefault(key, text)
    for key, text in shown.items():
        yield (run.run_id, key, text), 1.0


def _per_run(attribute: Callable[[Run], float | Histogram | None]) -> RunSampler:
    def of_run(run: Run) -> Iterator[Sample]:
        value = attribute(run)
        if value is not None:
            yield (run.run_id,), value

    return RunSampler(of_run)


def _per_run_key(items: Callable[[Run], Iterable[tuple[str, Any]]]) -> RunSampler:
    def of_run(run: Run) -> Iterator[Sample]:
        for key, value in items(run):
            yield (run.run_id, key), value

    return RunSampler(of_run)


FILE = ("source", "path")


def _files(value: Callable[[FileProgress], float | None]) -> Sampler:
    def sample(view: View) -> Iterator[Sample]:
        for key, progress in view.stats.files.snapshot():
            if (reading := value(progress)) is not None:
                yield key, reading

    return sample


def _sources(value: Callable[[SourceStatus], float | None]) -> Sampler:
    def sample(view: View) -> Iterator[Sample]:
        for source, status in view.readings.sources.items():
            if (reading := value(status)) is not None:
                yield (source,), reading

    return sample


G, C, H = Type.GAUGE, Type.COUNTER, Type.HISTOGRAM


def _backend_jobs(sample: BackendSample | None) -> Iterator[Sample]:
    if sample is not None and sample.jobs is not None:
        for status, count in sample.jobs.items():
            yield (status,), count


RUN = ("run_id",)

METRICS: tuple[Metric, ...] = (
    Metric("training_run_info", "training.run.info", "", G, ("run_id", "name", "trace_id"),
           "Run metadata and the run's trace id (for links to its trace); always 1.",
           RunSampler(lambda r: [((r.run_id, r.name, trace_id_hex(r.run_id)), 1.0)])),
    Metric("training_run_config_info", "training.run.config.info", "", G,
           ("run_id", "key", "value"), f"The run's config from run_start, one series per key "
           f"(nested keys joined with dots; the first {MAX_CONFIG_ITEMS} keys, keys cut to "
           f"{MAX_IDENTIFIER_CHARS} characters and values to {MAX_CONFIG_VALUE_CHARS}); "
           f"always 1.", RunSampler(_config)),
    Metric("training_run_status", "training.run.status", "", G, ("run_id", "status"),
           "1 for the run's current status, 0 for the others.", RunSampler(_run_status)),
    Metric("training_run_stage", "training.run.stage", "", G, ("run_id", "stage"),
           "1 for the run's current stage, 0 for stages it has left.", RunSampler(_run_stage)),
    Metric("training_run_progress_ratio", "training.run.progress.ratio", "1", G,
           ("run_id", "stage"), "Progress within each stage of the run (progress_pct / 100).",
           _per_run_key(lambda r: ((n, s.progress_ratio) for n, s in r.stages.items()))),
    Metric("training_run_targets", "training.run.targets", "", G, RUN,
           "Targets in the run, as last reported.", _per_run(lambda r: r.targets_total)),
    Metric("training_run_targets_completed", "training.run.targets.completed", "", G, RUN,
           "Targets finished so far, each once (also when a later stage takes it again).",
           _per_run(lambda r: r.targets_completed)),
    Metric("training_run_targets_successful", "training.run.targets.successful", "", G, RUN,
           "Targets that succeeded, as run_complete reports them.",
           _per_run(lambda r: r.targets_successful)),
    Metric("training_run_current_target", "training.run.current_target", "", G,
           ("run_id", "target"), "1 for the target the run is processing now (from "
           "target_start or progress.current_target); absent between targets.",
           RunSampler(lambda r: [((r.run_id, r.current_target), 1.0)]
                      if r.current_target is not None and not r.finished else [])),
    Metric("training_stage_targets", "training.stage.targets", "", G, ("run_id", "stage"),
           "Targets of each stage, as its progress events report targets_total.",
           _per_run_key(lambda r: ((n, s.targets_total) for n, s in r.stages.items()
                                   if s.targets_total is not None))),
    Metric("training_stage_targets_completed", "training.stage.targets.completed", "", G,
           ("run_id", "stage"), "Targets each stage has finished, as its progress events "
           "report targets_complete.",
           _per_run_key(lambda r: ((n, s.targets_completed) for n, s in r.stages.items()
                                   if s.targets_completed is not None))),
    Metric("training_run_start_timestamp_seconds", "training.run.start_timestamp", "s", G, RUN,
           "When the run started (its first event), Unix seconds.", _per_run(lambda r: r.start)),
    Metric("training_run_last_event_timestamp_seconds", "training.run.last_event_timestamp",
           "s", G, RUN, "Timestamp of the run's latest event, Unix seconds.",
           _per_run(lambda r: r.last_event)),
    Metric("training_run_duration_seconds", "training.run.duration", "s", G, RUN,
           "Run duration: reported by run_complete, else from its first to its last event.",
           _per_run(lambda r: r.duration)),
    Metric("training_stage_duration_seconds", "training.stage.duration", "s", G,
           ("run_id", "stage"), "Time the run spent in each stage it has left.",
           RunSampler(_stage_duration)),
    Metric("training_target_completions_total", "training.target.completions", "", C,
           ("run_id", "status"), "Targets completed, by status (success, failed, skipped, other).",
           _per_run_key(lambda r: r.target_completions.items())),
    Metric("training_target_best_auc", "training.target.best_auc", "", G,
           ("run_id", "stage", "target"), "Best AUC reached per target, in the stage it was "
           "reported in (a target ranked, then trained, has one series per stage).",
           RunSampler(lambda r: (((r.run_id, stage, target), auc)
                                 for (stage, target), auc in r.target_best_auc.items()))),
    Metric(TARGET_DURATION_METRIC, "training.target.duration", "s", H, RUN,
           "Time spent per target.", _per_run(lambda r: r.target_durations),
           TARGET_DURATION_BUCKETS),
    Metric("training_errors_total", "training.errors", "", C,
           ("run_id", "error_type", "recoverable"), "Error events, by type and recoverability.",
           RunSampler(_errors)),
    Metric("training_events_total", "training.events", "", C, ("event_type",),
           "Events accepted, by type; types runwatch does not know by their name (the first "
           "32, then 'other').", lambda v: (((t,), n) for t, n in
                                                   v.state.events_by_type.items())),
    Metric("training_metric", "training.metric", "", G, ("run_id", "key"),
           "Last value of each step metric (loss, learning_rate, ...).",
           _per_run_key(lambda r: r.metrics.items())),
    Metric("training_metric_non_finite_total", "training.metric.non_finite", "", C,
           ("run_id", "key"), "Step-metric values that were NaN or infinite, per key (the "
           "value is shown as such in training_metric); 0 for every key from its first value.",
           _per_run_key(lambda r: ((key, r.non_finite[key]) for key in r.metrics))),
    Metric("training_step", "training.step", "", G, RUN, "Last training step reported.",
           _per_run(lambda r: r.step)),
    *GOODPUT_METRICS,
    Metric("training_checkpoint_step", "training.checkpoint.step", "", G,
           ("run_id", "checkpoint_id"), "Step each checkpoint was taken at.",
           _per_checkpoint(lambda c: c.step)),
    Metric("training_checkpoint_timestamp_seconds", "training.checkpoint.timestamp", "s", G,
           ("run_id", "checkpoint_id"), "When each checkpoint was saved, Unix seconds.",
           _per_checkpoint(lambda c: c.timestamp)),
    Metric("training_checkpoint_best", "training.checkpoint.best", "", G,
           ("run_id", "checkpoint_id"), "1 for the run's best checkpoint, 0 for the others.",
           _per_checkpoint(lambda c: float(c.is_best))),
    Metric("training_checkpoint_valid", "training.checkpoint.valid", "", G,
           ("run_id", "checkpoint_id"), "1 for a checkpoint whose file was checked and "
           "found valid (loads with torch, holds the expected keys), 0 for one found not; "
           "absent for those never checked.",
           _per_checkpoint(lambda c: None if c.valid is None else float(c.valid))),
    Metric("training_run_checkpoints_invalid", "training.run.checkpoints.invalid", "", G, RUN,
           "Checkpoint checks of the run that found the file not valid.",
           _per_run(lambda r: r.invalid_checkpoints)),
    Metric("training_checkpoint_metric", "training.checkpoint.metric", "", G,
           ("run_id", "checkpoint_id", "key"), "Metrics recorded with each checkpoint.",
           RunSampler(lambda r: (((r.run_id, cid, k), x) for cid, c in r.checkpoints.items()
                                 for k, x in c.metrics.items()))),
    Metric("training_process_up", "training.process.up", "", G, RUN,
           "1 while the run's process (from its PID file) is alive, 0 once it is gone.",
           _per_run(lambda r: None if r.process_up is None else float(r.process_up))),
    Metric(ACK_METRIC, "training.job.ack", "s", H, (),
           "Time from a job seen accepted by the training backend to its training.started.",
           # shown from the first observation, as OTLP can only send it from then on
           lambda v: [((), v.handshakes.latency)] if v.handshakes.latency.count else [],
           ACK_BUCKETS),
    Metric("training_job_ack_timeouts_total", "training.job.ack_timeouts", "", C, (),
           "Jobs accepted by the training backend with no training.started within "
           "--backend-ack-timeout.", lambda v: [((), v.handshakes.timeouts)]),
    Metric("training_jobs_awaiting_ack", "training.jobs.awaiting_ack", "", G, (),
           "Jobs accepted by the training backend and not started yet.",
           lambda v: [((), len(v.handshakes.pending))]),
    Metric("training_job_ack_timed_out_timestamp_seconds",
           "training.job.ack_timed_out_timestamp", "s", G, ("job_id",),
           f"The latest {MAX_TIMED_OUT_SHOWN} jobs that waited past --backend-ack-timeout and "
           "have not started since, each with when it was accepted (Unix seconds).",
           lambda v: (((job,), at) for job, at in
                      list(v.handshakes.late.items())[-MAX_TIMED_OUT_SHOWN:])),
    Metric("training_backend_jobs", "training.backend.jobs", "{job}", G, ("status",),
           "Jobs the training backend lists in GET /jobs, by status (waiting, running, "
           "completed, failed, cancelled, other): its jobs only, not the other runs.",
           lambda v: _backend_jobs(v.readings.latest(BackendSample))),
    Metric("training_backend_log_lines_total", "training.backend.log_lines", "", C, (),
           "New lines read from the training backend's /status/log_tail while a job awaits "
           "its start or after one failed (each logged as 'backend log: ...').",
           stats_counter(lambda s: s.backend_log_lines)),
    Metric("runwatch_build_info", "runwatch.build.info", "", G,
           ("version", "revision", "python_version"), "runwatch's version, the git commit "
           "it was installed from (unknown when pip did not record one) and the Python it "
           "runs on; always 1.", lambda v: [(build_labels(), 1.0)]),
    Metric("runwatch_events_ingested_total", "runwatch.events.ingested", "", C, ("source",),
           "Events accepted, by source: jsonl (event files), http (POST /v1/events), bridge "
           "(its /ws/training), backend (the training backend's messages), router (event "
           "router traces and queues).", stats_counter(lambda s: s.ingested)),
    Metric("runwatch_events_rejected_total", "runwatch.events.rejected", "", C,
           ("source", "reason"), "Inputs skipped, by source and reason.",
           stats_counter(lambda s: s.rejected)),
    Metric("runwatch_events_duplicate_total", "runwatch.events.duplicate", "", C, (),
           "Events skipped because their event_id was applied before (a batch the SDK sent "
           "again after an answer it did not get, or a spool read after it was sent); also "
           "counted in runwatch_events_ingested_total.",
           lambda v: [((), v.state.duplicates)]),
    Metric("runwatch_events_lenient_total", "runwatch.events.lenient", "", C,
           ("source", "reason"), "Events applied although they lacked something the format "
           "asks for: naive_timestamp (no UTC offset: taken as UTC), missing_timestamp (the "
           "time it was read), missing_run_id (the PID file's run or the source's latest); "
           "--strict-events refuses them instead.", stats_counter(lambda s: s.lenient)),
    Metric("runwatch_series_dropped_total", "runwatch.series.dropped", "", C, ("reason",),
           "Live data cut because a cardinality bound was hit, by bound (max_runs: a running "
           "run forgotten because every kept run was live; max_positions counts the positions "
           "cut from each bridge poll; step_rate counts step-history values thinned out by "
           "--max-history-steps-per-second; max_series_per_run and max_series: metric keys, "
           "checkpoint metric values or target AUCs past the series budget; "
           "max_text_bytes_per_run: config keys, checkpoint paths or span text past the text "
           "budget; max_events_per_span: span events past the per-span cap; metric_window: "
           "step rows thinned out of a run's in-memory history, /api/runs/{id}/metrics, past "
           "its budget). Finished runs "
           "forgotten are "
           "runwatch_runs_forgotten_total.",
           lambda v: [*(((r,), n) for r, n in v.state.dropped.items()),
                      *(((r,), n) for r, n in v.stats.snapshot(v.stats.series_dropped)),
                      *(((r,), n) for r, n in (v.router.dropped.items() if v.router else ()))]),
    Metric("runwatch_runs_forgotten_total", "runwatch.runs.forgotten", "{run}", C, ("reason",),
           "Finished runs forgotten, by reason: retention (kept --finished-run-retention "
           "since they ended) or max_runs (a new run needed the place of the one that ended "
           "first); neither loses live data.",
           lambda v: (((r,), n) for r, n in v.state.forgotten.items())),
    Metric("runwatch_render_errors_total", "runwatch.render.errors", "", C, ("family",),
           "Samples left out of a scrape or an OTLP collection because they could not be "
           "rendered, counted when rendered (a run's samples are rendered again only when "
           "the run changes; logged once per family; family api_runs: runs left out of "
           "GET /api/runs); the rest of the collection is unaffected.",
           stats_counter(lambda s: s.render_errors)),
    Metric("runwatch_file_rotations_total", "runwatch.file.rotations", "", C, ("kind",),
           "Event files seen rotated (renamed and replaced) or truncated.",
           stats_counter(lambda s: s.file_rotations)),
    Metric("runwatch_file_lines_read_total", "runwatch.file.lines_read", "{line}", C,
           FILE, f"Lines read from each followed file (event files: source jsonl; router "
           f"traces: router), the first {MAX_FILE_SERIES} files per source.",
           _files(lambda p: p.lines)),
    Metric("runwatch_file_read_bytes_total", "runwatch.file.read", "By", C, FILE,
           "Bytes read from each followed file.", _files(lambda p: p.bytes)),
    Metric("runwatch_file_offset_bytes", "runwatch.file.offset", "By", G, FILE,
           "Where reading has got to in the file the path names now: the end of its last "
           "complete line.", _files(lambda p: p.offset)),
    Metric("runwatch_file_size_bytes", "runwatch.file.size", "By", G, FILE,
           "The file's size at the last look; size minus offset is how far runwatch is "
           "behind its writer.", _files(lambda p: p.size)),
    Metric("runwatch_file_last_read_timestamp_seconds", "runwatch.file.last_read_timestamp",
           "s", G, FILE, "When new bytes were last read from the file, Unix seconds.",
           _files(lambda p: p.last_read)),
    Metric("runwatch_http_refused_total", "runwatch.http.refused", "", C, ("reason",),
           "Connections and requests the HTTP server turned away, by reason: header_timeout "
           "(no whole request head within --header-timeout), max_connections (closed to make "
           "room at --max-connections, or refused with 503 when all were busy), auth_busy "
           "(429: more password checks waiting than are queued), rate_limited (429: the web "
           "configuration's rate_limit).", stats_counter(lambda s: s.http_refused)),
    Metric("runwatch_otlp_exported_total", "runwatch.otlp.exported", "", C, ("signal",),
           "Spans, log records and metric points the OTLP endpoint accepted.",
           stats_counter(lambda s: s.otlp_exported)),
    Metric("runwatch_otlp_dropped_total", "runwatch.otlp.dropped", "", C, ("signal", "reason"),
           "Spans, log records and metric points lost on the OTLP path (queue full, export "
           "failed).", stats_counter(lambda s: s.otlp_dropped)),
    Metric("runwatch_otlp_resent_total", "runwatch.otlp.resent", "", C, ("signal",),
           "Spans and log records sent again after a restart, as they were first sent (a "
           "span with its ids, a log record but for its observed time): those of the lines "
           "between the state file's delivered and read offsets, read before the restart "
           "and not all accepted by the collector.",
           stats_counter(lambda s: s.otlp_resent)),
    Metric("runwatch_remote_write_samples_total", "runwatch.remote_write.samples", "", C, (),
           "Step-history samples (training_step_metric) the remote-write receiver accepted.",
           stats_counter(lambda s: s.remote_write_sent)),
    Metric("runwatch_remote_write_dropped_samples_total", "runwatch.remote_write.dropped", "",
           C, ("reason",), "Step-history samples lost: queue_full, out_of_order (not newer "
           "than the series' last, or refused by the receiver as such), out_of_bounds "
           "(refused as too old for the receiver's head), rejected (any other 4xx), failed "
           "(retries exhausted).",
           stats_counter(lambda s: s.remote_write_dropped)),
    Metric("runwatch_source_up", "runwatch.source.up", "", G, ("source",),
           "1 while a sampled source delivers fresh samples, else 0: nvml, system, bridge "
           "(the trading bridge's REST), backend (the training backend's REST), router "
           "(--router-sqlite).",
           _sources(lambda s: float(s.up))),
    Metric("runwatch_source_sample_duration_seconds", "runwatch.source.sample.duration", "s", G,
           ("source",), "How long the source's last sample took.",
           _sources(lambda s: s.sample_seconds)),
    Metric("runwatch_source_last_success_timestamp_seconds",
           "runwatch.source.last_success_timestamp", "s", G, ("source",),
           "When the source's last successful sample finished, Unix seconds.",
           _sources(lambda s: s.sampled_at)),
    Metric("runwatch_source_errors_total", "runwatch.source.errors", "", C, ("source", "reason"),
           "Readings a source lost, by NVML error (gpu_is_lost, timeout, ...); readings a "
           "model does not support are not counted.", stats_counter(lambda s: s.source_errors)),
    *HARDWARE_METRICS,
    *TRADING_METRICS,
    *ROUTER_METRICS,
)  # fmt: skip


def documented_metrics() -> tuple[Metric, ...]:
    """The catalogue with the families of the built-in router mapping: what the README lists
    and what the shipped dashboards and alerts may use."""
    from exporter.sources.files.router_mapping import load_mapping

    return METRICS + rule_metrics(load_mapping(None))


def metrics_for(pipeline: Pipeline) -> tuple[Metric, ...]:
    """The catalogue with the counters and gauges of the pipeline's router mapping."""
    router = pipeline.router
    return METRICS if router is None else METRICS + rule_metrics(router.mapping)
