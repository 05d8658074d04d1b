"""The Grafana dashboards: built from code (the committed JSON must equal the build), linted
in the spirit of Grafana's dashboard-linter, type-checked with ``tsc --strict`` against
Grafana's own ``@grafana/schema`` at the version compose runs, and every panel query run
against a real Prometheus scraping ``runwatch demo`` (a training run, fake GPUs, the
reference bridge and backend): each must return data."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.dashboards.build import BOARDS, stale
from exporter.dashboards.style import DATA_SOURCES, LOKI, PROMETHEUS, TAG
from tests.conftest import ROOT, RUNWATCH, Prometheus, free_port, wait_for
from tests.grafana_types import typescript

DIRECTORY = ROOT / "grafana" / "dashboards"


def boards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DIRECTORY.glob("*.json"))}


def targets(board: dict, kind: str = "prometheus") -> Iterator[tuple[str, str]]:
    """(panel title, query) of the panels on data sources of ``kind``: PromQL, or LogQL."""
    for panel in board["panels"]:
        if panel.get("datasource", {}).get("type") != kind:
            continue
        for target in panel.get("targets") or []:
            yield panel["title"], target["expr"]


def log_panels() -> list[tuple[str, str, str]]:
    """(board, title, LogQL) of every logs panel."""
    return [(name, title, expr) for name, board in boards().items()
            for title, expr in targets(board, "loki")]  # fmt: skip


def test_the_committed_json_is_what_the_code_builds() -> None:
    assert stale(DIRECTORY) == []
    assert set(boards()) == set(BOARDS)
    check = subprocess.run([*RUNWATCH, "dashboards", "build", "--check"], cwd=ROOT)
    assert check.returncode == 0


def test_the_dashboards_pass_the_lint() -> None:
    uids = [board["uid"] for board in boards().values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards().items():
        assert board["uid"] == name.removesuffix(".json"), "uids are stable: the file name"
        assert TAG in board["tags"] and board["version"] >= 100
        variables = {variable["name"]: variable for variable in board["templating"]["list"]}
        for name_, (kind, _, uid) in DATA_SOURCES.items():  # portable: a variable, by default
            assert variables[name_]["type"] == "datasource", name_  # the provisioned uid
            assert (variables[name_]["query"], variables[name_]["current"]["value"]) == (kind, uid)
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"]["uid"] == PROMETHEUS.uid
        for panel in board["panels"]:
            assert panel["title"], f"{name}: a panel without a title"
            if panel["type"] == "text":
                continue
            where = f"{name}: {panel['title']}"
            if panel["type"] == "logs":  # the event log: lines, no unit
                assert panel["datasource"]["uid"] == LOKI.uid, where
                continue
            assert panel["datasource"]["uid"] == PROMETHEUS.uid, where
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(set(refs)) == len(refs) and all(refs), where
            for target in panel["targets"]:
                for window in re.findall(r"(?:rate|increase)\([^()]*\[([^\]]+)\]", target["expr"]):
                    assert window == "$__rate_interval", f"{where}: {target['expr']}"


def type_check(tmp: Path, bin_dir: Path, named: dict[str, dict]) -> subprocess.CompletedProcess:
    """``tsc --strict`` over each board as TypeScript typed by @grafana/schema."""
    (tmp / "node_modules").symlink_to(bin_dir.parent / "lib" / "runwatch-npm" / "node_modules")
    files = []
    for name, board in named.items():
        files.append(tmp / name.replace(".json", ".ts"))
        files[-1].write_text(typescript(board))
    return subprocess.run(
        [bin_dir / "tsc", "--strict", "--noEmit", "--skipLibCheck", "--target", "es2020",
         "--module", "esnext", "--moduleResolution", "bundler", *map(str, files)],
        capture_output=True, text=True, cwd=tmp,
    )  # fmt: skip


def test_every_board_type_checks_against_grafanas_own_schema(bin_dir: Path, tmp_path: Path) -> None:
    checked = type_check(tmp_path, bin_dir, boards())
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_schema_check_finds_unknown_keys_and_null_options(
    bin_dir: Path, tmp_path: Path
) -> None:
    """What grafana-foundation-sdk 10.1 wrote for Grafana 11 must fail the check: each
    fault in a board of its own, each named in tsc's errors."""

    def broken(fault: Callable[[dict], None]) -> dict:
        board = boards()["runwatch-training.json"]
        fault(board)
        return board

    faults = {
        "style": (lambda b: b.update(style="dark"), '"style"'),
        "auto": (lambda b: b["templating"]["list"][-2].update(auto_count=30), '"auto_count"'),
        "null": (lambda b: b["panels"][0].update(options=None), "Type 'null'"),
        "option": (lambda b: b["panels"][1]["options"].update(legendd={}), '"legendd"'),
        "enum": (lambda b: b["panels"][3]["options"]["legend"].update(placement="top"), '"top"'),
        "logs": (lambda b: b["panels"][2]["options"].update(sortOrder="Newest"), '"Newest"'),
    }
    checked = type_check(
        tmp_path, bin_dir, {f"{n}.json": broken(f) for n, (f, _) in faults.items()}
    )
    assert checked.returncode != 0
    for name, (_, needle) in faults.items():
        errors = [line for line in checked.stdout.splitlines() if line.startswith(f"{name}.ts")]
        assert errors and needle in errors[0], (name, checked.stdout)


@pytest.fixture(scope="module")
def demo_prometheus(bin_dir: Path, tmp_path_factory) -> Iterator[Prometheus]:
    tmp = tmp_path_factory.mktemp("dashboards")
    port = free_port()
    log = (tmp / "demo.log").open("wb")
    demo = subprocess.Popen(
        [*RUNWATCH, "demo", "--listen", f"127.0.0.1:{port}", "--fake-gpus", "2",
         "--event-interval", "0.01", "--gpu-interval", "0.5", "--system-interval", "0.5",
         "--bridge-interval", "0.5", "--backend-interval", "0.5"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    prometheus = Prometheus(bin_dir / "prometheus", f"127.0.0.1:{port}", tmp)
    try:
        yield prometheus
    finally:
        prometheus.stop()
        demo.terminate()
        demo.wait(timeout=30)
        log.close()


def wait_until_each(items: set, has_data: Callable[[Any], bool], failure: str) -> None:
    """Poll until every item has data (data comes in as the demo runs); name those that never do."""
    missing = set(items)

    def answered() -> bool:
        missing.difference_update([item for item in list(missing) if has_data(item)])
        return not missing

    try:
        wait_for(answered, timeout=90, what=failure)
    except AssertionError:
        raise AssertionError(f"{failure}: {sorted(missing)}") from None


def fill(expr: str, run: str) -> str:
    for variable, value in (("$job", "runwatch"), ("$instance", r"[^\"]+"), ("$run", run),
                            ("$gpu", "0"), ("$__rate_interval", "1m"), ("$__range", "1h"),
                            ("$steps", "1000")):  # fmt: skip
        expr = expr.replace(variable, value)
    return expr.replace('instance="[^\\"]+"', 'instance=~".+"')


EMPTY_WHILE_HEALTHY = {
    # rows only when a job's start timed out (test_backend makes one and reads the series)
    ("runwatch-backend.json", "TIMED OUT JOBS"),
}


# Tempo's metrics generator (2.10.8: modules/generator/processor/spanmetrics) writes these;
# no Tempo runs here, so their panels are checked for the names alone.
TEMPO_SERIES = {"traces_spanmetrics_calls_total", "traces_spanmetrics_latency_bucket"}


def from_tempo(expr: str) -> bool:
    return "traces_spanmetrics_" in expr


def test_span_metric_panels_query_what_tempo_writes() -> None:
    exprs = [expr for board in boards().values() for _, expr in targets(board) if from_tempo(expr)]
    assert len(exprs) == 2
    for expr in exprs:
        assert set(re.findall(r"traces_spanmetrics_\w+", expr)) <= TEMPO_SERIES, expr
        assert 'run_id=~"$run"' in expr  # the label tempo.yaml maps training.run_id to
    tempo = yaml.safe_load((ROOT / "tempo" / "tempo.yaml").read_text())
    mapping = tempo["metrics_generator"]["processor"]["span_metrics"]["dimension_mappings"]
    assert {"name": "run_id", "source_labels": ["training.run_id"]} in mapping


def test_every_panel_query_returns_data(demo_prometheus: Prometheus) -> None:
    def demo_run() -> str | None:
        runs = demo_prometheus.query('training_checkpoint_best{run_id=~"demo_.*"}')
        return next(iter(runs), "").split("run_id=")[-1].split(",")[0] or None

    run = wait_for(demo_run, timeout=60, what="a demo run with checkpoints")
    queries = {(board, title, expr) for board, data in boards().items()
               for title, expr in targets(data)
               if (board, title) not in EMPTY_WHILE_HEALTHY and not from_tempo(expr)}  # fmt: skip

    def has_data(item: tuple[str, str, str]) -> bool:
        response = httpx.get(demo_prometheus.url + "/api/v1/query",
                             params={"query": fill(item[2], run)}).json()  # fmt: skip
        assert response["status"] == "success", (item, response)
        return bool(response["data"]["result"])

    wait_until_each(queries, has_data, "panel queries with no data")


def test_every_rule_selector_matches_series(demo_prometheus: Prometheus) -> None:
    """An alert's expression returns data only while it fires; its selectors must match
    series of a live runwatch all the time, or the alert can never fire."""
    from tests.integration.test_rules import rules

    selector = r"\b(?:training|trading|gpu|runwatch|system|process|router)_[a-z_]+(?:\{[^}]*\})?"
    selectors = {match.group(0) for rule in rules()
                 for match in re.finditer(selector, rule["expr"])}  # fmt: skip
    assert len(selectors) >= 20
    wait_until_each(selectors, lambda s: bool(demo_prometheus.query(s)),
                    "rule selectors with no series")  # fmt: skip
