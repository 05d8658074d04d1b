"""Each benchmark script owns one marked section of bench/RESULTS.md and rewrites only it."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Replace the section between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``
    (appended when absent); hand-written notes outside the markers stay."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    path.write_text(current)
