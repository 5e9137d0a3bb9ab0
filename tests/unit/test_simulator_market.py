"""The simulated market: determinism, calendar, listings, splits, plausibility, bad rows, speed."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from core import calendar
from core.validation import check_daily
from dataflows.simulator import badrows, encode
from dataflows.simulator.bars import Bars
from dataflows.simulator.market import Market
from tests.tape_truth import truth_bars

pytestmark = pytest.mark.unit
START, END = dt.date(2024, 1, 2), dt.date(2024, 12, 31)
NOW = dt.datetime(2025, 1, 10, tzinfo=dt.UTC)


@cache
def market(seed: int = 7, n: int = 300) -> Market:
    return Market(seed=seed, n_symbols=n, start=START, end=END)


def same(a: Bars, b: Bars) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f))
        for f in ("symbol", "day", "open", "high", "low", "close", "volume", "vwap", "transactions")
    )


def bronze(bars: Bars) -> pa.Table:
    """Bars as bronze columns; NaN (an omitted JSON field) becomes null."""
    t = bars.to_arrow()
    cols = {n: t[n] for n in ("symbol", "date")}
    for n in ("open", "high", "low", "close", "volume", "vwap"):
        cols[n] = pc.if_else(pc.is_nan(t[n]), pa.scalar(None, pa.float64()), t[n])
    cols["transactions"] = t["transactions"]
    return pa.table(cols)


# -- determinism -----------------------------------------------------------------------------
def test_same_seed_same_market_and_query_order_does_not_matter() -> None:
    a = Market(seed=11, n_symbols=150, start=START, end=END)
    b = Market(seed=11, n_symbols=150, start=START, end=END)
    days = a.window()
    late_first = [b.grouped(d) for d in reversed(days[::37])][::-1]
    assert all(same(a.grouped(d), g) for d, g in zip(days[::37], late_first, strict=True))
    assert same(a.daily("AAPL", START, END), b.daily("AAPL", START, END))
    assert [s.ticker for s in a.symbols()] == [s.ticker for s in b.symbols()]
    assert a.splits() == b.splits()
    c = Market(seed=12, n_symbols=150, start=START, end=END)
    assert not same(a.grouped(days[5]), c.grouped(days[5]))


def test_tickers_are_unique_and_stable_across_market_sizes() -> None:
    small, big = market(7, 300), Market(seed=7, n_symbols=3000, start=START, end=END)
    tickers = [s.ticker for s in big.symbols()]
    assert len(set(tickers)) == len(tickers)
    assert tickers[:300] == [s.ticker for s in small.symbols()]
    assert all(1 <= len(t.split(".")[0]) <= 5 and t.replace(".", "").isalpha() for t in tickers)
    assert {s.type for s in big.symbols()} == {"CS", "ETF"}
    assert {s.exchange for s in big.symbols()} == {"XNYS", "XNAS"}


def test_grouped_and_per_symbol_ranges_agree_exactly() -> None:
    m = Market(seed=3, n_symbols=400, start=START, end=END)
    days = m.window()
    for day in days[::50]:
        g = m.grouped(day)
        for r in range(0, len(g), 41):
            d = m.daily(str(g.symbol[r]), day - dt.timedelta(days=9), day)
            assert same(d.take(d.day == g.day[r]), g.take([r]))


# -- calendar, listings, halts ---------------------------------------------------------------
@pytest.mark.parametrize(
    "holiday", [dt.date(2025, 1, 9), dt.date(2018, 12, 5), dt.date(2024, 12, 25)]
)
def test_no_bars_on_closures(holiday: dt.date) -> None:
    m = Market(
        seed=7,
        n_symbols=100,
        start=holiday - dt.timedelta(days=40),
        end=holiday + dt.timedelta(days=20),
    )
    assert len(m.grouped(holiday)) == 0
    assert len(m.grouped(holiday - dt.timedelta(days=holiday.weekday() + 2))) == 0  # a weekend
    bars = m.daily("AAPL", holiday - dt.timedelta(days=40), holiday + dt.timedelta(days=20))
    assert holiday not in bars.dates()
    assert all(calendar.is_session(d) for d in bars.dates())


def test_listing_and_delisting_are_respected() -> None:
    m = market()
    listings = m.symbols()
    late = [x for x in listings if START < x.list_date <= END]
    gone = [x for x in listings if x.delist_date is not None]
    assert late and gone
    for x in late + gone:
        dates = m.daily(x.ticker, START, END).dates()
        assert dates, x
        assert dates[0] >= max(x.list_date, START)
        if x.delist_date is not None:
            assert dates[-1] < x.delist_date
            assert x.delist_date not in m.grouped(x.delist_date).symbol.tolist()
    x = late[0]
    assert x.ticker not in m.grouped(calendar.previous_session(x.list_date)).symbol.tolist()
    assert x.ticker in m.grouped(x.list_date).symbol.tolist()
    assert x.ticker not in [
        s.ticker for s in m.symbols(as_of=calendar.previous_session(x.list_date))
    ]


def test_some_symbols_miss_sessions_through_halts() -> None:
    m = market()
    full = len(m.window())
    halted = 0
    for x in m.symbols():
        if x.list_date <= START and x.delist_date is None:
            halted += full - len(m.daily(x.ticker, START, END))
    assert 0 < halted < 0.01 * full * len(m.symbols())


# -- splits ------------------------------------------------------------------------------------
def test_forward_and_reverse_splits_adjust_like_polygon() -> None:
    m = market()
    window = [s for s in m.splits() if START < s.execution_date <= END]
    assert {s.split_to > s.split_from for s in window} == {True, False}
    forward = next(x for x in window if x.split_to > x.split_from)
    reverse = next(x for x in window if x.split_to < x.split_from)
    for s in (forward, reverse):
        raw = m.daily(s.ticker, START, END)
        adj = m.daily(s.ticker, START, END, adjusted=True)
        # adjusted = unadjusted divided by every split executed after the bar's date
        later = [
            float(np.prod([x.ratio for x in m.splits(s.ticker) if x.execution_date > d]))
            for d in raw.dates()
        ]
        np.testing.assert_allclose(adj.close * later, raw.close, rtol=1e-12)
        np.testing.assert_allclose(adj.volume / later, raw.volume, rtol=1e-12)
        # the unadjusted series jumps by the ratio on the execution date, the adjusted one does not
        k = raw.dates().index(s.execution_date)
        assert raw.close[k - 1] / raw.close[k] == pytest.approx(s.ratio, rel=0.4)
        assert adj.close[k - 1] / adj.close[k] == pytest.approx(1.0, abs=0.4)


def test_grouped_adjusted_matches_daily_adjusted() -> None:
    m = market()
    s = next(x for x in m.splits() if START < x.execution_date <= END)
    day = calendar.previous_session(s.execution_date)
    g = m.grouped(day, adjusted=True)
    row = g.take(g.symbol == s.ticker)
    d = m.daily(s.ticker, day, day, adjusted=True)
    np.testing.assert_allclose(row.close, d.close, rtol=1e-12)
    assert m.grouped(day).close[g.symbol == s.ticker][0] != row.close[0]


# -- plausibility ------------------------------------------------------------------------------
def test_bars_are_plausible() -> None:
    m = market()
    for day in m.window()[::21]:
        b = m.grouped(day)
        assert len(b) > 0.8 * m.n_symbols
        assert (b.low > 0).all() and (b.low <= np.minimum(b.open, b.close)).all()
        assert (b.high >= np.maximum(b.open, b.close)).all()
        assert ((b.vwap >= b.low) & (b.vwap <= b.high)).all()
        assert (b.volume >= 1000).all() and (b.volume == np.round(b.volume)).all()
        assert (b.transactions >= 1).all()
        assert 1 < float(np.median(b.close)) < 500
        assert (b.high / b.low < 1.6).all()
        ny = [dt.datetime.fromtimestamp(t / 1000, calendar.NEW_YORK) for t in b.t[:3]]
        assert all((x.date(), x.hour) == (day, 16) for x in ny)
    a = m.daily("AAPL", START, END)
    returns = np.diff(np.log(a.close))
    assert 0.005 < returns.std() < 0.05


def test_history_from_1962() -> None:
    m = Market(
        seed=7, n_symbols=20, start=dt.date(2024, 1, 2), end=END, history_start=calendar.EPOCH
    )
    t0 = time.perf_counter()
    b = m.daily("AAPL", calendar.EPOCH, END)
    assert time.perf_counter() - t0 < 1.0
    assert len(b) > 15_000 and b.dates()[0] == calendar.EPOCH
    assert b.close.min() > 0.5 and b.close.max() < 5_000  # splits keep unadjusted prices plausible
    assert len(m.splits("AAPL")) > 1


# -- malformed rows ----------------------------------------------------------------------------
def test_bad_rows_in_grouped_daily_are_each_rejected_by_validation() -> None:
    day = dt.date(2024, 3, 1)
    m = Market(seed=7, n_symbols=120, start=START, end=dt.date(2024, 6, 28), bad_rows={day: "all"})
    g = m.grouped(day)
    clean = m.grouped(day, inject=False)
    assert len(g) == len(clean)
    assert sorted(d for d in g.defects() if d) == sorted(badrows.KINDS)
    rows = {d: r for r, d in enumerate(g.defects()) if d}
    dicts = g.to_dicts()
    assert "c" not in dicts[rows[badrows.MISSING_FIELD]]
    assert dicts[rows[badrows.NEGATIVE_PRICE]]["o"] < 0
    assert dicts[rows[badrows.HIGH_LOW]]["h"] < dicts[rows[badrows.HIGH_LOW]]["l"]
    assert g.dates()[rows[badrows.WEEKEND]].weekday() == 5
    checked = check_daily(bronze(g), source="rest", received_at=NOW)
    assert checked.rejected.num_rows == len(badrows.KINDS)
    assert checked.valid.num_rows == len(g) - len(badrows.KINDS)
    assert m.grouped(dt.date(2024, 3, 4)).defect is None
    assert same(m.grouped(day, inject=False), clean)


def test_bad_rows_in_range_aggregates() -> None:
    day = dt.date(2024, 3, 1)
    m = Market(
        seed=7,
        n_symbols=50,
        start=START,
        end=dt.date(2024, 6, 28),
        bad_rows={day: badrows.RANGE_KINDS},
    )
    b = m.daily("AAPL", dt.date(2024, 2, 1), dt.date(2024, 3, 29))
    defects = [d for d in b.defects() if d]
    assert sorted(defects) == sorted(badrows.RANGE_KINDS)
    assert (np.diff(b.t) > 0).all()
    weekend = b.dates()[list(b.defects()).index(badrows.WEEKEND)]
    assert weekend == dt.date(2024, 3, 2)
    checked = check_daily(bronze(b), source="rest", received_at=NOW)
    assert checked.rejected.num_rows == len(badrows.RANGE_KINDS)
    assert not any(d for d in m.daily("AAPL", dt.date(2024, 3, 4), dt.date(2024, 3, 29)).defects())


def test_json_rows_match_dicts_including_malformed_ones() -> None:
    day = dt.date(2024, 3, 1)
    m = Market(seed=7, n_symbols=120, start=START, end=dt.date(2024, 6, 28), bad_rows=[day])
    for bars, key in (
        (m.grouped(day), True),
        (m.daily("MSFT", START, dt.date(2024, 6, 28)), False),
    ):
        parsed = json.loads(b"[" + encode.rows(bars, ticker_key=key) + b"]")
        assert parsed == bars.to_dicts(ticker_key=key)


# -- intraday ----------------------------------------------------------------------------------
def test_minute_bars_roll_up_to_the_daily_bar() -> None:
    m = market()
    first, last = dt.date(2024, 11, 27), dt.date(2024, 12, 2)  # 11-29 closes early
    daily = m.daily("MSFT", first, last)
    minute = m.minute("MSFT", first, last)
    for r, day in enumerate(daily.dates()):
        rows = minute.take(minute.day == daily.day[r])
        assert len(rows) == (210 if day == dt.date(2024, 11, 29) else 390)
        assert rows.open[0] == daily.open[r] and rows.close[-1] == daily.close[r]
        assert rows.high.max() == daily.high[r] and rows.low.min() == daily.low[r]
        assert rows.volume.sum() == daily.volume[r]
        assert (
            (rows.low <= np.minimum(rows.open, rows.close))
            & (rows.high >= np.maximum(rows.open, rows.close))
        ).all()
        assert rows.t[0] == int(calendar.session_open(day).timestamp() * 1000)
    adj = m.minute("MSFT", first, last, adjusted=True)
    assert len(adj) == len(minute)


def test_trades_are_deterministic_and_aggregate_to_minute_bars() -> None:
    m = market()
    day = dt.date(2024, 6, 3)
    opened = calendar.session_open(day)
    start, end = opened + dt.timedelta(minutes=10), opened + dt.timedelta(minutes=13)
    tr = m.trades(day, start, end, ["AAPL", "MSFT"])
    again = Market(seed=7, n_symbols=300, start=START, end=END).trades(
        day, start, end, ["AAPL", "MSFT"]
    )
    assert np.array_equal(tr.price, again.price) and np.array_equal(tr.t, again.t)
    assert set(tr.symbol.tolist()) == {"AAPL", "MSFT"}
    assert ((tr.t >= start.timestamp() * 1000) & (tr.t < end.timestamp() * 1000)).all()
    bars = m.minute("AAPL", day, day)
    truth = truth_bars(tr.to_events())
    for k in range(10, 13):
        t0 = int(opened.timestamp() * 1000) + k * 60_000
        mine = tr.take((tr.symbol == "AAPL") & (tr.t >= t0) & (tr.t < t0 + 60_000))
        bar = bars.take(bars.t == t0)
        want = truth[("AAPL", t0)]
        assert (want["open"], want["high"], want["low"], want["close"], want["volume"]) == (
            bar.open[0], bar.high[0], bar.low[0], bar.close[0], bar.volume[0],
        )  # fmt: skip
        assert want["vwap"] == pytest.approx(bar.vwap[0], abs=5e-5)
        assert want["trades"] == bar.transactions[0]
        assert (np.diff(mine.t) >= 0).all() and (np.diff(mine.seq) > 0).all()
    events = tr.to_events()
    assert {"ev", "sym", "i", "x", "p", "s", "t", "q", "z"} <= set(events[0])


def test_concurrent_queries_agree_with_serial_ones() -> None:
    serial = Market(seed=5, n_symbols=200, start=START, end=END)
    shared = Market(seed=5, n_symbols=200, start=START, end=END)
    days = serial.window()[::9] * 3
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(shared.grouped, days))
        paths = list(pool.map(lambda d: shared.minute("AAPL", d, d), days[:6]))
    assert all(same(g, serial.grouped(d)) for g, d in zip(got, days, strict=True))
    assert all(same(p, serial.minute("AAPL", d, d)) for p, d in zip(paths, days[:6], strict=True))


# -- speed -------------------------------------------------------------------------------------
def test_grouped_daily_for_5000_symbols_is_fast() -> None:
    t0 = time.perf_counter()
    m = Market(seed=7, n_symbols=5000, start=START, end=END)
    build = time.perf_counter() - t0
    m.paths._cache.clear()  # measure cold blocks too
    times, rows = [], 0
    t0 = time.perf_counter()
    for day in m.window():
        t1 = time.perf_counter()
        rows += len(m.grouped(day))
        times.append(time.perf_counter() - t1)
    total = time.perf_counter() - t0
    assert rows > 0.9 * 5000 * 252
    assert statistics.median(times) < 0.020
    assert build + total < 10.0


def test_the_tape_mixes_conditions_like_the_real_one() -> None:
    """Odd lots are a third to a half of the trades; other prints stray outside the range."""
    m = market()
    day = dt.date(2024, 6, 3)
    opened = calendar.session_open(day)
    tr = m.trades(day, opened, opened + dt.timedelta(minutes=30))
    events = tr.to_events()
    conds = [tuple(e.get("c", ())) for e in events]
    odd = sum(37 in c for c in conds) / len(conds)
    assert 0.30 <= odd <= 0.50
    assert {(2,), (12,), (33,), (53,), (14,)} <= set(conds)
    truth = truth_bars(events)
    naive: dict[tuple[str, int], list[float]] = {}
    for e in events:
        naive.setdefault((e["sym"], e["t"] - e["t"] % 60_000), []).append(e["p"])
    wrong = sum((max(p), min(p)) != (truth[k]["high"], truth[k]["low"]) for k, p in naive.items())
    assert wrong > 0.1 * len(truth)  # folding every print would get these bars wrong
    for symbol in ("AAPL", "MSFT"):
        bars = m.minute(symbol, day, day)
        for r in range(30):
            want = truth[(symbol, int(bars.t[r]))]
            assert (bars.open[r], bars.high[r], bars.low[r], bars.close[r]) == (
                want["open"], want["high"], want["low"], want["close"],
            )  # fmt: skip
