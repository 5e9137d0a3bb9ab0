"""Pure steps of the live flow: Polygon frames to ticks, ticks to minute bars and live bars.

Nothing here does I/O. Every input that cannot become a tick or a bar leaves as a
:class:`Rejected` with its raw payload and a reason, so the flow can route it to quarantine
instead of dropping it. Timestamps are UTC; bars are stamped at their open (window start).

The minute fold is order-independent: open and close are chosen by (timestamp, sequence), not
by arrival, so ticks reordered within the allowed lateness give exactly the bar that in-order
ticks give, without buffering or sorting.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream
from bytewax.operators.windowing import TumblingWindower, fold_window
from pydantic import ValidationError

from core import calendar
from core.records import Bar, Tick
from dataflows.windowing import LatenessClock

UNIX_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MINUTE: Final = dt.timedelta(minutes=1)
ALIGN: Final = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
"""Windows start on whole UTC minutes (this instant is one)."""
_MIN_MS: Final = 946_684_800_000  # 2000-01-01
_MAX_MS: Final = 4_102_444_800_000  # 2100-01-01
LATE: Final = "late"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A payload that could not be used, why, and when it was seen: the dead-letter item."""

    payload: dict[str, Any]
    reason: str
    received_at: dt.datetime


# -- parsing ----------------------------------------------------------------------------------
def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def ms_to_utc(ms: int) -> dt.datetime:
    """Unix milliseconds as an aware UTC datetime (exact, no float rounding)."""
    return UNIX_EPOCH + dt.timedelta(milliseconds=ms)


def _validation_reason(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'tick'}: {e['msg']}" for e in exc.errors()
    )


def parse_trade(event: dict[str, Any], received_at: dt.datetime) -> Tick | Rejected:
    """One Polygon ``T`` event as a :class:`Tick`, or the reason it is not one."""
    sym, p, s, t = event.get("sym"), event.get("p"), event.get("s"), event.get("t")
    reason = None
    if not isinstance(sym, str):
        reason = "sym: missing or not a string"
    elif not _is_number(p):
        reason = "p: missing or not a number"
    elif not _is_number(s):
        reason = "s: missing or not a number"
    elif not isinstance(t, int) or isinstance(t, bool):
        reason = "t: missing or not integer milliseconds"
    elif not _MIN_MS <= t < _MAX_MS:
        reason = "t: outside 2000..2100"
    if reason is not None:
        return Rejected(event, reason, received_at)
    c = event.get("c")
    x, q = event.get("x"), event.get("q")
    try:
        return Tick(
            symbol=sym,
            price=p,
            size=s,
            ts=ms_to_utc(t),  # type: ignore[arg-type]  # checked above
            exchange=x if isinstance(x, int) else None,
            conditions=tuple(c) if isinstance(c, list) else (),
            sequence=q if isinstance(q, int) else None,
        )
    except ValidationError as exc:
        return Rejected(event, _validation_reason(exc), received_at)


def decode_frame(
    raw: str | bytes, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
) -> list[Tick | Rejected]:
    """Ticks and rejects of one WebSocket frame or Kinesis record (a JSON array of events).

    Status events are control traffic, not data, and are skipped.
    """
    received_at = now()
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return [Rejected({"raw": text}, f"malformed JSON: {exc}", received_at)]
    events = doc if isinstance(doc, list) else [doc]
    out: list[Tick | Rejected] = []
    for ev in events:
        if not isinstance(ev, dict):
            out.append(Rejected({"raw": ev}, "event is not an object", received_at))
            continue
        kind = ev.get("ev")
        if kind == "T":
            out.append(parse_trade(ev, received_at))
        elif kind != "status":
            out.append(Rejected(ev, f"unsupported event type {kind!r}", received_at))
    return out


def is_tick(item: Tick | Rejected) -> TypeGuard[Tick]:
    """Branch predicate: ticks go on, rejects to quarantine."""
    return isinstance(item, Tick)


def as_rejected(item: object) -> Rejected:
    """The other side of a branch, typed (it can only hold rejects)."""
    if not isinstance(item, Rejected):
        msg = f"expected a Rejected, got {type(item).__name__}"
        raise TypeError(msg)
    return item


def tick_payload(t: Tick) -> dict[str, Any]:
    """A tick back in Polygon's ``T`` shape (for quarantine, so it can be replayed)."""
    ms = (t.ts - UNIX_EPOCH) // dt.timedelta(milliseconds=1)
    out: dict[str, Any] = {"ev": "T", "sym": t.symbol, "p": t.price, "s": t.size, "t": ms}
    if t.exchange is not None:
        out["x"] = t.exchange
    if t.conditions:
        out["c"] = list(t.conditions)
    if t.sequence is not None:
        out["q"] = t.sequence
    return out


# -- the minute fold --------------------------------------------------------------------------
class MinuteAcc:
    """Running OHLCV of one window; open/close picked by (ts, sequence), so order-free."""

    __slots__ = (
        "close",
        "close_seq",
        "close_ts",
        "high",
        "low",
        "notional",
        "open",
        "open_seq",
        "open_ts",
        "trades",
        "volume",
    )

    def __init__(self) -> None:
        self.trades = 0
        self.volume = 0.0
        self.notional = 0.0
        self.open = self.high = self.low = self.close = math.nan
        self.open_ts = self.close_ts = UNIX_EPOCH
        self.open_seq = self.close_seq = -1

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for k, v in zip(self.__slots__, state, strict=True):
            setattr(self, k, v)

    def add(self, t: Tick) -> MinuteAcc:
        """Fold one tick in (in place; returns self for ``fold_window``)."""
        p, ts = t.price, t.ts
        seq = -1 if t.sequence is None else t.sequence
        if self.trades == 0:
            self.open = self.high = self.low = self.close = p
            self.open_ts = self.close_ts = ts
            self.open_seq = self.close_seq = seq
        else:
            if p > self.high:
                self.high = p
            elif p < self.low:
                self.low = p
            if ts < self.open_ts or (ts == self.open_ts and seq < self.open_seq):
                self.open, self.open_ts, self.open_seq = p, ts, seq
            if ts > self.close_ts or (ts == self.close_ts and seq >= self.close_seq):
                self.close, self.close_ts, self.close_seq = p, ts, seq
        self.trades += 1
        self.volume += t.size
        self.notional += p * t.size
        return self

    def merge(self, other: MinuteAcc) -> MinuteAcc:
        """Combine two partial windows (tumbling windows never merge; kept for completeness)."""
        if other.trades == 0:
            return self
        if self.trades == 0:
            return other
        self.high = max(self.high, other.high)
        self.low = min(self.low, other.low)
        if (other.open_ts, other.open_seq) < (self.open_ts, self.open_seq):
            self.open, self.open_ts, self.open_seq = other.open, other.open_ts, other.open_seq
        if (other.close_ts, other.close_seq) >= (self.close_ts, self.close_seq):
            self.close, self.close_ts, self.close_seq = other.close, other.close_ts, other.close_seq
        self.trades += other.trades
        self.volume += other.volume
        self.notional += other.notional
        return self

    def vwap(self) -> float | None:
        """Volume-weighted price, None without volume (all zero-size prints)."""
        return self.notional / self.volume if self.volume > 0 else None


def window_start(window_id: int) -> dt.datetime:
    """Start of minute window ``window_id`` (as numbered by the tumbling windower)."""
    return ALIGN + window_id * MINUTE


def session_date(start: dt.datetime) -> dt.date:
    """The trading date a bar belongs to: the New York calendar date of its start."""
    return start.astimezone(calendar.NEW_YORK).date()


def minute_bar(
    symbol: str, window_id: int, acc: MinuteAcc, now: dt.datetime | None = None
) -> Bar | Rejected:
    """The closed bar of one window, or a reject (e.g. a tick stamped on a non-session day)."""
    start = window_start(window_id)
    fields: dict[str, Any] = {
        "symbol": symbol,
        "date": session_date(start),
        "open": acc.open,
        "high": acc.high,
        "low": acc.low,
        "close": acc.close,
        "volume": acc.volume,
        "vwap": acc.vwap(),
        "transactions": acc.trades,
        "source": "live",
        "ingested_at": now or dt.datetime.now(dt.UTC),
        "start": start,
        "trades": acc.trades,
    }
    try:
        return Bar(**fields)
    except ValidationError as exc:
        payload = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in fields.items()}
        return Rejected(payload, f"bar: {_validation_reason(exc)}", fields["ingested_at"])


def late_tick(window_id: int, t: Tick, now: dt.datetime | None = None) -> Rejected:
    """A tick that came after its window closed: quarantined with reason ``late``."""
    payload = tick_payload(t)
    payload["window_start"] = window_start(window_id).isoformat()
    return Rejected(payload, LATE, now or dt.datetime.now(dt.UTC))


@dataclass(frozen=True, slots=True)
class MinuteOut:
    """Closed minute bars, and everything the fold refused (late ticks, invalid bars)."""

    bars: Stream[Bar]
    rejected: Stream[Rejected]


def _tick_ts(t: Tick) -> dt.datetime:
    return t.ts


def _fold(acc: MinuteAcc, t: Tick) -> MinuteAcc:
    return acc.add(t)


def _merge(a: MinuteAcc, b: MinuteAcc) -> MinuteAcc:
    return a.merge(b)


def _close(item: tuple[str, tuple[int, MinuteAcc]]) -> Bar | Rejected:
    symbol, (window_id, acc) = item
    return minute_bar(symbol, window_id, acc)


def _late(item: tuple[str, tuple[int, Tick]]) -> Rejected:
    _, (window_id, t) = item
    return late_tick(window_id, t)


def _is_bar(item: Bar | Rejected) -> TypeGuard[Bar]:
    return isinstance(item, Bar)


def minute_bars(step_id: str, ticks: KeyedStream[Tick], lateness: dt.timedelta) -> MinuteOut:
    """Fold ticks keyed by symbol into 1-minute bars aligned on whole UTC minutes.

    A tick more than ``lateness`` behind the newest tick of its symbol is late: it leaves on
    ``rejected`` with reason ``late`` and never changes a bar already emitted.
    """
    clock: LatenessClock[Tick] = LatenessClock(_tick_ts, lateness)
    windower = TumblingWindower(length=MINUTE, align_to=ALIGN)
    win = fold_window(
        f"{step_id}_fold", ticks, clock, windower, MinuteAcc, _fold, _merge, ordered=False
    )
    closed = op.map(f"{step_id}_close", win.down, _close)
    split = op.branch(f"{step_id}_valid", closed, _is_bar)
    invalid = op.map(f"{step_id}_invalid", split.falses, as_rejected)
    late = op.map(f"{step_id}_late", win.late, _late)
    rejected = op.merge(f"{step_id}_rejected", invalid, late)
    return MinuteOut(split.trues, rejected)


# -- the live bar (Redis) ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LiveUpdate:
    """What Redis shows for a symbol after a tick: its latest trade and its current minute."""

    latest: Tick
    start: dt.datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trades: int


@dataclass(slots=True)
class LiveState:
    """Per-symbol state of the live view: newest trade, and the minute it is building."""

    latest: Tick
    start: dt.datetime
    acc: MinuteAcc


def minute_floor(ts: dt.datetime) -> dt.datetime:
    """Start of the minute holding ``ts`` (UTC)."""
    return ts - (ts - ALIGN) % MINUTE


def _newer(a: Tick, b: Tick) -> bool:
    return (a.ts, -1 if a.sequence is None else a.sequence) >= (
        b.ts,
        -1 if b.sequence is None else b.sequence,
    )


def live_step(state: LiveState | None, t: Tick) -> tuple[LiveState, list[LiveUpdate]]:
    """Advance the live view by one tick; emit an update only when it changed.

    This view is for display and alerts within the second, so it never waits: a tick for an
    older minute than the one on show still updates nothing but may be the newest trade. The
    authoritative bars come from :func:`minute_bars`.
    """
    start = minute_floor(t.ts)
    if state is None:
        state = LiveState(t, start, MinuteAcc().add(t))
    else:
        changed = False
        if _newer(t, state.latest):
            state.latest = t
            changed = True
        if start == state.start:
            state.acc.add(t)
            changed = True
        elif start > state.start:
            state.start, state.acc = start, MinuteAcc().add(t)
            changed = True
        if not changed:
            return state, []
    a = state.acc
    update = LiveUpdate(
        state.latest, state.start, a.open, a.high, a.low, a.close, a.volume, a.vwap(), a.trades
    )
    return state, [update]
