"""One partition's minute bars on event time: the state machine the live flow keys by partition.

Pure (no I/O, no clock): the flow feeds it :class:`~dataflows.trades.TradeBatch` items and gets
bar events back, so a replay of archived trades can drive the same code.

Event time, per partition (a Kinesis shard, or the WebSocket connection): the watermark is the
newest SIP timestamp seen minus the lateness. A minute closes (its bar is final, revision 0) as
soon as the watermark passes its end. The wall clock moves the watermark only while the
partition is idle: between two reads that found nothing waiting, by the time elapsed between
them. A backlog (a stall, a pause, a restart) therefore never closes a minute early.

Every trade is classified as if trades were processed one at a time in arrival order, so the
bars do not depend on how reads were batched (a Kinesis replay after a crash batches
differently and must give the same bars): a trade is *late* when the watermark before it had
already passed its minute's end. A late trade revises its minute: the bar is re-emitted with
``revision`` n+1, never dropped. Closed minutes are remembered for ``horizon_ms`` of event time;
a trade later than that cannot be folded into a bar we no longer hold, so it is rejected with
its reason and its minute recorded as a gap for the REST healer.

A trade seen twice (same symbol, exchange and id) counts once. Conditions decide what a trade
may update (:mod:`core.conditions`); a minute with no trade allowed to set a price has no bar.

After a (re)connect of a source that cannot rewind, every minute still open and the minute of
the first trade after it are ``partial``, and the span between is recorded as a gap.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from core import calendar
from core.isotime import ms_iso
from dataflows.day_fold import DayBar, DayFold
from dataflows.trades import Reject, TradeBatch

MINUTE_MS: Final = 60_000
PRICE_UNITS: Final = 1_000_000
"""Notional is summed in whole micro-dollars, so a bar's vwap is exactly the same however its
trades were batched (float sums depend on their order)."""
_BIG: Final = np.iinfo(np.int64).max
_MIN_T: Final = -(2**62)
_MAX_T: Final = 2**62
LATE_BEYOND_HORIZON: Final = "late beyond the revision horizon"
NOT_A_SESSION: Final = "bar: its New York date is not an XNYS session"
COUNTERS: Final = (
    "trades",
    "duplicates",
    "late",
    "revisions",
    "late_beyond_horizon",
    "rejected",
    "bars_final",
    "bars_partial",
    "gaps",
    "days",
)


class Event:
    """Base of the live flow's event records: value-like, built by the tens of thousands a second.

    Not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``, about 4 us
    for a bar of 15 fields against under 1 us; events are never changed once built (hashable
    by value, ``unsafe_hash``). Pickled as the frozen classes were (a list of field values), so
    a recovery snapshot taken before still loads.
    """

    __slots__: tuple[str, ...] = ()

    def __getstate__(self) -> list[Any]:
        return [getattr(self, name) for name in self.__slots__]

    def __setstate__(self, state: list[Any]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)


@dataclass(slots=True, unsafe_hash=True)
class MinuteBar(Event):
    """A bar event: forming (``final`` false) or closed, with its revision."""

    symbol: str
    start: int
    """Window start, Unix ms (on the minute)."""
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trades: int
    final: bool
    revision: int
    partial: bool

    @property
    def date(self) -> dt.date:
        """The New York session date of the bar."""
        return session_date(self.start)

    @property
    def ingested_at(self) -> int:
        """Deterministic, so a replay writes byte-equal bars: the window's end (Unix ms)."""
        return self.start + MINUTE_MS

    def to_json(self) -> dict[str, Any]:
        """The document Redis stores and publishes."""
        return {
            "symbol": self.symbol,
            "start": ms_iso(self.start),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "vwap": self.vwap,
            "trades": self.trades,
            "final": self.final,
            "revision": self.revision,
            "partial": self.partial,
        }


@dataclass(frozen=True, slots=True)
class Gap:
    """A span the partition knows it missed: market-wide when ``symbol`` is None."""

    symbol: str | None
    start: int
    end: int
    reason: str


@dataclass(slots=True, unsafe_hash=True)
class LastTrade(Event):
    """The newest trade of a symbol, by (SIP time, sequence)."""

    symbol: str
    price: float
    size: float
    t: int
    exchange: int
    sequence: int
    id: str | None
    conditions: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """The document Redis stores."""
        return {
            "symbol": self.symbol,
            "price": self.price,
            "size": self.size,
            "ts": ms_iso(self.t),
            "exchange": None if self.exchange < 0 else self.exchange,
            "conditions": list(self.conditions),
            "sequence": None if self.sequence < 0 else self.sequence,
            "id": self.id,
        }


@dataclass(slots=True)
class FoldOut:
    """Everything one batch produced."""

    part: str
    read_at: int
    forming: list[MinuteBar] = field(default_factory=list)
    final: list[MinuteBar] = field(default_factory=list)
    latest: list[LastTrade] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    watermark: int = _MIN_T
    daily: list[DayBar] = field(default_factory=list)
    """Provisional daily bars of sessions settled by this batch's watermark."""
    since: int = 0
    """Read time (Unix ms) of the oldest trade whose forming bar or latest trade this result
    publishes (0: it publishes none): what a tick waited before it reached Redis."""


_DAYS: dict[int, tuple[dt.date, bool]] = {}


def session_date(start_ms: int) -> dt.date:
    """The New York date of a bar starting at ``start_ms``."""
    return _day(start_ms)[0]


def _day(start_ms: int) -> tuple[dt.date, bool]:
    hour = start_ms // 3_600_000
    hit = _DAYS.get(hour)
    if hit is None:
        utc = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=hour)
        day = utc.astimezone(calendar.NEW_YORK).date()
        hit = (day, calendar.is_session(day))
        _DAYS[hour] = hit
    return hit


# Accumulator slots (a list, so folding stays cheap and pickling small).
_OF_P, _OF_T, _OF_Q, _OL_P, _OL_T, _OL_Q = range(6)
_HF_P, _HF_T, _HF_Q, _HL_P, _HL_T, _HL_Q = range(6, 12)
_HIGH, _LOW, _VOL, _NOTIONAL, _N, _REV, _PARTIAL = range(12, 19)


def new_acc(partial: bool) -> list[Any]:
    """An empty minute."""
    return [
        0.0, _MAX_T, 0, 0.0, _MIN_T, 0,
        0.0, _MAX_T, 0, 0.0, _MIN_T, 0,
        -np.inf, np.inf, 0.0, 0, 0, 0, partial,
    ]  # fmt: skip


def notional_units(p: float, s: float) -> int:
    """A trade's notional in whole micro-dollars: a fixed integer per trade, summed exactly.

    The price is rounded to micro-dollars and multiplied by the whole shares exactly; a
    fractional part of the size (fractional-share odd lots) adds its own rounded product, so
    half a share counts as half, not as none (rounding the size did).
    """
    units = round(p * PRICE_UNITS)
    whole = math.floor(s)
    return units * whole + round(units * (s - whole))


def notional_units_array(
    p: npt.NDArray[np.float64], s: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """:func:`notional_units` of many trades."""
    units = np.rint(p * PRICE_UNITS).astype(np.int64)
    whole = np.floor(s)
    part = np.rint(units * (s - whole)).astype(np.int64)
    return np.asarray(units * whole.astype(np.int64) + part, dtype=np.int64)


def _fold_one(acc: list[Any], p: float, s: float, t: int, q: int, rule: tuple[bool, ...]) -> None:
    hl, oc, vol = rule
    if oc:
        if t < acc[_OF_T] or (t == acc[_OF_T] and q < acc[_OF_Q]):
            acc[_OF_P], acc[_OF_T], acc[_OF_Q] = p, t, q
        if t > acc[_OL_T] or (t == acc[_OL_T] and q >= acc[_OL_Q]):
            acc[_OL_P], acc[_OL_T], acc[_OL_Q] = p, t, q
    if hl:
        if t < acc[_HF_T] or (t == acc[_HF_T] and q < acc[_HF_Q]):
            acc[_HF_P], acc[_HF_T], acc[_HF_Q] = p, t, q
        if t > acc[_HL_T] or (t == acc[_HL_T] and q >= acc[_HL_Q]):
            acc[_HL_P], acc[_HL_T], acc[_HL_Q] = p, t, q
        acc[_HIGH] = max(acc[_HIGH], p)
        acc[_LOW] = min(acc[_LOW], p)
    if vol:
        acc[_VOL] += s
        acc[_NOTIONAL] += notional_units(p, s)
        acc[_N] += 1


def bar_of(symbol: str, start: int, acc: list[Any], final: bool) -> MinuteBar | None:
    """The bar of a minute, or None when no trade in it may set a price."""
    if acc[_OF_T] != _MAX_T:
        o, c = acc[_OF_P], acc[_OL_P]
    elif acc[_HF_T] != _MAX_T:
        o, c = acc[_HF_P], acc[_HL_P]
    else:
        return None
    vol = acc[_VOL]
    return MinuteBar(
        symbol=symbol,
        start=start,
        open=o,
        high=max(acc[_HIGH], o, c),
        low=min(acc[_LOW], o, c),
        close=c,
        volume=vol,
        vwap=acc[_NOTIONAL] / PRICE_UNITS / vol if vol > 0 else None,
        trades=acc[_N],
        final=final,
        revision=acc[_REV],
        partial=acc[_PARTIAL],
    )


Key = tuple[str, int]
_KEY: Final = "{}\x1f{}\x1f{}"
_DIGEST: Final = np.dtype("<u8")


def _digest(symbol: str, exchange: int, ident: str) -> bytes:
    """A trade's key (symbol, exchange, id) as 8 bytes.

    A new trade matches another's digest by chance with odds of about one in 10^13 even
    in a minute of a million trades (a million of 2^64 values).
    """
    return hashlib.blake2b(_KEY.format(symbol, exchange, ident).encode(), digest_size=8).digest()


@dataclass
class MinuteFold:
    """The state of one partition (snapshotted by Bytewax between epochs)."""

    lateness_ms: int
    horizon_ms: int = 15 * MINUTE_MS
    max_t: int = _MIN_T
    idle_wm: int = _MIN_T
    idle_anchor: tuple[int, int] | None = None
    """(wall ms, watermark) when the partition was last seen idle and caught up."""
    open: dict[int, dict[str, list[Any]]] = field(default_factory=dict)
    """Open minutes by start, then symbol."""
    closed: dict[int, dict[str, list[Any]]] = field(default_factory=dict)
    keys: dict[int, list[Digests]] = field(default_factory=dict)
    """Digests of the trade keys (symbol, exchange, id) of each minute held, as sorted runs
    (see :func:`_add_run`): no Python object per trade, so closing a minute costs nothing,
    and a snapshot pickles a few buffers."""
    forgotten_before: int = _MIN_T
    """Minutes starting before this are no longer held (beyond the horizon)."""
    partial_before: int = _MIN_T
    connect_pending: bool = False
    cut_from: int = _MIN_T
    """Start of the earliest minute the last lost connection cut short."""
    latest: dict[str, tuple[int, int]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    days: DayFold | None = None
    """Provisional daily bars from the final minute bars (None: not built)."""
    part: str = ""
    dirty: set[Key] = field(default_factory=set)
    """Open minutes changed since forming bars were last published."""
    pending: dict[str, LastTrade] = field(default_factory=dict)
    """Latest trades not yet published."""
    pending_since: int = 0
    """Read time of the oldest batch not yet published (0: nothing waits)."""

    def watermark(self) -> int:
        """Minutes ending at or before this are closed."""
        event = self.max_t - self.lateness_ms if self.max_t > _MIN_T else _MIN_T
        return max(event, self.idle_wm)

    # -- one batch ------------------------------------------------------------------------
    def step(self, batch: TradeBatch, *, publish: bool = True) -> FoldOut:
        """Fold one batch; return the bars it closed or revised, gaps and rejects.

        With ``publish`` the result also carries the forming bars and latest trades changed
        since the last publication; without, they wait for the next one (:meth:`flush`), so
        a caller can bound how often forming bars are published however fast batches come.
        """
        out = FoldOut(batch.part, batch.read_at, rejects=list(batch.rejects))
        self.part = batch.part
        self.counters["rejected"] += len(batch.rejects)
        if batch.connected:
            self._connected()
        n = len(batch)
        if n:
            self.idle_anchor = None
            if not self.pending_since:
                self.pending_since = batch.read_at or 1
            if self.connect_pending:
                self._first_after_connect(int(batch.t[0]), out)
            keep, late = self._classify(batch)
            self.dirty.update(self._fold(batch, keep))
            self._close(self.watermark(), out)
            for i in late.tolist():
                self._late(batch, i, out)
            self._latest(batch)
        elif batch.caught_up:
            self._idle(batch.read_at)
            self._close(self.watermark(), out)
        if batch.closing:
            self._stopping(out)
        self._forget()
        out.watermark = self.watermark()
        if self.days is not None:
            out.daily = self.days.due(out.watermark)
            self.counters["days"] += len(out.daily)
        if publish:
            self._publish(out)
        out.counters = dict(self.counters)
        return out

    def waiting(self) -> bool:
        """Whether forming bars or latest trades wait to be published."""
        return bool(self.pending_since)

    def flush(self, read_at: int) -> FoldOut:
        """Publish what waits: the forming bars and latest trades changed since the last time."""
        out = FoldOut(self.part, read_at, watermark=self.watermark())
        self._publish(out)
        out.counters = dict(self.counters)
        return out

    def finish(self) -> FoldOut:
        """End of input: close every open minute (and publish the latest trades)."""
        out = FoldOut("", 0)
        self._close(_MAX_T, out)
        self._publish(out)
        out.counters = dict(self.counters)
        return out

    def _publish(self, out: FoldOut) -> None:
        out.since = self.pending_since
        for name, st in sorted(self.dirty):
            acc = self.open.get(st, {}).get(name)
            if acc is not None and (bar := bar_of(name, st, acc, final=False)) is not None:
                out.forming.append(bar)
        out.latest = list(self.pending.values())
        self.dirty.clear()
        self.pending = {}
        self.pending_since = 0

    # -- steps ----------------------------------------------------------------------------
    def _connected(self) -> None:
        for group in self.open.values():
            for acc in group.values():
                acc[_PARTIAL] = True
        if self.max_t > _MIN_T and not self.connect_pending:
            self.cut_from = self._cut_from()
        self.connect_pending = True

    def _cut_from(self) -> int:
        """Start of the earliest minute a lost connection may have cut short."""
        last = self.max_t - self.max_t % MINUTE_MS
        return min([last, *self.open])

    def _stopping(self, out: FoldOut) -> None:
        """The source stops: its open minutes miss whatever comes after, so they are partial."""
        if self.max_t == _MIN_T:
            return
        for group in self.open.values():
            for acc in group.values():
                acc[_PARTIAL] = True
        last = self.max_t - self.max_t % MINUTE_MS
        out.gaps.append(Gap(None, self._cut_from(), last + MINUTE_MS, "stop"))
        self.counters["gaps"] += 1

    def _first_after_connect(self, first_t: int, out: FoldOut) -> None:
        start = first_t - first_t % MINUTE_MS
        self.partial_before = max(self.partial_before, start + MINUTE_MS)
        if self.max_t > _MIN_T:
            gap = Gap(None, min(self.cut_from, start), start + MINUTE_MS, "reconnect")
        else:
            gap = Gap(None, start, start + MINUTE_MS, "connect")
        out.gaps.append(gap)
        self.counters["gaps"] += 1
        self.connect_pending = False

    def _classify(self, b: TradeBatch) -> tuple[Ints, Ints]:
        """Indices of new on-time trades and of late ones (duplicates dropped), in order.

        As if one at a time: a trade is late when the watermark after the trades before it
        (duplicates aside) has passed its minute's end.
        """
        start = b.t - b.t % MINUTE_MS
        fresh = ~self._duplicates(b, start)
        top = np.maximum.accumulate(np.concatenate(([self.max_t], np.where(fresh, b.t, _MIN_T))))
        before = top[:-1]
        wm = np.maximum(np.where(before > _MIN_T, before - self.lateness_ms, _MIN_T), self.idle_wm)
        is_late = fresh & (start + MINUTE_MS <= wm)
        self.max_t = int(top[-1])
        self.counters["duplicates"] += len(b) - int(fresh.sum())
        self.counters["trades"] += int(fresh.sum())
        return np.flatnonzero(fresh & ~is_late), np.flatnonzero(is_late)

    def _duplicates(self, b: TradeBatch, start: Ints) -> Flags:
        """Trades whose (symbol, exchange, id) their minute already had, or the batch before."""
        dup = np.zeros(len(b), dtype=np.bool_)
        has = np.flatnonzero(b.id != None)  # noqa: E711  # elementwise
        if not len(has):
            return dup
        keys = np.frombuffer(
            b"".join(
                map(_digest, b.symbol[has].tolist(), b.exchange[has].tolist(), b.id[has].tolist())
            ),
            dtype=_DIGEST,
        )
        starts = start[has]
        minutes = np.unique(starts).tolist()
        for st in minutes:
            sel = None if len(minutes) == 1 else np.flatnonzero(starts == st)
            mine = keys if sel is None else keys[sel]
            uniq, first = np.unique(mine, return_index=True)
            runs = self.keys.setdefault(st, [])
            fresh = ~_member(uniq, runs)
            again = np.ones(len(mine), dtype=np.bool_)
            again[first[fresh]] = False
            dup[has if sel is None else has[sel]] = again
            if fresh.any():
                _add_run(runs, uniq[fresh])
        return dup

    def _fold(self, b: TradeBatch, idx: Ints) -> list[Key]:
        """Fold on-time trades into their open minutes, vectorised per (symbol, minute)."""
        if not len(idx):
            return []
        names, every = b.groups()
        code = every[idx]
        t = b.t[idx]
        q = b.sequence[idx]
        p = b.price[idx]
        s = b.size[idx]
        hl, oc, vl = b.high_low[idx], b.open_close[idx], b.volume[idx]
        start = t - t % MINUTE_MS
        order = np.lexsort((q, t, start, code))
        code, start, t, q, p, s = code[order], start[order], t[order], q[order], p[order], s[order]
        hl, oc, vl = hl[order], oc[order], vl[order]
        new = np.ones(len(order), dtype=bool)
        new[1:] = (code[1:] != code[:-1]) | (start[1:] != start[:-1])
        firsts = np.flatnonzero(new)
        pos = np.arange(len(order), dtype=np.int64)
        of = np.minimum.reduceat(np.where(oc, pos, _BIG), firsts)
        ol = np.maximum.reduceat(np.where(oc, pos, -1), firsts)
        hf = np.minimum.reduceat(np.where(hl, pos, _BIG), firsts)
        hlast = np.maximum.reduceat(np.where(hl, pos, -1), firsts)
        high = np.maximum.reduceat(np.where(hl, p, -np.inf), firsts)
        low = np.minimum.reduceat(np.where(hl, p, np.inf), firsts)
        vol = np.add.reduceat(np.where(vl, s, 0.0), firsts)
        units = notional_units_array(p, s)
        notional = np.add.reduceat(np.where(vl, units, 0), firsts)
        count = np.add.reduceat(vl.astype(np.int64), firsts)
        pl, tl, ql = p.tolist(), t.tolist(), q.tolist()
        touched: list[Key] = []
        rows = zip(
            names[code[firsts]].tolist(), start[firsts].tolist(), of.tolist(), ol.tolist(),
            hf.tolist(), hlast.tolist(), high.tolist(), low.tolist(), vol.tolist(),
            notional.tolist(), count.tolist(), strict=True,
        )  # fmt: skip
        for name, st, a, z, ha, hz, hi, lo, v, nv, c in rows:
            group = self.open.get(st)
            if group is None:
                group = self.open[st] = {}
            acc = group.get(name)
            if acc is None:
                acc = group[name] = new_acc(st < self.partial_before)
            if a != _BIG:
                _first(acc, _OF_P, pl[a], tl[a], ql[a])
                _last(acc, _OL_P, pl[z], tl[z], ql[z])
            if ha != _BIG:
                _first(acc, _HF_P, pl[ha], tl[ha], ql[ha])
                _last(acc, _HL_P, pl[hz], tl[hz], ql[hz])
                acc[_HIGH] = max(acc[_HIGH], hi)
                acc[_LOW] = min(acc[_LOW], lo)
            acc[_VOL] += v
            acc[_NOTIONAL] += nv
            acc[_N] += c
            touched.append((name, st))
        return touched

    def _close(self, wm: int, out: FoldOut) -> None:
        for st in sorted(s for s in self.open if s + MINUTE_MS <= wm):
            group = self.open.pop(st)
            kept = self.closed.setdefault(st, {})
            for name, acc in group.items():
                kept[name] = acc
                self._emit_final(name, st, acc, out)

    def _emit_final(self, name: str, start: int, acc: list[Any], out: FoldOut) -> None:
        bar = bar_of(name, start, acc, final=True)
        if bar is None:
            return
        if not _day(start)[1]:
            payload = bar.to_json()
            out.rejects.append(Reject(payload, NOT_A_SESSION, out.read_at))
            self.counters["rejected"] += 1
            return
        out.final.append(bar)
        if self.days is not None:
            self.days.add(name, _day(start)[0], start, bar)
        self.counters["bars_final"] += 1
        self.counters["bars_partial"] += int(bar.partial)
        self.counters["revisions"] += int(bar.revision > 0)

    def _late(self, b: TradeBatch, i: int, out: FoldOut) -> None:
        name, t = str(b.symbol[i]), int(b.t[i])
        start = t - t % MINUTE_MS
        rule = (bool(b.high_low[i]), bool(b.open_close[i]), bool(b.volume[i]))
        self.counters["late"] += 1
        acc = self.closed.get(start, {}).get(name)
        if acc is None and start < self.forgotten_before:
            payload = {"sym": name, "p": float(b.price[i]), "s": float(b.size[i]), "t": t}
            payload.update(x=int(b.exchange[i]), i=b.id[i], q=int(b.sequence[i]))
            payload["c"] = list(b.conditions[i])
            out.rejects.append(Reject(payload, LATE_BEYOND_HORIZON, b.read_at))
            out.gaps.append(Gap(name, start, start + MINUTE_MS, "late"))
            self.counters["late_beyond_horizon"] += 1
            self.counters["rejected"] += 1
            self.counters["gaps"] += 1
            return
        had_bar = acc is not None and bar_of(name, start, acc, True) is not None
        if acc is None:
            acc = self.closed.setdefault(start, {})[name] = new_acc(start < self.partial_before)
        _fold_one(acc, float(b.price[i]), float(b.size[i]), t, int(b.sequence[i]), rule)
        if had_bar:
            acc[_REV] += 1
        self._emit_final(name, start, acc, out)

    def _latest(self, b: TradeBatch) -> None:
        """The newest trade per symbol, by (SIP time, sequence), the later arrival on a tie."""
        names, code = b.groups()
        order = np.lexsort((b.sequence, b.t, code))
        ends = np.flatnonzero(np.diff(code[order], append=len(names)))
        pick = order[ends]
        latest = self.latest
        rows = zip(
            names.tolist(), b.t[pick].tolist(), b.sequence[pick].tolist(),
            b.price[pick].tolist(), b.size[pick].tolist(), b.exchange[pick].tolist(),
            b.id[pick].tolist(), b.conditions[pick].tolist(), strict=True,
        )  # fmt: skip
        for sym, t, q, p, s, x, ident, conds in rows:
            cur = latest.get(sym)
            if cur is None or (t, q) >= cur:
                latest[sym] = (t, q)
                self.pending[sym] = LastTrade(sym, p, s, t, x, q, ident, tuple(conds))

    def _idle(self, read_at: int) -> None:
        if self.idle_anchor is None:
            self.idle_anchor = (read_at, self.watermark())
            return
        at, wm = self.idle_anchor
        if read_at > at and wm > _MIN_T:
            self.idle_wm = max(self.idle_wm, wm + (read_at - at))

    def _forget(self) -> None:
        edge = self.watermark() - self.horizon_ms
        if edge <= self.forgotten_before:
            return
        edge -= edge % MINUTE_MS
        for st in [s for s in self.closed if s < edge]:
            del self.closed[st]
        for st in [s for s in self.keys if s < edge]:
            del self.keys[st]
        self.forgotten_before = edge


def _first(acc: list[Any], slot: int, p: float, t: int, q: int) -> None:
    if t < acc[slot + 1] or (t == acc[slot + 1] and q < acc[slot + 2]):
        acc[slot], acc[slot + 1], acc[slot + 2] = p, t, q


def _last(acc: list[Any], slot: int, p: float, t: int, q: int) -> None:
    if t > acc[slot + 1] or (t == acc[slot + 1] and q >= acc[slot + 2]):
        acc[slot], acc[slot + 1], acc[slot + 2] = p, t, q


def _member(values: Digests, runs: list[Digests]) -> Flags:
    """Which of ``values`` one of the sorted ``runs`` holds."""
    found = np.zeros(len(values), dtype=np.bool_)
    for run in runs:
        at = np.minimum(np.searchsorted(run, values), len(run) - 1)
        found |= run[at] == values
    return found


def _add_run(runs: list[Digests], new: Digests) -> None:
    """Append the sorted ``new`` digests, merging runs so each is at least twice the next.

    A log-structured set: a minute of a million trades in batches of thousands is held in
    about ten runs, each digest is merged about ten times (linear merges of sorted runs), and
    no single step sorts more than the minute holds.
    """
    runs.append(new)
    while len(runs) > 1 and len(runs[-2]) < 2 * len(runs[-1]):
        tail = runs.pop()
        runs[-1] = np.sort(np.concatenate((runs[-1], tail)), kind="stable")


Flags = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]
Digests = npt.NDArray[np.uint64]
