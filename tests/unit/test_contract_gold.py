"""Contract check: gold indicators against pandas, on awkward histories, through the CLIs.

A long random walk with a run of missing sessions, constant prices, a single row, and a history
flat at first then moving go through ``batch.consolidate``, ``batch.resample`` and
``batch.gold``; every column of 1d and two Fibonacci intervals is compared with the contract's
pandas expressions (``tests.contract_oracle``) to 1e-9 relative, then again after an
incremental day and a backfilled old date, and against a full rebuild byte for byte.
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

from batch import consolidate, gold, resample
from core import layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY
from tests import contract_oracle as oracle

pytestmark = pytest.mark.unit
NOW = dt.datetime(2025, 1, 2, tzinfo=dt.UTC)
DAYS = oracle.sessions_from(dt.date(2023, 1, 3), 260)
HOLE = set(DAYS[100:112])  # LONG has no rows on these sessions
BACKFILLED = DAYS[105]  # later backfilled inside the hole
EXTRA = oracle.sessions_from(DAYS[-1], 2)[1]  # the next day's run
INTERVALS = ("1d", "5d", "34d")


def _frame(symbol: str, days: list[dt.date], closes: np.ndarray, spread: float) -> pd.DataFrame:
    opens = np.concatenate([[closes[0]], closes[:-1]])
    return pd.DataFrame(
        {
            "symbol": symbol,
            "date": days,
            "open": opens,
            "high": np.maximum(opens, closes) + spread,
            "low": np.minimum(opens, closes) - spread,
            "close": closes,
            "volume": 1000.0,
            "vwap": closes,
            "transactions": 5,
            "source": "rest",
            "ingested_at": NOW,
        }
    )


def _market() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(11)
    long_days = [d for d in DAYS if d not in HOLE]
    walk = 50 * np.exp(np.cumsum(0.02 * rng.standard_normal(len(long_days))))
    flat_then = np.concatenate([np.full(30, 20.0), 20 + np.cumsum(rng.standard_normal(40))])
    return {
        "LONG": _frame("LONG", long_days, walk, 0.3),
        "FLAT": _frame("FLAT", DAYS[:200], np.full(200, 10.0), 0.0),
        "ONE": _frame("ONE", DAYS[50:51], np.array([7.5]), 0.5),
        "STEP": _frame("STEP", DAYS[150:220], flat_then, 0.1),
    }


def _write(lake: Lake, df: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(df, schema=BRONZE_DAILY, preserve_index=False)
    days = sorted(df["date"])
    symbol = str(df["symbol"].iloc[0])
    key = (
        layout.daily_fragment(symbol, days[0])
        if len(days) == 1
        else layout.range_fragment(symbol, days[0], days[-1])
    )
    lake.write_table(key, table)


def _run(lake: Lake, *extra: str) -> None:
    url = lake.url
    assert consolidate.main(["--lake", url]) == 0
    assert resample.main(["--lake", url, *extra]) == 0
    assert gold.main(["--lake", url, "--intervals", ",".join(INTERVALS), *extra]) == 0


def _gold(lake: Lake, interval: str) -> pd.DataFrame:
    """Every gold row of ``interval``; each file's name, month and schema checked."""
    frames = []
    date_col = "date" if interval == "1d" else "start_date"
    pattern = rf"gold/indicators_{interval}/year=(\d{{4}})/month=(\d{{2}})/data_{interval}_(\d{{6}})\.parquet"
    for e in lake.list(f"gold/indicators_{interval}", suffix=".parquet"):
        m = re.fullmatch(pattern, e.key)
        assert m is not None and m[3] == m[1] + m[2], e.key
        table = pq.read_table(lake.path(e.key))
        keys = ["symbol", "date"] if interval == "1d" else ["symbol", "start_date", "end_date"]
        keys += [] if interval == "1d" else ["complete"]
        assert table.schema.names == [*keys, "close", *EXPECTED_INDICATORS], e.key
        for name in table.schema.names:
            assert table.schema.field(name).type == TYPES[name], (e.key, name)
        frame = table.to_pandas()
        assert {(d.year, d.month) for d in frame[date_col]} == {(int(m[1]), int(m[2]))}, e.key
        frames.append(frame)
    out: pd.DataFrame = pd.concat(frames).sort_values(["symbol", date_col])
    return out.reset_index(drop=True)


EXPECTED_INDICATORS = [
    *(f"ema_{n}" for n in oracle.EMA_SPANS),
    "macd_fast",
    "macd_slow",
    "rsi_14",
    "atr_14",
    "vegas",
]
TYPES = {
    "symbol": pa.string(),
    "date": pa.date32(),
    "start_date": pa.date32(),
    "end_date": pa.date32(),
    "complete": pa.bool_(),
    "close": pa.float64(),
    **{c: pa.float64() for c in EXPECTED_INDICATORS},
    "vegas": pa.int8(),
}


def _bars(history: pd.DataFrame, interval: str, lake_last: dt.date) -> pd.DataFrame:
    if interval == "1d":
        return history.sort_values("date").reset_index(drop=True)
    return oracle.fib_bars(history, int(interval.removesuffix("d")), lake_last=lake_last)


def _check(lake: Lake, market: dict[str, pd.DataFrame]) -> None:
    lake_last = max(df["date"].max() for df in market.values())
    for interval in INTERVALS:
        got = _gold(lake, interval)
        key = "date" if interval == "1d" else "start_date"
        assert sorted(set(got["symbol"])) == sorted(market)
        for symbol, history in market.items():
            mine = got[got["symbol"] == symbol].reset_index(drop=True)
            bars = _bars(history, interval, lake_last)
            want = oracle.indicators(bars)
            assert [str(x) for x in mine[key]] == [str(x) for x in bars[key]], (interval, symbol)
            if interval != "1d":
                assert list(mine["end_date"]) == list(bars["end_date"])
                assert list(mine["complete"]) == list(bars["complete"])
            for c in ("close", *EXPECTED_INDICATORS[:-1]):
                for i, (a, b) in enumerate(zip(mine[c], want[c], strict=True)):
                    assert oracle.close_rel(a, b, floor=0.0), (interval, symbol, c, i, a, b)
            g_vegas = [None if pd.isna(v) else int(v) for v in mine["vegas"]]
            w_vegas = [None if pd.isna(v) else int(v) for v in want["vegas"]]
            assert g_vegas == w_vegas, (interval, symbol)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
        if p.parts[len(root.parts)] in ("silver", "gold")
    }


def test_gold_every_column_equals_pandas_then_incremental_equals_full(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    market = _market()
    for df in market.values():
        _write(lake, df)
    _run(lake)
    _check(lake, market)
    flat = _gold(lake, "1d").query("symbol == 'FLAT'")
    assert (flat["rsi_14"].dropna() == 50.0).all() and flat["rsi_14"].notna().sum() == 200 - 14
    assert (flat["atr_14"].dropna() == 0.0).all()
    long_1d = _gold(lake, "1d").query("symbol == 'LONG'")
    assert long_1d["vegas"].notna().sum() == len(long_1d) - 168  # the oracle sees every column
    assert _gold(lake, "34d").groupby("symbol")["complete"].last()["LONG"] is np.False_

    # the next day, and a backfilled old date inside LONG's hole
    long_history = market["LONG"]
    nxt = _frame("LONG", [EXTRA], np.array([long_history["close"].iloc[-1] * 1.01]), 0.2)
    old = _frame("LONG", [BACKFILLED], np.array([51.0]), 0.2)
    for df in (nxt, old):
        _write(lake, df)
    market["LONG"] = pd.concat([long_history, nxt, old]).sort_values("date")
    market["LONG"] = market["LONG"].reset_index(drop=True)
    _run(lake)
    _check(lake, market)

    full = Lake((tmp_path / "full").as_uri())
    shutil.copytree(tmp_path / "lake" / "bronze", tmp_path / "full" / "bronze")
    _run(full, "--full")
    digests = _digests(tmp_path / "lake")
    assert digests and digests == _digests(tmp_path / "full")


def test_gold_of_symbol_anchored_silver(tmp_path: Path) -> None:
    """Fibonacci gold follows silver's anchor: with ``--anchor symbol``, groups of N rows."""
    lake = Lake((tmp_path / "lake").as_uri())
    market = _market()
    for df in market.values():
        _write(lake, df)
    assert consolidate.main(["--lake", lake.url]) == 0
    assert resample.main(["--lake", lake.url, "--anchor", "symbol"]) == 0
    assert gold.main(["--lake", lake.url, "--intervals", "5d"]) == 0
    got = _gold(lake, "5d")
    for symbol, history in market.items():
        bars = oracle.fib_bars(history, 5, "symbol")
        mine = got[got["symbol"] == symbol].reset_index(drop=True)
        assert list(mine["start_date"]) == list(bars["start_date"]), symbol
        assert list(mine["complete"]) == list(bars["complete"]), symbol
        want = oracle.indicators(bars)
        for c in ("close", *EXPECTED_INDICATORS[:-1]):
            for a, b in zip(mine[c], want[c], strict=True):
                assert oracle.close_rel(a, b, floor=0.0), (symbol, c, a, b)
