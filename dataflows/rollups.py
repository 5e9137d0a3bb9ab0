"""Live 5m..4h bars: the live flow's minute bars rolled up as they form, by the batch rule.

One stateful step over the fold's results (:class:`dataflows.minute_fold.FoldOut`). It keeps
the final minute bars of every window still open (and of windows closed less than the revision
horizon ago), and emits :class:`RollupBar` events like minute bars: ``final`` false while a
window forms (its final minutes plus the forming one, at most once per publication interval),
true once the watermark of the symbol's
source partition passes the window's end (``revision`` 0), and again with ``revision`` n+1 when
a late trade revises one of its minutes. Every bar is computed by :func:`core.intraday.rollup`,
the function batch silver uses, over the same minute values, so a final live bar equals the
batch bar of the same window bit for bit.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import bytewax.operators as op
import numpy as np
import pyarrow as pa
from bytewax.dataflow import Stream
from bytewax.operators import StatefulLogic

from core import calendar, intraday
from core.schemas import BRONZE_MINUTE
from dataflows.minute_fold import MINUTE_MS, Event, FoldOut, MinuteBar, ms_iso, session_date
from dataflows.pacing import Pace

KEY: Final = "rollups"
SLICES: Final = 10
"""Forming bars are published a slice of the symbols at a time, each slice once per interval:
six intervals for every symbol of the market at once took the worker (and Redis) a burst of a
hundred milliseconds or more every second, and every trade behind it waited."""
_END: Final = 2**62
Minute = tuple[float, float, float, float, float, float | None, int]
"""open, high, low, close, volume, vwap, trades of a final minute bar."""
WindowKey = tuple[str, str, int]
"""(interval, symbol, window start ms)."""


@dataclass(slots=True, unsafe_hash=True)
class RollupBar(Event):
    """A live intraday bar event."""

    interval: str
    symbol: str
    start: int
    end: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trades: int
    minutes: int
    complete: bool
    final: bool
    revision: int

    def to_json(self) -> dict[str, Any]:
        """The document Redis stores and publishes (``interval`` tells it from a minute bar)."""
        return {
            "interval": self.interval,
            "symbol": self.symbol,
            "start": ms_iso(self.start),
            "end": ms_iso(self.end),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "vwap": self.vwap,
            "trades": self.trades,
            "minutes": self.minutes,
            "complete": self.complete,
            "final": self.final,
            "revision": self.revision,
        }


_HOURS: dict[dt.date, tuple[int, int]] = {}


def _hours(day: dt.date) -> tuple[int, int] | None:
    """(open ms, close ms) of a session, or None."""
    hit = _HOURS.get(day)
    if hit is None:
        if not calendar.is_session(day):
            return None
        hit = (
            int(calendar.session_open(day).timestamp() * 1000),
            int(calendar.session_close(day).timestamp() * 1000),
        )
        _HOURS[day] = hit
    return hit


_WINDOWS: dict[tuple[int, str], tuple[int, int] | None] = {}


def window_of(start: int, interval: str) -> tuple[int, int] | None:
    """(window start, end) in ms of the regular-session minute at ``start``, else None."""
    key = (start, interval)
    if key in _WINDOWS:
        return _WINDOWS[key]
    hours = _hours(session_date(start))
    hit = None
    if hours is not None and hours[0] <= start < hours[1]:
        width = intraday.INTERVALS[interval] * MINUTE_MS
        begin = hours[0] + (start - hours[0]) // width * width
        hit = begin, min(begin + width, hours[1])
    if len(_WINDOWS) > 100_000:
        _WINDOWS.clear()
    _WINDOWS[key] = hit
    return hit


def _values(b: MinuteBar) -> Minute:
    return (b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades)


@dataclass
class RollupState:
    """Minutes of open (and recently closed) windows, and the windows themselves."""

    intervals: tuple[str, ...]
    horizon_ms: int
    minutes: dict[str, dict[int, Minute]] = field(default_factory=dict)
    windows: dict[WindowKey, list[int]] = field(default_factory=dict)
    """[end ms, revision emitted (-1: none), closed (0/1)]."""
    ends: dict[str, dict[int, set[WindowKey]]] = field(default_factory=dict)
    """Per source partition, open windows by end."""
    part_of: dict[str, str] = field(default_factory=dict)
    marks: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, MinuteBar] = field(default_factory=dict)
    """Per symbol, the newest forming minute not yet rolled up."""
    sums: dict[WindowKey, list[Any]] = field(default_factory=dict)
    """Per forming window, the summary of its final minutes (dropped when one changes)."""
    forgotten_before: int = -_END
    """Windows ending before this minute are dropped (the last edge :meth:`_forget` used)."""

    def step(
        self, out: FoldOut, *, publish: bool = True, share: tuple[int, int] = (0, 1)
    ) -> list[RollupBar]:
        """Fold one result of the minute fold; the rollup events it causes.

        Final bars and revisions go out at once; forming bars only with ``publish`` (those
        of slice ``share`` changed since the last publication, see :meth:`flush`), computed
        from the window's summary, not per minute.
        """
        eof = not out.part
        source = out.part
        finals: set[WindowKey] = set()
        revised: set[WindowKey] = set()
        for b in out.final:
            if not eof:
                self.part_of[b.symbol] = source
            held = self.minutes.setdefault(b.symbol, {})
            fresh = b.start not in held
            held[b.start] = v = _values(b)
            for name in self.intervals:
                key = self._window(name, b.symbol, b.start)
                if key is None:
                    continue
                s = self.sums.get(key)
                if s is not None and fresh and len(s) > _LAST and b.start > s[_LAST]:
                    _add(s, b.start, v)  # the next minute in order: no need to start over
                else:
                    self.sums.pop(key, None)
                if self.windows[key][2]:
                    revised.add(key)
        for b in out.forming:
            if not eof:
                self.part_of[b.symbol] = source
            cur = self.waiting.get(b.symbol)
            if cur is None or b.start >= cur.start:
                self.waiting[b.symbol] = b
        if eof:
            for ends in self.ends.values():
                for keys in ends.values():
                    finals |= keys
            self.ends.clear()
        else:
            self.marks[source] = max(self.marks.get(source, out.watermark), out.watermark)
            ends = self.ends.get(source, {})
            for end in [e for e in ends if e <= self.marks[source]]:
                finals |= ends.pop(end)
        for key in finals:
            self.windows[key][2] = 1
            self.sums.pop(key, None)
        bars = self._emit(finals | revised)
        if publish:
            bars += self.flush(share)
        self._forget()
        return bars

    def flush(self, share: tuple[int, int] = (0, 1)) -> list[RollupBar]:
        """The forming bars of the windows whose forming minute changed since the last time.

        ``share`` (k, n): only the symbols of slice k of n (by their hash in this process);
        the others keep waiting for their slice's turn.
        """
        k, n = share
        chosen = [
            (symbol, b) for symbol, b in self.waiting.items() if n == 1 or hash(symbol) % n == k
        ]
        bars = []
        for symbol, b in sorted(chosen):
            del self.waiting[symbol]
            if b.start in self.minutes.get(symbol, {}):
                continue  # final since: its windows' bars come with the next forming minute
            for name in self.intervals:
                key = self._window(name, symbol, b.start)
                if key is not None and not self.windows[key][2]:
                    bars.append(self._forming(key, b))
        return bars

    def _forming(self, key: WindowKey, b: MinuteBar) -> RollupBar:
        """A forming bar: the window's final minutes (summarised once) and its forming one."""
        name, symbol, begin = key
        end = self.windows[key][0]
        s = self.sums.get(key)
        if s is None:
            held = self.minutes.get(symbol, {})
            s = self.sums[key] = _summary(
                (st, v) for st, v in sorted(held.items()) if begin <= st < end
            )
        o, hi, lo, vol, den, num, n, count = s[:_LAST]
        has = b.vwap is not None
        den, num = den + (b.volume if has else 0.0), num + ((b.vwap or 0.0) * b.volume)
        return RollupBar(
            interval=name, symbol=symbol, start=begin, end=end,
            open=b.open if o is None else o, high=max(hi, b.high), low=min(lo, b.low),
            close=b.close, volume=vol + b.volume, vwap=num / den if den > 0 else None,
            trades=n + b.trades, minutes=count + 1, complete=False, final=False, revision=0,
        )  # fmt: skip

    def _window(self, name: str, symbol: str, start: int) -> WindowKey | None:
        w = window_of(start, name)
        if w is None:
            return None
        key = (name, symbol, w[0])
        if key not in self.windows:
            self.windows[key] = [w[1], -1, 0]
            part = self.part_of.get(symbol, "")
            self.ends.setdefault(part, {}).setdefault(w[1], set()).add(key)
        return key

    def _emit(self, keys: set[WindowKey]) -> list[RollupBar]:
        """Final bars (and revisions) by the batch rule, :func:`core.intraday.rollup`."""
        by_interval: dict[str, list[WindowKey]] = defaultdict(list)
        for key in keys:
            by_interval[key[0]].append(key)
        out: list[RollupBar] = []
        for name, group in sorted(by_interval.items()):
            rows: list[tuple[str, int, Minute]] = []
            for key in group:
                _, symbol, begin = key
                end = self.windows[key][0]
                held = self.minutes.get(symbol, {})
                rows += [(symbol, s, v) for s, v in held.items() if begin <= s < end]
            for r in _rows(intraday.rollup(minute_table(rows), name)):
                state = self.windows[(name, r["symbol"], r["start"])]
                state[1] += 1
                out.append(RollupBar(interval=name, complete=True, final=True,
                                     revision=state[1], **r))  # fmt: skip
        return out

    def _forget(self) -> None:
        """Drop what the horizon passed, once per minute of watermark.

        Not per batch: every window and every symbol's minutes are walked.
        """
        if not self.marks:
            return
        edge = min(self.marks.values()) - self.horizon_ms
        edge -= edge % MINUTE_MS
        if edge <= self.forgotten_before:
            return
        self.forgotten_before = edge
        old = [k for k, w in self.windows.items() if w[2] and w[0] < edge]
        for k in old:
            del self.windows[k]
            self.sums.pop(k, None)
        cutoff = edge - max(intraday.INTERVALS[i] for i in self.intervals) * MINUTE_MS
        for held in self.minutes.values():
            for s in [s for s in held if s < cutoff]:
                del held[s]


_LAST: Final = 8
"""Slot of a summary's last minute start (summaries of an older snapshot lack it)."""


def _summary(minutes: Iterable[tuple[int, Minute]]) -> list[Any]:
    """Summary of (start, minute) pairs in order.

    [open, high, low, volume, vwap weight, vwap numerator, trades, count, last start].
    """
    s: list[Any] = [None, -math.inf, math.inf, 0.0, 0.0, 0.0, 0, 0, -_END]
    for start, v in minutes:
        _add(s, start, v)
    return s


def _add(s: list[Any], start: int, v: Minute) -> None:
    """Add a minute later than every one in summary ``s``.

    The same sums in the same order as summarising them all again: a window's summary follows
    its minutes as they close instead of starting over (hundreds of minutes for a 4h window).
    """
    mo, mh, ml, _, mv, mw, mt = v
    if s[0] is None:
        s[0] = mo
    s[1], s[2], s[3], s[6], s[7] = max(s[1], mh), min(s[2], ml), s[3] + mv, s[6] + mt, s[7] + 1
    if mw is not None:
        s[4], s[5] = s[4] + mv, s[5] + mw * mv
    s[_LAST] = start


def minute_table(rows: Sequence[tuple[str, int, Minute]]) -> pa.Table:
    """Minute values as the bronze columns :func:`core.intraday.rollup` reads."""
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


def _rows(table: pa.Table) -> Iterable[dict[str, Any]]:
    """Rollup rows with ms stamps, without the ``complete`` flag (the event sets it)."""
    for r in table.drop_columns(["complete"]).to_pylist():
        r["start"] = int(r["start"].timestamp() * 1000)
        r["end"] = int(r["end"].timestamp() * 1000)
        yield r


class _RollupLogic(StatefulLogic[FoldOut, list[RollupBar], RollupState]):
    """Forming bars a slice of the symbols at a time, each slice once per ``publish_s``.

    A slice every ``publish_s / SLICES`` spreads the work over the interval (0: all at once).
    """

    def __init__(self, state: RollupState, publish_s: float) -> None:
        self.state = state
        self.slices = SLICES if publish_s > 0 else 1
        self.pace = Pace(publish_s / self.slices)
        self.turn = 0

    def _next(self) -> tuple[int, int]:
        share = (self.turn, self.slices)
        self.turn = (self.turn + 1) % self.slices
        return share

    def on_item(self, value: FoldOut) -> tuple[Iterable[list[RollupBar]], bool]:
        if self.pace.ready():
            bars = self.state.step(value, publish=True, share=self._next())
        else:
            bars = self.state.step(value, publish=False)
        return ([bars] if bars else []), StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[list[RollupBar]], bool]:
        if not self.state.waiting or not self.pace.ready():
            return [], StatefulLogic.RETAIN
        bars = self.state.flush(self._next())
        return ([bars] if bars else []), StatefulLogic.RETAIN

    def notify_at(self) -> dt.datetime | None:
        return self.pace.wake_at(bool(self.state.waiting))

    def snapshot(self) -> RollupState:
        return self.state


def _key(_: FoldOut) -> str:
    return KEY


def _value(item: tuple[str, list[RollupBar]]) -> list[RollupBar]:
    return item[1]


def rollup_stream(
    step_id: str,
    folded: Stream[FoldOut],
    intervals: Sequence[str] = tuple(intraday.INTERVALS),
    *,
    horizon_ms: int = 15 * MINUTE_MS,
    publish_s: float = 0.0,
) -> Stream[list[RollupBar]]:
    """The fold's results to rollup events (one list per fold result that caused any).

    Forming bars are published at most every ``publish_s`` (0: with every result).
    """
    names = tuple(intraday.parse_intervals(",".join(intervals)))
    keyed = op.key_on(f"{step_id}_key", folded, _key)

    def build(resume: RollupState | None) -> _RollupLogic:
        return _RollupLogic(resume or RollupState(names, horizon_ms), publish_s)

    return op.map(f"{step_id}_values", op.stateful(f"{step_id}_fold", keyed, build), _value)
