"""What a training script hands the SDK, made into JSON runwatch accepts: numpy and torch
scalars (anything with ``.item()``, ``__index__`` or ``__float__``) as numbers, and NaN
and infinities as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (how the
protobuf JSON mapping writes them: JSON has no such numbers, and runwatch counts them per
metric key rather than losing the event)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def scalar(value: Any) -> float | None:
    """A single number from a framework's value, or None for anything else (strings, lists,
    tensors of more than one element); never raises: telemetry must not fail the training."""
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return None
    if hasattr(value, "item") and not isinstance(value, int | float):
        try:
            value = value.item()
        except (ValueError, RuntimeError, TypeError):  # more than one element
            return None
        if isinstance(value, bool):
            return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among a framework's metrics (see :func:`scalar`), keys as strings."""
    out: dict[str, float] = {}
    for key, value in values.items():
        number = scalar(value)
        if number is not None:
            out[str(key)] = number
    return out


def count(value: Any) -> int | None:
    """A step or index as an int (``np.int64(7)`` -> 7), or None when it is not a whole
    non-negative number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = value.__index__() if hasattr(value, "__index__") else None
        if number is None:
            as_float = scalar(value)
            if as_float is None or not as_float.is_integer():
                return None
            number = int(as_float)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number >= 0 else None


def encode(event: Mapping[str, Any]) -> bytes:
    """One event as a JSON line (non-finite numbers and numpy values as described above)."""
    try:  # the common case, in one pass: every number finite, every key a string
        text = _ENCODER.encode(event)
    except (ValueError, TypeError):
        text = _ENCODER.encode(_plain(event))
    return (text + "\n").encode()


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else NON_FINITE.get(value, "NaN")
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _default(value: Any) -> Any:
    """Values json cannot write: numbers of other libraries as numbers, the rest as text."""
    if hasattr(value, "__index__"):
        try:
            return value.__index__()
        except (TypeError, ValueError):
            pass
    number = scalar(value)
    if number is not None:
        return _plain(number)
    return str(value)


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_default)
"""Built once: ``json.dumps`` with options builds an encoder per call (a microsecond)."""
