"""The XNYS session table cache: same answers from the file, the build, and a broken cache."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core import calendar

pytestmark = pytest.mark.unit


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv(calendar.CACHE_DIR_ENV, str(tmp_path / "cache"))
    calendar.sessions.cache_clear()
    yield tmp_path / "cache"
    calendar.sessions.cache_clear()


def _answers() -> tuple[int, dt.datetime, dt.datetime, int]:
    day = dt.date(2024, 11, 29)  # an early close
    return (
        calendar.session_index(dt.date(2025, 1, 2)),
        calendar.session_close(day),
        calendar.session_open(day),
        len(calendar.session_days()),
    )


def test_built_then_read_from_file(cache_dir: Path) -> None:
    built = _answers()
    assert calendar.cache_file().is_file()
    calendar.sessions.cache_clear()
    assert _answers() == built
    assert built[1] == dt.datetime(2024, 11, 29, 18, 0, tzinfo=dt.UTC)
    assert built[2].tzinfo is dt.UTC


def test_corrupt_or_unwritable_cache_falls_back(cache_dir: Path) -> None:
    expected = _answers()
    calendar.cache_file().write_bytes(b"not an npz")
    calendar.sessions.cache_clear()
    assert _answers() == expected
    assert np.load(calendar.cache_file())["days"].size == expected[3]  # rebuilt and rewritten
    blocker = cache_dir.parent / "file"
    blocker.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(calendar.CACHE_DIR_ENV, str(blocker / "sub"))
        calendar.sessions.cache_clear()
        assert _answers() == expected
