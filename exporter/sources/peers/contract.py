"""What the HTTP/WebSocket sources (trading bridge, training backend) share in reading
foreign JSON: tolerant pydantic models (unknown fields ignored), finite numbers and
counts a float carries exactly, and the reasons a response is refused, counted in
``runwatch_events_rejected_total{source,reason}`` (requests themselves:
:mod:`exporter.sources.peers.rest`)."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from exporter.core.events import MAX_EXACT_INTEGER

REJECT_REASONS: tuple[str, ...] = (
    "connect_failed",  # refused, reset, DNS
    "timeout",  # no full answer within the configured timeout
    "http_error",  # a status other than 2xx
    "invalid_json",  # a body that is not JSON (or a WebSocket frame that is not)
    "contract_violation",  # JSON that does not fit the source's models
    "unknown_event_type",  # a message type the source does not know
    "response_too_large",  # a body over the source's response limit
    "processing_failed",  # a message whose handling raised (a bug; logged once)
)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


Number = Annotated[float, AfterValidator(_finite)]
Count = Annotated[int, Field(ge=0, le=MAX_EXACT_INTEGER)]
Name = Annotated[str, Field(min_length=1, max_length=256)]


class Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
