"""Pure pieces of the live flow: parsing T events, the minute fold, the live view, the clock."""

from __future__ import annotations

import datetime as dt
import json
import pickle
import random
from typing import Any

import pytest

from core.records import Bar, Tick
from dataflows.operators import (
    ALIGN,
    LATE,
    MINUTE,
    MinuteAcc,
    Rejected,
    decode_frame,
    late_tick,
    live_step,
    minute_bar,
    minute_floor,
    parse_trade,
    tick_payload,
)
from dataflows.windowing import UTC_MIN, LatenessClock

pytestmark = pytest.mark.unit
T0 = dt.datetime(2025, 1, 2, 14, 30, tzinfo=dt.UTC)  # 09:30 New York, a session
NOW = dt.datetime(2025, 1, 2, 15, tzinfo=dt.UTC)
MS = int(T0.timestamp() * 1000)
WID = (T0 - ALIGN) // MINUTE


def ev(
    sym: object = "AAPL", p: object = 10.0, s: object = 100, t: object = MS, **kw: object
) -> dict[str, Any]:
    return {"ev": "T", "sym": sym, "p": p, "s": s, "t": t, **kw}


def tick(sec: float, p: float, s: float = 100, sym: str = "AAPL", q: int | None = None) -> Tick:
    return Tick(symbol=sym, price=p, size=s, ts=T0 + dt.timedelta(seconds=sec), sequence=q)


def test_parse_trade_keeps_polygon_fields() -> None:
    t = parse_trade(ev(x=4, c=[37], q=1001, i="7", z=3), NOW)
    assert isinstance(t, Tick)
    assert (t.symbol, t.price, t.size, t.ts) == ("AAPL", 10.0, 100, T0)
    assert (t.exchange, t.conditions, t.sequence) == (4, (37,), 1001)
    assert tick_payload(t) == {
        "ev": "T", "sym": "AAPL", "p": 10.0, "s": 100, "t": MS, "x": 4, "c": [37], "q": 1001,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (ev(sym=None), "sym: missing"),
        (ev(p="10.5"), "p: missing or not a number"),
        (ev(p=True), "p: missing or not a number"),
        (ev(s=None), "s: missing"),
        (ev(t="2025-01-02"), "t: missing or not integer"),
        (ev(t=12), "t: outside"),
        (ev(p=-1.0), "price: Input should be greater than 0"),
        (ev(p=float("nan")), "price:"),
        (ev(s=-5), "size: Input should be greater than or equal to 0"),
        (ev(sym="aapl"), "invalid symbol"),
    ],
)
def test_parse_trade_rejects_with_reason(event: dict[str, Any], reason: str) -> None:
    r = parse_trade(event, NOW)
    assert isinstance(r, Rejected)
    assert reason in r.reason
    assert r.payload == event
    assert r.received_at == NOW


def test_decode_frame_splits_ticks_rejects_and_skips_status() -> None:
    frame = json.dumps(
        [
            {"ev": "status", "status": "success", "message": "subscribed to: T.*"},
            ev(),
            ev(p=0),
            {"ev": "Q", "sym": "AAPL"},
            "junk",
        ]
    )
    out = decode_frame(frame, lambda: NOW)
    assert [type(x).__name__ for x in out] == ["Tick", "Rejected", "Rejected", "Rejected"]
    reasons = [x.reason for x in out if isinstance(x, Rejected)]
    assert reasons[1] == "unsupported event type 'Q'"
    assert reasons[2] == "event is not an object"
    bad = decode_frame(b'[{"ev":"T", "sym":', lambda: NOW)
    assert len(bad) == 1 and isinstance(bad[0], Rejected)
    assert bad[0].reason.startswith("malformed JSON")
    assert bad[0].payload == {"raw": '[{"ev":"T", "sym":'}
    # a single object (not an array) is accepted as one event
    assert isinstance(decode_frame(json.dumps(ev()), lambda: NOW)[0], Tick)


def _bar(ticks: list[Tick]) -> Bar:
    acc = MinuteAcc()
    for t in ticks:
        acc.add(t)
    b = minute_bar("AAPL", WID, acc, NOW)
    assert isinstance(b, Bar)
    return b


def test_minute_fold_ohlcv_vwap() -> None:
    b = _bar([tick(1, 10, 100), tick(30, 12, 50), tick(59, 9, 10)])
    assert (b.open, b.high, b.low, b.close) == (10, 12, 9, 9)
    assert b.volume == 160 and b.trades == 3 and b.transactions == 3
    assert b.vwap == pytest.approx((1000 + 600 + 90) / 160)
    assert (b.start, b.date, b.source) == (T0, dt.date(2025, 1, 2), "live")


def test_minute_fold_is_order_independent() -> None:
    ticks = [tick(i * 0.7, 10 + (i * 37 % 11), 1 + i, q=i) for i in range(80)]
    ticks.append(tick(79 * 0.7, 99.0, 1, q=1000))  # same ts, later sequence
    expected = _bar(ticks)
    rng = random.Random(3)
    for _ in range(20):
        shuffled = ticks[:]
        rng.shuffle(shuffled)
        got = _bar(shuffled)
        assert (got.open, got.high, got.low, got.close, got.trades) == (
            expected.open, expected.high, expected.low, expected.close, expected.trades,
        )  # fmt: skip
        assert got.volume == pytest.approx(expected.volume)


def test_minute_acc_merge_and_pickle() -> None:
    a, b, whole = MinuteAcc(), MinuteAcc(), MinuteAcc()
    ticks = [tick(s, p) for s, p in [(5, 10), (1, 11), (40, 8), (20, 13)]]
    for t in ticks[:2]:
        a.add(t)
    for t in ticks[2:]:
        b.add(t)
    for t in ticks:
        whole.add(t)
    merged = pickle.loads(pickle.dumps(a)).merge(b)
    fields = ("open", "high", "low", "close", "volume", "trades")
    assert [getattr(merged, f) for f in fields] == [getattr(whole, f) for f in fields]


def test_bar_on_a_non_session_is_rejected() -> None:
    acc = MinuteAcc().add(tick(0, 10))
    saturday = WID + 2 * 24 * 60
    r = minute_bar("AAPL", saturday, acc, NOW)
    assert isinstance(r, Rejected)
    assert "not an XNYS session" in r.reason
    assert r.payload["start"] == "2025-01-04T14:30:00+00:00"


def test_late_tick_is_quarantined_as_late() -> None:
    r = late_tick(WID, tick(3, 10), NOW)
    assert r.reason == LATE
    assert r.payload["window_start"] == T0.isoformat()
    assert r.payload["t"] == MS + 3000


def test_live_view_follows_newest_minute_and_trade() -> None:
    state, out = live_step(None, tick(1, 10))
    assert out[0].open == 10 and out[0].start == T0
    state, out = live_step(state, tick(61, 11))  # next minute: a new bar
    assert out[0].start == minute_floor(T0 + dt.timedelta(seconds=61)) and out[0].trades == 1
    state, out = live_step(state, tick(30, 5))  # older minute, older trade: nothing changes
    assert out == []
    state, out = live_step(state, tick(62, 12, 3))
    u = out[0]
    assert (u.open, u.high, u.close, u.volume, u.latest.price) == (11, 12, 12, 103, 12)


def test_lateness_clock_wakes_exactly_when_the_watermark_passes() -> None:
    now = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]
    clock = LatenessClock(lambda t: t, dt.timedelta(seconds=5), now_getter=lambda: now[0])
    logic = clock.build(None)
    assert logic.to_system_utc(T0) is None  # nothing seen yet
    logic.before_batch()
    _, wm = logic.on_item(T0 + dt.timedelta(seconds=30))
    assert wm == T0 + dt.timedelta(seconds=25)
    # the minute closes at T0+60: 35 s of system time after that tick was seen
    assert logic.to_system_utc(T0 + dt.timedelta(seconds=60)) == now[0] + dt.timedelta(seconds=35)
    now[0] += dt.timedelta(seconds=35)
    assert logic.on_notify() == T0 + dt.timedelta(seconds=60)
    # a resumed clock does not count the downtime
    now[0] += dt.timedelta(hours=1)
    resumed = clock.build(logic.snapshot())
    assert resumed.on_notify() == T0 + dt.timedelta(seconds=25)
    assert logic.snapshot().watermark_base > UTC_MIN
