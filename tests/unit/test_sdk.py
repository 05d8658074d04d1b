"""The training-script SDK in-process: framework callbacks on ranks other than zero, the
single numbers framework metrics keep, numpy and tensor-like values, and a file that cannot
be written. The SDK with runwatch and in real processes: tests/e2e/test_sdk.py and
tests/e2e/test_sdk_seed.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from runwatch_sdk import FileTransport, TrainingMonitor


def test_framework_callbacks_report_nothing_on_ranks_other_than_zero(tmp_path: Path) -> None:
    from runwatch_sdk.reporter import RunReporter

    events = tmp_path / "events.jsonl"
    given = TrainingMonitor("given", transport=FileTransport(events))
    for monitor in (None, given):
        reporter = RunReporter(FileTransport(events), None, monitor)
        reporter.start("fit", {"lr": 0.1}, rank_zero=False)
        reporter.stage("training")
        reporter.metrics({"loss": 1.0}, step=1)
        reporter.checkpoint(tmp_path / "ckpt", {}, step=1)
        reporter.finish(RuntimeError("rank 1 died"))
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [line["event_type"] for line in lines] == ["run_start"]  # the user's own monitor
    given.end()  # the user's to end, as rank 0 would


def test_framework_metrics_keep_only_single_numbers() -> None:
    from runwatch_sdk.reporter import scalars

    class OneElement:  # the shape of a 0-d tensor or numpy scalar
        def item(self) -> float:
            return 0.5

    class ManyElements:  # torch raises RuntimeError, numpy ValueError
        def item(self) -> float:
            raise ValueError("can only convert an array of size 1")

    values = {"loss": OneElement(), "hist": ManyElements(), "step": 3, "flag": True,
              "name": "x", "lr": 1e-3}  # fmt: skip
    assert scalars(values) == {"loss": 0.5, "step": 3.0, "lr": 1e-3}


def test_a_file_that_cannot_be_written_fails_loudly_once_and_counts(tmp_path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    transport = FileTransport(blocker / "events.jsonl")  # a folder inside a file: impossible
    monitor = TrainingMonitor("x", transport=transport)
    for step in range(9):
        monitor.log_metrics({"loss": 1.0}, step)
    monitor.end()
    assert transport.dropped == 11  # run_start, 9 updates, run_complete
    warnings = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1
    assert any("11 events could not be written" in r.getMessage() for r in caplog.records)


def test_numpy_and_tensor_like_values_are_numbers() -> None:
    from runwatch_sdk.values import count, encode, scalars

    class Tensor0d:  # the shape of a 0-d torch tensor
        def item(self) -> float:
            return 0.25

    values = {"a": np.float32(0.5), "b": np.int64(3), "c": np.array(2.0), "d": Tensor0d(),
              "e": np.array([1, 2]), "f": "text", "g": True, "h": np.bool_(True)}  # fmt: skip
    assert scalars(values) == {"a": 0.5, "b": 3.0, "c": 2.0, "d": 0.25}
    assert count(np.int64(7)) == 7 and count(7.0) == 7 and count(-1) is None
    assert count(np.float64(7.5)) is None and count("7") is None
    line = json.loads(encode({"step": np.int64(7), "x": np.float32(1.5), "y": float("-inf")}))
    assert line == {"step": 7, "x": 1.5, "y": "-Infinity"}
