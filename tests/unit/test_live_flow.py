"""The live dataflow end to end on Bytewax's TestingSource/TestingSink (no I/O)."""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from core.records import Bar
from dataflows.live import build_live_flow
from dataflows.operators import LATE, LiveUpdate, Rejected

pytestmark = pytest.mark.unit
T0 = dt.datetime(2025, 1, 2, 14, 30, tzinfo=dt.UTC)  # 09:30 New York
MS = int(T0.timestamp() * 1000)
LATENESS = dt.timedelta(seconds=5)


def trade(
    sec: float, p: float, s: int = 100, sym: str = "AAPL", q: int | None = None
) -> dict[str, Any]:
    ev: dict[str, Any] = {"ev": "T", "sym": sym, "p": p, "s": s, "t": MS + round(sec * 1000)}
    if q is not None:
        ev["q"] = q
    return ev


def frame(*events: dict[str, Any]) -> str:
    return json.dumps(list(events))


@dataclass
class Run:
    bars: list[Bar] = field(default_factory=list)
    live: list[LiveUpdate] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def bar(self, sym: str, minute: int) -> Bar:
        start = T0 + dt.timedelta(minutes=minute)
        (b,) = [b for b in self.bars if b.symbol == sym and b.start == start]
        return b

    def ohlcv(self, sym: str, minute: int) -> tuple[float, ...]:
        b = self.bar(sym, minute)
        return (b.open, b.high, b.low, b.close, b.volume, float(b.trades or 0))


def run(frames: list[str], batch_size: int = 1) -> Run:
    out = Run()
    flow = build_live_flow(
        TestingSource(frames, batch_size=batch_size),
        bars=TestingSink(out.bars),
        live=TestingSink(out.live),
        quarantine=TestingSink(out.rejected),
        lateness=LATENESS,
    )
    run_main(flow)  # type: ignore[no-untyped-call]
    return out


def test_ticks_become_minute_bars() -> None:
    out = run(
        [
            frame(trade(1, 10, 100), trade(10, 20, 1, sym="MSFT")),
            frame(trade(30, 12, 50)),
            frame(trade(59.999, 9, 10)),
            frame(trade(65, 11, 5)),
        ]
    )
    assert out.ohlcv("AAPL", 0) == (10, 12, 9, 9, 160, 3)
    assert out.bar("AAPL", 0).vwap == pytest.approx((1000 + 600 + 90) / 160)
    assert out.ohlcv("AAPL", 1) == (11, 11, 11, 11, 5, 1)
    assert out.ohlcv("MSFT", 0) == (20, 20, 20, 20, 1, 1)
    assert len(out.bars) == 3
    assert all(b.source == "live" and b.date == dt.date(2025, 1, 2) for b in out.bars)
    assert out.rejected == []


def test_out_of_order_within_lateness_gives_the_in_order_bar() -> None:
    ticks = [trade(56, 10), trade(60.5, 20), trade(55.8, 5), trade(57, 7), trade(58, 8)]
    shuffled = run([frame(t) for t in ticks])
    in_order = run([frame(t) for t in sorted(ticks, key=lambda e: e["t"])])
    # 55.8 s arrives after 60.5 s but 4.7 s behind it, within 5 s: on time, and it is the open
    assert shuffled.ohlcv("AAPL", 0) == (5, 10, 5, 8, 400, 4)
    assert shuffled.ohlcv("AAPL", 0) == in_order.ohlcv("AAPL", 0)
    assert shuffled.rejected == []


def test_beyond_lateness_is_quarantined_with_reason_late() -> None:
    out = run([frame(trade(50, 10)), frame(trade(62, 20)), frame(trade(51, 99, 7))])
    # 51 s arrived when the newest tick was 62 s: 11 s late > 5 s allowed
    assert out.ohlcv("AAPL", 0) == (10, 10, 10, 10, 100, 1)
    (late,) = out.rejected
    assert late.reason == LATE
    assert late.payload["p"] == 99 and late.payload["s"] == 7
    assert late.payload["t"] == MS + 51_000
    assert late.payload["window_start"] == T0.isoformat()


def test_malformed_events_are_quarantined_not_dropped() -> None:
    out = run(
        [
            '{"not json',
            frame(trade(1, 10), trade(2, -3), {"ev": "T", "sym": "AAPL"}),
            frame({"ev": "status", "status": "success", "message": "subscribed to: T.*"}),
            frame({"ev": "T", "sym": "bad sym", "p": 1, "s": 1, "t": MS}),
        ]
    )
    reasons = sorted(r.reason.split(":")[0] for r in out.rejected)
    assert reasons == ["malformed JSON", "p", "price", "symbol"]
    assert out.ohlcv("AAPL", 0) == (10, 10, 10, 10, 100, 1)


def test_live_updates_track_latest_trade_and_current_bar() -> None:
    out = run([frame(trade(1, 10), trade(2, 12, 5)), frame(trade(61, 11, 7))], batch_size=2)
    last = out.live[-1]
    assert last.latest.price == 11 and last.start == T0 + dt.timedelta(minutes=1)
    assert (last.open, last.volume, last.trades) == (11, 7, 1)
    first_minute = [u for u in out.live if u.start == T0][-1]
    assert (first_minute.open, first_minute.high, first_minute.volume) == (10, 12, 105)


def test_three_workers_give_the_same_bars() -> None:
    rng = random.Random(5)
    events = [
        trade(i * 0.037 + rng.random() * 0.9, 10 + rng.random(), 1 + i % 5, sym=f"S{i % 7}")
        for i in range(6000)
    ]
    frames = [frame(*events[i : i + 50]) for i in range(0, len(events), 50)]

    def bars(workers: int) -> list[tuple[object, ...]]:
        out = Run()
        flow = build_live_flow(
            TestingSource(frames, batch_size=3),
            bars=TestingSink(out.bars),
            live=TestingSink(out.live),
            quarantine=TestingSink(out.rejected),
        )
        cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]
        assert out.rejected == []
        return sorted(
            (b.symbol, b.start, b.open, b.high, b.low, b.close, b.trades) for b in out.bars
        )

    one = bars(1)
    assert len(one) == 7 * 4 and one == bars(3)
