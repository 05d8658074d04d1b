"""The event log, in-process: bus events as lines in the engine stage's span, router
events as lines with their category, a crash seen in the PID file as an error line, and any
bus or router message as one bounded line. The log records on the wire, decoded from
``runwatch replay``'s export, are tested in tests/e2e/test_event_log.py."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core import event_log
from exporter.core.events import validate
from exporter.core.outputs import LogLine
from exporter.core.state import ProcessObservation, State
from exporter.pipeline import Pipeline
from tests.pipelines import Capture, router_lines
from tests.support import T0


def test_bus_events_are_lines_in_the_engine_stage_span() -> None:
    pipeline, capture = Pipeline(), Capture()
    pipeline.add_sink(capture, logs=True)
    pipeline.trading.observe_stage("http://bridge", "SIGNALS", T0)
    pipeline.trading.log_bus_event("http://bridge", "STAGE_CHANGE", {"new_stage": "SIGNALS"}, T0)
    pipeline.trading.log_bus_event("http://bridge", "RISK_ERROR", {"message": "limit hit"}, T0 + 1)
    lines = [o for o in capture.outputs if isinstance(o, LogLine)]
    assert [(line.severity, line.body) for line in lines] == [
        ("INFO", "STAGE_CHANGE new_stage=SIGNALS"), ("ERROR", "RISK_ERROR limit hit")]  # fmt: skip
    assert all(line.span is not None and line.span.name == "SIGNALS" for line in lines)
    assert lines[1].attributes == {"event_type": "RISK_ERROR", "trading.engine": "http://bridge",
                                   "trading.stage": "SIGNALS"}  # fmt: skip


def test_router_events_are_lines_with_their_category() -> None:
    (line,) = router_lines([{"event_type": "TRAINING_FAILED", "config": "c1", "error": "oom"}])
    assert line.severity == "ERROR" and line.span is None
    assert line.body.startswith("[") and "TRAINING_FAILED" in line.body and "error=oom" in line.body
    assert line.attributes["event_type"] == "TRAINING_FAILED"


def test_a_crash_seen_in_the_pid_file_is_an_error_line() -> None:
    state = State()
    state.logging = True
    state.apply(validate({"event_type": "run_start", "run_id": "r", "timestamp": T0}))
    out = state.observe_process(ProcessObservation("r", False, T0, T0 + 5))
    (line,) = [o for o in out if isinstance(o, LogLine)]
    assert (line.severity, line.body) == ("ERROR", "run crashed: process exited without "
                                          "run_complete")  # fmt: skip
    assert line.span is not None and line.span.kind == "run" and line.timestamp == T0 + 5


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.dictionaries(st.text(max_size=12), JSON, max_size=12))
def test_any_bus_or_router_message_makes_one_bounded_line(kind: str, data: dict) -> None:
    """Bus and router messages are untrusted JSON: any of them is one line, never a crash."""
    for severity, body in (event_log.bus_line(kind, data),
                           event_log.router_line(kind, "category", data)):  # fmt: skip
        assert severity in ("INFO", "WARN", "ERROR")
        assert isinstance(body, str) and len(body) <= event_log.MAX_LINE_CHARS
