"""/metrics as the Exposition writes it: byte for byte what prometheus-client's own encoders
write for the same families (every format and escaping a scraper can ask for, hostile
label values included), each run rendered once until it changes, and gzip that decodes
to the same text."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from exporter.core.state import Limits
from exporter.pipeline import Pipeline
from exporter.simulate.synthetic import synthetic_run
from exporter.telemetry import run_cache
from exporter.telemetry.catalogue import metrics_for
from exporter.telemetry.exposition import STITCH_ABOVE, Exposition
from exporter.telemetry.metric import RenderErrors, Type, rendered_samples
from tests.support import event, wait_for

ACCEPTS = (
    "",  # Prometheus text 0.0.4
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=1.0.0",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=2.0.0;escaping=allow-utf-8",
)  # what Prometheus 2 and 3 send, and the escapings prometheus-client knows. Not
# OpenMetrics with escaping=values: prometheus-client 0.26 writes the HELP line's name as is
# but escapes each sample's (U__training__run__info), so its samples name no family; the
# Exposition writes both as is, as the escaping scheme says a legal name stays.


def test_openmetrics_with_values_escaping_names_samples_as_their_family() -> None:
    body = (
        Exposition(busy_pipeline(1))
        .render("application/openmetrics-text;version=1.0.0;escaping=values")[0]
        .decode()
    )
    assert "U__" not in body
    assert "\ntraining_run_info{" in body and "# TYPE training_run_info gauge" in body


class ReferenceCollector(Collector):
    """The catalogue as prometheus-client's own families, from one snapshot."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._metrics = metrics_for(pipeline)
        self._failed = RenderErrors(pipeline.stats, self._metrics)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        view = self._pipeline.snapshot()
        for metric in self._metrics:
            labels = metric.prometheus_labels
            samples = rendered_samples(metric, view, self._failed)
            if metric.type is Type.HISTOGRAM:
                family = HistogramMetricFamily(metric.name, metric.help, labels=labels)
                for values, hist in samples:
                    running, buckets = 0, []
                    for bound, count in zip((*hist.bounds, float("inf")), hist.counts,
                                            strict=True):  # fmt: skip
                        running += count
                        le = "+Inf" if bound == float("inf") else repr(float(bound))
                        buckets.append((le, running))
                    family.add_metric(list(values), buckets, hist.total)
                yield family
                continue
            kind = CounterMetricFamily if metric.type is Type.COUNTER else GaugeMetricFamily
            family = kind(metric.name, metric.help, labels=labels)
            for values, value in samples:
                family.add_metric(list(values), value)
            yield family


def reference(pipeline: Pipeline, accept: str) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReferenceCollector(pipeline))
    encoder, _ = choose_encoder(accept)
    return encoder(registry)


def ingest(pipeline: Pipeline, *events: dict) -> None:
    assert pipeline.ingest_lines([orjson.dumps(e) for e in events], "jsonl") == []


def busy_pipeline(runs: int = 3) -> Pipeline:
    pipeline = Pipeline(Limits(max_runs=500))
    for number in range(runs):
        run = [orjson.dumps(e) for e in synthetic_run(f"run_{number}", 1.7e9 + 1000 * number,
                                                       targets=3, steps=30, seed=number,
                                                       checkpoint_every=10)]  # fmt: skip
        pipeline.ingest_lines(run, "jsonl")
    return pipeline


HOSTILE = 'q"uote\\back\nslash ü \u2028 {x="y"} # EOF'


def test_the_text_is_prometheus_clients_in_every_format_and_escaping() -> None:
    pipeline = busy_pipeline()
    ingest(pipeline, event("run_start", HOSTILE, 1.76e9, run_name=HOSTILE,
                           config={HOSTILE: HOSTILE, "nested": {"a": [1, 2]}}),
           event("metric_update", HOSTILE, 1.76e9 + 1, step=3, metrics={HOSTILE: 1.5}),
           event("checkpoint_saved", HOSTILE, 1.76e9 + 2, checkpoint_id=HOSTILE,
                 metrics={"loss": "Infinity"}))  # fmt: skip
    exposition = Exposition(pipeline)
    for accept in ACCEPTS:
        body, content_type = exposition.render(accept)
        assert body == reference(pipeline, accept), accept
        assert content_type == choose_encoder(accept)[1]
    ingest(pipeline, event("metric_update", "run_1", 1.77e9, step=99, metrics={"loss": 0.25}))
    for accept in ACCEPTS:  # the kept text of the others, the changed run's anew
        assert exposition.render(accept)[0] == reference(pipeline, accept), accept


@given(st.lists(st.tuples(st.text(min_size=1, max_size=12), st.text(max_size=12),
                          st.floats(allow_nan=False)), min_size=1, max_size=6))  # fmt: skip
def test_any_run_ids_keys_and_values_render_as_prometheus_client_does(
    logged: list[tuple[str, str, float]],
) -> None:
    pipeline = Pipeline()
    exposition = Exposition(pipeline)
    for number, (run_id, key, value) in enumerate(logged):
        pipeline.ingest_lines([orjson.dumps(event("metric_update", run_id, 1.7e9 + number,
                                                  step=number, metrics={key or "k": value}))],
                              "jsonl")  # fmt: skip
        for accept in ("", "application/openmetrics-text;version=1.0.0"):
            assert exposition.render(accept)[0] == reference(pipeline, accept)


def test_a_run_is_rendered_again_only_when_it_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = busy_pipeline(runs=100)
    rendered: list[str] = []
    run_lines = Exposition._run_lines

    def counting(self: Exposition, families: list, run: object) -> tuple[bytes, ...]:
        rendered.append(run.run_id)  # type: ignore[attr-defined]
        return run_lines(self, families, run)  # type: ignore[arg-type]

    monkeypatch.setattr(Exposition, "_run_lines", counting)
    exposition = Exposition(pipeline)
    exposition.render()
    assert len(rendered) == 100
    rendered.clear()
    exposition.render()
    exposition.render("", gzip=True)
    assert rendered == []
    ingest(pipeline, event("metric_update", "run_42", 1.77e9, step=7, metrics={"loss": 1.0}))
    exposition.render("", gzip=True)
    assert rendered == ["run_42"]
    rendered.clear()
    exposition.render("application/openmetrics-text;version=1.0.0")  # another format's own
    assert len(rendered) == 100


def test_gzip_is_one_stream_of_the_plain_text_across_changes() -> None:
    """Big enough to be joined from pieces: those not compressed yet go out stored, and
    the background deflater compresses them for the next responses."""
    pipeline = busy_pipeline(runs=3 * run_cache.RUNS_PER_BLOCK // 2)
    exposition = Exposition(pipeline)
    for step in range(3):
        for accept in ("", "application/openmetrics-text;version=1.0.0"):
            zipped = exposition.render(accept, gzip=True)[0]
            plain = exposition.render(accept)[0]
            assert len(plain) >= STITCH_ABOVE
            assert one_gzip_member(zipped) == plain == gzip.decompress(zipped)

            def compressed(accept: str = accept, plain: bytes = plain) -> bool:
                zipped = exposition.render(accept, gzip=True)[0]
                return one_gzip_member(zipped) == plain and len(zipped) < len(plain) / 5

            wait_for(compressed, what="the pieces compressed in the background")
        ingest(pipeline, event("metric_update", "run_0", 1.77e9 + step, metrics={"x": step}),
               event("run_start", f"new_{step}", 1.77e9 + step))  # fmt: skip


def one_gzip_member(zipped: bytes) -> bytes:
    """The text of a gzip stream of exactly one member, checked to its trailer (CRC and
    length)."""
    stream = zlib.decompressobj(wbits=31)
    plain = stream.decompress(zipped)
    assert stream.eof and stream.unused_data == b""
    return plain


def test_a_forgotten_run_leaves_the_text() -> None:
    pipeline = busy_pipeline(runs=2)
    exposition = Exposition(pipeline)
    assert b'run_id="run_0"' in exposition.render()[0]
    pipeline.state.limits = Limits(finished_run_retention=0)
    pipeline.expire_runs(1.78e9)  # the first sweep sees them finished, the second forgets
    assert pipeline.expire_runs(1.78e9) == 2
    body = exposition.render()[0]
    assert b'run_id="run_0"' not in body and b'run_id="run_1"' not in body
    assert body == reference(pipeline, "")


def test_a_snapshot_copies_only_the_runs_that_changed() -> None:
    pipeline = busy_pipeline(runs=3)
    first = pipeline.snapshot().state.runs
    ingest(pipeline, event("metric_update", "run_1", 1.77e9, step=5, metrics={"loss": 2.0}))
    second = pipeline.snapshot().state.runs
    assert second["run_0"] is first["run_0"] and second["run_2"] is first["run_2"]
    assert second["run_1"] is not first["run_1"]
    assert first["run_1"].metrics.get("loss") != 2.0 and second["run_1"].metrics["loss"] == 2.0
    assert list(second) == list(pipeline.state.runs)  # in the state's order


def test_a_forgotten_run_costs_its_own_block_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """At --max-runs (or retention) the oldest finished run goes: the blocks after it are
    found again by their first run, their kept text and compression reused."""
    pipeline = busy_pipeline(runs=4 * run_cache.RUNS_PER_BLOCK)
    pipeline.state.limits = Limits(max_runs=4 * run_cache.RUNS_PER_BLOCK)
    exposition = Exposition(pipeline)
    plain = exposition.render()[0]

    def compressed() -> bool:
        return len(exposition.render("", gzip=True)[0]) < len(plain) / 5

    wait_for(compressed, what="every block compressed")
    joined: list[int] = []
    join = exposition._formats[next(iter(exposition._formats))].runs._join
    monkeypatch.setattr(
        exposition._formats[next(iter(exposition._formats))].runs, "_join",
        lambda rows: joined.append(len(rows)) or join(rows),
    )  # fmt: skip
    ingest(pipeline, event("run_start", "one_more", 1.77e9))  # the oldest finished goes
    assert "run_0" not in pipeline.state.runs
    zipped = exposition.render("", gzip=True)[0]
    assert gzip.decompress(zipped) == exposition.render()[0] == reference(pipeline, "")
    assert len(zipped) < len(plain) / 2  # at once: the other blocks' compression kept
    assert sum(joined) < run_cache.RUNS_PER_BLOCK * 2  # the first block and the new run's
