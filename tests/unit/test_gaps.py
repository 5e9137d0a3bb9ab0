"""batch.gaps: real DuckDB over temporary Parquet; halts, market-wide holes, holidays, listings."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batch import consolidate, gaps
from core import calendar
from core.lake import Lake
from core.sharding import Shard
from tests.batch_support import simple_rows, write_fragment

pytestmark = pytest.mark.unit

# 2024-11-18 .. 2025-01-10: Thanksgiving, Christmas, New Year and the Carter day of mourning
DAYS = calendar.sessions_between(dt.date(2024, 11, 18), dt.date(2025, 1, 10))
HALT = DAYS[10]
HOLE = DAYS[20]  # no symbol has it


def _build(lake: Lake, *, consolidated: bool = True) -> None:
    full = [d for d in DAYS if d != HOLE]
    write_fragment(lake, simple_rows("AAA", full))
    write_fragment(lake, simple_rows("BBB", [d for d in full if d != HALT]))  # halted one day
    write_fragment(lake, simple_rows("NEW", [d for d in full if d >= DAYS[15]]))  # listed late
    write_fragment(lake, simple_rows("OLD", [d for d in full if d <= DAYS[25]]))  # delisted
    if consolidated:
        assert consolidate.run(lake, workers=1, cleanup=False).ok


def _pairs(g: gaps.Gaps) -> list[tuple[str, dt.date, bool]]:
    return [(r["symbol"], r["date"], r["market_wide"]) for r in g.symbol_gaps.to_pylist()]


def test_halts_market_holes_holidays_and_listings(local_lake: Lake) -> None:
    _build(local_lake)
    found, files = gaps.run(local_lake)
    assert files == 4  # the four data.parquet; merged fragments are in them
    assert found.market_gaps["date"].to_pylist() == [HOLE]
    assert _pairs(found) == [
        ("AAA", HOLE, True),
        ("BBB", HALT, False),
        ("BBB", HOLE, True),
        ("NEW", HOLE, True),
        ("OLD", HOLE, True),
    ]
    holidays = {
        dt.date(2024, 11, 28),
        dt.date(2024, 12, 25),
        dt.date(2025, 1, 1),
        dt.date(2025, 1, 9),
    }
    assert not holidays & set(found.symbol_gaps["date"].to_pylist())
    assert found.sessions_to_replay() == [HALT, HOLE]
    summary = {r["symbol"]: r for r in found.summary.to_pylist()}
    assert summary["BBB"]["missing"] == 2 and summary["BBB"]["longest_run"] == 1
    assert summary["NEW"]["first"] == DAYS[15] and summary["NEW"]["sessions"] == len(DAYS) - 15
    assert found.symbols == 4 and found.off_calendar == 0


def test_unmerged_fragments_count_and_runs(local_lake: Lake) -> None:
    _build(local_lake)
    later = calendar.sessions_between(dt.date(2025, 1, 21), dt.date(2025, 1, 24))
    write_fragment(local_lake, simple_rows("AAA", later))  # not consolidated yet
    write_fragment(local_lake, simple_rows("BBB", [HALT]))  # fills the halt
    found, _ = gaps.run(local_lake, symbols=["AAA", "BBB"])
    between = calendar.sessions_between(DAYS[-1] + dt.timedelta(days=1), later[0])[:-1]
    aaa = [d for s, d, _ in _pairs(found) if s == "AAA"]
    assert aaa == [HOLE, *between]
    assert ("BBB", HALT, False) not in _pairs(found)
    runs = {r["symbol"]: r["longest_run"] for r in found.summary.to_pylist()}
    assert runs["AAA"] == len(between)
    # market gaps over the whole lake: no symbol has the sessions between 01-10 and 01-21
    assert found.market_gaps["date"].to_pylist() == [HOLE, *between]
    assert all(p[2] for p in _pairs(found) if p[0] == "AAA")


def test_a_session_whose_only_row_was_quarantined_is_a_gap(local_lake: Lake) -> None:
    _build(local_lake)
    row = simple_rows("BBB", [HALT])[0]
    write_fragment(local_lake, [dataclasses.replace(row, high=row.low - 1)])  # refused: high < low
    assert consolidate.run(local_lake, workers=1, cleanup=False).quarantined == 1
    found, _ = gaps.run(local_lake, symbols=["BBB"])
    assert ("BBB", HALT, False) in _pairs(found)


def test_scope_since_and_shards(local_lake: Lake) -> None:
    _build(local_lake, consolidated=False)
    whole, _ = gaps.run(local_lake)
    parts = [gaps.run(local_lake, shard=Shard(i, 3))[0] for i in range(3)]
    assert sorted(p for g in parts for p in _pairs(g)) == _pairs(whole)
    late, _ = gaps.run(local_lake, since=DAYS[15])
    assert _pairs(late) == [p for p in _pairs(whole) if p[1] >= DAYS[15]]
    empty, files = gaps.run(Lake(local_lake.url + "-none"))
    assert files == 0 and empty.symbol_gaps.num_rows == 0 and empty.market_gaps.num_rows == 0


def test_cli_writes_parquet_table_and_dry_run(
    local_lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _build(local_lake)
    assert gaps.main(["--lake", local_lake.url, "--dry-run", "--fix", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "BBB" in out and HOLE.isoformat() in out
    assert f"would replay: {HALT.isoformat()},{HOLE.isoformat()}" in out
    assert not local_lake.exists(f"{gaps.GAPS_DIR}/symbol_gaps.parquet")
    assert gaps.main(["--lake", local_lake.url, "--fail-on-gaps"]) == 2
    table = pq.read_table(local_lake.path(f"{gaps.GAPS_DIR}/symbol_gaps.parquet"))
    assert table.schema.equals(gaps.SYMBOL_GAPS) and table.num_rows == 5
    market = pq.read_table(local_lake.path(f"{gaps.GAPS_DIR}/market_gaps.parquet"))
    assert market["date"].to_pylist() == [HOLE]
    assert (
        gaps.main(["--lake", local_lake.url, "--out", str(tmp_path / "out"), "--shard", "1/2"]) == 0
    )
    assert (tmp_path / "out" / "symbol_gaps_1of2.parquet").exists()
    assert (tmp_path / "out" / "market_gaps.parquet").exists()
    with pytest.raises(SystemExit):
        gaps.main(["--lake", local_lake.url, "--shard", "9/2"])


def test_fix_command_is_the_replay_flow_with_sessions() -> None:
    env = {"DATABASE_URL": "postgresql://x", "POLYGON_API_KEY": "k", "LAKE_URL": "other"}
    argv, child = gaps.fix_command([HOLE, HALT, HOLE], "file:///lake", env, python="py")
    assert argv == ["py", "-m", "bytewax.run", "dataflows.replay:flow"]
    assert child["REPLAY_SESSIONS"] == f"{HALT.isoformat()},{HOLE.isoformat()}"
    assert child["LAKE_URL"] == "file:///lake"
    assert child["DATABASE_URL"] == "postgresql://x" and child["POLYGON_API_KEY"] == "k"
    assert env["LAKE_URL"] == "other"  # the caller's mapping is not changed
    with pytest.raises(ValueError, match="no sessions"):
        gaps.fix_command([], "file:///lake", env)


def test_replay_runs_the_command_and_returns_its_exit(local_lake: Lake, tmp_path: Path) -> None:
    record = tmp_path / "called"
    fake = tmp_path / "fake-python"
    fake.write_text(f'#!/bin/sh\necho "$@ $REPLAY_SESSIONS $LAKE_URL" > {record}\nexit 3\n')
    fake.chmod(0o755)
    assert gaps.replay([HALT, HOLE], local_lake, python=str(fake)) == 3
    sessions = f"{HALT.isoformat()},{HOLE.isoformat()}"
    assert record.read_text().split() == [*gaps.REPLAY_FLOW, sessions, local_lake.url]
