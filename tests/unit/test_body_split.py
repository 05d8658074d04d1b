"""A POSTed NDJSON body is cut into lines a segment at a time (so a 10 MB body never holds
the interpreter lock for one long split): the same lines as one split, wherever the
segments fall."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.pipeline import Pipeline
from exporter.sources import http


@given(st.binary(max_size=400).map(lambda b: b.replace(b"\x00", b"\n")),
       st.integers(min_value=1, max_value=50))  # fmt: skip
def test_segments_split_as_one_split_does(text: bytes, segment: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(http, "SPLIT_SEGMENT_BYTES", segment)
        lines, unusual = http._split_lines(text)
        assert lines == text.split(b"\n")
        marks = (b"\r", b"\n\n", b"\n ", b"\n\t", b"\n\x0b", b"\n\x0c")
        if any(mark in text for mark in marks) or text.startswith((b"\n", b" ", b"\t")):
            assert unusual  # a line to look at is never missed


def test_a_body_past_several_segments_keeps_every_event() -> None:
    body = b"\n".join(b'{"event_type":"progress","progress_pct":%d}' % i for i in range(50_000))
    assert len(body) > 3 * http.SPLIT_SEGMENT_BYTES
    assert http.split_body(body) == body.split(b"\n")
    assert http.split_body(body.replace(b"\n", b"\r\n")) == body.split(b"\n")
    assert http.split_body(body.replace(b"\n", b"\n \n")) == body.split(b"\n")


def test_a_pretty_printed_event_the_strict_decoder_refuses_is_one_event() -> None:
    """A NaN metric (the event format takes it) or a stray comma inside one indented
    object: one event, accepted or refused whole, not ten refused lines. NDJSON whose
    first line is cut still has its other lines applied."""
    event = {"event_type": "metric_update", "run_id": "r", "timestamp": 1.7e9, "step": 3,
             "metrics": {"loss": math.nan, "acc": 0.5}}  # fmt: skip
    body = json.dumps(event, indent=2).encode()
    pipeline = Pipeline()
    assert http.ingest_body(body, pipeline).accepted == 1
    assert math.isnan(pipeline.state.runs["r"].metrics["loss"])
    stray = http.ingest_body(body.replace(b'"acc": 0.5', b'"acc": 0.5,'), Pipeline())
    assert (stray.accepted, stray.rejected) == (0, 1)
    cut = b'{"event_type": "progress", "run_id": "r", "ti\n' + b"\n".join(
        json.dumps({"event_type": "progress", "run_id": "r", "stage": s, "progress_pct": 5})
        .encode() for s in ("a", "b")
    )  # fmt: skip
    result = http.ingest_body(cut, Pipeline())
    assert (result.accepted, result.rejected) == (2, 1)


@pytest.mark.parametrize("garbage", [b"\x00\n\x00", b"{\n\x00", b'{"a":\n1'])
def test_an_event_beside_garbage_lines_is_never_taken_for_part_of_one_value(garbage) -> None:
    """Lines that open nothing, or open what a later whole line does not belong to, are
    NDJSON's bad lines, refused one by one: the valid event among them is applied."""
    event = {"event_type": "progress", "run_id": "r", "stage": "s", "progress_pct": 5}
    valid = json.dumps(event).encode()
    result = http.ingest_body(garbage + b"\n" + valid, Pipeline())
    assert result.accepted == 1 and result.rejected == garbage.count(b"\n") + 1
