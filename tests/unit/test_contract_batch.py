"""Contract review: awkward inputs through consolidate and resample (ARCHITECTURE.md).

Each test pins one contract point on hand-written fragments; ``xfail(strict=True)`` marks a
reproduced breach that the owners are to fix (the reason says what is wrong).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import consolidate, resample, vacuum
from core import calendar, layout
from core.lake import Lake
from core.layout import LayoutError, check_symbol
from core.schemas import BRONZE_DAILY, SILVER
from tests.batch_support import (
    Row,
    read_silver,
    reference_bars,
    reference_merge,
    sessions,
    simple_rows,
    snapshot,
    write_fragment,
)

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _window(first: dt.date, count: int) -> list[dt.date]:
    i = calendar.session_index(first)
    return sessions()[i : i + count]


def _data(lake: Lake, symbol: str) -> pa.Table:
    return pq.read_table(lake.path(layout.consolidated(symbol)))


def _run_both(lake: Lake, **kw: object) -> None:
    assert consolidate.run(lake, workers=1).ok
    assert resample.run(lake, workers=1, **kw).ok  # type: ignore[arg-type]


@pytest.mark.parametrize("symbol", ["BRK.B", "BF-A", "A", "ZVZZT"])
def test_check_symbol_accepts_exchange_tickers(symbol: str) -> None:
    assert check_symbol(symbol) == symbol


@pytest.mark.parametrize("symbol", ["brk.b", "BRK/B", "../X", "", "X/../Y", "A B", ".A", "-A"])
def test_check_symbol_refuses_what_cannot_be_a_path_segment(symbol: str) -> None:
    with pytest.raises(LayoutError):
        check_symbol(symbol)


def test_lake_paths_are_exactly_the_contract() -> None:
    d = dt.date(2025, 1, 2)
    assert (
        layout.daily_fragment("BRK.B", d) == "bronze/raw_ohlcv/symbol=BRK.B/date=2025-01-02.parquet"
    )
    assert (
        layout.range_fragment("BF-A", d, dt.date(2025, 1, 31))
        == "bronze/raw_ohlcv/symbol=BF-A/range=2025-01-02_2025-01-31.parquet"
    )
    assert layout.consolidated("BRK.B") == "bronze/raw_ohlcv/symbol=BRK.B/data.parquet"
    assert (
        layout.silver_file(3, 2025, 1)
        == "silver/silver_3d/year=2025/month=01/data_3d_202501.parquet"
    )
    assert layout.consolidation_manifest() == "processing_metadata/consolidation_manifest.parquet"
    assert layout.silver_checkpoint(34) == "processing_metadata/silver_34d_checkpoint.json"
    assert layout.quarantine_part("rest", d, "x1") == "quarantine/rest/2025-01-02/part-x1.parquet"


def test_special_closures_are_not_sessions_and_groups_skip_them() -> None:
    for day in ("2001-09-11", "2001-09-14", "2012-10-29", "2012-10-30", "2018-12-05", "2025-01-09"):
        assert not calendar.is_session(dt.date.fromisoformat(day)), day
    assert calendar.next_session(dt.date(2001, 9, 10)) == dt.date(2001, 9, 17)
    assert calendar.next_session(dt.date(2012, 10, 26)) == dt.date(2012, 10, 31)
    assert calendar.session_index(dt.date(1962, 1, 2)) == 0


def test_dotted_and_dashed_symbols_across_closures_and_a_month_end(local_lake: Lake) -> None:
    # 2024-12-24 (early close) .. 2025-01-16 crosses a year end and the 2025-01-09 closure
    days = _window(dt.date(2024, 12, 20), 20)
    rows = [*simple_rows("BRK.B", days), *simple_rows("BF-A", days[3:], base=50.0)]
    for r in rows:
        write_fragment(local_lake, [r])
    _run_both(local_lake)
    history = reference_merge(rows)
    for n in (3, 5, 8, 13, 21, 34):
        assert read_silver(local_lake, n) == reference_bars(history, n, "calendar"), n
    for symbol in ("BRK.B", "BF-A"):
        t = _data(local_lake, symbol)
        assert t.schema.remove_metadata().equals(BRONZE_DAILY)
        dates = t["date"].to_pylist()
        assert dates == sorted(set(dates))
    # a bar is filed under the month of its start_date even when it ends in the next month
    spanning = [
        b
        for (y, m), bars in read_silver(local_lake, 8).items()
        for b in bars
        if (y, m) == (2024, 12) and b[2].month == 1  # type: ignore[attr-defined]
    ]
    assert spanning, "expected an 8d bar from December into January"
    for e in local_lake.list("silver", suffix=".parquet"):
        assert pq.read_schema(local_lake.path(e.key)).remove_metadata().equals(SILVER)


def test_complete_uses_the_lake_wide_last_date_not_the_symbols(local_lake: Lake) -> None:
    days = _window(dt.date(2025, 2, 3), 12)
    rows = [*simple_rows("LONG", days), *simple_rows("GONE", days[:4])]
    write_fragment(local_lake, [r for r in rows if r.symbol == "LONG"])
    write_fragment(local_lake, [r for r in rows if r.symbol == "GONE"])
    _run_both(local_lake)
    bars = [b for month in read_silver(local_lake, 3).values() for b in month if b[0] == "GONE"]
    # GONE stopped early, but its groups end on sessions the lake has: all complete
    assert bars and all(b[-1] is True for b in bars)
    assert read_silver(local_lake, 3) == reference_bars(reference_merge(rows), 3, "calendar")


def test_precedence_newer_wins_live_never_replaces_rest_ties_are_deterministic(
    tmp_path: Path,
) -> None:
    d0, d1, d2, d3 = _window(dt.date(2025, 3, 3), 4)
    rows = [
        Row("P", d0, 10, 12, 9, 11, 100, "rest", 0),
        Row("P", d0, 20, 22, 19, 21, 100, "export", 10),  # newer export wins
        Row("P", d1, 10, 12, 9, 11, 100, "rest", 0),
        Row("P", d1, 30, 32, 29, 31, 100, "live", 99),  # live never replaces rest
        Row("P", d2, 10, 12, 9, 11, 100, "rest", 5),
        Row("P", d2, 40, 42, 39, 41, 100, "export", 5),  # a tie on ingested_at
        Row("P", d3, 10, 12, 9, 11, 100, "live", 5),
        Row("P", d3, 10, 12, 9, 13, 100, "live", 5),  # same source, same time, other values
    ]
    results: list[list[dict[str, object]]] = []
    for order in (rows, rows[::-1]):
        lake = Lake((tmp_path / f"lake{len(results)}").as_uri())
        for i, r in enumerate(order):
            key = (
                layout.daily_fragment(r.symbol, r.date)
                if i % 2 == 0
                else layout.range_fragment(r.symbol, r.date, r.date)
            )
            write_fragment(lake, [r], key)
        assert consolidate.run(lake, workers=1).ok
        results.append(_data(lake, "P").to_pylist())
    assert results[0] == results[1]
    closes = [r["close"] for r in results[0]]
    assert closes[:2] == [21.0, 11.0]
    assert len(closes) == 4


def test_live_arriving_after_consolidation_does_not_replace_rest(local_lake: Lake) -> None:
    d = _window(dt.date(2025, 3, 3), 1)[0]
    write_fragment(local_lake, [Row("L", d, 10, 12, 9, 11, 100, "rest", 0)])
    assert consolidate.run(local_lake, workers=1).ok
    key = layout.range_fragment("L", d, d)
    write_fragment(local_lake, [Row("L", d, 30, 32, 29, 31, 100, "live", 500)], key)
    assert consolidate.run(local_lake, workers=1).ok
    assert _data(local_lake, "L")["close"].to_pylist() == [11.0]


NON_SESSIONS = [
    pytest.param(dt.date(2025, 1, 9), id="closure-2025-01-09"),
    pytest.param(dt.date(2025, 1, 11), id="saturday"),
    pytest.param(dt.date(1961, 12, 29), id="before-1962-01-02"),
]


@pytest.mark.parametrize("bad", NON_SESSIONS)
def test_rows_on_non_sessions_never_reach_silver(local_lake: Lake, bad: dt.date) -> None:
    first = dt.date(1962, 1, 2) if bad.year < 1962 else dt.date(2025, 1, 2)
    days = _window(first, 10)
    for r in simple_rows("NS", days):
        write_fragment(local_lake, [r])
    write_fragment(local_lake, [Row("NS", bad, 1, 2, 0.5, 1.5, 10)])
    _run_both(local_lake)
    assert set(_data(local_lake, "NS")["date"].to_pylist()) == set(days)
    for n in (3, 5, 8):
        for bars in read_silver(local_lake, n).values():
            assert all(int(b[8]) <= n for b in bars)  # type: ignore[call-overload]


@pytest.mark.parametrize("anchor", ["calendar", "symbol"])
def test_incremental_equals_full_across_closures_backfills_and_new_listings(
    tmp_path: Path, anchor: str
) -> None:
    days = _window(dt.date(2001, 8, 27), 30)  # the 2001-09-11..14 closure inside
    a, b = simple_rows("A", days[5:20]), simple_rows("B.C", days[:22], base=50.0)
    # backfills before A's first row (shifts every symbol-anchor row number) and inside it
    back = [
        Row("A", days[1], 3, 9, 1, 4, 7, "rest", 100),
        Row("A", days[12], 3, 9, 1, 4, 7, "rest", 100),
    ]
    more = simple_rows("A", days[20:27], base=30.0)

    def build(name: str, steps: list[list[Row]]) -> Lake:
        lake = Lake((tmp_path / name).as_uri())
        for step in steps:
            for r in step:
                key = layout.range_fragment(r.symbol, r.date, r.date) if r.ingested else None
                write_fragment(lake, [r], key)
            _run_both(lake, anchor=anchor)
        return lake

    inc = build("inc", [a + b, back, more])
    full = build("full", [a + b + back + more])
    assert snapshot(inc) == snapshot(full)
    history = reference_merge(a + b + back + more)
    for n in (3, 5, 8, 13, 21, 34):
        assert read_silver(inc, n) == reference_bars(history, n, anchor), n


def test_cli_on_a_relative_lake_path_with_symbol_anchor_and_intervals(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "rel").as_uri())
    days = _window(dt.date(2024, 12, 26), 9)
    rows = simple_rows("BRK.B", days)
    write_fragment(lake, rows)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DATABASE_URL", None)
    for args in (
        ["batch.consolidate", "--lake", "rel"],
        ["batch.resample", "--lake", "rel", "--anchor", "symbol", "--intervals", "3,5", "--full"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    history = reference_merge(rows)
    for n in (3, 5):
        assert read_silver(lake, n) == reference_bars(history, n, "symbol"), n
    assert not lake.list(layout.silver_dir(8))
    ckpt = lake.read_bytes(layout.silver_checkpoint(3)).decode()
    assert '"symbol"' in ckpt


def test_vacuum_keeps_a_fragment_rewritten_at_the_same_key_after_consolidation(
    local_lake: Lake,
) -> None:
    days = _window(dt.date(2025, 3, 3), 3)
    for d in days:
        write_fragment(local_lake, [Row("V", d, 1, 2, 0.5, 1.5, 10, "rest", 0)])
    assert consolidate.run(local_lake, workers=1, cleanup=False).ok
    # a replay rerun rewrites the same deterministic key with a corrected, newer row
    key = write_fragment(local_lake, [Row("V", days[1], 1, 2, 0.5, 1.9, 10, "rest", 60)])
    report = vacuum.run(local_lake, workers=1, retention_days=0)
    assert report.ok
    assert local_lake.exists(key)
    assert consolidate.run(local_lake, workers=1).ok
    assert _data(local_lake, "V")["close"].to_pylist() == [1.5, 1.9, 1.5]


def test_resample_before_consolidate_says_what_to_run(local_lake: Lake) -> None:
    write_fragment(local_lake, simple_rows("RAW", _window(dt.date(2025, 1, 2), 5)))
    done = subprocess.run(
        [sys.executable, "-m", "batch.resample", "--lake", local_lake.url, "--no-progress"],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "python -m batch.consolidate" in done.stderr and "RAW" in done.stderr
