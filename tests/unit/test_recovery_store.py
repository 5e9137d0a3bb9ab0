"""The recovery store a deployed live flow creates on its first start and reuses after."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataflows.recovery import ensure_partitions, prepare_recovery, recovery_directory

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["dataflows.live:flow", "-r", "/recovery", "-s", "5", "-b", "0"], "/recovery"),
        (["dataflows.live:flow", "--recovery-directory=/x", "-s", "5"], "/x"),
        (["dataflows.live:flow", "-s", "5"], None),
    ],
)
def test_recovery_directory_is_read_from_bytewax_run_arguments(
    argv: list[str], want: str | None
) -> None:
    got = recovery_directory(argv)
    assert (str(got) if got else None) == want


def test_first_start_creates_the_store_and_later_ones_keep_it(tmp_path: Path) -> None:
    store = tmp_path / "efs" / "live"
    assert ensure_partitions(store) is True
    parts = sorted(p.name for p in store.iterdir())
    assert parts == ["part-0.sqlite3"]
    before = (store / "part-0.sqlite3").stat().st_mtime_ns
    assert ensure_partitions(store) is False  # bytewax.recovery would fail on a second init
    assert (store / "part-0.sqlite3").stat().st_mtime_ns == before


def test_prepare_recovery_only_reads_bytewax_run_arguments(tmp_path: Path) -> None:
    assert prepare_recovery() is None  # pytest's own -r means something else
    store = tmp_path / "r"
    assert prepare_recovery(["run.py", "m:flow", "-r", str(store), "-s", "1", "-b", "0"]) == store
    assert any(store.glob("part-*.sqlite3"))
