"""The event format: what is accepted, and the reason for each rejection."""

from __future__ import annotations

import json
import math
from datetime import datetime
from importlib import resources

import jsonschema
import orjson
import pytest

from exporter.core.events import (
    REJECT_REASONS,
    CustomEvent,
    MetricUpdate,
    Progress,
    Rejected,
    RunComplete,
    StageChange,
    parse_line,
    validate,
)
from exporter.core.schema import build_schema, render_schema
from tests.support import ROOT, event


def test_seed_000_progress_line_with_iso_timestamp_and_extra_fields() -> None:
    line = (
        b'{"event_type": "progress", "run_id": "intelligent_output_20260121_133213_64987a2d",'
        b' "timestamp": "2026-01-21T19:32:13.024320+00:00", "stage": "ranking",'
        b' "progress_pct": 12.5, "current_target": "t1", "targets_complete": 1,'
        b' "targets_total": 8, "message": "Evaluating t1", "unknown_field": {"x": [1]}}'
    )
    parsed = parse_line(line)
    assert isinstance(parsed, Progress)
    assert parsed.timestamp == pytest.approx(1769023933.02432)
    assert (parsed.stage, parsed.progress_pct, parsed.targets_total) == ("ranking", 12.5, 8)


def test_epoch_seconds_and_z_suffix_are_the_same_instant() -> None:
    a = parse_line(orjson.dumps(event("run_start", ts=1769023933.5)))
    b = parse_line(orjson.dumps({**event("run_start"), "timestamp": "2026-01-21T19:32:13.500000Z"}))
    assert a.timestamp == b.timestamp == 1769023933.5


def test_stage_change_uses_new_stage_and_falls_back_to_stage() -> None:
    new = parse_line(orjson.dumps(event("stage_change", new_stage="training", stage="x")))
    fallback = parse_line(orjson.dumps(event("stage_change", stage="training")))
    assert isinstance(new, StageChange) and new.new_stage == "training"
    assert fallback.new_stage == "training"


def test_statuses_are_normalised_case_insensitively() -> None:
    parsed = parse_line(orjson.dumps(event("run_complete", status="SUCCESS")))
    assert isinstance(parsed, RunComplete) and parsed.status == "completed"


def test_nulls_count_as_absent() -> None:
    parsed = parse_line(
        orjson.dumps(event("metric_update", metrics={"loss": 1}, step=None, extra=None))
    )
    assert isinstance(parsed, MetricUpdate) and parsed.step is None
    assert parsed.metrics == {"loss": 1.0}


def test_validate_takes_decoded_values_like_parse_line() -> None:
    value = event("progress", stage="s", progress_pct=50)
    assert validate(value).timestamp == parse_line(orjson.dumps(value)).timestamp


CASES = [
    (b"\xff\xfe{garbage", "invalid_utf8"),
    (b'{"event_type": "progress", "run_id": "r", "timest', "invalid_json"),
    (b"not json at all", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (b'"a string"', "not_an_object"),
    (orjson.dumps({"run_id": "r", "timestamp": 1}), "missing_field"),
    (orjson.dumps(event("progress", progress_pct=5)), "missing_field"),
    (orjson.dumps(event("stage_change")), "missing_field"),
    (orjson.dumps(event("progress", stage=5, progress_pct=5)), "wrong_type"),
    (orjson.dumps(event("progress", stage="s", progress_pct="5")), "wrong_type"),
    (orjson.dumps(event("metric_update", metrics={"loss": True})), "wrong_type"),
    (orjson.dumps(event("metric_update", metrics=[1])), "wrong_type"),
    (orjson.dumps(event("error", error_message="x", recoverable="yes")), "wrong_type"),
    (orjson.dumps(event("progress", stage="s", progress_pct=250)), "invalid_value"),
    (orjson.dumps(event("progress", stage="s", progress_pct=5, targets_total=-1)),
     "invalid_value"),
    (orjson.dumps(event("progress", stage="", progress_pct=5)), "invalid_value"),
    (orjson.dumps(event("run_complete", status="exploded")), "invalid_value"),
    (orjson.dumps(event("progress", run_id="r" * 300, stage="s", progress_pct=5)),
     "value_too_long"),
    # NaN where no metric value is expected (metric values may be NaN: see below)
    (json.dumps(event("progress", stage="s", progress_pct=float("nan"))).encode(),
     "non_finite_number"),
    (json.dumps(event("metric_update", metrics={}, step=float("nan"))).encode(),
     "non_finite_number"),
    (b'{"event_type": "metric_update", "run_id": "r", "timestamp": 1, "metrics": '
     b'{"loss": 1e999}}', "non_finite_number"),
    (orjson.dumps({**event("run_start"), "timestamp": "yesterday"}), "invalid_timestamp"),
    (orjson.dumps({**event("run_start"), "timestamp": -5}), "invalid_timestamp"),
    (orjson.dumps({**event("run_start"), "timestamp": 1e300}), "invalid_timestamp"),  # no OTLP ns
    (orjson.dumps({**event("run_start"), "timestamp": "9999-12-31T00:00:00Z"}),
     "invalid_timestamp"),
    (orjson.dumps({**event("run_start"), "timestamp": [1]}), "invalid_timestamp"),
    (orjson.dumps({**event("launch_rockets"), "run_id": 5}), "wrong_type"),
    (orjson.dumps({**event("run_start"), "event_type": 7}), "unknown_event_type"),
    # a count past what a float sample carries exactly (2**53): once broke every scrape
    (orjson.dumps(event("metric_update", metrics={}, step=2**53 + 1)), "number_too_large"),
    (orjson.dumps(event("metric_update", metrics={})).replace(b"{}", b'{}, "step": ' +
     b"9" * 400), "number_too_large"),
    (json.dumps(event("progress", stage="s", progress_pct=5, targets_total=10**30)).encode(),
     "number_too_large"),
    (json.dumps(event("checkpoint_saved", checkpoint_id="c", step=2**64)).encode(),
     "number_too_large"),
    # text UTF-8 cannot encode: a lone surrogate escape, however the line is parsed
    (orjson.dumps(event("stage_change")).replace(b"}", b', "new_stage": "x\\ud800"}'),
     "invalid_utf8"),
    # nesting: past the parser's recursion limit, and a config deeper than 32 levels
    (orjson.dumps(event("run_start")).replace(b"}", b', "config": {"a": ' + b"[" * 2000 +
     b"]" * 2000 + b"}}"), "too_deeply_nested"),
    (orjson.dumps(event("run_start")).replace(b"}", b', "unknown": ' + b"[" * 5000 +
     b"]" * 5000 + b"}"), "too_deeply_nested"),
    (orjson.dumps(event("run_start")).replace(b"}", b', "config": {"a": ' + b"[" * 33 +
     b"]" * 33 + b"}}"), "too_deeply_nested"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "reason"), CASES)
def test_bad_lines_are_rejected_with_their_reason(line: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        parse_line(line)
    assert caught.value.reason == reason
    assert reason in REJECT_REASONS


@pytest.mark.parametrize(
    "line",
    [
        b'{"event_type": "metric_update", "run_id": "r", "timestamp": 1, '
        b'"metrics": {"loss": NaN, "lr": 0.1, "grad": Infinity, "gap": -Infinity}}',  # json's
        b'{"event_type": "metric_update", "run_id": "r", "timestamp": 1, '
        b'"metrics": {"loss": "NaN", "lr": 0.1, "grad": "Infinity", "gap": "-Infinity"}}',
    ],
)
def test_non_finite_metric_values_arrive_as_what_they_are(line: bytes) -> None:
    metrics = parse_line(line).metrics
    assert math.isnan(metrics["loss"]) and metrics["lr"] == 0.1
    assert metrics["grad"] == math.inf and metrics["gap"] == -math.inf


def test_an_unknown_event_type_is_kept_with_its_scalar_fields() -> None:
    line = orjson.dumps({**event("data_loaded", ts=5), "rows": 1200, "source": "s3",
                         "cached": True, "shape": [3, 4], "nested": {"a": 1}})  # fmt: skip
    parsed = parse_line(line)
    assert isinstance(parsed, CustomEvent) and parsed.type_name == "data_loaded"
    assert parsed.fields == {"rows": 1200.0, "source": "s3", "cached": True}
    assert parsed.run_id == "run_1" and parsed.timestamp == 5.0


def test_what_seed_000s_dashboard_accepts_is_left_for_the_pipeline_to_complete() -> None:
    naive = parse_line(orjson.dumps({**event("run_start"), "timestamp": "2026-01-21T19:32:13"}))
    assert naive.timestamp == datetime(2026, 1, 21, 19, 32, 13)  # no offset: the pipeline's
    bare = parse_line(b'{"event_type": "stage_change", "new_stage": "ranking"}')
    assert bare.run_id is None and bare.timestamp is None


def test_huge_but_finite_numbers_are_accepted() -> None:
    parsed = parse_line(orjson.dumps(event("metric_update", metrics={"x": 1e308}, step=2**53)))
    assert parsed.metrics["x"] == 1e308 and parsed.step == 2**53


def test_a_config_nested_32_levels_is_kept() -> None:
    config: dict = {}
    inner = config
    for _ in range(31):
        inner["a"] = {}
        inner = inner["a"]
    parsed = parse_line(orjson.dumps(event("run_start", config=config)))
    assert parsed.config == config


def test_shipped_schema_is_the_generated_one() -> None:
    shipped = resources.files("exporter.core").joinpath("events.schema.json").read_text()
    assert shipped == render_schema(), "run: runwatch schema > exporter/core/events.schema.json"


def test_schema_accepts_valid_events_and_refuses_broken_ones() -> None:
    validator = jsonschema.Draft202012Validator(build_schema())
    good = [
        event("progress", stage="ranking", progress_pct=5, whatever=1),
        {**event("run_complete", status="completed"), "timestamp": "2026-01-21T19:32:13Z"},
        event("metric_update", metrics={"loss": 0.5}, step=3),
        event("checkpoint_saved", checkpoint_id="c1", is_best=True),
        event("metric_update", metrics={"loss": "NaN"}),
        event("data_loaded", rows=5),  # a type runwatch does not know
        {"event_type": "stage_change", "new_stage": "ranking"},  # seed 000 lets these out
    ]
    for value in good:
        validator.validate(value)
    bad = [
        event("progress", stage="ranking"),
        event("metric_update", metrics={"loss": "high"}),
        {**event("run_complete"), "event_type": 7},
    ]
    for value in bad:
        assert not validator.is_valid(value), value


def test_the_event_format_page_carries_the_schema() -> None:
    page = (ROOT / "docs" / "events.md").read_text()
    assert "```json\n" + render_schema() + "```" in page
