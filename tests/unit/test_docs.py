"""The repository documents itself: no pointer outside it, docs/ linked and complete.

A reader with only the repository must find every contract in it, so nothing may send them to a
folder beside the checkout. Settings are documented from the code: a field added to a settings
class without a line in docs/settings.md fails here.
"""

from __future__ import annotations

import inspect
import re
import subprocess
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from core import settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
# Spelled in pieces so this file does not match itself.
OUTSIDE = re.compile(r"\.\./" + "shared|/work/" + "shared|shared/" + "ARCHITECTURE")
SKIP_DIRS = {".git", ".venv", ".tools", "node_modules", "data", ".mypy_cache", ".ruff_cache"}


def _project_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files, or every file when git is unavailable."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
        return [REPO / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        return [
            p
            for p in REPO.rglob("*")
            if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(REPO).parts)
        ]


def test_nothing_points_outside_the_repository() -> None:
    offenders = []
    for path in _project_files():
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_readme_links_the_docs_and_every_relative_link_resolves() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/ARCHITECTURE.md" in readme
    assert "docs/operations.md" in readme
    link = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")
    broken = []
    for page in [REPO / "README.md", *DOCS.glob("*.md")]:
        for target, _ in link.findall(page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken


def test_the_runbook_covers_what_an_operator_needs() -> None:
    runbook = (DOCS / "operations.md").read_text(encoding="utf-8").lower()
    for topic in ("## deploy", "## first backfill", "## recovery", "## healing gaps",
                  "## rotating keys"):  # fmt: skip
        assert topic in runbook, topic


def test_every_setting_is_documented() -> None:
    documented = (DOCS / "settings.md").read_text(encoding="utf-8")
    missing = []
    for name, cls in vars(settings).items():
        if not (inspect.isclass(cls) and issubclass(cls, BaseSettings)) or name.startswith("_"):
            continue
        for field in cls.model_fields:
            if f"`{field.upper()}`" not in documented:
                missing.append(f"{name}.{field}")
    assert not missing, f"not in docs/settings.md: {sorted(set(missing))}"
