"""Minute paths, trades and minute bars that agree exactly with the daily bars.

For each (session, symbol) a bridged random walk over the regular-hours minutes is mapped
monotonically onto the daily bar, so it starts at the open, ends at the close and touches the
high and the low. Each minute holds at least two regular trades, the first at the minute's
starting point and the last at its ending point. Around them come the prints a real tape
carries: odd lots (a third to a half of all trades), average-price, Form T, sold out of
sequence and contingent trades, at prices that may lie outside the minute's range. Sizes of the
trades that count for volume add up to the minute's volume, and minute volumes to the daily
volume. Minute bars (REST and the WebSocket ``AM`` events) aggregate exactly those trades under
the consolidated tape's update rules (:mod:`core.conditions`), so a consumer folding ``T``
events by the same rules rebuilds them to the cent, and one that ignores the rules does not.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from core import calendar
from core.conditions import ConditionRules, fallback
from dataflows.simulator import noise
from dataflows.simulator.bars import Bars, adjust, concat, empty, tick_round
from dataflows.simulator.lru import Lru

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dataflows.simulator.market import Market

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Obj = npt.NDArray[np.object_]

MINUTE_MS: Final = 60_000
EXCHANGE_IDS: Final = np.array([4, 4, 4, 10, 11, 12, 12, 15, 19, 21], dtype=np.int64)
"""Polygon exchange ids weighted roughly by share of volume (4 = off-exchange/TRF)."""
_STEP, _XLO, _XHI, _WVOL, _WCNT = range(21, 26)
_TPRICE, _TSIZE, _TTIME, _TEXCH, _TCOND = range(31, 36)
_XHAS, _XKIND, _XSIZE, _XPRICE, _XTIME, _XEXCH = range(41, 47)
SEQ_STRIDE: Final = 100_000
"""Sequence numbers are (minute + 1) * SEQ_STRIDE + the trade's rank in its minute."""
CONDITION_SETS: Final[tuple[tuple[int, ...], ...]] = (
    (),  # regular sale
    (14,),  # intermarket sweep
    (14, 41),  # ISO, trade-through exempt
    (37,),  # odd lot
    (14, 37),  # odd-lot ISO
    (2,),  # average price
    (12,),  # Form T
    (33,),  # sold out of sequence: may set high/low, never open/close
    (53,),  # qualified contingent
)
"""Conditions a simulated trade carries, by index (``Trades.cond``)."""
EXTRA_P: Final = 0.75
"""Chance that a regular trade is accompanied by one other print (odd lot and the like)."""
_EXTRA_KINDS: Final = np.array([3, 4, 5, 6, 7, 8], dtype=np.int64)
_EXTRA_CUM: Final = np.cumsum([0.70, 0.16, 0.05, 0.04, 0.03, 0.02])
_EXTRA_SPREAD: Final = np.array([0, 0, 0, 0.0003, 0.0003, 0.004, 0.003, 0.002, 0.002])
"""Relative price noise of each condition set (odd lots and average prices stray furthest)."""
SIM_RULES: Final[ConditionRules] = fallback()
"""The table the simulator serves at ``/v3/reference/conditions`` and aggregates by."""


def _flags(rules: ConditionRules) -> tuple[npt.NDArray[np.bool_], ...]:
    combined = [rules.combined(c) for c in CONDITION_SETS]
    return (
        np.array([r.high_low for r in combined]),
        np.array([r.open_close for r in combined]),
        np.array([r.volume for r in combined]),
    )


UPDATES_HL, UPDATES_OC, UPDATES_VOL = _flags(SIM_RULES)


@dataclass(frozen=True, slots=True)
class Trades:
    """Trades as columns, ordered by (minute, symbol column, time)."""

    sym: I64
    """Symbol index in the market."""
    symbol: Obj
    t: I64
    """Unix milliseconds."""
    price: F64
    size: I64
    exchange: I64
    tape: I64
    seq: I64
    """Polygon's sequence number ``q``: increasing per symbol within a session."""
    minute: I64
    """Minute of the session the trade belongs to (0 = the open)."""
    cond: I64
    """Index into :data:`CONDITION_SETS`."""

    def __len__(self) -> int:
        return len(self.t)

    def take(self, idx: npt.ArrayLike) -> Trades:
        """Rows at ``idx``."""
        return Trades(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def to_events(self) -> list[dict[str, Any]]:
        """Polygon WebSocket ``T`` events."""
        out: list[dict[str, Any]] = []
        cols = zip(
            self.symbol.tolist(),
            self.exchange.tolist(),
            self.price.tolist(),
            self.size.tolist(),
            self.t.tolist(),
            self.seq.tolist(),
            self.tape.tolist(),
            self.cond.tolist(),
            strict=True,
        )
        for sym, x, p, s, t, q, z, c in cols:
            ev: dict[str, Any] = {
                "ev": "T",
                "sym": sym,
                "i": str(q),
                "x": x,
                "p": p,
                "s": s,
                "t": t,
                "q": q,
                "z": z,
            }
            if c:
                ev["c"] = list(CONDITION_SETS[c])
            out.append(ev)
        return out


@dataclass(frozen=True, slots=True)
class DayPath:
    """One session's minute skeleton for a set of symbols (columns)."""

    session: int
    open_ms: int
    sym: I64
    points: F64
    """(minutes + 1, columns) unadjusted prices; minute m runs from points[m] to points[m+1]."""
    volume: I64
    """(minutes, columns) shares per minute; columns sum to the daily volume."""
    count: I64
    """(minutes, columns) trades per minute, at least 2."""
    low: F64
    high: F64

    @property
    def minutes(self) -> int:
        """Regular-hours minutes of the session (390, or 210 on early-close days)."""
        return int(self.volume.shape[0])


def _piecewise(x: F64, xs: list[F64], ys: list[F64]) -> F64:
    """Vectorised piecewise-linear map through per-column knots (xs strictly increasing)."""

    def seg(a: int) -> F64:
        w = xs[a + 1] - xs[a]
        frac = np.where(w > 0, (x - xs[a]) / np.where(w > 0, w, 1.0), 0.0)
        return ys[a] + frac * (ys[a + 1] - ys[a])

    return np.where(x <= xs[1], seg(0), np.where(x <= xs[2], seg(1), seg(2)))


class Intraday:
    """Intraday views of a :class:`Market`, with a small cache of whole-market day paths."""

    def __init__(self, market: Market) -> None:
        self.m = market
        self._hours: dict[int, tuple[int, int]] = {}
        self._paths: Lru[int, DayPath] = Lru(2)
        self._tape = np.where(np.array([x[3] == "XNYS" for x in market._static]), 1, 3).astype(
            np.int64
        )

    def hours(self, i: int) -> tuple[int, int]:
        """(open ms, minutes) of session ``i``."""
        hit = self._hours.get(i)
        if hit is None:
            day = calendar.from_days(int(self.m.days[i]))
            opened = calendar.session_open(day)
            closed = calendar.session_close(day)
            hit = (int(opened.timestamp()) * 1000, int((closed - opened).total_seconds()) // 60)
            self._hours[i] = hit
        return hit

    def _minute_keys(self, i: int, n: int) -> npt.NDArray[np.uint64]:
        global_i = int(self.m.paths.sess_key[i])
        return noise.keys(noise.scalar_key(self.m.seed, 0x313, global_i), np.arange(n))

    def path(self, i: int, sym: I64, bars: Bars) -> DayPath:
        """The minute skeleton of session ``i`` for symbols ``sym`` with unadjusted daily ``bars``."""
        open_ms, m_count = self.hours(i)
        ns = len(sym)
        mk = self._minute_keys(i, m_count)
        sk = self.m.paths.sym_key[sym]

        def u(stream: int, rows: npt.NDArray[np.uint64] = mk) -> F64:
            return noise.unit(noise.combine(sk[None, :], rows[:, None], stream))

        o, c, h, lo = bars.open, bars.close, bars.high, bars.low
        walk = np.zeros((m_count + 1, ns))
        np.cumsum(noise.logistic(u(_STEP)), axis=0, out=walk[1:])
        frac = (np.arange(m_count + 1) / m_count)[:, None]
        drift = np.log(c) - np.log(o)
        scale = self.m.params.sigma[sym] / np.sqrt(m_count)
        x = (walk - frac * walk[-1]) * scale + frac * drift
        ends = u(_XLO, mk[:1])[0], u(_XHI, mk[:1])[0]
        m_lo = 1 + (ends[0] * (m_count - 1)).astype(np.int64)
        m_hi = 1 + (ends[1] * (m_count - 2)).astype(np.int64)
        m_hi = np.where(m_hi >= m_lo, m_hi + 1, m_hi)
        cols = np.arange(ns)
        x_lo = x.min(axis=0) - 0.5 * scale
        x_hi = x.max(axis=0) + 0.5 * scale
        x[m_lo, cols] = x_lo
        x[m_hi, cols] = x_hi
        knots = [x_lo, np.minimum(0.0, drift), np.maximum(0.0, drift), x_hi]
        logs = [np.log(lo), np.log(np.minimum(o, c)), np.log(np.maximum(o, c)), np.log(h)]
        points = np.clip(tick_round(np.exp(_piecewise(x, knots, logs))), lo, h)
        points[0], points[-1] = o, c
        points[m_lo, cols] = lo
        points[m_hi, cols] = h
        mm = np.arange(m_count)
        mid = (m_count - 1) / 2.0
        weight = (1.0 + 2.0 * ((mm - mid) / mid) ** 2)[:, None] * np.exp(
            0.4 * noise.logistic(u(_WVOL))
        )
        share = np.cumsum(weight, axis=0) / weight.sum(axis=0)
        spread = np.round((bars.volume - 2 * m_count) * share)
        volume = 2 + np.diff(spread, axis=0, prepend=0.0)
        target = bars.transactions * (weight / weight.sum(axis=0)) * (0.6 + 0.8 * u(_WCNT))
        count = np.minimum(np.clip(np.round(target), 2, self.m.trades_per_minute), volume)
        return DayPath(
            session=i,
            open_ms=open_ms,
            sym=sym,
            points=points,
            volume=volume.astype(np.int64),
            count=count.astype(np.int64),
            low=lo,
            high=h,
        )

    def day(self, i: int) -> DayPath:
        """The whole market's skeleton for session ``i`` (cached: the WebSocket replays it)."""

        def make() -> DayPath:
            sym, bars = self.m.session_bars(i)
            return self.path(i, sym, bars)

        return self._paths.get_or_make(i, make)

    def cell_trades(self, dp: DayPath, minute: I64, col: I64) -> Trades:
        """All trades of the (minute, column) cells, in cell order, each cell by time."""
        k = dp.count[minute, col]
        vol = dp.volume[minute, col]
        p0 = dp.points[minute, col]
        p1 = dp.points[minute + 1, col]
        total = int(k.sum())
        grp = np.repeat(np.arange(len(k)), k)
        first = np.cumsum(k) - k
        j = np.arange(total) - first[grp]
        kk = k[grp]
        sym = dp.sym[col]
        tk = noise.keys(noise.scalar_key(self.m.seed, 0x7AD, dp.session), minute[grp] * 4096 + j)
        sk = self.m.paths.sym_key[sym][grp]

        def u(stream: int) -> F64:
            return noise.unit(noise.combine(sk, tk, stream))

        # the other prints first: their volume comes out of the regular trades' share
        has = u(_XHAS) < EXTRA_P
        kind = _EXTRA_KINDS[np.searchsorted(_EXTRA_CUM, u(_XKIND) * _EXTRA_CUM[-1])]
        odd = (kind == 3) | (kind == 4)
        xsize = np.where(
            odd, 1 + (u(_XSIZE) * 99).astype(np.int64), 100 * (1 + (u(_XSIZE) * 5).astype(np.int64))
        )
        xvol = np.bincount(grp, np.where(has, xsize, 0), minlength=len(k)).astype(np.int64)
        room = (vol - xvol) >= k  # a thin minute keeps all its volume for its regular trades
        has &= room[grp]
        vol = vol - np.where(room, xvol, 0)

        frac = j / (kk - 1)
        a, b = p0[grp], p1[grp]
        lo, hi = dp.low[col][grp], dp.high[col][grp]
        wiggle = 1.0 + 0.0015 * noise.logistic(u(_TPRICE))
        price = np.clip(tick_round((a + (b - a) * frac) * wiggle), lo, hi)
        price = np.where(j == 0, a, np.where(j == kk - 1, b, price))
        w = np.cumsum(0.2 + u(_TSIZE))
        before = (
            np.where(first > 0, w[np.maximum(first - 1, 0)], 0.0) if total else np.zeros(len(k))
        )
        span = (w[first + k - 1] - before) if total else np.ones(len(k))
        spread = np.round((vol - k)[grp] * (w - before[grp]) / span[grp])
        prev = np.where(j == 0, 0.0, np.concatenate([[0.0], spread[:-1]]))
        size = (1 + spread - prev).astype(np.int64)
        slot = MINUTE_MS / kk
        t = dp.open_ms + minute[grp] * MINUTE_MS + ((j + u(_TTIME)) * slot).astype(np.int64)
        exch = EXCHANGE_IDS[(u(_TEXCH) * len(EXCHANGE_IDS)).astype(np.int64)]
        cu = u(_TCOND)
        cond = np.where(cu < 0.75, 0, np.where(cu < 0.95, 1, 2))

        x = np.flatnonzero(has)
        xkind = kind[x]
        xprice = tick_round(price[x] * (1.0 + _EXTRA_SPREAD[xkind] * noise.logistic(u(_XPRICE)[x])))
        xprice = np.where(
            UPDATES_HL[xkind], np.clip(xprice, lo[x], hi[x]), np.maximum(xprice, 0.01)
        )
        xt = (
            dp.open_ms
            + minute[grp][x] * MINUTE_MS
            + ((j[x] + u(_XTIME)[x]) * slot[x]).astype(np.int64)
        )
        xexch = np.where(
            xkind == 6, 4, EXCHANGE_IDS[(u(_XEXCH)[x] * len(EXCHANGE_IDS)).astype(np.int64)]
        )

        cell = np.concatenate([grp, grp[x]])
        all_t = np.concatenate([t, xt])
        is_extra = np.concatenate([np.zeros(total, np.int64), np.ones(len(x), np.int64)])
        order = np.lexsort((is_extra, all_t, cell))
        cell = cell[order]
        n = np.bincount(cell, minlength=len(k))
        rank = np.arange(len(cell)) - (np.cumsum(n) - n)[cell]
        s_all = np.concatenate([sym[grp], sym[grp][x]])[order]
        mm = minute[cell]
        return Trades(
            sym=s_all,
            symbol=self.m.tickers[s_all],
            t=all_t[order],
            price=np.concatenate([price, xprice])[order],
            size=np.concatenate([size, xsize[x]])[order],
            exchange=np.concatenate([exch, xexch])[order],
            tape=self._tape[s_all],
            seq=(mm + 1) * SEQ_STRIDE + rank,
            minute=mm,
            cond=np.concatenate([cond, xkind])[order],
        )

    def cell_bars(self, dp: DayPath, minute: I64, col: I64, tr: Trades | None = None) -> Bars:
        """Minute bars of the (minute, column) cells: their trades under the tape's rules."""
        tr = tr if tr is not None else self.cell_trades(dp, minute, col)
        sym = dp.sym[col]
        new_cell = (tr.minute[1:] != tr.minute[:-1]) | (tr.sym[1:] != tr.sym[:-1])
        starts = np.flatnonzero(np.concatenate([[True], new_cell])) if len(tr) else tr.seq[:0]
        hl, oc, vl = UPDATES_HL[tr.cond], UPDATES_OC[tr.cond], UPDATES_VOL[tr.cond]
        idx = np.arange(len(tr))
        o_at = np.minimum.reduceat(np.where(oc, idx, len(tr)), starts)
        c_at = np.maximum.reduceat(np.where(oc, idx, -1), starts)
        size = np.where(vl, tr.size, 0).astype(np.float64)
        vol = np.add.reduceat(size, starts)
        notional = np.add.reduceat(tr.price * size, starts)
        return Bars(
            symbol=self.m.tickers[sym],
            day=np.full(len(minute), self.m.days[dp.session], dtype=np.int32),
            t=dp.open_ms + minute * MINUTE_MS,
            open=tr.price[o_at],
            high=np.maximum.reduceat(np.where(hl, tr.price, -np.inf), starts),
            low=np.minimum.reduceat(np.where(hl, tr.price, np.inf), starts),
            close=tr.price[c_at],
            volume=vol,
            vwap=np.round(notional / vol, 4),
            transactions=np.add.reduceat(vl.astype(np.int64), starts),
        )

    def day_totals(self, dp: DayPath, drawn_vwap: F64) -> tuple[F64, I64]:
        """(vwap, transactions) of each column of ``dp`` from its trades under the update rules.

        Aggregated as the minute bars are, so a daily bar so made agrees with the minute bars
        and the trades in every field (``drawn_vwap`` stays where nothing counted).
        """
        cols = np.arange(len(dp.sym), dtype=np.int64)
        minutes = np.arange(dp.minutes, dtype=np.int64)
        tr = self.cell_trades(dp, np.repeat(minutes, len(cols)), np.tile(cols, dp.minutes))
        where = np.searchsorted(dp.sym, tr.sym)  # columns are in symbol order
        vl = UPDATES_VOL[tr.cond]
        size = np.where(vl, tr.size, 0).astype(np.float64)
        vol = np.bincount(where, size, minlength=len(cols))
        notional = np.bincount(where, tr.price * size, minlength=len(cols))
        safe = np.where(vol > 0, vol, 1.0)
        vwap = np.where(vol > 0, np.round(notional / safe, 4), drawn_vwap)
        count = np.bincount(where, vl.astype(np.int64), minlength=len(cols)).astype(np.int64)
        return vwap, count

    def _minutes_between(self, dp: DayPath, start_ms: int, end_ms: int) -> I64:
        lo = max(0, (start_ms - dp.open_ms) // MINUTE_MS)
        hi = min(dp.minutes, -(-(end_ms - dp.open_ms) // MINUTE_MS))
        return np.arange(lo, max(lo, hi), dtype=np.int64)

    def trades(
        self,
        day: dt.date,
        start: dt.datetime,
        end: dt.datetime,
        symbols: Sequence[str] | None = None,
    ) -> Trades:
        """Trades of session ``day`` stamped in [start, end), for ``symbols`` (default all)."""
        if start.tzinfo is None or end.tzinfo is None:
            msg = "start and end must be timezone-aware datetimes"
            raise ValueError(msg)
        i = self.m.session_of(day)
        if i is None:
            return self.cell_trades(
                self._empty_path(), np.empty(0, np.int64), np.empty(0, np.int64)
            )
        dp = self.day(i)
        return self.trades_ms(
            dp,
            int(start.timestamp() * 1000),
            int(end.timestamp() * 1000),
            self.columns(dp, symbols),
        )

    def columns(self, dp: DayPath, symbols: Sequence[str] | None) -> I64:
        """Columns of ``dp`` holding ``symbols`` (all when None; unknown or idle ones skipped)."""
        if symbols is None:
            return np.arange(len(dp.sym), dtype=np.int64)
        wanted = np.array([self.m._index.get(s, -1) for s in symbols], dtype=np.int64)
        return np.flatnonzero(np.isin(dp.sym, wanted)).astype(np.int64)

    def trades_ms(self, dp: DayPath, start_ms: int, end_ms: int, cols: I64) -> Trades:
        """Trades of ``cols`` stamped in [start_ms, end_ms)."""
        minutes = self._minutes_between(dp, start_ms, end_ms)
        mm = np.repeat(minutes, len(cols))
        cc = np.tile(cols, len(minutes))
        tr = self.cell_trades(dp, mm, cc)
        return tr.take((tr.t >= start_ms) & (tr.t < end_ms))

    def _empty_path(self) -> DayPath:
        z = np.zeros((1, 0), dtype=np.int64)
        return DayPath(
            0, 0, np.empty(0, np.int64), np.zeros((2, 0)), z, z, np.empty(0), np.empty(0)
        )

    def minute_bars(
        self, symbol: str, first: dt.date, last: dt.date, adjusted: bool = False
    ) -> Bars:
        """Minute bars of one symbol over the sessions in [first, last]."""
        daily = self.m.daily(symbol, first, last, inject=False)
        if not len(daily):
            return empty()
        s = self.m.index_of(symbol)
        factors = self.m.daily(symbol, first, last, adjusted=True, inject=False).close / daily.close
        parts = []
        for r, day in enumerate(daily.day.tolist()):
            i = int(np.searchsorted(self.m.days, day))
            dp = self.path(i, np.array([s]), daily.take([r]))
            minutes = np.arange(dp.minutes, dtype=np.int64)
            bars = self.cell_bars(dp, minutes, np.zeros(dp.minutes, dtype=np.int64))
            parts.append(adjust(bars, np.full(len(bars), factors[r])) if adjusted else bars)
        return concat(parts)
