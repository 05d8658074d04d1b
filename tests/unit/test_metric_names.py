"""Every metric name the shipped rules and boards query is one runwatch makes, so renaming a
metric is one edit (in the catalogue) that the tests catch wherever the old name is read.

The names are taken from the PromQL by a small tokenizer (:func:`metric_names`): string
literals, comments, Grafana variables, label matchers ``{...}``, ranges and subqueries
``[...]`` and the label lists of ``by``/``without``/``on``/``ignoring``/``group_left``/
``group_right`` are dropped; of what is left, an identifier not followed by ``(`` (a
function or an aggregation) and not a PromQL keyword is a metric name. Each must be a
series runwatch makes (the catalogue with the built-in router mapping's families, a
histogram's ``_bucket``/``_count``/``_sum``, counters with the ``_total`` the catalogue
gives them, the step history's two families), a recording rule of the shipped rules, or
one of the boards' documented allow-list (:data:`exporter.dashboards.names.ELSEWHERE`:
Tempo's span metrics). The boards' modules must take every name from
:func:`exporter.dashboards.names.metric`, which raises at build time for a name runwatch
does not make. A recording rule must be read by an alert or a board and have a promtool
``promql_expr_test`` (runwatch ships none: docs/alerts.md, "Recording rules").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from exporter.dashboards import backend, build, gpu, names, router, style, trading, training
from exporter.telemetry.catalogue import documented_metrics
from exporter.telemetry.metric import Type
from exporter.telemetry.step_history import STEP_INDEX_METRIC, STEP_METRIC

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((ROOT / "prometheus" / "tests").glob("*.yml"))
BOARD_FILES = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
BOARD_MODULES: tuple[ModuleType, ...] = (style, training, gpu, router, trading, backend)

# --- the tokenizer ---------------------------------------------------------------------------

STRING = r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`"""
COMMENT = r"#[^\n]*"
GRAFANA_VARIABLE = r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]"
MATCHERS = r"\{[^{}]*\}"
RANGE = r"\[[^\[\]]*\]"
LABEL_LIST = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)"
# a number or a duration (0.9, 1e18, 0x1f, 5m, 1h30m) before an identifier, so that no
# identifier is read from its tail
TOKEN = re.compile(r"(?P<number>\.?\d[\w.]*)|(?P<name>[a-zA-Z_:][\w:]*)(?P<call>\s*\()?")
KEYWORDS = frozenset({
    "and", "or", "unless", "atan2", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan",
})  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(STRING, " ", expr)
    for pattern in (COMMENT, GRAFANA_VARIABLE, MATCHERS, RANGE):
        text = re.sub(pattern, " ", text)
    text = re.sub(LABEL_LIST, " ", text, flags=re.IGNORECASE)
    return {
        token["name"]
        for token in TOKEN.finditer(text)
        if token["name"] and not token["call"] and token["name"].lower() not in KEYWORDS
    }


def variable_expression(query: str) -> str:
    """The PromQL in a Grafana query variable: ``label_values(EXPR, label)``'s EXPR,
    ``query_result(EXPR)``'s, or the query itself."""
    label_values = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query, re.DOTALL)
    if label_values:
        return label_values[1]
    result = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.DOTALL)
    return result[1] if result else query


# --- what the shipped files query --------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]  # fmt: skip


def rule_expressions() -> dict[str, str]:
    """``where`` -> PromQL of every alerting and recording rule."""
    return {f"rule {rule.get('alert') or rule['record']}": rule["expr"] for rule in rules()}


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in container.get("panels") or []:
        yield panel
        yield from panels(panel)  # a row's panels


def board_expressions(board_name: str, board: dict[str, Any]) -> dict[str, str]:
    """``where`` -> PromQL of every Prometheus target and query variable of a board (LogQL
    targets left out)."""
    found = {}
    for panel in panels(board):
        for index, target in enumerate(panel.get("targets") or []):
            kind = (target.get("datasource") or panel.get("datasource") or {}).get("type")
            assert kind in ("prometheus", "loki"), (board_name, panel.get("title"), kind)
            where = f"{board_name}: {panel['title']} #{index}"
            if kind == "prometheus":
                assert where not in found, where  # two panels of one title
                found[where] = target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            found[f"{board_name}: variable {variable['name']}"] = variable_expression(query)
    return found


def shipped_expressions() -> dict[str, str]:
    found = rule_expressions()
    for path in BOARD_FILES:
        found.update(board_expressions(path.name, json.loads(path.read_text())))
    return found


def runwatch_series() -> frozenset[str]:
    """Every series name runwatch makes, derived from the catalogue here (not by the
    boards' helper, which this checks)."""
    series = {STEP_METRIC, STEP_INDEX_METRIC}  # the step history, remote-written or backfilled
    for family in documented_metrics():
        if family.type is Type.HISTOGRAM:
            series |= {f"{family.name}_{part}" for part in ("bucket", "count", "sum")}
        else:
            series.add(family.name)  # a counter's name has its _total in the catalogue
    return frozenset(series)


def allowed() -> frozenset[str]:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    return runwatch_series() | recorded | set(names.ELSEWHERE)


def unknown_names(expressions: dict[str, str], known: frozenset[str]) -> list[tuple[str, str]]:
    """(where, name) of every name an expression reads that is not ``known``."""
    return sorted((where, name) for where, expr in expressions.items()
                  for name in metric_names(expr) if name not in known)  # fmt: skip


# --- the tokenizer can fail ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", {"up"}),
        ('training_run_status{status="crashed"} == 1', {"training_run_status"}),
        (
            'sum by (job, instance) (rate(foo_total{a="b", c=~"x|y"}[5m]))'
            " / on (job) group_left (instance, run_id) bar",
            {"foo_total", "bar"},
        ),
        (
            'histogram_quantile(0.9, sum by (le) (rate(h_bucket{job="$job"}[$__rate_interval])))',
            {"h_bucket"},
        ),
        ("a > bool 1 and b unless c offset 10m or d @ end()", {"a", "b", "c", "d"}),
        ("x atan2 y", {"x", "y"}),
        ('label_replace(x, "dst", "$1", "src", "(by|on) (.*)")', {"x"}),
        ("count(router_host_up == 1) or vector(0)", {"router_host_up"}),
        (
            "-trading_risk_daily_pnl_ratio * 1e18 + Inf - NaN / 0x1f",
            {"trading_risk_daily_pnl_ratio"},
        ),
        ('max_over_time(step{a="b"}[$__range] @ end()) - $steps', {"step"}),
        ("sum(x) without (a, b) > 0", {"x"}),
        ("SUM BY(a)(x) AND ON(a) Y", {"x", "Y"}),
        ("level:metric:rate5m > 2 * min_over_time(z[1h:5m])", {"level:metric:rate5m", "z"}),
        ('# gone_metric in a comment\nx{note="rate(y[5m])"}', {"x"}),
        ("time() - t > 15 * 60", {"t"}),
        ("vector(1)", set()),
    ],
)
def test_the_tokenizer_finds_the_metric_names(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_a_variable_query_is_read_for_its_expression() -> None:
    query = 'label_values(training_run_info{job="$job", instance=~"$instance"}, run_id)'
    assert metric_names(variable_expression(query)) == {"training_run_info"}
    assert metric_names(variable_expression("query_result(topk(3, x))")) == {"x"}


def test_a_renamed_or_missing_metric_is_reported() -> None:
    shipped = shipped_expressions()
    known = allowed()
    renamed = {where: expr.replace("training_run_status", "training_run_state")
               for where, expr in shipped.items()}  # fmt: skip
    reported = unknown_names(renamed, known)
    assert ("rule RunwatchRunCrashed", "training_run_state") in reported
    assert ("runwatch-training.json: RUN LIST #0", "training_run_state") in reported
    assert {name for _, name in reported} == {"training_run_state"}
    # a metric gone from the catalogue: every query of it, the variables' too
    reported = unknown_names(shipped, known - {"gpu_info", "training_errors_total"})
    assert ("runwatch-gpu.json: variable gpu", "gpu_info") in reported
    assert ("rule RunwatchRunErrorRate", "training_errors_total") in reported


# --- the shipped rules and boards ----------------------------------------------------------


def test_every_rule_and_board_query_reads_metrics_runwatch_makes() -> None:
    expressions = shipped_expressions()
    assert sum(where.startswith("rule ") for where in expressions) >= 25
    assert sum(".json: " in where for where in expressions) >= 80
    assert unknown_names(expressions, allowed()) == []


def test_the_allow_list_is_small_and_used() -> None:
    read = set().union(*map(metric_names, shipped_expressions().values()))
    assert len(names.ELSEWHERE) <= 5
    assert set(names.ELSEWHERE) <= read
    assert not set(names.ELSEWHERE) & runwatch_series()


def unread_recordings(rule_list: list[dict[str, Any]], boards: dict[str, str]) -> set[str]:
    """The recording rules that no alerting rule and no board query reads."""
    read = {name for expr in boards.values() for name in metric_names(expr)}
    read |= {name for rule in rule_list if "alert" in rule for name in metric_names(rule["expr"])}
    return {rule["record"] for rule in rule_list if "record" in rule} - read


def untested_recordings(rule_list: list[dict[str, Any]], tests: list[dict[str, Any]]) -> set[str]:
    """The recording rules that no ``promql_expr_test`` of the promtool unit tests reads."""
    read = {name for test in tests for case in test.get("promql_expr_test") or []
            for name in metric_names(case["expr"])}  # fmt: skip
    return {rule["record"] for rule in rule_list if "record" in rule} - read


def test_every_recording_rule_is_read_by_an_alert_or_a_board_and_tested() -> None:
    """A recording rule that nothing reads costs an evaluation for nothing (docs/alerts.md:
    runwatch ships none today); one added must be read by an alert or a board, and have a
    promtool unit test of its own."""
    tests = [test for path in RULE_TEST_FILES for test in yaml.safe_load(path.read_text())["tests"]]
    assert len(tests) >= 25
    assert untested_recordings(rules(), tests) == set()
    boards = {where: expr for where, expr in shipped_expressions().items()
              if not where.startswith("rule ")}  # fmt: skip
    assert unread_recordings(rules(), boards) == set()
    recording = {"record": "job:x:rate5m", "expr": "sum by (job) (rate(x_total[5m]))"}
    assert unread_recordings([recording], boards) == {"job:x:rate5m"}
    alert = {"alert": "X", "expr": "job:x:rate5m > 1"}
    assert unread_recordings([recording, alert], boards) == set()
    assert unread_recordings([recording], {"a board": "job:x:rate5m"}) == set()
    assert untested_recordings([recording], tests) == {"job:x:rate5m"}
    tested = {"promql_expr_test": [{"expr": "job:x:rate5m", "eval_time": "5m"}]}
    assert untested_recordings([recording], [*tests, tested]) == set()


# --- the boards' helper ------------------------------------------------------------------------


def test_the_helper_answers_exactly_what_runwatch_makes() -> None:
    assert names.exposed() == runwatch_series()
    for name in ("training_run_status", "training_errors_total",
                 "training_job_ack_seconds_bucket", "training_job_ack_seconds_count",
                 "router_flow_duration_seconds_sum", "training_step_metric",
                 "traces_spanmetrics_calls_total"):  # fmt: skip
        assert names.metric(name) == name
    for name in (
        "training_run_state",  # renamed
        "training_errors",  # a counter without the _total it is exposed with
        "training_job_ack_seconds",  # a histogram family, not a series
        "gpu_utilization_ratio_bucket",  # a gauge has no buckets
    ):
        with pytest.raises(names.UnknownMetric, match=name):
            names.metric(name)
    with pytest.raises(names.UnknownMetric, match=r"did you mean .*training_run_status"):
        names.metric("training_run_state")


def test_a_board_reading_a_metric_runwatch_no_longer_makes_fails_to_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for gone in ("training_run_status", "gpu_info", "router_flow_step_seconds_bucket"):
        monkeypatch.setattr(names, "exposed", lambda gone=gone: runwatch_series() - {gone})
        with pytest.raises(names.UnknownMetric, match=gone):
            build.render()


def test_every_name_the_boards_query_comes_through_the_helper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Built with a helper that marks each name it answers (``checked:<name>``, one PromQL
    identifier), every name in every query of every board is marked: none is free text."""

    def marked(name: str) -> str:
        return f"checked:{names.metric(name)}"

    patched = 0
    for module in BOARD_MODULES:
        if getattr(module, "metric", None) is names.metric:
            monkeypatch.setattr(module, "metric", marked)
            patched += 1
    assert patched >= 5
    expressions: dict[str, str] = {}
    for name, text in build.render().items():
        expressions |= board_expressions(name, json.loads(text))
    assert len(expressions) >= 80
    read = {(where, name) for where, expr in expressions.items() for name in metric_names(expr)}
    assert read
    assert sorted((where, name) for where, name in read if not name.startswith("checked:")) == []
