"""The ``runwatch`` command: serve, replay, demo, schema, dashboards, router, mixin."""

from __future__ import annotations

import argparse
import gc
import glob
import os
import sys
from dataclasses import replace
from pathlib import Path

from exporter import __version__
from exporter.app.config import (
    OPTIONS,
    ConfigError,
    Settings,
    add_arguments,
    resolve,
    unknown_variables,
)
from exporter.app.log_format import configure_logging
from exporter.app.wiring import (
    build_pipeline,
    otlp_settings_of,
    read_files_once,
    read_router_files_once,
    router_state,
)
from exporter.core.schema import render_schema
from exporter.pipeline import Pipeline
from exporter.pipeline.source_names import JSONL_SOURCE, ROUTER_SOURCE
from exporter.sources.files.parallel import event_reader, router_reader, worth_it
from exporter.telemetry.exposition import Exposition
from exporter.telemetry.step_history import HistoryRecorder, openmetrics

LIMITS = [o.name for o in OPTIONS if o.group == "limits"] + ["max_line_bytes", "strict_events"]
OTLP = [o.name for o in OPTIONS if o.group == "otlp"]
SERVE = [o.name for o in OPTIONS]
REPLAY = (
    LIMITS
    + OTLP
    + ["router_events", "router_mapping", "history_job", "history_instance"]
    + ["log_level", "log_format"]
)
DEMO = [n for n in SERVE if n not in ("events", "state_file", "local_dir")]

DESCRIPTION = """\
runwatch turns the events of ML training runs (JSONL files, HTTP POST, PID files),
GPU and host readings, a trading bridge, a training backend and an event router's
events (through a YAML mapping) into Prometheus metrics on /metrics and, optionally,
OTLP metrics, spans and log records.
"""
EPILOG = """\
Every option can also be set as RUNWATCH_<OPTION> or in a YAML file given with
--config (flags win over the environment, which wins over the file). An option that
repeats (--events, --pid-file, --web.listen-address, ...) takes a comma-separated list in
the environment (RUNWATCH_EVENTS=a.jsonl,b.jsonl) and a YAML list in the file.
`runwatch COMMAND --help` lists a command's options.
"""


REPLAY_GC_THRESHOLD = 100_000
"""Allocations between two passes of the youngest generation during ``replay`` (Python's
default is 700): about 1.2x faster on the router trace (bench/RESULTS.md)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runwatch",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"runwatch {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )

    serve = commands.add_parser(
        "serve",
        help="follow event files and serve /metrics (the long-running exporter)",
        description="Follow event files and PID files, take POSTed events, serve /metrics, "
        "/healthz, /readyz and /api/runs, and export OTLP when an endpoint is set.",
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file of options (keys as the flags, with underscores: max_runs: 20)",
    )
    add_arguments(serve, SERVE)

    replay = commands.add_parser(
        "replay",
        help="read event files once and print the resulting /metrics exposition",
        description="Read event files once, offline, and print the resulting Prometheus "
        "exposition to stdout; --router-events files go through the router mapping. Paths "
        "may be globs. Files of 8 MiB and more are parsed by a second process while this "
        "one reduces (the same result). With an OTLP endpoint, the spans, log records and "
        "metrics are exported too, and replay waits for the endpoint to take them before it "
        "prints. A missing or unreadable file is an error (exit 2).",
    )
    replay.add_argument("paths", nargs="*", metavar="PATH", help="JSONL event files")
    replay.add_argument(
        "--history",
        choices=["openmetrics"],
        help="print the files' step history instead: every logged value as "
        "training_step_metric{run_id, key} at its event's time and its step as "
        "training_history_step{run_id}, in OpenMetrics with timestamps, for "
        "`promtool tsdb create-blocks-from openmetrics` (backfill)",
    )
    replay.add_argument("--config", metavar="FILE", help="YAML file of options")
    add_arguments(replay, REPLAY)

    demo = commands.add_parser(
        "demo",
        help="serve a built-in synthetic training run: the quickest way to look around",
        description="Write a realistic synthetic training run (stages, targets, metrics, "
        "checkpoints, errors; a new run when one ends) into a temporary JSONL file in real "
        "time, run the reference trading bridge and training backend (simulated) unless "
        "--bridge-url and --backend-url name others, and serve it all like `runwatch serve` "
        "would.",
    )
    demo.add_argument(
        "--event-interval",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="time between two generated events [default 0.2]",
    )
    demo.add_argument("--config", metavar="FILE", help="YAML file of options")
    add_arguments(demo, DEMO)

    dashboards = commands.add_parser(
        "dashboards",
        help="dashboards build: write the Grafana dashboards (built from code) as JSON",
        description="Build the Grafana dashboards (grafana-foundation-sdk code in "
        "exporter/dashboards/) into JSON files for Grafana's file provisioning.",
    )
    dashboards.add_argument("action", choices=["build"], help="build: write the JSON files")
    dashboards.add_argument(
        "--out", default="grafana/dashboards", metavar="DIR", help="[default grafana/dashboards]"
    )
    dashboards.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the files in DIR differ from what the code builds",
    )

    router = commands.add_parser(
        "router",
        help="router check [FILE]: check an event-router mapping (the built-in one without FILE)",
        description="Check an event-router mapping (the built-in one without FILE) as "
        "`runwatch serve` would at start, and list the metrics it adds. Exit 2 with the "
        "file, line and reason when it is refused.",
    )
    router.add_argument("action", choices=["check"], help="check: load and check the mapping")
    router.add_argument("mapping", nargs="?", metavar="FILE", help="YAML mapping [built-in]")

    commands.add_parser(
        "schema",
        help="print the JSON Schema of the event format",
        description="Print the JSON Schema of one event line.",
    )

    mixin = commands.add_parser(
        "mixin",
        help="mixin export DIR: write the alerting rules, their unit tests and the dashboards",
        description="Write the monitoring mixin shipped in the package (what the repository "
        "holds in prometheus/ and grafana/dashboards/) into DIR: rules/*.yml for Prometheus's "
        "rule_files, tests/*.test.yml for `promtool test rules`, dashboards/*.json for "
        "Grafana's file provisioning.",
    )
    mixin.add_argument("action", choices=["export"], help="export: write the files")
    mixin.add_argument("directory", metavar="DIR", help="where to write them (created)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except ConfigError as exc:
        print(f"runwatch: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `runwatch replay ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C: asked for, not a failure to report with a traceback
        return 130


def _command(args: argparse.Namespace) -> int:
    if args.command == "schema":
        sys.stdout.write(render_schema())
        return 0
    if args.command == "dashboards":
        return dashboards(Path(args.out), args.check)
    if args.command == "router":
        return check_mapping(args.mapping)
    if args.command == "mixin":
        from exporter.mixin import export

        for path in export(Path(args.directory)):
            print(path)
        return 0
    names = {"serve": SERVE, "replay": REPLAY, "demo": DEMO}[args.command]
    for problem in unknown_variables():  # before any error they may explain
        print(f"runwatch: warning: {problem}", file=sys.stderr)
    settings = resolve(args, names)
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "replay":
        return replay(args.paths, settings, args.history)
    if args.command == "demo":
        from exporter.simulate.demo import run_demo

        return run_demo(settings, args.event_interval)
    from exporter.app.runtime import Runtime  # the web stack only for the server

    Runtime(settings).serve()
    return 0


def dashboards(directory: Path, check: bool) -> int:
    try:
        from exporter.dashboards.build import stale, write
    except ModuleNotFoundError as exc:  # grafana-foundation-sdk is the dashboards extra
        if not (exc.name or "").startswith("grafana_foundation_sdk"):
            raise
        print(f"runwatch: dashboards build needs {exc.name}: pip install 'runwatch[dashboards]' "
              "(the built boards ship with the package: runwatch mixin export DIR)",
              file=sys.stderr)  # fmt: skip
        return 2
    if check:
        outdated = stale(directory)
        for name in outdated:
            print(
                f"runwatch: {directory / name} differs from what the code builds", file=sys.stderr
            )
        return 1 if outdated else 0
    for path in write(directory):
        print(path)
    return 0


def check_mapping(path: str | None) -> int:
    from exporter.core.router.mapping import MappingError
    from exporter.sources.files.router_mapping import load_mapping
    from exporter.telemetry.router_metrics import rule_metrics

    try:
        mapping = load_mapping(path)
    except MappingError as exc:
        print(f"runwatch: router mapping {exc}", file=sys.stderr)
        return 2
    counts = [
        (len(mapping.categories), "event type"),
        (len(set(mapping.categories.values())), "category"),
        (len(mapping.counters), "counter"),
        (len(mapping.spans), "span"),
        (len(mapping.gauges), "gauge"),
        (len(mapping.flows), "flow"),
    ]
    types, categories, *rules = (plural(n, word) for n, word in counts)
    print(f"{path or 'built-in mapping'}: ok: {types} in {categories}, {', '.join(rules)}")
    for metric in rule_metrics(mapping):
        print(f"  {metric.name}{{{', '.join(metric.prometheus_labels)}}}  {metric.help}")
    return 0


def plural(count: int, word: str) -> str:
    """``1 flow``, ``2 flows``, ``3 categories``."""
    if count == 1:
        return f"1 {word}"
    return f"{count} {word[:-1] + 'ies' if word.endswith('y') else word + 's'}"


def replay(paths: list[str], settings: Settings, history: str | None = None) -> int:
    # a glob the shell did not expand (quoted, or from RUNWATCH_ROUTER_EVENTS) is
    # expanded here, as serve does: files in name order; one that matches nothing is
    # reported as a missing file below
    paths = [found for path in paths for found in _expanded(path)]
    router_paths = [found for path in settings.router_events for found in _expanded(path)]
    settings = replace(settings, router_events=router_paths)
    if not paths and not router_paths:
        print("runwatch: replay needs event files (PATH) or --router-events", file=sys.stderr)
        return 2
    for path in [*paths, *router_paths]:
        problem = None if Path(path).is_file() else "no such file"
        if problem and Path(path).exists():
            problem = "not a regular file"
        if problem:
            print(f"runwatch: {path}: {problem}", file=sys.stderr)
            return 2
    # A batch that allocates millions of short-lived objects and keeps few: the cycle
    # collector's default (a pass every 700 allocations, over everything imported too)
    # costs it about a sixth of its time; what the imports made is frozen out of its way.
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(REPLAY_GC_THRESHOLD)
    try:
        return _replay(paths, settings, history)
    finally:  # as they were, for a caller that goes on (a test calling main)
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _expanded(path: str) -> list[str]:
    if not any(mark in path for mark in "*?["):
        return [path]
    return sorted(glob.glob(path)) or [path]


def _replay(paths: list[str], settings: Settings, history: str | None) -> int:
    router_paths, max_line_bytes = settings.router_events, settings.max_line_bytes
    # Large inputs are parsed in forked workers; they fork before the OTLP threads start.
    events = event_reader(paths, max_line_bytes) if worth_it(paths) else None
    router = None
    if worth_it(router_paths):
        otlp_settings = otlp_settings_of(settings)
        planner = router_state(settings.router_mapping)
        planner.logging = otlp_settings is not None and otlp_settings.logs
        router = router_reader(router_paths, max_line_bytes, planner)
    pipeline, otlp = build_pipeline(settings)
    recorder = HistoryRecorder()
    if history:
        pipeline.add_sink(recorder, spans=False, steps=True)
    try:
        if events is not None:
            events.feed(lambda batch: pipeline.apply_parsed(batch, JSONL_SOURCE))
        else:
            read_files_once(pipeline, paths)
        if router is not None:
            router.feed(lambda batch: pipeline.apply_router_plans(batch, ROUTER_SOURCE))
        else:
            read_router_files_once(pipeline, router_paths)
    except OSError as exc:
        where = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        print(f"runwatch: {where}", file=sys.stderr)
        return 2
    if otlp is not None:
        otlp.flush()  # first, so the exposition below counts what was exported
    if history:
        _write_history(recorder, pipeline, settings)
    else:
        sys.stdout.write(Exposition(pipeline).render()[0].decode())
    if otlp is not None:
        otlp.shutdown()
    return 0


def _write_history(recorder: HistoryRecorder, pipeline: Pipeline, settings: Settings) -> None:
    """The step history as OpenMetrics on stdout; what was left out, on stderr."""
    labels = {"job": settings.history_job, "instance": settings.history_instance or "replay"}
    sys.stdout.writelines(openmetrics(recorder.steps, labels))
    thinned = pipeline.state.dropped["step_rate"]
    if thinned:
        print(f"runwatch: step history: {thinned} values thinned out by "
              f"--max-history-steps-per-second", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
