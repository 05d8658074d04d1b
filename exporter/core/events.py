"""The runwatch event format: one msgspec Struct per event type, and the parser.

The Structs are the single source of truth: msgspec validates each line
against them in one C pass (types, bounds, required fields, RFC 3339
timestamps), and ``runwatch schema`` renders them as the JSON Schema shipped in
``exporter/core/events.schema.json``. Unknown extra fields are ignored; null
counts as absent; an event type runwatch does not know becomes a
:class:`CustomEvent` with its fields. Whatever is wrong raises :class:`Rejected`
with a reason from :data:`REJECT_REASONS`, which callers count in
``runwatch_events_rejected_total``.

What the training-events module's own dashboard accepts is accepted too, and left for the pipeline
to complete (see :data:`LENIENCIES`): a timestamp without a UTC offset stays a
naive ``datetime``, a missing timestamp or run id stays None.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, final, get_args

import msgspec
from msgspec import Meta

MAX_IDENTIFIER_CHARS = 256
"""Longest accepted run id, stage, target, metric key, checkpoint id or error type.

These become label values; a megabyte-long run id would be a megabyte-long series.
"""

REJECT_REASONS: tuple[str, ...] = (
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "line_too_long",
    "not_a_regular_file",
    "body_too_large",
    "body_incomplete",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "value_too_long",
    "non_finite_number",
    "invalid_timestamp",
    "unknown_event_type",
    "before_run_start",
    "out_of_order",
    "in_the_future",
    "pid_file_invalid",
    "too_deeply_nested",
    "number_too_large",
    "processing_failed",
)

STATUSES: tuple[str, ...] = (
    "running", "completed", "failed", "crashed", "interrupted", "ended",
)  # fmt: skip
"""``ended``: the run closed cleanly without saying how it went (the training-events format's
``close_training_events`` with no ``run_complete``); no alert fires on it."""
STATUS_ALIASES: dict[str, str] = {
    **{status: status for status in STATUSES},
    "started": "running",
    "resumed": "running",
    "complete": "completed",
    "success": "completed",
    "succeeded": "completed",
    "ok": "completed",
    "done": "completed",
    "failure": "failed",
    "error": "failed",
    "cancelled": "interrupted",
    "canceled": "interrupted",
    "aborted": "interrupted",
    "killed": "interrupted",
    "closed": "ended",
    "finished": "ended",
}
"""Run status spellings accepted (case-insensitive) and the status each one means."""


class Rejected(Exception):
    """An input that is skipped and counted; ``reason`` is one of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def as_refused(self) -> Refused:
        return Refused(self.reason, self.detail)


@final  # so that ``type(x) is Refused`` (cheaper than isinstance for a Struct) narrows
class Refused(msgspec.Struct, tag_field="event_type", tag="__refused__", gc=False):
    """A rejection as data: what a batch parser returns for a line it refused, in a form
    msgpack can carry between processes."""

    reason: str
    detail: str


MAX_EXACT_INTEGER = 2**53
"""Largest count accepted: every value becomes a float sample, exact only up to 2**53, and
an integer past a float's range would break every scrape of the run."""
MAX_CONFIG_DEPTH = 32
"""Deepest nesting of objects and arrays kept in a run's config (served by /api/runs)."""

LENIENCIES: tuple[str, ...] = ("naive_timestamp", "missing_timestamp", "missing_run_id")
"""What an event may lack and still be applied (unless ``--strict-events``), each counted
in ``runwatch_events_lenient_total``: a timestamp without offset is UTC, a missing one the
time of reading, a missing run id the run named by the PID file or the source's latest."""

NON_FINITE: dict[str, float] = {"NaN": float("nan"), "Infinity": float("inf"),
                                "-Infinity": float("-inf")}  # fmt: skip
"""Metric values JSON cannot write as numbers, spelt as the protobuf JSON mapping does."""

Ident = Annotated[str, Meta(min_length=1, max_length=MAX_IDENTIFIER_CHARS)]
Count = Annotated[int, Meta(ge=0, le=MAX_EXACT_INTEGER)]
Seconds = Annotated[float, Meta(ge=0)]
MAX_EPOCH_SECONDS = 1e10
"""Latest timestamp accepted (year 2286): OTLP carries times as 64-bit nanoseconds."""

Timestamp = Annotated[
    datetime | Annotated[float, Meta(ge=0, le=MAX_EPOCH_SECONDS)],
    Meta(description="ISO-8601 / RFC 3339 (without an offset: UTC), or epoch seconds."),
]
Status = Annotated[
    str, Meta(description="Case-insensitive; one of: " + ", ".join(sorted(STATUS_ALIASES)))
]
MetricValue = Annotated[
    float | Literal["NaN", "Infinity", "-Infinity"],
    Meta(description="A number; NaN and infinities as the strings NaN, Infinity, -Infinity."),
]
if TYPE_CHECKING:  # what readers get: parsing replaced the spellings by NON_FINITE's floats
    NumberMap = dict[str, float]
else:  # what is decoded, validated and written in the schema
    NumberMap = dict[Ident, MetricValue]
TargetName = Annotated[Ident, Meta(description="Target name.")]
PhaseSeconds = Annotated[
    dict[Ident, Seconds],
    Meta(
        description="Seconds spent in each named phase (data_loading, evaluation, "
        "checkpoint_save, checkpoint_restore, init, or a name of the script's own) since "
        "the run's previous event of type metric_update, phase or checkpoint_saved."
    ),
]
TargetCount = Annotated[Count | None, Meta(description="Targets in the run.")]


class Event(msgspec.Struct, tag_field="event_type", kw_only=True, gc=False):
    """Fields common to every event. After :func:`parse_line`, ``timestamp`` is epoch
    seconds, unless the pipeline has a leniency to apply (see :data:`LENIENCIES`)."""

    run_id: Annotated[
        Ident | None, Meta(description="Identifies the run; every event of a run should carry it.")
    ] = None
    timestamp: Annotated[
        Timestamp | None, Meta(description="When it happened; defaults to when it was read.")
    ] = None
    event_id: Annotated[
        Ident | None,
        Meta(
            description="'<sender>.<sequence>': an event whose sequence is not above the "
            "last applied of its sender (a batch sent again) is applied once."
        ),
    ] = None


class RunStart(Event, tag="run_start"):
    """A run begins. Optional: a run also begins with its first event of any type."""

    name: Annotated[
        Ident | None, Meta(description="Human-readable run name; defaults to the run_id.")
    ] = None
    config: Annotated[dict[str, Any] | None, Meta(description="Hyper-parameters and settings.")] = (
        None
    )
    resumed: Annotated[
        bool | None,
        Meta(description="A new process of a run that stopped (resumed from a checkpoint)."),
    ] = None
    total_steps: Annotated[
        Count | None, Meta(description="Steps the run will take (for its ETA).")
    ] = None


class Progress(Event, tag="progress"):
    """Progress within a stage, emitted periodically by long stages."""

    stage: Annotated[Ident, Meta(description="Stage the progress belongs to.")]
    progress_pct: Annotated[float, Meta(ge=0, le=100, description="Percent done, 0..100.")]
    current_target: Annotated[
        str | None, Meta(description="Target being processed (informational).")
    ] = None
    targets_complete: Annotated[Count | None, Meta(description="Targets finished so far.")] = None
    targets_total: TargetCount = None
    message: Annotated[str | None, Meta(description="Free text for the event log.")] = None


class StageChange(Event, tag="stage_change"):
    """The run moves to new_stage (the 'effective stage'; falls back to 'stage')."""

    new_stage: Annotated[Ident | None, Meta(description="Stage entered.")] = None
    stage: Annotated[
        Ident | None, Meta(description="Used as the new stage when new_stage is absent.")
    ] = None
    previous_stage: Annotated[str | None, Meta(description="Stage left (informational).")] = None


class TargetStart(Event, tag="target_start"):
    """Processing of one target begins."""

    target: TargetName
    target_index: Annotated[
        Count | None, Meta(description="Position of the target in the run.")
    ] = None
    total_targets: TargetCount = None


class TargetComplete(Event, tag="target_complete"):
    """Processing of one target ends."""

    target: TargetName
    status: Annotated[
        Ident | None, Meta(description="success, failed, skipped (others count as 'other').")
    ] = None
    best_auc: Annotated[float | None, Meta(description="Best AUC reached for the target.")] = None
    duration_seconds: Annotated[Seconds | None, Meta(description="Time spent on the target.")] = (
        None
    )


class RunComplete(Event, tag="run_complete"):
    """The run ends."""

    status: Status
    total_targets: TargetCount = None
    successful_targets: Annotated[Count | None, Meta(description="Targets that succeeded.")] = None
    duration_seconds: Annotated[
        Seconds | None, Meta(description="Run duration as the run measured it.")
    ] = None


class Error(Event, tag="error"):
    """Something went wrong; recoverable errors do not end the run."""

    error_message: Annotated[str, Meta(description="What happened.")]
    error_type: Annotated[
        Ident | None, Meta(description="Class of error, e.g. the exception type.")
    ] = None
    recoverable: Annotated[
        bool | None, Meta(description="Whether the run goes on (default false).")
    ] = None
    target: Annotated[
        Ident | None, Meta(description="Target being processed when it happened.")
    ] = None


class MetricUpdate(Event, tag="metric_update"):
    """Step metrics: loss, learning_rate, accuracy or any other key."""

    metrics: Annotated[
        NumberMap, Meta(description="Metric key -> number (non-finite ones counted per key).")
    ]
    step: Annotated[Count | None, Meta(description="Training step.")] = None
    phase_seconds: PhaseSeconds | None = None


class Phase(Event, tag="phase"):
    """Time a run spent in named phases (what the SDK's ``monitor.phase`` measures), when
    no step event carries it: a long phase as it ends, or before another event."""

    phase_seconds: PhaseSeconds


class CheckpointSaved(Event, tag="checkpoint_saved"):
    """A checkpoint was written."""

    checkpoint_id: Annotated[Ident, Meta(description="Identifies the checkpoint.")]
    filepath: Annotated[str | None, Meta(description="Where it was written.")] = None
    step: Annotated[Count | None, Meta(description="Step it was taken at.")] = None
    metrics: Annotated[NumberMap | None, Meta(description="Metrics at that step.")] = None
    is_best: Annotated[
        bool | None, Meta(description="Marks it as the run's best (one best per run).")
    ] = None
    valid: Annotated[
        bool | None,
        Meta(description="Outcome of a check of its file (loads, holds the expected keys)."),
    ] = None
    invalid_reason: Annotated[str | None, Meta(description="Why the check found it not valid.")] = (
        None
    )
    duration_seconds: Annotated[
        Seconds | None, Meta(description="Time the save took (counted as checkpoint_save).")
    ] = None


class StatusChange(Event, tag="status_change"):
    """The run's status changes."""

    new_status: Status
    old_status: Annotated[str | None, Meta(description="Previous status (informational).")] = None


KnownEvent = (
    RunStart | Progress | StageChange | TargetStart | TargetComplete | RunComplete | Error
    | MetricUpdate | Phase | CheckpointSaved | StatusChange
)  # fmt: skip
"""The types a line may name in event_type."""
EVENT_TYPES: tuple[type[Event], ...] = get_args(KnownEvent)
EVENT_TYPE_NAMES: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in EVENT_TYPES)

MAX_CUSTOM_FIELDS = 32
"""Fields of an event of an unknown type kept for the event log (strings, numbers, bools)."""


class CustomEvent(Event, tag="__custom__"):
    """An event of a type runwatch does not know (the training-events format's "Adding new
    event types"): counted by type, its scalar fields kept for the event log."""

    type_name: Ident
    fields: dict[str, str | float | bool] = {}


AnyEvent = KnownEvent | CustomEvent
"""Every Struct a parsed line may become (what a decoder of parsed events is given)."""


class _Header(msgspec.Struct, kw_only=True):
    """What every event has, for a line of an unknown type."""

    event_type: Ident
    run_id: Ident | None = None
    timestamp: Timestamp | None = None


_decode = msgspec.json.Decoder(KnownEvent).decode
_decode_header = msgspec.json.Decoder(_Header).decode
_decode_any = msgspec.json.Decoder(dict[str, Any]).decode
_NEEDS_NORMALISING = frozenset({RunComplete, StatusChange, StageChange, MetricUpdate,
                                CheckpointSaved})  # fmt: skip


Parsed = Event | Refused | None
"""A parsed line: the event, why it was refused, or None for an empty line."""


def parse_lines(lines: list[bytes], max_line_bytes: int) -> list[Parsed]:
    """Parse a batch of JSONL lines (without newlines); the hot path of every input."""
    parsed: list[Parsed] = []
    append = parsed.append
    decode = _decode
    for line in lines:
        if not line:
            append(None)
            continue
        if len(line) > max_line_bytes:
            append(Refused("line_too_long", f"{len(line)} bytes > {max_line_bytes}"))
            continue
        try:
            event = _complete(decode(line))
        except msgspec.DecodeError as exc:
            try:
                event = _complete(_second_chance(exc, line))
            except Rejected as rejected:
                append(rejected.as_refused())
                continue
            except Exception as other:
                append(failure(other).as_refused())
                continue
        except Rejected as rejected:
            append(rejected.as_refused())
            continue
        except Exception as exc:  # whatever one line does stays with that line
            append(failure(exc).as_refused())
            continue
        append(event)
    return parsed


def parse_line(line: bytes) -> Event:
    """Parse one line into an event, or raise Rejected."""
    (parsed,) = parse_lines([line], len(line))
    if parsed is None:
        raise Rejected("invalid_json", "empty line")
    if isinstance(parsed, Refused):
        raise Rejected(parsed.reason, parsed.detail)
    return parsed


def validate(value: Any) -> Event:
    """Validate an already-decoded JSON value (a peer's message, or a line Python's ``json``
    decoded). Text UTF-8 cannot encode (a lone surrogate escape such as ``"\\ud800"``, which
    ``json`` keeps) is refused here: it would fail every output that writes the value."""
    try:
        msgspec.json.encode(value)
    except UnicodeEncodeError as exc:
        raise Rejected("invalid_utf8", f"text UTF-8 cannot encode ({exc.reason})") from None
    except Exception:  # nesting, or a type JSON has not: left to the validation below
        pass
    try:
        event = msgspec.convert(value, KnownEvent)
    except msgspec.ValidationError as exc:
        if not _unknown_type(exc) or not isinstance(value, dict):
            raise _rejection(exc, b"") from None
        event = _custom(msgspec.convert(value, _Header), value)
    except Exception as exc:  # recursion, memory: a rejection of this value
        raise failure(exc) from None
    return _complete(event)


def _unknown_type(exc: msgspec.ValidationError) -> bool:
    return str(exc).endswith("- at `$.event_type`") and str(exc).startswith("Invalid value")


def _second_chance(exc: msgspec.DecodeError, line: bytes) -> Event:
    """A line the typed decoder refused that is still an event: one of a type runwatch does
    not know, or one with NaN or Infinity written bare (Python's ``json`` does)."""
    if isinstance(exc, msgspec.ValidationError):
        if not _unknown_type(exc):
            raise _rejection(exc, line)
        try:
            return _custom(_decode_header(line), _decode_any(line))
        except msgspec.ValidationError as invalid:
            raise _rejection(invalid, line) from None
    if (b"NaN" in line or b"Infinity" in line) and _valid_utf8(line):
        try:
            value = json.loads(line)
        except ValueError:
            raise _rejection(exc, line) from None
        try:
            return validate(value)
        except Rejected as rejected:  # NaN where a metric value is not expected
            if rejected.reason in ("invalid_value", "wrong_type"):
                raise Rejected("non_finite_number", rejected.detail) from None
            raise
    raise _rejection(exc, line)


def _valid_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _custom(header: _Header, value: dict[str, Any]) -> CustomEvent:
    fields: dict[str, str | float | bool] = {}
    for key, item in value.items():
        if key in ("event_type", "run_id", "timestamp") or len(fields) >= MAX_CUSTOM_FIELDS:
            continue
        if isinstance(item, str):
            fields[key[:MAX_IDENTIFIER_CHARS]] = item[:1024]
        elif isinstance(item, bool | float) or (
            isinstance(item, int) and abs(item) <= MAX_EXACT_INTEGER
        ):
            fields[key[:MAX_IDENTIFIER_CHARS]] = item if isinstance(item, bool) else float(item)
    return CustomEvent(
        run_id=header.run_id, timestamp=header.timestamp, type_name=header.event_type,
        fields=fields,
    )  # fmt: skip


def epoch_seconds(value: datetime | float) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def normalise_status(value: str) -> str:
    status = STATUS_ALIASES.get(value.lower())
    if status is None:
        raise Rejected("invalid_value", f"{value[:64]!r} is not a status")
    return status


def _complete(event: Event) -> Event:
    """What decoding leaves to do: epoch seconds (a naive datetime is left to the pipeline,
    see LENIENCIES), and the normalisations of a few types."""
    timestamp = event.timestamp
    if timestamp.__class__ is datetime:  # isinstance costs a Struct's field more
        aware = timestamp.tzinfo is not None  # the hot path: replace() only for naive ones
        seconds = (timestamp if aware else timestamp.replace(tzinfo=UTC)).timestamp()
        if not 0 <= seconds <= MAX_EPOCH_SECONDS:
            raise Rejected("invalid_timestamp", f"{timestamp.isoformat()} is out of range")
        if aware:
            event.timestamp = seconds
    if event.__class__ in _NEEDS_NORMALISING:
        _normalise(event)
    elif event.__class__ is RunStart and event.config and _deeper_than(event.config):
        raise Rejected("too_deeply_nested", f"config nested over {MAX_CONFIG_DEPTH} levels")
    return event


def _deeper_than(value: Any, limit: int = MAX_CONFIG_DEPTH) -> bool:
    """Whether objects and arrays nest in ``value`` more than ``limit`` levels (no recursion:
    the value may be as deep as the decoder allowed)."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def failure(exc: Exception) -> Rejected:
    """The rejection of an input whose handling raised something other than a refusal:
    nesting past the recursion limit, or ``processing_failed`` (a bug)."""
    if isinstance(exc, RecursionError):
        return Rejected("too_deeply_nested", "JSON nested deeper than the parser allows")
    return Rejected("processing_failed", f"{type(exc).__name__}: {str(exc)[:200]}")


def _normalise(event: Event) -> None:
    if type(event) is MetricUpdate:
        _non_finite(event.metrics)
    elif type(event) is CheckpointSaved:
        if event.metrics:
            _non_finite(event.metrics)
    elif type(event) is RunComplete:
        event.status = normalise_status(event.status)
    elif type(event) is StatusChange:
        event.new_status = normalise_status(event.new_status)
    elif type(event) is StageChange and event.new_stage is None:
        if event.stage is None:
            raise Rejected("missing_field", "new_stage")
        event.new_stage = event.stage


def _non_finite(metrics: dict[str, Any]) -> None:
    for key, value in metrics.items():
        if value.__class__ is str:
            metrics[key] = NON_FINITE[value]


def naive_seconds(timestamp: datetime) -> float:
    """Epoch seconds of a timestamp written without a UTC offset: UTC, as the training-events
    format means."""
    return timestamp.replace(tzinfo=UTC).timestamp()


# A \\uD800-\\uDBFF escape not followed by a \\uDC00-\\uDFFF one, or one of those alone.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
# msgspec error messages, first match wins; see tests/unit/test_events.py for each case.
_MESSAGE_REASONS: tuple[tuple[str, str], ...] = (
    ("Number out of range", "non_finite_number"),
    ("missing required field", "missing_field"),
    ("at `$.event_type`", "unknown_event_type"),
    ("at `$.timestamp`", "invalid_timestamp"),
    ("of length <=", "value_too_long"),
    ("of length >=", "invalid_value"),
    (f"<= {MAX_EXACT_INTEGER}", "number_too_large"),
    ("` >=", "invalid_value"),
    ("` <=", "invalid_value"),
    ("Expected `object`, got", "not_an_object"),
    ("Expected `", "wrong_type"),
)


def _rejection(exc: msgspec.DecodeError, line: bytes) -> Rejected:
    message = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        reason = next((r for text, r in _MESSAGE_REASONS if text in message), "invalid_value")
        if reason == "not_an_object" and " - at `" in message:
            reason = "wrong_type"
        return Rejected(reason, message)
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Rejected("invalid_utf8", f"byte {bad.start}")
    if _LONE_SURROGATE.search(line):  # the decoder's message varies with where it is
        return Rejected("invalid_utf8", "text UTF-8 cannot encode (a lone surrogate escape)")
    return Rejected("invalid_json", message)
