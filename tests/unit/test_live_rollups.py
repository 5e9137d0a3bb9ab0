"""Live 5m..4h bars equal batch silver: a regular session and the day after Thanksgiving (13:00
close), one symbol halted mid-session, resent and late trades. Forming bars, formed by readers
from the flow's window summaries and the forming minute bar, equal the batch rule over the
minutes so far."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import pickle
import random
import time
from pathlib import Path
from typing import Any

import bytewax.operators as op
import numpy as np
import pyarrow as pa
import pytest
import redis
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.testing import TestingSink, TestingSource, run_main

from batch import intraday as job
from batch.engine import minutes
from core import calendar, forming, intraday, layout
from core.forming import Minute
from core.lake import Lake
from core.schemas import BRONZE_MINUTE
from core.stores.redis import connect
from dataflows.connectors.minute_sink import write_fragments
from dataflows.connectors.rollup_sink import RollupRedisSink
from dataflows.live import build_live_flow
from dataflows.minute_fold import FoldOut, MinuteBar, session_date
from dataflows.minute_log import MinuteLog
from dataflows.open_sums import OpenSums
from dataflows.rollups import Rolled, RollupBar, RollupState, WindowSums, rollup_stream
from dataflows.simulator import Market
from dataflows.simulator.ws import resent
from dataflows.trades import Chunk, Reject

pytestmark = pytest.mark.unit
MINUTES = forming.WINDOW.index("minutes")
DAYS = (dt.date(2024, 11, 27), dt.date(2024, 11, 29))


def minute_table(rows: list[tuple[str, int, Minute]]) -> pa.Table:
    """Minute values as the bronze columns :func:`core.intraday.rollup` reads (the oracle)."""
    starts = np.array([r[1] for r in rows], np.int64)
    days = [session_date(int(s)) for s in starts]
    cols = list(zip(*(r[2] for r in rows), strict=True)) if rows else [()] * 7
    f = BRONZE_MINUTE.field
    return pa.table(
        {
            "symbol": pa.array([r[0] for r in rows], pa.string()),
            "date": pa.array(days, pa.date32()),
            "start": pa.array(starts * 1000, pa.int64()).cast(f("start").type),
            "open": pa.array(cols[0], pa.float64()),
            "high": pa.array(cols[1], pa.float64()),
            "low": pa.array(cols[2], pa.float64()),
            "close": pa.array(cols[3], pa.float64()),
            "volume": pa.array(cols[4], pa.float64()),
            "vwap": pa.array(cols[5], pa.float64()),
            "trades": pa.array(cols[6], pa.int64()),
        }
    )


def day_events(market: Market, day: dt.date, halted: str) -> list[dict[str, Any]]:
    opened, closed = calendar.session_open(day), calendar.session_close(day)
    trades = market.trades(day, opened, closed)
    events = trades.to_events()
    stop, resume = opened + dt.timedelta(minutes=62), opened + dt.timedelta(minutes=131)
    lo, hi = int(stop.timestamp() * 1000), int(resume.timestamp() * 1000)
    events = [e for e in events if not (e["sym"] == halted and lo <= e["t"] < hi)]
    rng = random.Random(day.toordinal())
    for ev in trades.take(resent(trades)).to_events()[:200]:
        events.insert(min(len(events), rng.randrange(len(events))), dict(ev))
    for k in sorted(rng.sample(range(len(events) - 2000), 20), reverse=True):
        events.insert(k + rng.randrange(200, 1500), events.pop(k))  # late by a few seconds
    return events


def test_live_rollups_equal_batch_silver(tmp_path: Path) -> None:
    market = Market(seed=5, n_symbols=5, start=dt.date(2024, 11, 25), end=dt.date(2024, 12, 3))
    halted = market.tickers[2]
    events = [e for d in DAYS for e in day_events(market, d, halted)]
    chunks, newest = [], 0
    for i in range(0, len(events), 400):
        part = events[i : i + 400]
        newest = max([newest, *(int(e["t"]) for e in part)])
        chunks.append(Chunk("p0", [json.dumps(part)], newest + 20 + i))
    finals: list[tuple[str, list[MinuteBar]]] = []
    rolled: list[list[RollupBar]] = []
    summaries: list[list[WindowSums]] = []
    outs: list[FoldOut] = []
    rejects: list[Reject] = []
    run_main(build_live_flow(  # type: ignore[no-untyped-call]
        TestingSource(chunks), bars=TestingSink(finals), live=TestingSink(outs),
        quarantine=TestingSink(rejects), rollups=TestingSink(rolled),
        sums=TestingSink(summaries),
    ))  # fmt: skip
    assert outs[-1].counters["late"] > 0 and outs[-1].counters["revisions"] > 0
    lake = Lake((tmp_path / "lake").as_uri())
    write_fragments(lake, [b for _, bars in finals for b in bars])
    assert minutes.run(lake).failed == {}
    assert job.run(lake, now=dt.datetime(2024, 12, 2, tzinfo=dt.UTC)).failed == {}

    events_all = [b for bars in rolled for b in bars]
    assert all(b.final and b.complete for b in events_all)  # forming bars: by the readers
    assert any(s.windows for sums in summaries for s in sums)
    live: dict[tuple[str, str, int], RollupBar] = {}
    for b in events_all:
        if b.final and ((k := (b.interval, b.symbol, b.start)) not in live or
                        b.revision >= live[k].revision):  # fmt: skip
            live[k] = b
    assert any(b.revision > 0 for b in live.values())  # a late trade revised a closed window
    for name in intraday.INTERVALS:
        for day in DAYS:
            batch = lake.read_table(layout.intraday_file(name, day)).to_pylist()
            mine = sorted(
                (b for b in live.values() if b.interval == name
                 and _day(b.start) == day),
                key=lambda b: (b.symbol, b.start),
            )  # fmt: skip
            assert len(mine) == len(batch) > 0
            for b, r in zip(mine, batch, strict=True):
                got = {k: v for k, v in b.to_json().items() if k in r}
                got["start"], got["end"] = _ts(b.start), _ts(b.end)
                assert got == r, (name, day)
    close = calendar.session_close(DAYS[1])
    four = [b for b in live.values() if b.interval == "4h" and _day(b.start) == DAYS[1]]
    assert {b.end for b in four} == {int(close.timestamp() * 1000)}  # cut at 13:00
    stop = calendar.session_open(DAYS[0]) + dt.timedelta(minutes=65)
    gone = [b for b in live.values() if b.symbol == halted and b.interval == "5m"
            and b.start == int(stop.timestamp() * 1000)]  # fmt: skip
    assert gone == []  # a window inside the halt has no bar


def _ts(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)


def _day(ms: int) -> dt.date:
    return _ts(ms).astimezone(calendar.NEW_YORK).date()


def _bar(symbol: str, final: bool) -> RollupBar:
    return RollupBar(
        interval="5m", symbol=symbol, start=1_735_828_200_000, end=1_735_828_500_000,
        open=1.0, high=2.0, low=0.5, close=1.5, volume=10.0, vwap=1.2, trades=3, minutes=2,
        complete=final, final=final, revision=0,
    )  # fmt: skip


def _sums(symbol: str, minutes: int) -> WindowSums:
    s = forming.summary((1_735_828_200_000 + k * 60_000, (1.0, 2.0, 0.5, 1.5, 10.0, 1.2, 3))
                        for k in range(minutes))  # fmt: skip
    return WindowSums(symbol, {"5m": [1_735_828_200_000, 1_735_828_500_000, *s]})


def test_rollup_writes_leave_the_worker_and_land_in_order(
    redis_server_url: str, redis_prefix: str
) -> None:
    """Written on the sink's own thread; close waits for every write; the newest summary
    of a symbol is the one stored."""
    sink = RollupRedisSink[Rolled](redis_server_url, redis_prefix).build("rollups", 0, 1)
    r = connect(redis_server_url)
    channel = r.pubsub()  # type: ignore[no-untyped-call]
    channel.psubscribe(f"{redis_prefix}bars:*")
    for k in range(20):
        sink.write_batch([[_sums(f"S{k % 3}", k // 3 + 1)], [_bar(f"S{k % 3}", final=k >= 17)]])
    sink.close()
    assert {str(k) for k in r.keys(f"{redis_prefix}final:5m:*")} == {
        f"{redis_prefix}final:5m:S{k}" for k in range(3)
    }
    doc = r.get(f"{redis_prefix}sums:S0")
    assert doc is not None and json.loads(doc)["windows"]["5m"][MINUTES] == 7
    assert r.ttl(f"{redis_prefix}sums:S0") > 0
    published = [m for m in iter(lambda: channel.get_message(timeout=0.5), None)
                 if m["type"] == "pmessage"]  # fmt: skip
    assert len(published) == 40
    assert [json.loads(m["data"])["windows"]["5m"][MINUTES] for m in published
            if m["channel"] == f"{redis_prefix}bars:S0" and "windows" in m["data"]
            ] == [1, 2, 3, 4, 5, 6, 7]  # fmt: skip
    channel.close()


def test_final_rollups_are_in_redis_when_their_batch_returns(
    redis_server_url: str, redis_prefix: str
) -> None:
    """Recovery may commit the epoch once the sink returns: its final bars must be stored."""
    sink = RollupRedisSink[Rolled](redis_server_url, redis_prefix).build("rollups", 0, 1)
    r = connect(redis_server_url)
    for k in range(10):
        sink.write_batch([[_sums(f"S{k}", 2)]])
    sink.write_batch([[_bar("S0", final=True)]])
    doc = r.get(f"{redis_prefix}final:5m:S0")
    assert doc is not None and json.loads(doc)["final"] is True
    sink.close()


def test_a_failed_rollup_write_stops_the_flow() -> None:
    sums = RollupRedisSink[Rolled]("redis://127.0.0.1:9/0").build(
        "rollups", 0, 1
    )  # nothing listens
    sums.write_batch([[_sums("S0", 1)]])
    with pytest.raises(redis.exceptions.ConnectionError):
        sums.close()
    final = RollupRedisSink[Rolled]("redis://127.0.0.1:9/0").build("rollups", 0, 1)
    with pytest.raises(redis.exceptions.ConnectionError):
        final.write_batch([[_bar("S0", final=True)]])
    final.close()


def _minute(symbol: str, start: int, rng: random.Random, final: bool, rev: int = 0) -> MinuteBar:
    o, c = 100 + rng.random() / 7, 100 + rng.random() / 3
    return MinuteBar(
        symbol=symbol, start=start, open=o, high=max(o, c) + 0.1, low=min(o, c) - 0.1,
        close=c, volume=rng.choice([100.0, 0.3, 1e-3]),
        vwap=None if rng.random() < 0.1 else (o + c) / 2, trades=rng.randrange(1, 9),
        final=final, revision=rev, partial=False,
    )  # fmt: skip


def _steps(opened: int, rng: random.Random) -> list[FoldOut]:
    """Forty minutes of two symbols: revisions, a minute closing after later ones."""
    steps = []
    for k in range(1, 40):
        final = [_minute(s, opened + (k - 1) * 60_000, rng, True) for s in ("AA", "BB")]
        if k % 7 == 0:
            final.append(_minute("AA", opened + (k - 3) * 60_000, rng, True, 1))  # revised
        if k == 20:
            final.append(_minute("BB", opened + 17 * 60_000, rng, True))  # closes late
        formed = [_minute(s, opened + k * 60_000, rng, False) for s in ("AA", "BB")]
        steps.append(FoldOut("p0", 0, forming=formed, final=final,
                             watermark=opened + k * 60_000))  # fmt: skip
    return steps


def test_window_summaries_from_running_sums_equal_sums_made_afresh() -> None:
    """A window's summary follows its minutes as they close (a revision or a minute closing
    out of order starts it over): every summary equals the one made afresh."""
    opened = int(calendar.session_open(dt.date(2024, 11, 27)).timestamp() * 1000)
    state = RollupState(tuple(intraday.INTERVALS), horizon_ms=15 * 60_000)
    summaries = 0
    for out in _steps(opened, random.Random(11)):
        fresh = copy.deepcopy(state)
        fresh.open = OpenSums(len(fresh.intervals))
        got, want = state.step(out), fresh.step(out)
        assert got == want
        summaries += sum(isinstance(b, WindowSums) for b in got)
    assert summaries > 50


def test_readers_form_the_forming_bars_of_the_batch_rule() -> None:
    """A reader fed what the flow publishes (final minute bars, the rollup step's summaries,
    forming minute bars) forms every forming 5m..4h bar as the batch rule over the window's
    final minutes and the forming one; a minute closing out of order or revised is taken
    from the summary that follows it."""
    opened = int(calendar.session_open(dt.date(2024, 11, 27)).timestamp() * 1000)
    state = RollupState(tuple(intraday.INTERVALS), horizon_ms=15 * 60_000)
    reader = forming.LiveWindows()
    for symbol in ("AA", "BB"):
        reader.on_sums({"symbol": symbol, "windows": {}})  # read before the first minute
    finals: dict[tuple[str, int], MinuteBar] = {}
    checked = 0
    for out in _steps(opened, random.Random(5)):
        for b in out.final:
            finals[(b.symbol, b.start)] = b
            reader.on_final(b.symbol, b.start, (b.open, b.high, b.low, b.close, b.volume,
                                                b.vwap, b.trades))  # fmt: skip
        for sums in state.step(out):
            if isinstance(sums, WindowSums):
                reader.on_sums(json.loads(json.dumps(sums.to_json())))  # as Redis carries it
        for f in out.forming:
            bars = reader.forming(f.symbol, f.start, (f.open, f.high, f.low, f.close, f.volume,
                                                      f.vwap, f.trades))  # fmt: skip
            assert [b["interval"] for b in bars] == list(intraday.INTERVALS)
            for bar in bars:
                begin = int(dt.datetime.fromisoformat(bar["start"]).timestamp() * 1000)
                rows = [(s, st, (m.open, m.high, m.low, m.close, m.volume, m.vwap, m.trades))
                        for (s, st), m in sorted(finals.items())
                        if s == f.symbol and begin <= st < f.start]  # fmt: skip
                rows.append((f.symbol, f.start, (f.open, f.high, f.low, f.close, f.volume,
                                                 f.vwap, f.trades)))  # fmt: skip
                (want,) = intraday.rollup(minute_table(rows), bar["interval"]).to_pylist()
                assert bar["final"] is False and bar["complete"] is False
                assert bar["minutes"] == want["minutes"] and bar["trades"] == want["trades"]
                for k in ("open", "high", "low", "close", "volume", "vwap"):
                    assert bar[k] == (
                        None if want[k] is None else pytest.approx(want[k], rel=1e-12)
                    )
                checked += 1
    assert checked > 400


def test_a_snapshot_of_an_older_rollup_state_resumes() -> None:
    """State pickled before ``newest`` existed loads, and its next step summarises."""
    opened = int(calendar.session_open(dt.date(2024, 11, 27)).timestamp() * 1000)
    steps = _steps(opened, random.Random(3))
    state = RollupState(tuple(intraday.INTERVALS), horizon_ms=15 * 60_000)
    state.step(steps[0])
    del state.__dict__["newest"]
    resumed = pickle.loads(pickle.dumps(state))
    assert resumed.newest == {}
    assert any(isinstance(r, WindowSums) and r.windows for r in resumed.step(steps[1]))


def test_a_summary_by_field_name_from_an_older_flow_reads_as_the_array() -> None:
    """Readers deployed beside an older flow take its object-per-window documents too."""
    s = _sums("S0", 3)
    array = json.loads(json.dumps(s.to_json()))
    by_name = {
        "symbol": "S0",
        "windows": {"5m": dict(zip(forming.WINDOW, array["windows"]["5m"], strict=True))},
    }
    readers = [forming.LiveWindows(), forming.LiveWindows()]
    readers[0].on_sums(array)
    readers[1].on_sums(by_name)
    assert readers[0].held == readers[1].held and readers[0].held["S0"]["5m"][2][MINUTES - 2] == 3
    readers[0].on_sums({"symbol": "S0", "windows": {"5m": [1, 2, 3], "1h": "x"}})  # malformed
    assert readers[0].held == readers[1].held


def test_a_windows_first_minute_in_one_list_equals_adding_it_to_an_empty_summary() -> None:
    rng = random.Random(3)
    for _ in range(200):
        o, h, lo, c = (round(rng.uniform(1, 500), rng.randint(0, 6)) for _ in range(4))
        v = (o, h, lo, c, rng.choice([0.0, 0.5, 100.0, rng.uniform(0, 1e6)]),
             rng.choice([None, rng.uniform(1, 500)]), rng.randint(0, 10**6))  # fmt: skip
        start = rng.randrange(10**12, 2 * 10**12)
        alone = forming.empty()
        forming.add(alone, start, v)
        assert forming.first(start, v) == alone
        assert [type(x) for x in forming.first(start, v)] == [type(x) for x in alone]


def _oracle(held: dict[tuple[str, int], MinuteBar], bar: RollupBar) -> dict[str, Any]:
    """The batch rule over the window's newest minutes, with ms stamps."""
    rows = [(s, st, (m.open, m.high, m.low, m.close, m.volume, m.vwap, m.trades))
            for (s, st), m in sorted(held.items())
            if s == bar.symbol and bar.start <= st < bar.end]  # fmt: skip
    (want,) = intraday.rollup(minute_table(rows), bar.interval).to_pylist()
    want["start"] = int(want["start"].timestamp() * 1000)
    want["end"] = int(want["end"].timestamp() * 1000)
    del want["complete"]
    return dict(want)


def test_final_bars_are_the_batch_rule_bit_for_bit_through_revisions() -> None:
    """Every final bar and revision equals the batch rule over the window's newest minutes,
    bit for bit, with revisions counted per window: also when a revision of a closed window
    and the close of the next one of the same symbol come in one result (two passes)."""
    opened = int(calendar.session_open(dt.date(2024, 11, 27)).timestamp() * 1000)
    rng = random.Random(17)
    state = RollupState(tuple(intraday.INTERVALS), horizon_ms=15 * 60_000)
    held: dict[tuple[str, int], MinuteBar] = {}
    revisions: dict[tuple[str, str, int], int] = {}
    emitted: list[RollupBar] = []
    for k in range(1, 36):
        final = [_minute(s, opened + (k - 1) * 60_000, rng, True) for s in ("AA", "BB", "CC")]
        if k in (10, 20):  # AA's first 5m window again as its second one closes
            final.append(_minute("AA", opened + (k - 8) * 60_000, rng, True, 1))
        if k == 15:
            final.append(_minute("CC", opened + 14 * 60_000, rng, True, 1))  # same result
        for b in final:
            held[(b.symbol, b.start)] = b
        bars = [b for b in state.step(FoldOut("p0", 0, final=final, watermark=opened + k * 60_000))
                if isinstance(b, RollupBar)]  # fmt: skip
        assert bars == sorted(bars, key=lambda b: (b.interval, b.symbol, b.start))
        for bar in bars:
            got = dataclasses.asdict(bar)
            key = (bar.interval, bar.symbol, bar.start)
            revisions[key] = revisions.get(key, -1) + 1
            assert got.pop("revision") == revisions[key]
            assert got.pop("final") is True and got.pop("complete") is True
            assert got.pop("interval") == bar.interval
            assert got == _oracle(held, bar)
        emitted += bars
    twice = [b for b in emitted if b.interval == "5m" and b.symbol == "AA" and b.revision]
    assert {b.start - opened for b in twice} == {0, 10 * 60_000}
    assert len({(b.interval, b.symbol, b.start) for b in emitted}) == 3 * (7 + 2 + 1)


def test_a_snapshot_of_minutes_held_per_symbol_resumes_to_the_same_bars() -> None:
    """State pickled when the minutes were a dict per symbol loads into the columns and gives
    the same bars and summaries from then on."""
    opened = int(calendar.session_open(dt.date(2024, 11, 27)).timestamp() * 1000)
    steps = _steps(opened, random.Random(9))
    state = RollupState(tuple(intraday.INTERVALS), horizon_ms=15 * 60_000)
    for out in steps[:12]:
        state.step(out)
    old = {k: v for k, v in state.__dict__.items() if k not in ("log", "ids", "names")}
    log = state.log
    old["minutes"] = {
        symbol: dict(log.minutes(np.flatnonzero(log.sym[: log.n] == i)))
        for symbol, i in state.ids.items()
    }
    resumed = RollupState.__new__(RollupState)
    resumed.__setstate__(pickle.loads(pickle.dumps(old)))
    for out in steps[12:]:
        assert resumed.step(out) == state.step(out)


def test_the_minute_log_reads_the_newest_of_each_minute_after_compaction() -> None:
    log = MinuteLog()
    minute: Minute = (1.0, 2.0, 0.5, 1.5, 10.0, None, 3)
    for k in range(3000):  # beyond the first capacity
        log.append([k % 3], [k // 3 * 60_000], [minute])
    log.append([1], [60_000], [(9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9)])  # a revision
    lo, hi = np.zeros(3, np.int64), np.zeros(3, np.int64)
    lo[1], hi[1] = 0, 3 * 60_000
    assert log.minutes(log.rows(lo, hi, np.arange(3, dtype=np.int64))) == [
        (0, minute), (60_000, (9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9)), (120_000, minute),
    ]  # fmt: skip
    log.drop_before(900 * 60_000)  # 90% of the rows
    assert log.n == 300 and int(log.start[: log.n].min()) == 900 * 60_000
    again = pickle.loads(pickle.dumps(log))
    lo[1], hi[1] = 900 * 60_000, 1000 * 60_000
    assert again.minutes(again.rows(lo, hi, np.arange(3, dtype=np.int64))) == [
        (st * 60_000, minute) for st in range(900, 1000)
    ]
    again.append([2], [0], [minute])  # grows from a snapshot's exact size
    assert again.n == 301


@pytest.mark.parametrize("later", [10, 25])  # the log copied out at the cutoff, and not
def test_a_late_minute_of_a_forgotten_window_opens_it_with_itself_only(later: int) -> None:
    """What a window reads never depends on when the log is compacted: minutes the horizon
    forgot stay forgotten, and a minute arriving after them is held."""
    opened = int(calendar.session_open(dt.date(2024, 11, 27)).timestamp() * 1000)

    def bar(k: int, price: float = 100.0) -> MinuteBar:
        return MinuteBar(symbol="A", start=opened + k * 60_000, open=price, high=price + 1,
                         low=price - 1, close=price, volume=10.0, vwap=price, trades=1,
                         final=True, revision=0, partial=False)  # fmt: skip

    state = RollupState(("5m",), horizon_ms=0)
    state.step(FoldOut("p0", 0, final=[bar(k) for k in range(5)], watermark=opened + 5 * 60_000))
    state.step(FoldOut("p0", 0, final=[bar(k) for k in range(5, 5 + later)],
                       watermark=opened + 11 * 60_000))  # fmt: skip
    late = state.step(FoldOut("p0", 0, final=[bar(2, 50.0)], watermark=opened + 11 * 60_000))
    (again,) = [b for b in late if isinstance(b, RollupBar)]
    assert (again.start, again.minutes, again.low, again.revision) == (opened, 1, 49.0, 0)


def test_a_close_goes_out_in_slices_each_bar_the_batch_rule() -> None:
    """With at most four final bars per turn of the worker, every bar still equals the batch
    rule over the window's newest minutes when it goes out; a revision of a window whose bar
    is pending goes out in that bar (revision 0), one of a window already out at once; and
    every window gets the same last bar as when a close goes out whole."""
    opened = int(calendar.session_open(dt.date(2024, 11, 27)).timestamp() * 1000)
    rng = random.Random(23)
    symbols = [f"S{i}" for i in range(12)]
    sliced = RollupState(tuple(intraday.INTERVALS), horizon_ms=15 * 60_000)
    whole = RollupState(tuple(intraday.INTERVALS), horizon_ms=15 * 60_000)
    held: dict[tuple[str, int], MinuteBar] = {}
    got: dict[tuple[str, str, int], RollupBar] = {}
    want: dict[tuple[str, str, int], RollupBar] = {}
    first = ("5m", "S9", opened)

    def check(bars: list[RollupBar]) -> None:
        assert len(bars) <= 4
        for bar in bars:
            key = (bar.interval, bar.symbol, bar.start)
            assert bar.revision == (got[key].revision + 1 if key in got else 0)
            fields = dataclasses.asdict(bar)
            for name in ("revision", "final", "complete", "interval"):
                del fields[name]
            assert fields == _oracle(held, bar)
            got[key] = bar

    for k in range(1, 36):
        final = [_minute(s, opened + (k - 1) * 60_000, rng, True) for s in symbols]
        if k == 6:  # S9's first 5m window: its bar is still pending
            assert first in sliced.pending
            final.append(_minute("S9", opened + 4 * 60_000, rng, True, 1))
        if k == 9:  # S0's: out since
            assert ("5m", "S0", opened) in got
            final.append(_minute("S0", opened + 60_000, rng, True, 1))
        for b in final:
            held[(b.symbol, b.start)] = b
        out = FoldOut("p0", 0, final=final, watermark=opened + k * 60_000)
        check([b for b in sliced.step(out, at_most=4) if isinstance(b, RollupBar)])
        check(sliced.emit_pending(4))  # the worker's next turn
        want.update({(b.interval, b.symbol, b.start): b for b in whole.step(out)
                     if isinstance(b, RollupBar)})  # fmt: skip
    assert sliced.pending
    rest = sliced.emit_pending(None)  # the end of input: all at once
    assert rest and not sliced.pending
    for bar in rest:
        got[(bar.interval, bar.symbol, bar.start)] = bar
    assert got[first].revision == 0
    assert got[("5m", "S0", opened)].revision == 1 == want[("5m", "S0", opened)].revision
    assert {k: dataclasses.replace(b, revision=0) for k, b in got.items()} == {
        k: dataclasses.replace(b, revision=0) for k, b in want.items()
    }


class _ThenIdle(StatelessSourcePartition[FoldOut]):
    """The given results, then nothing for half a second: a market with no trade after a close."""

    def __init__(self, items: list[FoldOut]) -> None:
        self.items = items
        self.until = 0.0

    def next_batch(self) -> list[FoldOut]:
        if self.items:
            self.until = time.monotonic() + 0.5
            return [self.items.pop(0)]
        if time.monotonic() > self.until:
            raise StopIteration
        return []


class _Results(DynamicSource[FoldOut]):
    def __init__(self, items: list[FoldOut]) -> None:
        self.items = items

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ThenIdle:
        return _ThenIdle(self.items)


def test_the_flow_sends_pending_final_bars_while_the_input_waits() -> None:
    """In the flow, the slices of a close go out at the worker's next turns, not with the next
    result of the fold nor at the end of input: no batch of bars holds more than a slice."""
    opened = int(calendar.session_open(dt.date(2024, 11, 27)).timestamp() * 1000)
    rng = random.Random(5)
    symbols = [f"S{i:02d}" for i in range(40)]
    steps = [FoldOut("p0", 0, final=[_minute(s, opened + k * 60_000, rng, True) for s in symbols],
                     watermark=opened + (k + 1) * 60_000) for k in range(5)]  # fmt: skip
    flow = Dataflow("slices")
    rolled = rollup_stream("rollup", op.input("in", flow, _Results(steps)), ("5m",),
                           slice_windows=3)  # fmt: skip
    out: list[list[RollupBar]] = []
    op.output("out", rolled.bars, TestingSink(out))
    run_main(flow)  # type: ignore[no-untyped-call]
    assert sum(map(len, out)) == 40
    assert max(map(len, out)) <= 3


def test_open_sums_fold_minutes_as_the_forming_summary_does_bit_for_bit() -> None:
    """The array path's first and next minutes equal :func:`core.forming.first` and
    :func:`core.forming.add`, bit for bit: vwap missing, tiny and large volumes."""
    rng = random.Random(31)
    sums = OpenSums(2)
    sums.reserve(50)
    want: dict[int, list[Any]] = {}
    for step in range(12):
        k = np.array(rng.sample(range(50), 20), np.int64)
        minutes = [_minute("X", 0, rng, True) for _ in k]
        v = np.array([[m.open, m.high, m.low, m.close, m.volume,
                       np.nan if m.vwap is None else m.vwap] for m in minutes]).T  # fmt: skip
        trades = np.array([m.trades for m in minutes], np.int64)
        start = np.full(len(k), step * 60_000, np.int64)
        fresh = np.array([i not in want for i in k.tolist()])
        if fresh.any():
            sums.first(1, k[fresh], start[fresh], start[fresh] + 300_000, start[fresh],
                       v[:, fresh], trades[fresh])  # fmt: skip
        if (~fresh).any():
            sums.add(1, k[~fresh], start[~fresh], v[:, ~fresh], trades[~fresh])
        for i, m in zip(k.tolist(), minutes, strict=True):
            values = (m.open, m.high, m.low, m.close, m.volume, m.vwap, m.trades)
            if i in want:
                forming.add(want[i], step * 60_000, values)
            else:
                want[i] = forming.first(step * 60_000, values)
    for i, s in want.items():
        got = sums.get(1, i, int(sums.begin[1, i]))
        assert got is not None
        assert [x.hex() if isinstance(x, float) else x for x in got] == [
            x.hex() if isinstance(x, float) else x for x in s
        ]


def test_a_snapshot_with_a_summary_per_open_window_resumes_to_the_same_output() -> None:
    """State pickled when summaries were a dict per open window loads into the arrays and
    gives the same bars and summaries from then on."""
    opened = int(calendar.session_open(dt.date(2024, 11, 27)).timestamp() * 1000)
    steps = _steps(opened, random.Random(13))
    state = RollupState(tuple(intraday.INTERVALS), horizon_ms=15 * 60_000)
    for out in steps[:17]:
        state.step(out)
    old = {k: v for k, v in state.__dict__.items() if k not in ("open", "_slot")}
    old["sums"] = {
        (name, symbol, int(state.open.begin[j, i])): state.open.get(j, i, int(state.open.begin[j, i]))
        for symbol, i in state.ids.items()
        for j, name in enumerate(state.intervals)
        if state.open.begin[j, i] != forming.NO_START
    }  # fmt: skip
    assert old["sums"]
    resumed = RollupState.__new__(RollupState)
    resumed.__setstate__(pickle.loads(pickle.dumps(old)))
    for out in steps[17:]:
        assert resumed.step(out) == state.step(out)
