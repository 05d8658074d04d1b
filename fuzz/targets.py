"""Byte-level fuzzing harnesses (atheris, coverage-guided) for every parser runwatch feeds
untrusted bytes to. Each target raises only when an invariant breaks: an exception other
than the documented refusal, a refusal with an unknown reason, a collection that had to
leave something out.

    python fuzz/targets.py TARGET [libFuzzer flags] [CORPUS_DIR ...]

``scripts/fuzz`` runs every target for a while; a crash file it finds is kept under
``fuzz/findings/<target>/`` and replayed by ``tests/integration/test_fuzz.py`` from then on.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from exporter.core.events import REJECT_REASONS, Rejected, parse_lines
from exporter.pipeline import Pipeline

_TMP = Path(tempfile.mkdtemp(prefix="runwatch-fuzz-"))


def _rendered_whole(pipeline: Pipeline) -> None:
    from exporter.telemetry.exposition import Exposition

    Exposition(pipeline).render()
    assert not +pipeline.stats.render_errors, dict(+pipeline.stats.render_errors)


def event_lines(data: bytes) -> None:
    """Lines of an event file: each parses to an event or a known refusal, and whatever
    the reducer accepted renders whole."""
    lines = data.split(b"\n")
    parsed = parse_lines(lines, 4096)
    assert len(parsed) == len(lines)
    for item in parsed:
        reason = getattr(item, "reason", None)
        assert reason is None or reason in REJECT_REASONS, reason
    pipeline = Pipeline()
    pipeline.apply_parsed(parsed, "jsonl")
    assert not pipeline.stats.rejected[("jsonl", "processing_failed")]
    _rendered_whole(pipeline)


def post_body(data: bytes) -> None:
    """A POST /v1/events body: every item is accepted or refused, none lost."""
    from exporter.sources.http import ingest_body, split_body

    pipeline = Pipeline()
    result = ingest_body(data, pipeline)
    assert result.accepted + result.rejected == len(split_body(data))
    assert all(r["reason"] in REJECT_REASONS for r in result.rejections)
    assert not pipeline.stats.rejected[("http", "processing_failed")]
    _rendered_whole(pipeline)


def pid_file(data: bytes) -> None:
    from exporter.sources.pidfile import parse_pid_file, process_alive

    try:
        record = parse_pid_file(data)
    except Rejected as rejected:
        assert rejected.reason == "pid_file_invalid"
        return
    assert record.pid > 1 and record.run_id
    process_alive(record)  # whatever pid it names


def state_file(data: bytes) -> None:
    from exporter.sources.files.jsonl import CursorStore

    path = _TMP / "state.json"
    path.write_bytes(data)
    CursorStore(path).load()


@functools.cache
def _builtin_mapping():  # type: ignore[no-untyped-def]
    from exporter.sources.files.router_mapping import load_mapping

    return load_mapping(None)


def router_lines(data: bytes) -> None:
    from exporter.core.router.reducer import RouterState
    from exporter.sources.peers.router import decode_lines

    pipeline = Pipeline()
    pipeline.router = RouterState(_builtin_mapping())
    pipeline.ingest_router(decode_lines(data.split(b"\n")), "router", 1_700_000_000.0)
    assert not pipeline.stats.rejected[("router", "processing_failed")]
    _rendered_whole(pipeline)


def mapping(data: bytes) -> None:
    from exporter.core.router.mapping import MappingError, parse_mapping

    with contextlib.suppress(MappingError):
        parse_mapping(data.decode("utf-8", "replace"), "fuzzed.yaml")


def websocket_frames(data: bytes) -> None:
    """Frames of the bridge's event bus and of the backend's /ws."""
    from exporter.pipeline.self_stats import Stats
    from exporter.sources.peers.backend import BackendEvents
    from exporter.sources.peers.bridge import BusEvents

    BusEvents(Stats(), lambda stage, at: None, lambda *event: None)(data)
    pipeline = Pipeline()
    events = BackendEvents(pipeline)
    for frame in data.split(b"\n"):
        events(frame)
    _rendered_whole(pipeline)


TARGETS: dict[str, Callable[[bytes], None]] = {
    target.__name__: target
    for target in (event_lines, post_body, pid_file, state_file, router_lines, mapping,
                   websocket_frames)
}  # fmt: skip


def main() -> None:
    import atheris

    name, *flags = sys.argv[1:]
    target = TARGETS[name]
    target(b"")  # load what the target uses, so that instrumenting covers it
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *flags], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
