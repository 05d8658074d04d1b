"""What ``runwatch_build_info`` says: version, git revision and Python version."""

from __future__ import annotations

import functools
import json
import platform
from importlib import metadata
from pathlib import Path

from exporter import __version__

CHECKOUT = Path(__file__).resolve().parent.parent


@functools.cache
def build_labels() -> tuple[str, str, str]:
    """(version, revision, python_version), as exporters label their build_info."""
    return __version__, revision(), platform.python_version()


def revision() -> str:
    """The commit runwatch was installed from: the one pip recorded (``pip install
    git+...``), else the HEAD of the checkout it runs from (an editable install), else
    ``unknown``."""
    try:
        direct_url = metadata.distribution("runwatch").read_text("direct_url.json")
        commit = json.loads(direct_url or "{}").get("vcs_info", {}).get("commit_id")
    except (metadata.PackageNotFoundError, ValueError, AttributeError):
        commit = None
    return commit or _checkout_head(CHECKOUT / ".git") or "unknown"


def _checkout_head(git: Path) -> str | None:
    """HEAD's commit, read from the git directory's files (no git program needed)."""
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head.removeprefix("ref: ")
        if (git / ref).is_file():
            return (git / ref).read_text().strip() or None
        for line in (git / "packed-refs").read_text().splitlines():
            commit, _, name = line.partition(" ")
            if name == ref:
                return commit
    except OSError:
        return None
    return None
