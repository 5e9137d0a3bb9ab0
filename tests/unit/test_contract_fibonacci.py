"""Contract check: Fibonacci silver for both anchors, incremental runs and backfills.

Symbols with missing sessions, a late start, a single row and a row on a Saturday go through
``batch.consolidate`` and ``batch.resample`` (both anchors); silver is compared with the
contract's grouping written in pandas over exchange_calendars' sessions
(``tests.contract_oracle``), after each incremental day and a backfilled old date, and byte for
byte with a full rebuild.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import consolidate, resample
from core import layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY
from tests import contract_oracle as oracle

pytestmark = pytest.mark.unit
NOW = dt.datetime(2025, 1, 2, tzinfo=dt.UTC)
DAYS = oracle.sessions_from(dt.date(2024, 11, 20), 70)  # Thanksgiving, Christmas, New Year
FIBS = (3, 5, 8, 13, 21, 34)


def _rows(symbol: str, days: list[dt.date], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 30 + np.cumsum(rng.standard_normal(len(days)))
    return pd.DataFrame(
        {
            "symbol": symbol,
            "date": days,
            "open": close - 0.2,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": rng.integers(100, 1000, len(days)).astype(float),
            "vwap": close,
            "transactions": 3,
            "source": "rest",
            "ingested_at": NOW,
        }
    )


def _market() -> dict[str, pd.DataFrame]:
    holes = [d for i, d in enumerate(DAYS[:60]) if i % 7 not in (2, 3)]
    return {
        "HOLES": _rows("HOLES", holes, 1),
        "LATE": _rows("LATE", DAYS[23:60], 2),
        "SOLO": _rows("SOLO", DAYS[40:41], 3),
        "FULL": _rows("FULL", DAYS[:60], 4),
    }


def _write(lake: Lake, df: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(df, schema=BRONZE_DAILY, preserve_index=False)
    days = sorted(df["date"])
    sym = str(df["symbol"].iloc[0])
    if len(days) == 1:
        lake.write_table(layout.daily_fragment(sym, days[0]), table)
    else:
        lake.write_table(layout.range_fragment(sym, days[0], days[-1]), table)


def _silver(lake: Lake, n: int) -> pd.DataFrame:
    frames = []
    pattern = rf"silver/silver_{n}d/year=(\d{{4}})/month=(\d{{2}})/data_{n}d_(\d{{6}})\.parquet"
    for e in lake.list(f"silver/silver_{n}d", suffix=".parquet"):
        m = re.fullmatch(pattern, e.key)
        assert m is not None and m[3] == m[1] + m[2], e.key
        frame = pq.read_table(lake.path(e.key)).to_pandas()
        assert {(d.year, d.month) for d in frame["start_date"]} == {(int(m[1]), int(m[2]))}
        frames.append(frame)
    out: pd.DataFrame = pd.concat(frames).sort_values(["symbol", "start_date"])
    return out.reset_index(drop=True)


def _check(lake: Lake, market: dict[str, pd.DataFrame], anchor: str) -> None:
    last = max(df["date"].max() for df in market.values())
    for n in FIBS:
        got = _silver(lake, n)
        assert sorted(set(got["symbol"])) == sorted(market), n
        for sym, rows in market.items():
            mine = got[got["symbol"] == sym].reset_index(drop=True)
            want = oracle.fib_bars(rows, n, anchor, lake_last=last)
            assert list(mine["start_date"]) == list(want["start_date"]), (n, sym)
            assert list(mine["end_date"]) == list(want["end_date"]), (n, sym)
            assert list(mine["days"]) == list(want["days"]), (n, sym)
            assert list(mine["complete"]) == list(want["complete"]), (n, sym, anchor)
            for c in ("open", "high", "low", "close", "volume"):
                assert mine[c].tolist() == pytest.approx(want[c].tolist(), rel=1e-12), (n, sym, c)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "silver").rglob("*.parquet"))
    }


@pytest.mark.parametrize("anchor", ["calendar", "symbol"])
def test_fibonacci_silver_incremental_backfill_and_full(tmp_path: Path, anchor: str) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    market = _market()
    for df in market.values():
        _write(lake, df)
    saturday = _rows("FULL", [dt.date(2024, 12, 7)], 9)  # not a session: rejected
    _write(lake, saturday)
    url = lake.url

    def run() -> None:
        assert consolidate.main(["--lake", url]) == 0
        assert resample.main(["--lake", url, "--anchor", anchor]) == 0

    run()
    _check(lake, market, anchor)
    data = pq.read_table(lake.path(layout.consolidated("FULL")))
    assert dt.date(2024, 12, 7) not in data["date"].to_pylist()
    held = lake.list("quarantine", suffix=".parquet")
    assert held, "the Saturday row is quarantined"
    for e in held:
        assert re.fullmatch(r"quarantine/[a-z_]+/\d{4}-\d{2}-\d{2}/part-[^/]+\.parquet", e.key)
        reasons = pq.read_table(lake.path(e.key))["reason"].to_pylist()
        assert reasons and all(reasons), e.key

    # the next days one at a time, then a backfilled old date inside HOLES' gaps
    for day in DAYS[60:63]:
        for sym in ("FULL", "HOLES"):
            extra = _rows(sym, [day], hash((sym, day)) % 1000)
            _write(lake, extra)
            market[sym] = pd.concat([market[sym], extra], ignore_index=True)
        run()
        _check(lake, market, anchor)
    old = _rows("HOLES", [DAYS[9]], 5)
    assert DAYS[9] not in set(market["HOLES"]["date"])
    _write(lake, old)
    market["HOLES"] = pd.concat([market["HOLES"], old]).sort_values("date")
    market["HOLES"] = market["HOLES"].reset_index(drop=True)
    run()
    _check(lake, market, anchor)

    full = tmp_path / "full"
    shutil.copytree(tmp_path / "lake" / "bronze", full / "bronze")
    assert consolidate.main(["--lake", full.as_uri()]) == 0
    assert resample.main(["--lake", full.as_uri(), "--anchor", anchor, "--full"]) == 0
    digests = _digests(tmp_path / "lake")
    assert digests and digests == _digests(full)
