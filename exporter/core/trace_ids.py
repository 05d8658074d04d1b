"""A run's trace id, derived from its run_id: the spans of a replay land in the same trace
as the live run's, and a dashboard can link a run to its trace from the run id alone
(``training_run_info`` carries it as the ``trace_id`` label)."""

from __future__ import annotations

import hashlib


def trace_id_for(run_id: str) -> int:
    """The first 16 bytes of SHA-256 of the run_id (never 0, which OTel reserves)."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big") or 1


def trace_id_hex(run_id: str) -> str:
    return f"{trace_id_for(run_id):032x}"
