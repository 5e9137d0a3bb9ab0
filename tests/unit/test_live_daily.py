"""Provisional daily bars: a simulated session's trades through the live flow give, once the
close (an early one here) plus the settle time has passed in event time, each symbol's daily bar
equal to the simulator's grouped daily (its tape's, ``tape_daily``) in every field.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from core import calendar
from core.bronze import fragments
from core.precedence import merge
from dataflows.live import build_live_flow
from dataflows.simulator import Market
from dataflows.simulator.ws import resent
from dataflows.trades import Chunk
from tests.tape_truth import truth_bars

pytestmark = pytest.mark.unit
DAY = dt.date(2024, 11, 29)  # the day after Thanksgiving: the market closes at 13:00
SETTLE = dt.timedelta(minutes=60)


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def run_day(market: Market) -> tuple[list[pa.Table], int]:
    opens, close = calendar.session_open(DAY), calendar.session_close(DAY)
    trades = market.trades(DAY, opens, close)
    events = trades.to_events() + trades.take(resent(trades)).to_events()
    events.sort(key=lambda e: (e["t"], e["q"]))
    chunks = [
        Chunk("p0", [json.dumps(events[i : i + 400])], events[i]["t"])
        for i in range(0, len(events), 400)
    ]
    end = _ms(close)
    chunks += [
        Chunk("p0", [], end, caught_up=True),  # quiet after the close: the wall clock moves
        Chunk("p0", [], end + _ms_of(SETTLE) - 60_000, caught_up=True),  # not settled yet
        Chunk("p0", [], end + _ms_of(SETTLE) + 10_000, caught_up=True),
    ]
    daily: list[pa.Table] = []
    outs: list[Any] = []
    flow = build_live_flow(
        TestingSource(chunks),
        bars=TestingSink([]),
        live=TestingSink(outs),
        quarantine=TestingSink([]),
        daily=TestingSink(daily),
        settle=SETTLE,
    )
    run_main(flow)  # type: ignore[no-untyped-call]
    emitted_at = next(i for i, o in enumerate(outs) if o.daily)
    return daily, emitted_at - (len(outs) - 2)


def _ms_of(delta: dt.timedelta) -> int:
    return int(delta / dt.timedelta(milliseconds=1))


def test_provisional_daily_bars_equal_the_grouped_daily_and_the_tape() -> None:
    market = Market(
        seed=5, n_symbols=12, start=dt.date(2024, 11, 25), end=dt.date(2024, 12, 3), tape_daily=True
    )
    daily, when = run_day(market)
    assert when == 0, "emitted before the close plus the settle time, or not at all"
    table = pa.concat_tables(daily)
    rows = {r["symbol"]: r for r in table.to_pylist()}
    grouped = market.grouped(DAY, inject=False)
    assert sorted(rows) == sorted(grouped.symbol.tolist())
    opens, close = calendar.session_open(DAY), calendar.session_close(DAY)
    tape = truth_bars(market.trades(DAY, opens, close).to_events())
    for i, sym in enumerate(grouped.symbol.tolist()):
        r = rows[sym]
        got = (r["open"], r["high"], r["low"], r["close"], r["volume"], r["transactions"])
        want = (grouped.open[i], grouped.high[i], grouped.low[i], grouped.close[i],
                grouped.volume[i], grouped.transactions[i])  # fmt: skip
        assert got == want, sym
        assert r["vwap"] == pytest.approx(grouped.vwap[i], abs=5e-5), sym  # REST: 4 decimals
        mine = [b for (s, _), b in tape.items() if s == sym]
        assert r["transactions"] == sum(b["trades"] for b in mine)
        notional = sum(b["vwap"] * b["volume"] for b in mine if b["vwap"] is not None)
        assert r["vwap"] == pytest.approx(notional / r["volume"], rel=1e-12)
        assert (r["date"], r["source"]) == (DAY, "live")
        assert r["ingested_at"] == close + SETTLE
    one = market.daily(sym, DAY, DAY, inject=False)  # the per-symbol route agrees
    assert (one.vwap[0], one.transactions[0]) == (grouped.vwap[-1], grouped.transactions[-1])
    # one fragment per symbol at the contract's path, and the REST bar wins over it
    assert {f.key for f in fragments(table)} == {
        f"bronze/raw_ohlcv/symbol={s}/date={DAY}.parquet" for s in rows
    }
    rest = table.slice(0, 1).to_pylist()[0]
    rest.update(source="rest", close=rest["close"] + 1, ingested_at=close)  # older, still wins
    both = pa.concat_tables([table.slice(0, 1), pa.Table.from_pylist([rest], table.schema)])
    assert merge(both).to_pylist()[0]["source"] == "rest"
