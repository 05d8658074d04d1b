"""The Grafana dashboards: built from code (the committed JSON must equal the build), linted
in the spirit of Grafana's dashboard-linter, type-checked with ``tsc --strict`` against
Grafana's own ``@grafana/schema`` at the version compose runs, and every panel query run
against a real Prometheus scraping ``runwatch demo`` (a training run, fake GPUs, the
reference bridge and backend): each must return data."""

from __future__ import annotations

import json
import math
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
from tests.grafana_types import typescript
from tests.processes import Prometheus
from tests.support import ROOT, RUNWATCH, free_port, wait_for

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
                            ("$steps", "1000"), ("$key", "loss")):  # fmt: skip
        expr = expr.replace(variable, value)
    return expr.replace('instance="[^\\"]+"', 'instance=~".+"')


WHILE_RUNNING = {
    # steps per second and the ETA: series of running runs only (any demo run, then)
    ("runwatch-training.json", "PACE: STEPS/S, ETA"),
}
EMPTY_WHILE_HEALTHY = {
    # rows only when a job's start timed out (test_backend makes one and reads the series)
    ("runwatch-backend.json", "TIMED OUT JOBS"),
    # the step history alone (remote write or a backfill), which a runwatch writes only when
    # told to: test_step_history runs these queries against one and checks the pairs drawn
    ("runwatch-training.json", "BY STEP: $key"),
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
        of = "demo_.*" if item[:2] in WHILE_RUNNING else run
        response = httpx.get(demo_prometheus.url + "/api/v1/query",
                             params={"query": fill(item[2], of)}).json()  # fmt: skip
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


# What Grafana 13.2 draws of the training board's BY STEP panel. No Grafana runs here, so the
# way from Prometheus's answers to the XY chart's series is followed as Grafana's source
# writes it, for the options the panel uses; an option or transformation it does not use
# fails here rather than being ignored:
# - @grafana/prometheus result_transformer.ts transformDFToTable: a query in table format
#   becomes one frame, Time, its series' labels (sorted, in order met), "Value #<refId>";
# - transformations organize (excludeByName), merge (rows whose fields common to all frames
#   are equal become one), filterByValue (isNull / isNotNull), partitionByValues (a frame per
#   value, the values as labels);
# - field overrides (byRegexp, anchored as stringToJsRegex anchors; displayName with
#   ${__field.labels.X}) and fieldState.ts's display names;
# - the XY chart's prepSeries (auto mapping: per frame, x the first number or time field the
#   x matcher takes, y every other number field the y matcher takes) and autoNameSeries
#   (the tokens all names share at the start or the end dropped).

Field = dict[str, Any]  # name, type ("time" | "number" | "string"), labels, config, values
Frame = dict[str, Any]  # name, fields, length


def _field(name: str, kind: str, values: list[Any], labels: dict | None = None) -> Field:
    return {"name": name, "type": kind, "labels": labels, "config": {}, "values": values}


def _frame(fields: list[Field], name: str | None = None) -> Frame:
    return {"name": name, "fields": fields, "length": len(fields[0]["values"]) if fields else 0}


def table_frames(panel: dict, answers: dict[str, list[dict]]) -> list[Frame]:
    """``answers``: refId -> the ``data.result`` of Prometheus's /api/v1/query (a matrix)."""
    refs = [target["refId"] for target in panel["targets"]]
    assert all(t.get("format") == "table" and t.get("instant") for t in panel["targets"])
    frames = []
    for ref in refs:
        labels: list[str] = []
        for series in answers[ref]:
            labels += [name for name in sorted(series["metric"]) if name not in labels]
        rows = sorted(((round(float(t) * 1000), series["metric"], float(v))
                       for series in answers[ref] for t, v in series["values"]),
                      key=lambda row: row[0])  # fmt: skip
        frames.append(_frame([
            _field("Time", "time", [row[0] for row in rows]),
            *(_field(name, "string", [row[1].get(name, "") for row in rows]) for name in labels),
            _field(f"Value #{ref}" if len(refs) > 1 else "Value", "number",
                   [row[2] for row in rows]),
        ]))  # fmt: skip
    return frames


def _labels_text(labels: dict) -> str:
    return "{" + ", ".join(f'{k}="{labels[k]}"' for k in sorted(labels)) + "}" if labels else ""


def _single_label(frames: list[Frame]) -> str | None:
    single = None
    for frame in frames:
        for field in frame["fields"]:
            for name in field["labels"] or {}:
                if single is None:
                    single = name
                elif name != single:
                    return None
    return single


def display_name(field: Field, frame: Frame, frames: list[Frame]) -> str:
    """fieldState.ts calculateFieldDisplayName, for frames without a data source name."""
    if field["config"].get("displayName"):
        return str(field["config"]["displayName"])
    if field["type"] == "time" and not field["labels"]:
        return str(field["name"])
    parts, frame_named, labelled = [], False, False
    if len({f["name"] for f in frames}) > 1 and frame["name"]:
        parts.append(frame["name"])
        frame_named = True
    if field["name"] != "Value":
        parts.append(field["name"])
    if field["labels"] is not None:
        single = _single_label(frames)
        text = field["labels"].get(single, "") if single else _labels_text(field["labels"])
        if text:
            parts.append(text)
            labelled = True
    if not frame_named and not labelled and field["name"] == "Value" and frame["name"]:
        parts.append(frame["name"])
    return " ".join(parts) or field["name"]


def _matches(matcher: dict, field: Field, frame: Frame, frames: list[Frame]) -> bool:
    name = display_name(field, frame, frames)
    if matcher["id"] == "byRegexp":
        return re.search("^" + matcher["options"] + "$", name) is not None
    if matcher["id"] == "byName":
        return matcher["options"] in (field["name"], name)
    if matcher["id"] == "byType":
        return bool(field["type"] == matcher["options"])
    raise NotImplementedError(matcher)


def _rows(frame: Frame) -> list[dict[str, Any]]:
    return [{f["name"]: f["values"][i] for f in frame["fields"]} for i in range(frame["length"])]


def _merge(frames: list[Frame]) -> list[Frame]:
    data = [frame for frame in frames if frame["fields"]]
    if len(frames) <= 1 or not data:
        return frames[:1]
    structure: dict[str, Field] = {}
    found: dict[str, set[int]] = {}
    for index, frame in enumerate(data):
        for field in frame["fields"]:
            structure.setdefault(field["name"], {**field, "labels": None, "values": []})
            found.setdefault(field["name"], set()).add(index)
    keys = [f["name"] for f in data[-1]["fields"] if len(found[f["name"]]) == len(data)]
    if not keys:
        return frames
    merged: dict[tuple, list[dict]] = {}
    order: list[tuple[tuple, int]] = []
    for frame in data:
        for value in _rows(frame):
            key = tuple(value[name] for name in keys)
            if key not in merged:
                merged[key] = [value]
                order.append((key, 0))
                continue
            mergeable = [all(existing.get(k) is None or existing[k] == v for k, v in value.items())
                         for existing in merged[key]]  # fmt: skip
            pairs = zip(merged[key], mergeable, strict=True)
            merged[key] = [{**existing, **value} if m else existing for existing, m in pairs]
            if not any(mergeable):
                merged[key].append(value)
                order.append((key, len(merged[key]) - 1))
    rows = [merged[key][index] for key, index in order]
    fields = [{**field, "values": [row.get(name) for row in rows]}
              for name, field in structure.items()]  # fmt: skip
    return [_frame(fields)]


def _filter_by_value(frame: Frame, frames: list[Frame], options: dict) -> Frame:
    tests = {"isNull": lambda v: v is None, "isNotNull": lambda v: v is not None}
    names = {display_name(f, frame, frames): f["name"] for f in frame["fields"]}
    checks = [(names[f["fieldName"]], tests[f["config"]["id"]]) for f in options["filters"]]
    every = options["match"] == "all"
    keep = [row for row in _rows(frame)
            if (all if every else any)(test(row[name]) for name, test in checks)
            == (options["type"] == "include")]  # fmt: skip
    return _frame([{**f, "values": [row[f["name"]] for row in keep]} for f in frame["fields"]],
                  frame["name"])  # fmt: skip


def _partition(frame: Frame, options: dict) -> list[Frame]:
    assert options["naming"] == {"asLabels": True} and not options["keepFields"], options
    by = [f["name"] for f in frame["fields"] if f["name"] in options["fields"]]
    groups: dict[tuple, list[dict]] = {}
    for row in _rows(frame):
        groups.setdefault(tuple(row[name] for name in by), []).append(row)
    return [
        _frame([{**f, "labels": {**(f["labels"] or {}),
                                 **dict(zip(by, map(str, key), strict=True))},
                 "values": [row[f["name"]] for row in rows]}
                for f in frame["fields"] if f["name"] not in by], frame["name"])
        for key, rows in groups.items()
    ]  # fmt: skip


def transformed(panel: dict, frames: list[Frame]) -> list[Frame]:
    for step in panel.get("transformations", []):
        options = step["options"]
        if step["id"] == "organize":
            assert set(options) == {"excludeByName"}, options
            gone = {name for name, out in options["excludeByName"].items() if out}
            frames = [_frame([f for f in frame["fields"]
                              if display_name(f, frame, frames) not in gone], frame["name"])
                      for frame in frames]  # fmt: skip
        elif step["id"] == "merge":
            frames = _merge(frames)
        elif step["id"] == "filterByValue":
            frames = [_filter_by_value(frame, frames, options) for frame in frames]
        elif step["id"] == "partitionByValues":
            frames = _partition(frames[0], options) if frames else frames
        else:
            raise NotImplementedError(step["id"])
    return frames


def overridden(panel: dict, frames: list[Frame]) -> list[Frame]:
    """The field overrides applied (displayName, its ${__field.labels.X} filled in)."""
    for frame in frames:
        for field in frame["fields"]:
            config = dict(field["config"])
            for override in panel["fieldConfig"]["overrides"]:
                if not _matches(override["matcher"], field, frame, frames):
                    continue
                for prop in override["properties"]:
                    assert prop["id"] == "displayName", prop
                    config["displayName"] = re.sub(
                        r"\$\{__field\.labels\.(\w+)\}",
                        lambda m, f=field: (f["labels"] or {}).get(m[1], ""),
                        prop["value"],
                    )
            field["config"] = config
    return frames


def _common_lengths(names: list[list[str]]) -> tuple[float, float]:
    """xychart utils.ts findCommonPrefixSuffixLengths, quirks and all."""
    prefix = suffix = math.inf
    shortest = names[0]
    for segs in names[1:]:
        if len(segs) < len(shortest):
            shortest = segs
    for segs in names[1:]:
        if segs is shortest:
            continue
        same = [j < len(segs) and segs[j] == shortest[j] for j in range(len(shortest))]
        prefix = min(prefix, next((j for j, s in enumerate(same) if not s), len(same)))
        suffix = min(suffix, next((n for n, s in enumerate(reversed(same)) if not s), len(same)))
    return prefix, suffix


def xychart_series(panel: dict, answers: dict[str, list[dict]]) -> dict[str, list[tuple]]:
    """Series name -> its (x, y) points, in the order drawn, as the XY chart makes them of
    the panel's answers (auto mapping)."""
    assert panel["type"] == "xychart" and panel["options"]["mapping"] == "auto"
    frames = overridden(panel, transformed(panel, table_frames(panel, answers)))
    number = {"id": "byType", "options": "number"}
    series: list[tuple[str, list, list]] = []
    for config in panel["options"]["series"] or [{}]:
        x_matcher = config.get("x", {}).get("matcher", number)
        y_matcher = config.get("y", {}).get("matcher", number)
        for frame in frames:
            candidates = [f for f in frame["fields"] if f["type"] in ("number", "time")]
            x = next((f for f in candidates if _matches(x_matcher, f, frame, frames)), None)
            assert x is not None, f"X field not found in {[f['name'] for f in frame['fields']]}"
            series += [(config.get("name", {}).get("fixed") or display_name(y, frame, frames),
                        x["values"], y["values"]) for y in candidates
                       if y["type"] == "number" and y is not x
                       and _matches(y_matcher, y, frame, frames)]  # fmt: skip
    tokens = [re.split(r"\s+", name) for name, _, _ in series]
    prefix, suffix = _common_lengths(tokens) if tokens else (math.inf, math.inf)
    names = [name for name, _, _ in series]
    if prefix < math.inf or suffix < math.inf:
        names = [" ".join(t[int(prefix) : len(t) - int(suffix)]) for t in tokens]
    assert len(set(names)) == len(names), names
    return {name: list(zip(xs, ys, strict=True))
            for name, (_, xs, ys) in zip(names, series, strict=True)}  # fmt: skip


def by_step_panel() -> dict:
    (panel,) = [p for p in boards()["runwatch-training.json"]["panels"]
                if p["type"] == "xychart"]  # fmt: skip
    return panel


def test_by_step_pairs_each_value_with_the_step_logged_at_its_timestamp() -> None:
    """Two runs sharing timestamps, one logging the key at every other step only: each point
    is a value and the step at its own run's timestamp, a series per run, named by run."""
    panel = by_step_panel()
    assert panel["pluginVersion"] >= "13.2"  # xychart's migration leaves 11.1+ options alone
    common = {"job": "runwatch", "instance": "trainer:9464"}

    def matrix(name: str, run: str, points: list[tuple[float, float]], **labels: str) -> dict:
        metric = {"__name__": name, **common, "run_id": run, **labels}
        return {"metric": metric, "values": [[t, str(v)] for t, v in points]}

    times = [1_700_000_000 + i / 10 for i in range(6)]
    answers = {
        "A": [matrix("training_step_metric", "a", [(t, 1 / (i + 1)) for i, t in
                     enumerate(times)], key="loss"),
              matrix("training_step_metric", "b", [(t, 2 / (2 * i + 1)) for i, t in
                     enumerate(times) if i % 2 == 0], key="loss")],
        "B": [matrix("training_history_step", "a", [(t, i) for i, t in enumerate(times)]),
              matrix("training_history_step", "b", [(t, 2 * i) for i, t in enumerate(times)])],
    }  # fmt: skip
    assert xychart_series(panel, answers) == {
        "a": [(i, 1 / (i + 1)) for i in range(6)],
        "b": [(2 * i, 2 / (2 * i + 1)) for i in range(0, 6, 2)],
    }
