"""What the HTTP/WebSocket sources (trading bridge, training backend) share in reading
foreign JSON: tolerant pydantic models (unknown fields ignored), finite numbers only,
and the reasons a response is refused, counted in
``runwatch_events_rejected_total{source,reason}``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

REJECT_REASONS: tuple[str, ...] = (
    "connect_failed",  # refused, reset, DNS
    "timeout",  # no full answer within the configured timeout
    "http_error",  # a status other than 2xx
    "invalid_json",  # a body that is not JSON (or a WebSocket frame that is not)
    "contract_violation",  # JSON that does not fit the source's models
    "unknown_event_type",  # a message type the source does not know
)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


Number = Annotated[float, AfterValidator(_finite)]
Count = Annotated[int, Field(ge=0)]
Name = Annotated[str, Field(min_length=1, max_length=256)]


class Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Unreachable(Exception):
    """The service did not answer at all (refused, reset, unknown host)."""


def get_json(
    client: httpx.Client, path: str, reject: Callable[[str], None], optional: bool = False
) -> Any:
    """GET ``path`` and decode its JSON; None when that fails, with the reason counted
    through ``reject``. Raises Unreachable (also counted) when nothing answered. With
    ``optional``, a 404 is None uncounted: an endpoint this service does not have."""
    try:
        response = client.get(path)
    except httpx.TimeoutException:
        reject("timeout")
        return None
    except httpx.TransportError as exc:
        reject("connect_failed")
        raise Unreachable(f"{client.base_url}: {exc}") from None
    if optional and response.status_code == 404:
        return None
    if not response.is_success:
        reject("http_error")
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        reject("invalid_json")
        return None
