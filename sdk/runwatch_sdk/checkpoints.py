"""Checkpoint files, as the training dashboard reads them: loaded with torch on the CPU.

torch is imported only when a checkpoint is loaded (the SDK needs only the standard
library). ``torch.load`` keeps its default, ``weights_only`` since torch 2.6: a checkpoint
of state dicts, numbers and strings loads, and a file cannot run code on the way in.
"""

from __future__ import annotations

import os
from typing import Any

EXPECTED_KEYS = ("model", "step")
"""What a valid checkpoint holds, by default (the training dashboard's check)."""


def load(filepath: str | os.PathLike[str]) -> tuple[Any, str | None]:
    """The file's content and None, or None and why it could not be loaded."""
    if not os.path.isfile(filepath):
        return None, "no such file"
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    try:
        return torch.load(filepath, map_location="cpu"), None
    except Exception as exc:  # a torn, truncated or foreign file: any error torch raises
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"torch.load failed: {type(exc).__name__}: {first}"[:300]


def problem(filepath: str | os.PathLike[str], expected_keys: tuple[str, ...]) -> str | None:
    """Why the checkpoint is not valid, or None when it loads and holds ``expected_keys``."""
    loaded, error = load(filepath)
    if error is not None:
        return error
    if not isinstance(loaded, dict):
        return f"holds a {type(loaded).__name__}, not a dict"
    missing = [key for key in expected_keys if key not in loaded]
    return f"missing {', '.join(missing)}" if missing else None
