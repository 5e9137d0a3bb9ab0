"""BENCHMARKS.md at the repository root: each harness owns one marked section of it.

A harness rewrites only the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``,
so harnesses run separately (or by other people) never overwrite each other's figures.
"""

from __future__ import annotations

from pathlib import Path

PATH = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nWritten by `make bench` (`python -m benchmarks`); each section by its harness.\n"


def write_section(name: str, body: str, path: Path = PATH) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md with ``body``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else HEADER
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = f"{before}{block}{after}"
    else:
        text = f"{text.rstrip()}\n\n{block}"
    path.write_text(text)
