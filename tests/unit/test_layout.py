"""The layout's rules that code could break unnoticed. ``exporter/core`` is pure: it
imports nothing from the sources, the outputs, the wiring or any I/O library, so every
reducer can be run, tested and fuzzed from bytes alone. And the packages stand on floors
(docs/architecture.md): a module imports only from floors below its own or from its own
package, so no import runs up the layers and no two packages lean on each other."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.support import ROOT

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


FLOORS: dict[str, int] = {
    "core": 0,  # pure reducers
    "pipeline": 1,  # the seam, and what sources and outputs share
    "sources": 2,  # inputs, each on its own thread
    "telemetry": 3,  # outputs: what the sources' readings and the state become
    "app": 4,  # settings, wiring, the server
    "dashboards": 4,  # the boards as code, names from the catalogue
    "mixin": 4,  # what the wheel ships beside the code
    "simulate": 5,  # the demo and the stand-ins only it and the tests need
    "cli": 6,  # the command
    "__main__": 7,
}


def package_of(module: str) -> str:
    """``exporter.sources.files.jsonl`` -> ``sources``; the package root is the floor below
    every other (it holds only the version)."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__version__":  # ``from exporter import __version__``
        return "core"
    return parts[1]


def imported_modules(path: Path) -> set[str]:
    """Every ``exporter`` module ``path`` imports, wherever the import statement stands
    (inside a function or an ``if TYPE_CHECKING:`` block too)."""
    return {name for name in imports_of(path) if name.split(".")[0] == "exporter"}


def upward_imports(path: Path, module: str) -> list[str]:
    """The imports of ``module`` (at ``path``) that run up the floors or sideways into
    another package of the same floor."""
    own = package_of(module)
    found = []
    for name in sorted(imported_modules(path)):
        target = package_of(name)
        if target != own and FLOORS[target] >= FLOORS[own]:
            found.append(name)
    return found


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def test_every_package_stands_on_a_floor() -> None:
    packages = {package_of(module_name(p)) for p in (ROOT / "exporter").rglob("*.py")}
    assert packages == set(FLOORS)


def test_no_import_runs_up_the_floors() -> None:
    modules = sorted((ROOT / "exporter").rglob("*.py"))
    assert len(modules) >= 100
    found = {}
    for path in modules:
        upward = upward_imports(path, module_name(path))
        if upward:
            found[module_name(path)] = upward
    assert found == {}


def test_the_floor_check_refuses_upward_and_sideways_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from exporter.core.state import State\nfrom exporter.sources.worker import Worker\n"
        "if TYPE_CHECKING:\n    from exporter.telemetry.catalogue import METRICS\n"
        "def f():\n    from exporter.app import wiring\n"
    )
    assert upward_imports(module, "exporter.sources.peers.x") == [
        "exporter.app", "exporter.telemetry.catalogue"
    ]  # fmt: skip
    assert upward_imports(module, "exporter.dashboards.x") == ["exporter.app"]
    assert upward_imports(module, "exporter.cli") == []
