"""Where a training script and ``runwatch serve`` meet when neither is told anything: one
local folder, ``RUNWATCH_LOCAL_DIR`` (default :data:`DEFAULT_LOCAL_DIR`), holding the
events (``*.jsonl``), the PID files (``pids/*.pid``) and the HTTP sender's spool
(``spool/*.jsonl``). ``runwatch serve`` with no ``--events`` and no ``--pid-file``
follows the same three (it takes the folder from the same variable), so a script using
the SDK with no settings and a serve with none find each other.

Also the SDK's environment variables: ``runwatch serve`` warns at start of a
``RUNWATCH_*`` variable that is neither one of its options nor one of these (they share
the namespace), so a misspelled one is said rather than silently ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_LOCAL_DIR = "/tmp/runwatch"

SDK_VARIABLES = {
    "RUNWATCH_URL": "runwatch to send events to over HTTP (else the local folder's file)",
    "RUNWATCH_EVENTS_FILE": "the events file (default $RUNWATCH_LOCAL_DIR/events.jsonl)",
    "RUNWATCH_LOCAL_DIR": f"the local folder (default {DEFAULT_LOCAL_DIR})",
    "RUNWATCH_PID_DIR": "where monitors write PID files (default $RUNWATCH_LOCAL_DIR/pids)",
    "RUNWATCH_PID_FILE": "the training-events module's PID file",
    "RUNWATCH_USERNAME": "basic-auth user for RUNWATCH_URL",
    "RUNWATCH_PASSWORD": "basic-auth password for RUNWATCH_URL",
    "RUNWATCH_CA_FILE": "the CA that signed runwatch's certificate",
    "RUNWATCH_QUIET": "1: do not print where the events go",
}
"""Every ``RUNWATCH_*`` variable the SDK reads, and what it is for."""


def local_dir() -> Path:
    return Path(os.environ.get("RUNWATCH_LOCAL_DIR") or DEFAULT_LOCAL_DIR)


def events_file() -> Path:
    return Path(os.environ.get("RUNWATCH_EVENTS_FILE") or local_dir() / "events.jsonl")


def pid_dir() -> Path:
    return Path(os.environ.get("RUNWATCH_PID_DIR") or local_dir() / "pids")
