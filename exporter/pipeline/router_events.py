"""Core events of a type runwatch does not know, reduced by the router mapping when it
lists their type: a user declares extra event types, and the metrics of their numeric
fields, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from exporter.core.events import CustomEvent, Rejected
from exporter.core.outputs import Output
from exporter.core.router.reducer import RouterState


def custom_event_outputs(router: RouterState, event: CustomEvent) -> Sequence[Output]:
    """The mapping's rules applied to ``event`` (its fields, and ``run_id``, as the
    router event's); nothing when the mapping does not list its type or its fields break a
    rule's expectations (the core event stands either way)."""
    mapping = router.mapping
    if event.type_name.strip().upper() not in mapping.categories:
        return ()
    value: dict[str, Any] = {**event.fields, "run_id": event.run_id,
                             mapping.type_field: event.type_name}  # fmt: skip
    timestamp = cast(float, event.timestamp)  # completed before it was applied
    if mapping.time_field is not None:
        value[mapping.time_field] = timestamp
    try:
        return router.apply(value, timestamp)
    except Rejected:
        return ()
