"""The layout's one rule that code could break unnoticed: ``exporter/core`` is pure. It
imports nothing from the sources, the outputs, the wiring or any I/O library, so every
reducer can be run, tested and fuzzed from bytes alone."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.conftest import ROOT

CORE = ROOT / "exporter" / "core"
ALLOWED_THIRD_PARTY = {"msgspec", "orjson", "yaml"}  # decoders of bytes already in memory
FORBIDDEN_STDLIB = {
    "asyncio", "http", "io", "logging", "os", "pathlib", "selectors", "shutil", "socket",
    "sqlite3", "ssl", "subprocess", "tempfile", "threading", "time", "urllib", "importlib",
}  # fmt: skip


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "exporter":
                names |= {f"exporter.{alias.name}" for alias in node.names}
    return names


def violations(module: Path) -> list[str]:
    """The imports of ``module`` that a core module may not make."""
    found = []
    for name in sorted(imports_of(module)):
        top = name.split(".")[0]
        if top == "exporter":
            allowed = name == "exporter" or name.startswith("exporter.core")
        elif top in sys.stdlib_module_names:
            allowed = top not in FORBIDDEN_STDLIB
        else:
            allowed = top in ALLOWED_THIRD_PARTY
        if not allowed:
            found.append(name)
    return found


def test_core_imports_only_core_the_standard_library_and_decoders() -> None:
    modules = sorted(CORE.rglob("*.py"))
    assert len(modules) >= 8
    for module in modules:
        assert violations(module) == [], module.relative_to(ROOT)


def test_the_check_refuses_io_and_outer_layers(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import time, json\nimport httpx\nfrom exporter.sources.worker import Worker\n"
        "from exporter import pipeline\nfrom exporter.core import state\n"
    )
    assert violations(module) == ["exporter.pipeline", "exporter.sources.worker", "httpx", "time"]
