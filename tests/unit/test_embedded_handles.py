"""The holder list of an embedded server, between processes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from core.embedded import Handles

pytestmark = pytest.mark.unit


def test_the_last_holder_is_told_to_stop(tmp_path: Path) -> None:
    handles = Handles(tmp_path / "h.json")
    handles.acquire(os.getpid())
    handles.acquire(os.getppid())
    assert not handles.release(os.getppid())
    assert handles.release(os.getpid())


def test_a_removed_data_directory_releases_without_error(tmp_path: Path) -> None:
    """A temporary data directory removed before the exit handlers run: nothing holds it."""
    data = tmp_path / "redis"
    data.mkdir()
    handles = Handles(data / "h.json")
    handles.acquire(os.getpid())
    shutil.rmtree(data)
    assert handles.release(os.getpid())
