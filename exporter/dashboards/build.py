"""``runwatch dashboards build``: render every board to JSON, or check the committed files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from exporter.dashboards import backend, gpu, router, trading, training
from exporter.dashboards.grafana13 import for_grafana_13
from exporter.dashboards.style import without_ignored_fields

BOARDS: dict[str, Callable[[], Dashboard]] = {
    "runwatch-training.json": training.build,
    "runwatch-trading.json": trading.build,
    "runwatch-gpu.json": gpu.build,
    "runwatch-backend.json": backend.build,
    "runwatch-router.json": router.build,
}


def render() -> dict[str, str]:
    """File name -> dashboard JSON for the Grafana compose runs (sorted keys, stable)."""
    encoder = JSONEncoder()
    return {
        name: json.dumps(
            for_grafana_13(json.loads(encoder.encode(without_ignored_fields(build().build())))),
            sort_keys=True,
            indent=2,
        )
        + "\n"
        for name, build in BOARDS.items()
    }


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        (directory / name).write_text(text)
        written.append(directory / name)
    return written


def stale(directory: Path) -> list[str]:
    """The boards whose committed JSON differs from what the code builds."""
    return [
        name
        for name, text in render().items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
