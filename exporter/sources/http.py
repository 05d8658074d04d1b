"""HTTP ingest: ``POST /v1/events`` with one event, a JSON array of events, or NDJSON.

The same validation as the file path applies to each event; the valid ones of a
batch are applied even when others are rejected, and the answer lists which
were rejected and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from exporter.events import Refused
from exporter.pipeline import Pipeline
from exporter.stats import HTTP_SOURCE as SOURCE

MAX_LISTED_REJECTIONS = 100


@dataclass(slots=True)
class IngestResult:
    accepted: int = 0
    rejected: int = 0
    rejections: list[dict[str, object]] = field(default_factory=list)

    def add(self, index: int, rejection: Refused | None) -> None:
        if rejection is None:
            self.accepted += 1
            return
        self.rejected += 1
        if len(self.rejections) < MAX_LISTED_REJECTIONS:
            self.rejections.append(
                {"index": index, "reason": rejection.reason, "detail": rejection.detail}
            )


def ingest_body(body: bytes, pipeline: Pipeline) -> IngestResult:
    """Apply every event of a request body; rejections are counted by the pipeline."""
    result = IngestResult()
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        lines = [line.rstrip(b"\r") for line in body.split(b"\n") if line.strip()]
        refused = dict(pipeline.ingest_lines(lines, SOURCE))
        for index in range(len(lines)):
            result.add(index, refused.get(index))
        return result
    values = decoded if isinstance(decoded, list) else [decoded]
    for index, value in enumerate(values):
        result.add(index, pipeline.ingest_value(value, SOURCE))
    return result
