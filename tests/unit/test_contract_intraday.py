"""Contract check: trades -> minute bars -> intraday silver, through the real entry points.

An archived day of awkward trades (the day after Thanksgiving, an early close) goes through the
replay flow (``dataflows.replay_trades``, the live flow's own fold), ``batch.consolidate
--minutes`` and ``batch.intraday``; the minute bars and every 5m..4h bar are compared with an
oracle written from the contract: the consolidated tape's update rules (a trade updates a field
only if every condition allows it; none is a regular sale), a trade seen twice counts once, a
minute without a trade that may set a price has no bar, windows anchored at 09:30 and cut at the
close, vwap the volume-weighted mean of the minutes' vwap. Minute precedence (rest over live,
revision, ingested_at, partial) is checked on hand-written fragments.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bytewax.testing import run_main

from batch import consolidate, intraday
from core import layout
from core.lake import Lake
from core.schemas import BRONZE_MINUTE, TRADES
from core.settings import LiveSettings
from dataflows import minute_fold, replay_trades
from tests import contract_oracle as oracle

pytestmark = pytest.mark.unit
DAY = dt.date(2024, 11, 29)  # day after Thanksgiving: closes 13:00 New York
OPEN, CLOSE = oracle.session_window(DAY)
HORIZON_S = 15 * 60  # the replay's default revision horizon
INTERVALS = {"5m": 5, "15m": 15, "30m": 30, "1h": 60, "2h": 120, "4h": 240}

# Polygon's consolidated update rules of the conditions used here: (high_low, open_close, volume)
RULES = {
    14: (True, True, True),  # Intermarket Sweep
    37: (False, False, True),  # Odd Lot Trade
    12: (False, False, True),  # Form T
    15: (False, False, False),  # Market Center Official Close
    33: (True, False, True),  # Sold (Out of Sequence)
    41: (True, True, True),  # Trade Thru Exempt
}


@dataclass(frozen=True)
class Trade:
    symbol: str
    at: dt.datetime  # New York wall time on DAY, as (h, m, s) offsets below
    price: float
    size: float
    conditions: tuple[int, ...] = ()
    exchange: int = 4
    id: str = ""
    delay_s: float = 0.05
    """Seconds between the trade and its arrival."""


def _t(h: int, m: int, s: float) -> dt.datetime:
    local = dt.datetime(DAY.year, DAY.month, DAY.day, h, m, tzinfo=oracle_ny())
    return (local + dt.timedelta(seconds=s)).astimezone(dt.UTC)


def oracle_ny() -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo("America/New_York")


def day_trades() -> list[Trade]:
    raw: list[tuple[Any, ...]] = [
        ("AAA", _t(9, 29, 30), 9.90, 100, ()),  # before the open: a minute bar, no silver
        ("AAA", _t(9, 30, 5), 10.00, 100, ()),
        ("AAA", _t(9, 30, 10), 12.00, 5, (37,)),  # odd lot: volume only
        ("AAA", _t(9, 30, 20), 8.00, 3, (14, 37)),  # sweep + odd lot: volume only
        ("AAA", _t(9, 30, 30), 10.10, 200, (), 4, "dup"),
        ("AAA", _t(9, 30, 30), 10.10, 200, (), 4, "dup", 5.0),  # the same trade again
        ("AAA", _t(9, 30, 58), 10.15, 40, (), 4, "late", 60.0),  # late: revises 09:30
        ("AAA", _t(9, 33, 30), 30.0, 40, (), 4, "too-late", 3 * 3600.0),  # beyond the horizon
        ("AAA", _t(9, 30, 45), 10.20, 50, (), 7, "dup"),  # same id, other exchange: counts
        ("AAA", _t(9, 30, 50), 20.00, 1000, (15,)),  # official close print: nothing
        ("AAA", _t(9, 30, 55), 10.05, 0.5, (37,)),  # a fractional odd lot
        ("AAA", _t(9, 31, 5), 11.00, 10, (33,)),  # high/low and volume, not open/close
        ("AAA", _t(9, 31, 30), 10.50, 10, ()),
        ("AAA", _t(9, 31, 40), 10.40, 10, (12,)),  # Form T: volume only
        ("AAA", _t(9, 32, 10), 10.70, 7, (37,)),  # a minute of odd lots only: no bar
        ("AAA", _t(9, 33, 0), 10.60, 100, ()),
        ("AAA", _t(9, 41, 0), 10.80, 100, (14,)),  # 09:35-09:40 empty: no 5m bar
        ("AAA", _t(11, 29, 59), 10.90, 100, ()),
        ("AAA", _t(11, 30, 0), 11.10, 100, ()),
        ("AAA", _t(12, 59, 59.5), 11.30, 300, ()),
        ("AAA", _t(13, 0, 30), 11.50, 100, ()),  # after the early close
        ("AAA", _t(19, 59, 0), 11.60, 100, ()),  # 00:59 UTC the next day: still DAY's bar
        ("BBB", _t(9, 45, 0), 50.00, 10, ()),
        ("BBB", _t(9, 45, 1), 50.25, 10, (41,)),
        ("BBB", _t(12, 30, 0), 49.75, 40, ()),
    ]
    out = []
    for i, r in enumerate(raw):
        sym, at, price, size, cond = r[:5]
        exchange = r[5] if len(r) > 5 else 4
        ident = r[6] if len(r) > 6 else f"t{i}"
        delay = r[7] if len(r) > 7 else 0.05
        out.append(Trade(sym, at, price, float(size), cond, exchange, ident, delay))
    return out


def _archive(trades: list[Trade]) -> pa.Table:
    rows = []
    for seq, t in enumerate(trades):
        received = t.at + dt.timedelta(seconds=t.delay_s)
        rows.append(
            {
                "symbol": t.symbol,
                "sip_timestamp": t.at,
                "price": t.price,
                "size": t.size,
                "exchange": t.exchange,
                "conditions": list(t.conditions),
                "id": t.id,
                "sequence": seq,
                "tape": 1,
                "received_at": received,
            }
        )
    table = pa.Table.from_pylist(rows, schema=TRADES)
    return table.sort_by([("symbol", "ascending"), ("sip_timestamp", "ascending")])


# -- the oracle ---------------------------------------------------------------------------------
def _allows(t: Trade) -> tuple[bool, bool, bool]:
    hl = oc = vol = True
    for c in t.conditions:
        r = RULES[c]
        hl, oc, vol = hl and r[0], oc and r[1], vol and r[2]
    return hl, oc, vol


def oracle_minutes(trades: list[Trade]) -> pd.DataFrame:
    """Minute bars of ``trades`` per the contract."""
    seen: set[tuple[str, int, str]] = set()
    kept = []
    for t in sorted(trades, key=lambda x: x.at + dt.timedelta(seconds=x.delay_s)):
        key = (t.symbol, t.exchange, t.id)
        if t.delay_s > HORIZON_S:
            continue  # beyond the revision horizon: quarantined, in no bar
        if key in seen:
            continue
        seen.add(key)
        kept.append(t)
    by_minute: dict[tuple[str, dt.datetime], list[Trade]] = {}
    for t in kept:
        by_minute.setdefault((t.symbol, t.at.replace(second=0, microsecond=0)), []).append(t)
    rows = []
    for (sym, start), ts in sorted(by_minute.items()):
        ts = sorted(ts, key=lambda x: x.at)
        oc = [t for t in ts if _allows(t)[1]]
        hl = [t for t in ts if _allows(t)[0]]
        vol = [t for t in ts if _allows(t)[2]]
        if not oc:
            continue  # no trade may set open/close: no bar (none of these minutes has hl only)
        volume = sum(t.size for t in vol)
        rows.append(
            {
                "symbol": sym,
                "start": start,
                "open": oc[0].price,
                "high": max(t.price for t in hl),
                "low": min(t.price for t in hl),
                "close": oc[-1].price,
                "volume": volume,
                "vwap": sum(t.price * t.size for t in vol) / volume if volume else None,
                "trades": len(vol),
            }
        )
    return pd.DataFrame(rows)


def oracle_intraday(
    minutes: pd.DataFrame, width: int, session: tuple[dt.datetime, dt.datetime] = (OPEN, CLOSE)
) -> pd.DataFrame:
    """Bars of ``width`` minutes from 09:30, cut at the close, regular session only."""
    OPEN, CLOSE = session
    step = dt.timedelta(minutes=width)
    rows = []
    regular = minutes[(minutes["start"] >= OPEN) & (minutes["start"] < CLOSE)]
    for sym, mins in regular.groupby("symbol", sort=True):
        k_of = ((mins["start"] - OPEN) // step).astype(int)
        for k, grp in mins.groupby(k_of, sort=True):
            grp = grp.sort_values("start")
            start = OPEN + k * step
            has = grp[grp["vwap"].notna()]
            den = float(has["volume"].sum())
            rows.append(
                {
                    "symbol": sym,
                    "start": start,
                    "end": min(start + step, CLOSE),
                    "open": float(grp["open"].iloc[0]),
                    "high": float(grp["high"].max()),
                    "low": float(grp["low"].min()),
                    "close": float(grp["close"].iloc[-1]),
                    "volume": float(grp["volume"].sum()),
                    "vwap": float((has["vwap"] * has["volume"]).sum()) / den if den else None,
                    "trades": int(grp["trades"].sum()),
                    "minutes": len(grp),
                    "complete": True,
                }
            )
    return pd.DataFrame(rows)


def _same(got: pd.DataFrame, want: pd.DataFrame, cols: list[str]) -> None:
    assert len(got) == len(want), (got, want)
    for (_, g), (_, w) in zip(got.iterrows(), want.iterrows(), strict=True):
        for c in cols:
            a, b = g[c], w[c]
            if isinstance(b, float) or isinstance(a, float):
                assert oracle.close_rel(a, b, 1e-12), (g["symbol"], g["start"], c, a, b)
            else:
                assert a == b, (g["symbol"], g["start"], c, a, b)


# -- the run ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake((tmp_path_factory.mktemp("intraday") / "lake").as_uri())
    lake.write_table(layout.trades_part(DAY, "contract"), _archive(day_trades()))
    settings = LiveSettings(lake_url=lake.url, replay_trades_date=DAY, live_flush_s=0.05)
    run_main(replay_trades.flow_from_settings(settings))  # type: ignore[no-untyped-call]
    assert consolidate.main(["--lake", lake.url, "--minutes"]) == 0
    assert intraday.main(["--lake", lake.url]) == 0
    return lake


def _minute_file(lake: Lake) -> pd.DataFrame:
    t = pq.read_table(lake.path(layout.minute_consolidated(DAY)))
    assert t.schema.remove_metadata().equals(BRONZE_MINUTE)
    out: pd.DataFrame = t.to_pandas()
    return out


def test_minute_bars_follow_the_tape_rules(built: Lake) -> None:
    got = _minute_file(built)
    assert (got["date"] == DAY).all() and (got["source"] == "live").all()
    revised = got[got["start"] == OPEN]
    assert revised["revision"].tolist() == [1], "the late trade revised 09:30 once"
    held = built.list("quarantine/replay_trades", suffix=".parquet")
    assert held, "the trade beyond the horizon is quarantined, not dropped"
    reasons = pd.concat(pq.read_table(built.path(e.key)).to_pandas() for e in held)
    assert len(reasons) == 1 and reasons["reason"].iloc[0]
    want = oracle_minutes(day_trades())
    cols = ["symbol", "start", "open", "high", "low", "close", "volume", "vwap", "trades"]
    _same(got.reset_index(drop=True), want, cols)


@pytest.mark.parametrize("name", list(INTERVALS))
def test_intraday_silver(built: Lake, name: str) -> None:
    key = f"silver/silver_{name}/date={DAY.isoformat()}/data.parquet"
    t = pq.read_table(built.path(key))
    names = ["symbol", "start", "end", "open", "high", "low", "close", "volume", "vwap"]
    names += ["trades", "minutes", "complete"]
    assert t.schema.names == names
    types = {"symbol": pa.string(), "start": pa.timestamp("us", tz="UTC"), "trades": pa.int64(),
             "end": pa.timestamp("us", tz="UTC"), "minutes": pa.int32(), "complete": pa.bool_()}  # fmt: skip
    for n in names:
        assert t.schema.field(n).type == types.get(n, pa.float64()), n
    got = t.to_pandas()
    want = oracle_intraday(oracle_minutes(day_trades()), INTERVALS[name])
    _same(got, want, names)


def test_no_bar_for_an_empty_window_and_the_last_cut_at_the_close(built: Lake) -> None:
    t = pq.read_table(built.path(f"silver/silver_5m/date={DAY.isoformat()}/data.parquet"))
    starts = {s.astimezone(oracle_ny()).time() for s in t["start"].to_pylist()}
    assert dt.time(9, 35) not in starts and dt.time(9, 40) in starts
    four = pq.read_table(built.path(f"silver/silver_4h/date={DAY.isoformat()}/data.parquet"))
    ends = {e.astimezone(oracle_ny()).time() for e in four["end"].to_pylist()}
    assert ends == {dt.time(13, 0)}


# -- precedence ---------------------------------------------------------------------------------
def _bar(source: str, close: float, revision: int, partial: bool, ingested: int) -> dict[str, Any]:
    start = OPEN + dt.timedelta(minutes=1)
    return {
        "symbol": "PRC", "date": DAY, "start": start, "open": close, "high": close,
        "low": close, "close": close, "volume": 1.0, "vwap": close, "trades": 1,
        "source": source, "revision": revision, "partial": partial,
        "ingested_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=ingested),
    }  # fmt: skip


CASES = {
    "rest beats a newer live": ([("rest", 1.0, 0, False, 0), ("live", 2.0, 3, False, 9)], 1.0),
    "higher revision": ([("live", 1.0, 2, False, 0), ("live", 2.0, 1, False, 9)], 1.0),
    "newer ingested_at": ([("live", 1.0, 1, False, 0), ("live", 2.0, 1, False, 9)], 2.0),
    "partial never replaces": ([("live", 1.0, 0, False, 0), ("live", 2.0, 5, True, 9)], 1.0),
    "partial rest vs live": ([("live", 1.0, 0, False, 0), ("rest", 2.0, 0, True, 9)], 1.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_minute_precedence(tmp_path: Path, case: str) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    bars, want = CASES[case]
    for i, spec in enumerate(bars):
        lake.write_table(
            layout.minute_fragment(DAY, f"{spec[0]}-{i}"),
            pa.Table.from_pylist([_bar(*spec)], schema=BRONZE_MINUTE),
        )
    assert consolidate.main(["--lake", lake.url, "--minutes"]) == 0
    got = pq.read_table(lake.path(layout.minute_consolidated(DAY)))["close"].to_pylist()
    assert got == [want]
    assert not math.isnan(want)


def test_notional_counts_fractional_shares_the_same_one_by_one_or_together() -> None:
    rng = np.random.default_rng(3)
    p = np.round(rng.uniform(0.5, 900.0, 500), 4)
    s = np.concatenate([rng.integers(1, 5000, 250).astype(float), rng.uniform(0, 3, 250)])
    batch = minute_fold.notional_units_array(p, s).tolist()
    one = [minute_fold.notional_units(a, b) for a, b in zip(p.tolist(), s.tolist(), strict=True)]
    assert batch == one
    assert minute_fold.notional_units(10.05, 0.5) == 5_025_000
    assert minute_fold.notional_units(10.05, 3.0) == 30_150_000  # whole shares exactly


XMAS_EVE = dt.date(2024, 12, 24)


def test_christmas_eve_minutes_with_and_without_vwap(tmp_path: Path) -> None:
    """Hand-written minutes: a null vwap is left out of both sums; all null gives null."""
    lake = Lake((tmp_path / "lake").as_uri())
    session = oracle.session_window(XMAS_EVE)
    rows = []
    for k, (sym, minute, vwap) in enumerate(
        [("V", 0, 10.0), ("V", 1, None), ("V", 2, 10.5), ("V", 208, 11.0), ("V", 209, None), ("V", 211, 11.0),
         ("N", 3, None), ("N", 4, None), ("V", -1, 9.0)]
    ):  # fmt: skip
        price = 10.0 + k / 10
        rows.append(
            {"symbol": sym, "date": XMAS_EVE, "start": session[0] + dt.timedelta(minutes=minute),
             "open": price, "high": price + 0.2, "low": price - 0.2, "close": price + 0.1,
             "volume": 100.0 + 10 * k, "vwap": vwap, "trades": 3, "source": "rest",
             "revision": 0, "partial": False,
             "ingested_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC)}
        )  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=BRONZE_MINUTE)
    table = table.sort_by([("symbol", "ascending"), ("start", "ascending")])
    lake.write_table(layout.minute_fragment(XMAS_EVE, "rest-a"), table)
    assert consolidate.main(["--lake", lake.url, "--minutes"]) == 0
    assert intraday.main(["--lake", lake.url]) == 0
    minutes = pd.DataFrame(rows).sort_values(["symbol", "start"]).reset_index(drop=True)
    for name, width in INTERVALS.items():
        key = f"silver/silver_{name}/date={XMAS_EVE.isoformat()}/data.parquet"
        got = pq.read_table(lake.path(key)).to_pandas()
        want = oracle_intraday(minutes, width, session)
        _same(got, want, list(want.columns))
        assert got["end"].max() == session[1]  # minute 211 is after the 13:00 close


def test_a_rest_minute_arriving_later_rebuilds_the_sessions_silver(
    built: Lake, tmp_path: Path
) -> None:
    """rest beats live: a REST bar for 09:31 replaces the live one, in bronze and in silver."""
    shutil.copytree(Path(built.path("")), tmp_path / "lake")
    lake = Lake((tmp_path / "lake").as_uri())
    minute = OPEN + dt.timedelta(minutes=1)
    rest = {**_bar("rest", 10.55, 0, False, 0), "symbol": "AAA", "start": minute,
            "high": 11.2, "low": 10.3, "volume": 35.0, "vwap": 10.6, "trades": 4}  # fmt: skip
    lake.write_table(
        layout.minute_fragment(DAY, "rest-late"), pa.Table.from_pylist([rest], schema=BRONZE_MINUTE)
    )
    assert consolidate.main(["--lake", lake.url, "--minutes"]) == 0
    assert intraday.main(["--lake", lake.url]) == 0
    minutes = oracle_minutes(day_trades())
    at = minutes.index[(minutes["symbol"] == "AAA") & (minutes["start"] == minute)][0]
    for c in ("open", "high", "low", "close", "volume", "vwap", "trades"):
        minutes.loc[at, c] = rest[c]
    got = _minute_file(lake)
    assert got.loc[got["start"] == minute, "source"].tolist() == ["rest"]
    for name, width in INTERVALS.items():
        key = f"silver/silver_{name}/date={DAY.isoformat()}/data.parquet"
        _same(pq.read_table(lake.path(key)).to_pandas(), oracle_intraday(minutes, width),
              ["symbol", "start", "open", "high", "low", "close", "volume", "vwap", "trades"])  # fmt: skip


def test_the_live_flow_publishes_the_same_intraday_bars_and_daily_bar(built: Lake) -> None:
    """The live flow over the same trades: its final 5m..4h bars equal silver's, and its
    provisional daily bar is the regular session's minutes folded."""
    from bytewax.testing import TestingSink

    from dataflows.live import build_live_flow
    from dataflows.rollups import RollupBar

    rollups: list[list[RollupBar]] = []
    daily: list[pa.Table] = []
    sink: list[Any] = []
    flow = build_live_flow(
        replay_trades.TradesArchiveSource(built, DAY),
        bars=TestingSink(sink),
        live=TestingSink(sink),
        quarantine=TestingSink(sink),
        rollups=TestingSink(rollups),
        daily=TestingSink(daily),
        settle=dt.timedelta(0),
    )
    run_main(flow)  # type: ignore[no-untyped-call]
    finals: dict[tuple[str, str, int], RollupBar] = {}
    for batch in rollups:
        for bar in batch:
            if bar.final:
                key = (bar.interval, bar.symbol, bar.start)
                if key not in finals or bar.revision >= finals[key].revision:
                    finals[key] = bar
    for name in INTERVALS:
        silver = pq.read_table(
            built.path(f"silver/silver_{name}/date={DAY.isoformat()}/data.parquet")
        )
        for row in silver.to_pylist():
            start_ms = int(row["start"].timestamp() * 1000)
            live = finals.get((name, row["symbol"], start_ms))
            assert live is not None, (name, row["symbol"], row["start"])
            for c in ("open", "high", "low", "close", "volume", "vwap", "trades", "minutes"):
                assert getattr(live, c) == row[c], (name, row["symbol"], row["start"], c)
        assert len([k for k in finals if k[0] == name]) == silver.num_rows, name
    minutes = oracle_minutes(day_trades())
    regular = minutes[(minutes["start"] >= OPEN) & (minutes["start"] < CLOSE)]
    days = pa.concat_tables(daily).to_pylist()
    assert {d["symbol"] for d in days} == set(regular["symbol"])
    for d in days:
        mine = regular[regular["symbol"] == d["symbol"]].sort_values("start")
        assert d["date"] == DAY
        assert d["open"] == mine["open"].iloc[0] and d["close"] == mine["close"].iloc[-1]
        assert d["high"] == mine["high"].max() and d["low"] == mine["low"].min()
        assert oracle.close_rel(d["volume"], float(mine["volume"].sum()), 1e-12)
        want_vwap = float((mine["vwap"] * mine["volume"]).sum() / mine["volume"].sum())
        assert oracle.close_rel(d["vwap"], want_vwap, 1e-9), (d["vwap"], want_vwap)
