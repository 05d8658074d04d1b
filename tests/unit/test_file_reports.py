"""Files that go wrong, in-process: the runwatch_file_* series are bounded, and every
refused line is logged or summed up while the log stays small. Missing paths and refused
lines through a real ``runwatch serve`` are in tests/e2e/test_file_reports.py."""

from __future__ import annotations

import logging
import re

from hypothesis import given
from hypothesis import strategies as st

from exporter.core.events import Refused
from exporter.pipeline.self_stats import MAX_FILE_SERIES, Stats
from exporter.sources.files.rejection_log import RejectionLog


def test_the_file_series_are_bounded() -> None:
    stats = Stats()
    for number in range(MAX_FILE_SERIES + 5):
        stats.files.update("jsonl", f"/runs/{number}.jsonl", 1, 10, 10, 10, 1.0)
    stats.files.update("jsonl", f"/runs/{MAX_FILE_SERIES + 1}.jsonl", 1, 10, 10, 10, 1.0)
    assert len(stats.files.snapshot()) == MAX_FILE_SERIES
    assert stats.series_dropped["max_file_series"] == 5  # each left-out file counted once
    stats.files.retain("jsonl", {"/runs/0.jsonl"})
    assert [key for key, _ in stats.files.snapshot()] == [("jsonl", "/runs/0.jsonl")]


REJECTIONS = st.lists(
    st.tuples(st.sampled_from(["a.jsonl", "b.jsonl"]),
              st.sampled_from(["invalid_json", "missing_field", "out_of_order"]),
              st.floats(0, 30)),  # seconds since the previous batch
    max_size=60,
)  # fmt: skip


@given(REJECTIONS)
def test_every_refusal_is_logged_or_summed_up_and_the_log_stays_small(batches) -> None:
    now = [0.0]
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("exporter.sources.files.jsonl")
    handler = Collect()
    logger.addHandler(handler)
    try:
        rejections = RejectionLog(interval=60.0, clock=lambda: now[0])
        for path, reason, pause in batches:
            now[0] += pause
            rejections.note(path, 1, [(0, Refused(reason, "why"))])
        now[0] += 61
        rejections.summarise()
    finally:
        logger.removeHandler(handler)
    firsts = [m for m in records if re.match(r"\S+ line \d+ refused \(", m)]
    summaries = [re.match(r"\S+: (\d+) more lines? refused \(", m) for m in records]
    summed = sum(int(found.group(1)) for found in summaries if found)
    assert len(firsts) == len({(path, reason) for path, reason, _ in batches})
    assert len(firsts) + summed == len(batches)  # nothing goes unsaid
    assert len(records) - len(firsts) <= 2 * (1 + sum(p for *_, p in batches) / 60 + 1)
