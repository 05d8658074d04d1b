"""Docstrings as ``--help`` shows them: without the Sphinx markup a reader never sees
rendered (``:mod:`x``` and double backquotes become plain words)."""

from __future__ import annotations

import re


def plain(doc: str | None) -> str:
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc or "")
    return text.replace("``", "")
