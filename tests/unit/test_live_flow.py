"""The live flow on event time, end to end on Bytewax's testing source and sinks (no I/O).

Ground truth is computed in the test from the trades sent (:mod:`tests.tape_truth`).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from core import calendar
from dataflows.live import build_live_flow
from dataflows.minute_fold import LATE_BEYOND_HORIZON, FoldOut, Gap, MinuteBar
from dataflows.simulator import Market
from dataflows.simulator.ws import resent
from dataflows.trades import Chunk, Reject
from tests.tape_truth import truth_bars

pytestmark = pytest.mark.unit
T0 = dt.datetime(2025, 1, 2, 14, 30, tzinfo=dt.UTC)  # 09:30 New York
MS = int(T0.timestamp() * 1000)
LATENESS = dt.timedelta(seconds=5)


def trade(sec: float, p: float, s: float = 100, sym: str = "AAPL", **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"ev": "T", "sym": sym, "p": p, "s": s, "t": MS + round(sec * 1000)}
    return {**ev, **extra}


def chunk(*events: dict[str, Any], at: float = 0, caught_up: bool = False, **kw: Any) -> Chunk:
    return Chunk(
        "p0", [json.dumps(list(events))] if events else [], MS + round(at * 1000), caught_up, **kw
    )


@dataclass
class Run:
    bars: list[MinuteBar] = field(default_factory=list)
    outs: list[FoldOut] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    def latest(self) -> dict[tuple[str, int], MinuteBar]:
        """The bar that wins per minute: the highest revision."""
        out: dict[tuple[str, int], MinuteBar] = {}
        for b in self.bars:
            k = (b.symbol, b.start)
            if k not in out or b.revision >= out[k].revision:
                out[k] = b
        return out

    def bar(self, minute: int, sym: str = "AAPL") -> MinuteBar:
        return self.latest()[(sym, MS + minute * 60_000)]

    @property
    def counters(self) -> dict[str, int]:
        return self.outs[-1].counters


def run(chunks: list[Chunk], horizon: dt.timedelta = dt.timedelta(minutes=15)) -> Run:
    out = Run()
    finals: list[tuple[str, list[MinuteBar]]] = []
    flow = build_live_flow(
        TestingSource(chunks),
        bars=TestingSink(finals),
        live=TestingSink(out.outs),
        quarantine=TestingSink(out.rejects),
        gaps=TestingSink(out.gaps),
        lateness=LATENESS,
        horizon=horizon,
    )
    run_main(flow)  # type: ignore[no-untyped-call]
    out.bars = [b for _, bars in finals for b in bars]
    return out


def ohlcvt(b: MinuteBar) -> tuple[float, ...]:
    return (b.open, b.high, b.low, b.close, b.volume, b.trades)


def test_a_simulated_day_equals_the_simulators_minute_aggregates() -> None:
    """Odd lots, average prices, Form T, out-of-sequence prints and resent trades: 0 mismatches."""
    market = Market(seed=11, n_symbols=6, start=dt.date(2025, 1, 2), end=dt.date(2025, 1, 6))
    day = dt.date(2025, 1, 3)
    trades = market.trades(day, calendar.session_open(day), calendar.session_close(day))
    events = trades.to_events()
    again = trades.take(resent(trades)).to_events()
    assert again
    rng = random.Random(5)
    position = {(e["sym"], e["i"]): k for k, e in enumerate(events)}
    late = sorted(
        (position[(e["sym"], e["i"])] + rng.randrange(1, 400), k) for k, e in enumerate(again)
    )
    for at, k in reversed(late):  # resent a little later, as the feed does
        events.insert(at, dict(again[k]))
    frames: list[str | bytes] = [
        json.dumps(events[i : i + 250]) for i in range(0, len(events), 250)
    ]
    chunks = [Chunk("p0", frames[i : i + 7], 0) for i in range(0, len(frames), 7)]
    got = run(chunks)
    truth = truth_bars(events)
    bars = got.latest()
    assert set(bars) == set(truth)
    assert [k for k, w in truth.items() if ohlcvt(bars[k]) != tuple(w[c] for c in ("open", "high", "low", "close", "volume", "trades"))] == []  # fmt: skip
    mismatches = 0
    for symbol in sorted(set(trades.symbol.tolist())):
        ref = market.minute(symbol, day, day)
        for i, t in enumerate(ref.t.tolist()):
            b = bars[(symbol, t)]
            want = (ref.open[i], ref.high[i], ref.low[i], ref.close[i], ref.volume[i])
            mismatches += ohlcvt(b)[:5] != want or b.vwap != pytest.approx(ref.vwap[i], abs=5e-5)
    assert mismatches == 0
    assert got.counters["duplicates"] == len(again)
    assert got.counters["late"] == 0 and got.rejects == [] and got.gaps == []
    assert all(b.revision == 0 and not b.partial for b in got.bars)


def test_a_late_trade_revises_its_minute_and_is_counted() -> None:
    got = run([
        chunk(trade(1, 10.0, q=1, i="1"), trade(20, 11.0, q=2, i="2")),
        chunk(trade(70, 12.0, q=3, i="3")),  # watermark 65 s: minute 0 closes
        chunk(trade(30, 9.0, 50, q=4, i="4")),  # late for minute 0
        chunk(trade(30, 9.0, 50, q=4, i="4")),  # the same trade again: counted once
        chunk(trade(1, 10.0, q=1, i="1")),  # an on-time trade of the closed minute, again
    ])  # fmt: skip
    revisions = [b for b in got.bars if b.start == MS]
    assert [(b.revision, b.final) for b in revisions] == [(0, True), (1, True)]
    assert ohlcvt(revisions[0]) == (10.0, 11.0, 10.0, 11.0, 200.0, 2)
    assert ohlcvt(revisions[1]) == (10.0, 11.0, 9.0, 9.0, 250.0, 3)  # 30 s is its last trade
    assert got.counters["late"] == 1 and got.counters["revisions"] == 1
    assert got.counters["duplicates"] == 2


def test_a_trade_resent_long_after_is_counted_once() -> None:
    """A minute's trade keys are held in merged runs: a resend of the minute's first batch, after
    hundreds of batches, is found in whichever run holds it, open or closed."""
    batches = [
        [trade(k / 10, 10.0 + k / 1000, q=k * 4 + j, i=f"{k}-{j}", x=j) for j in range(4)]
        for k in range(500)
    ]
    chunks = [chunk(*b) for b in batches]
    chunks.append(chunk(*batches[0], *batches[0][:2]))  # twice in the batch: still once each
    chunks.append(chunk(*batches[300]))
    chunks.append(chunk(trade(70, 12.0, q=9_999, i="close")))  # minute 0 closes
    chunks.append(chunk(*batches[7], trade(30, 9.0, q=9_998, i="late")))  # one late, new
    got = run(chunks)
    assert got.counters["duplicates"] == 6 + 4 + 4
    assert got.counters["late"] == 1
    bar = got.bar(0)
    assert (bar.trades, bar.revision, bar.low) == (2001, 1, 9.0)


def test_after_a_quiet_spell_a_late_trade_revises_the_whole_minute() -> None:
    """All of AAPL's minutes closed while MSFT kept trading; a late AAPL trade revises, never
    replaces, its full bar."""
    chunks = [chunk(*[trade(s, 10.0 + s / 100) for s in range(0, 60, 5)])]
    chunks += [chunk(trade(60 + 30 * k, 20.0, sym="MSFT")) for k in range(10)]
    chunks.append(chunk(trade(59.5, 10.9)))
    got = run(chunks)
    first, second = (b for b in got.bars if b.symbol == "AAPL")
    assert (first.revision, second.revision) == (0, 1)
    assert second.trades == first.trades + 1 == 13
    assert (second.open, second.close, second.high) == (10.0, 10.9, 10.9)


def test_a_backlog_never_closes_minutes_on_the_wall_clock() -> None:
    """Reads far apart in wall time (a stall, a SIGSTOP) that still had data waiting do not
    move the watermark; only reads that found nothing do, by the time between them."""
    got = run([
        chunk(trade(10, 10.0), at=0, caught_up=True),
        chunk(trade(20, 10.5), at=600),  # read 10 minutes later, backlog behind it
        chunk(trade(55, 11.0), at=601),
        chunk(at=602, caught_up=True),  # nothing waiting: the partition is idle
        chunk(at=603, caught_up=True),
    ])  # fmt: skip
    (bar,) = [b for b in got.bars if b.final and b.start == MS]
    assert bar.trades == 3 and got.counters["late"] == 0
    idle = run([
        chunk(trade(10, 10.0), at=0, caught_up=True),
        chunk(at=1, caught_up=True),
        chunk(at=60, caught_up=True),  # quiet for a minute: the minute closes without EOF
        chunk(trade(70, 10.0), at=61, caught_up=True),
    ])  # fmt: skip
    assert any(b.final for o in idle.outs[:3] for b in o.final)


def test_bars_do_not_depend_on_how_reads_were_batched() -> None:
    rng = random.Random(3)
    events = []
    for k in range(3000):
        t = k * 0.1 - rng.random() * 8  # up to 8 s out of order: some trades are late
        events.append(trade(t + 10, 100 + rng.random(), 1 + rng.randrange(300), sym=rng.choice("ABC"), q=k, i=str(k)))  # fmt: skip
    a = run([chunk(*events[i : i + 7]) for i in range(0, len(events), 7)])
    b = run([chunk(*events[i : i + 400]) for i in range(0, len(events), 400)])
    assert a.counters["late"] > 0
    assert sorted(a.bars, key=lambda x: (x.symbol, x.start, x.revision)) == sorted(
        b.bars, key=lambda x: (x.symbol, x.start, x.revision)
    )


def test_a_reconnect_marks_partial_minutes_and_records_the_gap() -> None:
    got = run([
        chunk(trade(5, 10.0), at=5, connected=True),
        chunk(trade(70, 10.0), trade(100, 10.2), at=100),
        chunk(trade(250, 11.0), trade(290, 11.1), at=300, connected=True),  # missed 100..250
        chunk(trade(370, 11.5), at=400),
    ])  # fmt: skip
    assert got.gaps == [
        Gap(None, MS, MS + 60_000, "connect"),
        Gap(None, MS + 60_000, MS + 300_000, "reconnect"),
    ]
    partial = {(b.start - MS) // 60_000 for b in got.bars if b.partial}
    assert partial == {0, 1, 4}  # first minute, the one cut by the drop, the first after it
    assert not got.bar(6).partial


def test_a_trade_beyond_the_revision_horizon_is_quarantined_and_recorded_as_a_gap() -> None:
    got = run(
        [chunk(trade(1, 10.0)), chunk(trade(400, 10.0)), chunk(trade(30, 9.0))],
        horizon=dt.timedelta(minutes=2),
    )
    (reject,) = got.rejects
    assert reject.reason == LATE_BEYOND_HORIZON and reject.payload["p"] == 9.0
    assert got.gaps == [Gap("AAPL", MS, MS + 60_000, "late")]
    assert got.bar(0).revision == 0 and got.counters["late_beyond_horizon"] == 1


def test_bad_events_are_quarantined_with_reasons() -> None:
    got = run([
        Chunk("p0", ["{oops", json.dumps([{"ev": "T", "sym": "AAPL", "p": -1, "s": 1, "t": MS}, {"ev": "Q"}, trade(1, 10.0)])], 0),
    ])  # fmt: skip
    reasons = sorted(r.reason for r in got.rejects)
    assert len(reasons) == 3 and reasons[0].startswith("malformed JSON")
    assert got.bar(0).trades == 1


def test_odd_lots_never_set_a_price() -> None:
    got = run([chunk(trade(1, 50.0, 10, c=[37]), trade(2, 10.0), trade(3, 9.0, c=[2]), trade(4, 10.5, c=[33]))])  # fmt: skip
    b = got.bar(0)
    assert (b.open, b.high, b.low, b.close) == (10.0, 10.5, 10.0, 10.0)
    assert (b.volume, b.trades) == (310.0, 4)
