"""Intraday rollups (core.intraday) and batch.intraday against the contract, written out by hand."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from batch import intraday as job
from batch.engine import minutes
from core import calendar, intraday, layout
from core.lake import Lake
from core.schemas import BRONZE_MINUTE, SILVER_INTRADAY

pytestmark = pytest.mark.unit
NY = ZoneInfo("America/New_York")
DAY = dt.date(2024, 11, 27)
HALF = dt.date(2024, 11, 29)  # the day after Thanksgiving: closes at 13:00


def at(day: dt.date, hh: int, mm: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hh, mm, tzinfo=NY).astimezone(dt.UTC)


def minute_table(
    rows: Sequence[tuple[str, dt.datetime, float, float, float | None, int]],
) -> pa.Table:
    """Rows (symbol, start, price, volume, vwap, trades) as bronze minutes (h/l around price)."""
    n = len(rows)
    return pa.table(
        {
            "symbol": [r[0] for r in rows],
            "date": [r[1].astimezone(NY).date() for r in rows],
            "start": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
            "open": [r[2] for r in rows],
            "high": [r[2] + 0.5 for r in rows],
            "low": [r[2] - 0.5 for r in rows],
            "close": [r[2] + 0.25 for r in rows],
            "volume": [r[3] for r in rows],
            "vwap": pa.array([r[4] for r in rows], pa.float64()),
            "trades": pa.array([r[5] for r in rows], pa.int64()),
            "source": ["live"] * n,
            "revision": pa.array([0] * n, pa.int32()),
            "partial": [False] * n,
            "ingested_at": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
        },
        schema=BRONZE_MINUTE,
    )


def reference(
    table: pa.Table, minutes_per_bar: int
) -> dict[tuple[str, dt.datetime], dict[str, Any]]:
    """The contract, one minute at a time in plain Python."""
    out: dict[tuple[str, dt.datetime], dict[str, Any]] = {}
    for r in sorted(table.to_pylist(), key=lambda r: (r["symbol"], r["start"])):
        day = r["date"]
        open_, close = calendar.session_open(day), calendar.session_close(day)
        if not open_ <= r["start"] < close:
            continue
        width = dt.timedelta(minutes=minutes_per_bar)
        k = (r["start"] - open_) // width
        start = open_ + k * width
        b = out.setdefault((r["symbol"], start), {
            "start": start, "end": min(start + width, close), "open": r["open"], "high": r["high"],
            "low": r["low"], "volume": 0.0, "trades": 0, "minutes": 0, "num": 0.0, "den": 0.0,
        })  # fmt: skip
        b["close"] = r["close"]
        b["high"] = max(b["high"], r["high"])
        b["low"] = min(b["low"], r["low"])
        b["volume"] += r["volume"]
        b["trades"] += r["trades"]
        b["minutes"] += 1
        if r["vwap"] is not None:
            b["num"] += r["vwap"] * r["volume"]
            b["den"] += r["volume"]
    for b in out.values():
        num, den = b.pop("num"), b.pop("den")
        b["vwap"] = num / den if den else None
    return out


def test_half_day_windows_cut_at_the_early_close() -> None:
    rows = [("AAPL", at(HALF, 9, 30) + dt.timedelta(minutes=m), 100.0 + m, 10.0, 100.0 + m, 2)
            for m in range(0, 210)]  # fmt: skip
    rows.append(("AAPL", at(HALF, 13, 5), 1.0, 1.0, 1.0, 1))  # after the close: no bar
    rows.append(("AAPL", at(HALF, 8, 0), 1.0, 1.0, 1.0, 1))  # pre-market: no bar
    t = minute_table(rows)
    four = intraday.rollup(t, "4h")
    assert four.num_rows == 1
    assert four["start"][0].as_py() == at(HALF, 9, 30) and four["end"][0].as_py() == at(HALF, 13, 0)
    assert four["minutes"][0].as_py() == 210 and four["trades"][0].as_py() == 420
    two = intraday.rollup(t, "2h")
    assert [e.as_py() for e in two["end"]] == [at(HALF, 11, 30), at(HALF, 13, 0)]
    assert two["minutes"].to_pylist() == [120, 90]
    assert intraday.rollup(t, "5m").num_rows == 42


def test_regular_day_matches_the_contract_with_gaps_and_a_halt() -> None:
    rng = random.Random(4)
    rows = []
    for sym in ("AAPL", "BRK.B", "HALT"):
        for m in range(390):
            if sym == "HALT" and 95 <= m < 200:  # halted 11:05..12:50: no minute bars
                continue
            if rng.random() < 0.15:  # an illiquid minute: no bar
                continue
            vw = None if rng.random() < 0.05 else 50 + rng.random()
            rows.append((sym, at(DAY, 9, 30) + dt.timedelta(minutes=m), 50 + rng.random(),
                         float(rng.randrange(0, 500)), vw, rng.randrange(1, 9)))  # fmt: skip
    t = minute_table(rows)
    for name, width in intraday.INTERVALS.items():
        got = intraday.rollup(t, name)
        assert got.schema == SILVER_INTRADAY
        want = reference(t, width)
        keys = [(r["symbol"], r["start"]) for r in got.to_pylist()]
        assert keys == sorted(want)
        for r in got.to_pylist():
            w = want[(r["symbol"], r["start"])]
            for c in ("end", "open", "high", "low", "close", "trades", "minutes"):
                assert r[c] == w[c], (name, c)
            assert r["volume"] == pytest.approx(w["volume"], rel=1e-12)
            assert r["vwap"] == pytest.approx(w["vwap"], rel=1e-12)
            assert r["complete"] is True
    thirty = [r for r in intraday.rollup(t, "30m").to_pylist() if r["symbol"] == "HALT"]
    starts = {r["start"] for r in thirty}
    assert at(DAY, 11, 30) not in starts and at(DAY, 12, 0) not in starts  # the halt: no bars


def test_complete_only_up_to_the_horizon() -> None:
    rows = [
        ("AAPL", at(DAY, 9, 30) + dt.timedelta(minutes=m), 10.0, 1.0, 10.0, 1) for m in range(12)
    ]
    horizon = int(at(DAY, 9, 42).timestamp() * 1_000_000)
    got = intraday.rollup(minute_table(rows), "5m", horizon_us=horizon)
    assert got["complete"].to_pylist() == [True, True, False]


def test_a_unknown_interval_is_refused() -> None:
    with pytest.raises(intraday.IntervalError):
        intraday.parse_intervals("5m,3m")


def lake_with_minutes(tmp_path: Path, days: list[dt.date]) -> Lake:
    lake = Lake((tmp_path / "lake").as_uri())
    for day in days:
        rows = [(s, at(day, 9, 30) + dt.timedelta(minutes=m), 20.0 + m / 100, 5.0, 20.0, 1)
                for s in ("AAPL", "MSFT", "ZZZ") for m in range(0, 390, 2)]  # fmt: skip
        lake.write_table(layout.minute_fragment(day, "p1"), minute_table(rows))
    assert minutes.run(lake).failed == {}
    return lake


def test_batch_is_incremental_by_session_and_shards_add_up(tmp_path: Path) -> None:
    days = [dt.date(2024, 11, 25), DAY, HALF]
    lake = lake_with_minutes(tmp_path, days)
    now = dt.datetime(2024, 12, 2, tzinfo=dt.UTC)
    first = job.run(lake, now=now)
    assert first.failed == {} and first.built == 18
    again = job.run(lake, now=now)
    assert again.built == 0 and again.skipped == 3
    key = layout.intraday_file("1h", HALF)
    got = lake.read_table(key)
    assert got["end"][-1].as_py() == at(HALF, 13, 0)
    # one session's minutes change: only it is rebuilt
    extra = [("NEW", at(DAY, 10, 0), 5.0, 1.0, 5.0, 1)]
    lake.write_table(layout.minute_fragment(DAY, "p2"), minute_table(extra))
    minutes.run(lake)
    third = job.run(lake, now=now)
    assert third.built == 6 and third.skipped == 2
    assert "NEW" in job.read_symbol_day(lake, "5m", DAY, "NEW")["symbol"].to_pylist()
    # shards write exactly what one run writes
    whole = {e.key: lake.read_table(e.key) for e in lake.list("silver/")}
    for e in lake.list("silver/"):
        lake.delete(e.key)
    for i in range(3):
        job.run(lake, shard=(i, 3), now=now)
    assert {e.key: lake.read_table(e.key) for e in lake.list("silver/")} == whole


def test_a_session_in_progress_is_complete_up_to_its_newest_minute(tmp_path: Path) -> None:
    lake = lake_with_minutes(tmp_path, [DAY])
    during = at(DAY, 12, 1)
    job.run(lake, now=during)
    got = lake.read_table(layout.intraday_file("2h", DAY))
    # minutes up to 15:58 are held (a test lake), so the newest minute sets the horizon
    assert got["complete"].to_pylist() == [True, True, True, False] * 3
    later = job.run(lake, now=dt.datetime(2024, 11, 28, tzinfo=dt.UTC))
    assert later.built == 6  # the close passed: rebuilt once, every bar complete
    assert all(lake.read_table(layout.intraday_file("2h", DAY))["complete"].to_pylist())


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake = lake_with_minutes(tmp_path, [DAY])
    assert job.main(["--lake", lake.url, "--intervals", "5m,1h", "--no-progress"]) == 0
    assert "2 files built" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        job.main(["--lake", lake.url, "--intervals", "3d"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        job.main(["--lake", lake.url, "--sessions", "2024-11-26"])
    assert e.value.code == 2
