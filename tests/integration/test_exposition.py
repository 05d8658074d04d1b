"""/metrics as rendered from the catalogue: names, promtool lint, escaping, OTel name mapping."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.state import ProcessObservation
from exporter.pipeline import Pipeline
from exporter.pipeline.source_names import BRIDGE_SOURCE
from exporter.simulate.synthetic import synthetic_run
from exporter.sources.peers.bridge_contract import arms_from, positions_from
from exporter.sources.peers.samples import TradingSample
from exporter.telemetry.catalogue import documented_metrics
from exporter.telemetry.metric import Type, prometheus_name
from tests.pipelines import exposition
from tests.support import ROOT, event

ISSUE_NAMES = {
    "training_run_info", "training_run_status", "training_run_stage",
    "training_run_progress_ratio", "training_run_targets", "training_run_targets_completed",
    "training_run_start_timestamp_seconds", "training_run_last_event_timestamp_seconds",
    "training_run_duration_seconds", "training_stage_duration_seconds",
    "training_target_completions_total", "training_target_best_auc",
    "training_target_duration_seconds", "training_errors_total", "training_events_total",
    "training_metric", "training_step", "training_checkpoint_step", "training_checkpoint_best",
    "training_checkpoint_metric", "training_process_up", "runwatch_build_info",
    "runwatch_events_ingested_total", "runwatch_events_rejected_total",
    "runwatch_series_dropped_total",
}  # fmt: skip

DOCUMENTED = documented_metrics()  # the catalogue and the built-in router mapping's


def demo_pipeline() -> Pipeline:
    pipeline = Pipeline()
    lines = [
        orjson.dumps(e)
        for e in synthetic_run("run_a", 1.7e9, targets=3, steps=40, checkpoint_every=10)
    ]
    pipeline.ingest_lines([*lines, b"garbage"], "jsonl")
    pipeline.observe_process(ProcessObservation("run_a", True, 1.7e9, 1.7e9 + 1))
    return pipeline


def test_every_metric_the_issue_names_is_exposed_with_data() -> None:
    families = {f.name: f for f in text_string_to_metric_families(exposition(demo_pipeline()))}
    exposed = {f"{n}_total" if families[n].type == "counter" else n for n in families}
    assert exposed >= ISSUE_NAMES
    for name in ISSUE_NAMES:
        base = name.removesuffix("_total") if name.endswith("_total") else name
        assert families[base].samples, f"{name} has no samples"


def test_values_match_the_run() -> None:
    text = exposition(demo_pipeline())
    assert 'training_run_status{run_id="run_a",status="completed"} 1.0' in text
    assert 'training_run_stage{run_id="run_a",stage="completed"} 1.0' in text
    assert 'training_run_stage{run_id="run_a",stage="training"} 0.0' in text
    assert 'training_checkpoint_best{checkpoint_id="ckpt_000040",run_id="run_a"} 1.0' in text
    assert 'training_step{run_id="run_a"} 40.0' in text
    assert 'training_process_up{run_id="run_a"} 1.0' in text
    assert (
        'training_errors_total{error_type="DataWarning",recoverable="true",run_id="run_a"} 1.0'
        in text
    )
    assert 'runwatch_events_rejected_total{reason="invalid_json",source="jsonl"} 1.0' in text


def test_promtool_check_metrics_prints_nothing(bin_dir: Path) -> None:
    pipeline = demo_pipeline()
    nasty = 'run "quoted" \\ back\nslash ünïcødé \x01'
    line = orjson.dumps(event("metric_update", run_id=nasty, metrics={nasty: 1}))
    assert pipeline.ingest_lines([line], "http") == []
    result = subprocess.run(
        [bin_dir / "promtool", "check", "metrics"],
        input=exposition(pipeline).encode(),
        capture_output=True,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_names_given_twice_or_cut_alike_make_one_series_each(bin_dir: Path) -> None:
    """Two lots of one symbol, an arm listed twice, config keys alike in their first 256
    characters: each is one series (lots summed), and promtool finds nothing."""
    pipeline = Pipeline()
    long = "k" * 300
    config = {long + "1": 1, long + "2": 2}
    assert pipeline.ingest_lines([orjson.dumps(event("run_start", config=config))], "http") == []
    lots = [{"symbol": "AAPL", "quantity": q, "current_price": p} for q, p in ((1, 10), (2, 11))]
    arms = [{"arm": "momentum", "pulls": 3, "weight": 0.2}, {"arm": "momentum", "pulls": 4}]
    sample = TradingSample(None, None, (), (), tuple(positions_from(lots).positions), None, None,
                           tuple(arms_from(arms).arms), None)  # fmt: skip
    pipeline.readings.register(BRIDGE_SOURCE, 1.0)
    pipeline.readings.store(BRIDGE_SOURCE, sample, 0.01, time.time())
    text = exposition(pipeline)
    result = subprocess.run(
        [bin_dir / "promtool", "check", "metrics"], input=text.encode(), capture_output=True
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert 'trading_position_quantity{symbol="AAPL"} 3.0' in text
    assert 'trading_position_price{symbol="AAPL"} 11.0' in text
    assert 'trading_cils_arm_pulls{arm="momentum"} 7.0' in text
    assert 'trading_cils_arm_weight{arm="momentum"} 0.2' in text
    assert text.count("training_run_config_info{") == 1


def test_label_values_survive_any_bytes_through_the_exposition() -> None:
    pipeline = Pipeline()
    nasty = 'run "quoted" \\ back\nslash ünïcødé \x01'
    line = orjson.dumps(event("metric_update", run_id=nasty, metrics={"k": 1}))
    assert pipeline.ingest_lines([line], "jsonl") == []
    families = {f.name: f for f in text_string_to_metric_families(exposition(pipeline))}
    assert families["training_metric"].samples[0].labels == {"run_id": nasty, "key": "k"}


def test_prometheus_naming_translates_to_exactly_the_scraped_names() -> None:
    for metric in DOCUMENTED:
        otel_name = metric.otel_name_for("prometheus")
        assert prometheus_name(otel_name, metric.unit, metric.type) == metric.name
        if metric.unit == "1":  # translators differ on unit-1 gauges: keep "ratio" in the name
            assert metric.type is Type.GAUGE and "ratio" in otel_name
    assert {m.name for m in DOCUMENTED} >= ISSUE_NAMES


def test_semconv_naming_uses_the_conventions_and_merges_only_alike_families() -> None:
    groups: dict[str, list] = {}
    for metric in DOCUMENTED:
        groups.setdefault(metric.otel_name_for("semconv"), []).append(metric)
    assert {
        "hw.gpu.utilization", "hw.gpu.memory.usage", "hw.gpu.memory.limit", "hw.temperature",
        "hw.power", "hw.energy", "hw.errors", "system.cpu.utilization", "system.memory.usage",
        "system.network.io", "system.disk.io", "process.cpu.time", "process.memory.usage",
        "process.thread.count", "process.unix.file_descriptor.count",
    } <= set(groups)  # fmt: skip
    for name, members in groups.items():
        assert len({(m.type, m.unit) for m in members}) == 1, name
        if len(members) > 1:  # told apart by their attributes (hw.gpu.task, error.type, xid)
            attributes = {tuple(sorted(m.otel_attributes(("x",) * len(m.labels), "semconv")
                                       .items())) for m in members}  # fmt: skip
            assert len(attributes) == len(members), name
    temperature = next(m for m in DOCUMENTED if m.name == "gpu_temperature_celsius")
    assert temperature.otel_attributes(("0", "GPU-1", ""), "semconv") == {
        "gpu": "0", "uuid": "GPU-1", "gpu_instance": "", "hw.id": "GPU-1", "hw.type": "gpu",
    }  # fmt: skip
    assert temperature.otel_attributes(("0", "GPU-1", ""), "prometheus") == {
        "gpu": "0", "uuid": "GPU-1", "gpu_instance": "",
    }  # fmt: skip


def test_the_documented_catalogue_matches_the_code() -> None:
    page = (ROOT / "docs" / "metrics.md").read_text()
    for metric in DOCUMENTED:
        row = (
            f"| `{metric.name}` | {metric.type.value} | {', '.join(metric.prometheus_labels)} | "
            f"{metric.help} | `{metric.otel_name}` ({metric.unit or '—'}) |"
        )
        assert row in page, f"docs/metrics.md catalogue row out of date: {row}"
