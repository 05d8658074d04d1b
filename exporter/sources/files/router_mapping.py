"""Reads an event-router mapping from its file (or the built-in one shipped beside the
parser) and hands the text to the pure :func:`~exporter.core.router.mapping.parse_mapping`."""

from __future__ import annotations

from importlib import resources

from exporter.core.router.mapping import Mapping, MappingError, parse_mapping
from exporter.pipeline.regular_files import read_regular

MAX_MAPPING_BYTES = 1 << 20


def load_mapping(path: str | None) -> Mapping:
    """The mapping in ``path``, or the built-in one when ``path`` is None."""
    if path is None:
        builtin = resources.files("exporter.core.router").joinpath("builtin.yaml")
        return parse_mapping(builtin.read_text(), "built-in mapping")
    try:
        text = read_regular(path, MAX_MAPPING_BYTES).decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(
            f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    return parse_mapping(text, path)
