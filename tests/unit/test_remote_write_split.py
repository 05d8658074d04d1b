"""How remote write keeps a refused sample from costing its request's others: old samples
apart, refused requests split by series, within a bound of requests a batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import snappy

from exporter.pipeline.self_stats import Stats
from exporter.telemetry.prompb import WriteRequest
from exporter.telemetry.remote_write import (
    MAX_REQUESTS_PER_BATCH,
    OLD_SAMPLE_MS,
    RemoteWriteOutput,
    RemoteWriteSettings,
)
from exporter.telemetry.step_history import RunClock

Answer = Callable[[set[str]], tuple[int, str]]  # the run ids of a request -> status, body


@pytest.fixture
def output() -> Iterator[Callable[[Answer], tuple[RemoteWriteOutput, list[set[str]]]]]:
    made: list[RemoteWriteOutput] = []

    def make(answer: Answer) -> tuple[RemoteWriteOutput, list[set[str]]]:
        requests: list[set[str]] = []

        def handle(request: httpx.Request) -> httpx.Response:
            decoded = WriteRequest.FromString(snappy.decompress(request.content))
            runs = {label.value for series in decoded.timeseries for label in series.labels
                    if label.name == "run_id"}  # fmt: skip
            requests.append(runs)
            status, body = answer(runs)
            return httpx.Response(status, text=body)

        sink = RemoteWriteOutput(RemoteWriteSettings("http://receiver/api/v1/write", "j", "i"),
                                 Stats())  # fmt: skip
        sink._client.close()
        sink._client = httpx.Client(transport=httpx.MockTransport(handle))
        made.append(sink)
        return sink, requests

    yield make
    for sink in made:
        sink.close(1)


def outcome(outcomes: list) -> dict[str | None, set[str]]:
    """The runs of the samples by what became of them."""
    by: dict[str | None, set[str]] = {}
    for lost, samples in outcomes:
        by.setdefault(lost, set()).update(run_id for run_id, *_ in samples)
    return by


def test_a_refused_series_is_isolated_and_the_others_stored(output) -> None:
    sink, requests = output(lambda runs: (400, "out of order sample") if "bad" in runs
                            else (200, ""))  # fmt: skip
    now = round(time.time() * 1000)
    batch = [(f"run{i}", "loss", now, 1.0) for i in range(7)] + [("bad", "loss", now, 1.0)]
    assert outcome(sink._send(batch)) == {None: {f"run{i}" for i in range(7)},
                                          "out_of_order": {"bad"}}  # fmt: skip
    assert len(requests) <= 1 + 2 * 3  # a halving per level down to the one series


def test_old_samples_go_apart_and_are_not_split(output) -> None:
    sink, requests = output(lambda runs: (400, "out of bounds") if runs & {"old1", "old2"}
                            else (200, ""))  # fmt: skip
    now = round(time.time() * 1000)
    old = now - OLD_SAMPLE_MS - 60_000
    batch = [("old1", "loss", old, 1.0), ("current", "loss", now, 1.0), ("old2", "loss", old, 1)]
    assert outcome(sink._send(batch)) == {None: {"current"}, "out_of_bounds": {"old1", "old2"}}
    assert requests == [{"old1", "old2"}, {"current"}]  # the old first: a series stays in order


def test_a_batch_refused_whole_stops_splitting_at_the_bound(output) -> None:
    sink, requests = output(lambda runs: (400, "out of order sample"))
    now = round(time.time() * 1000)
    batch = [(f"run{i}", "loss", now, 1.0) for i in range(500)]
    assert outcome(sink._send(batch)) == {"out_of_order": {f"run{i}" for i in range(500)}}
    assert len(requests) <= MAX_REQUESTS_PER_BATCH


def test_another_refusal_is_not_split(output) -> None:
    sink, requests = output(lambda runs: (400, "bad snappy"))
    now = round(time.time() * 1000)
    batch = [("a", "loss", now, 1.0), ("b", "loss", now, 1.0)]
    assert outcome(sink._send(batch)) == {"rejected": {"a", "b"}}
    assert len(requests) == 1


def test_steps_of_one_millisecond_are_stamped_apart_in_order_and_runs_apart() -> None:
    clock = RunClock()
    assert [clock.stamp("a", 1000) for _ in range(3)] == [1000, 1001, 1002]
    assert clock.stamp("b", 1000) == 1000  # another run has its own clock
    assert clock.stamp("a", 999) == 1003  # never before the run's last
    assert clock.stamp("a", 5000) == 5000
