"""A seeded, deterministic US stock market: listings, daily bars, splits, minute bars and trades.

Pure computation, no I/O. Every number is a function of (seed, symbol index, session), so a
grouped-daily query for one date, a per-symbol range and a minute-bar query agree with each
other whatever order they are asked in. Bars exist only on XNYS sessions between a symbol's
listing and delisting, minus rare trading halts. Prices are unadjusted unless ``adjusted=True``,
which divides prices (and multiplies volumes) by the splits executed after the bar's date, as
Polygon does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Final

import numpy as np
import numpy.typing as npt

from core import calendar
from dataflows.simulator import badrows, noise, universe
from dataflows.simulator.bars import Bars, adjust, empty, tick_round
from dataflows.simulator.intraday import Intraday, Trades
from dataflows.simulator.paths import PricePaths
from dataflows.simulator.universe import Listing

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_UNIX: Final = dt.date(1970, 1, 1)
_DAY_MS: Final = 86_400_000
MIN_VOLUME: Final = 2_000.0
# noise streams of the per-cell bar details
_GAP, _TOP, _BOT, _VOL, _VW, _TXN, _HALT = range(11, 18)


@dataclass(frozen=True, slots=True)
class Split:
    """One stock split (or stock dividend) as Polygon's splits endpoints report it."""

    id: str
    ticker: str
    execution_date: dt.date
    split_from: int
    split_to: int

    @property
    def ratio(self) -> float:
        """New shares per old share (2.0 for a 2-for-1, 0.1 for a 1-for-10 reverse split)."""
        return self.split_to / self.split_from

    @property
    def adjustment_type(self) -> str:
        """``forward_split``, ``reverse_split`` or ``stock_dividend`` (under 25% new shares)."""
        if self.split_to < self.split_from:
            return "reverse_split"
        return "stock_dividend" if self.split_to < 1.25 * self.split_from else "forward_split"


def ny_midnight_ms(day: dt.date) -> int:
    """Unix ms of 00:00 New York time on ``day`` (Polygon stamps daily range bars so)."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=calendar.NEW_YORK)
    return int(start.timestamp()) * 1000


class Market:
    """The simulated market; see the module docstring.

    ``start``/``end`` bound the replay window (listings and delistings happen inside it);
    ``history_start`` (default ``start``, as early as 1962-01-02) is where bars begin.
    ``bad_rows`` maps dates to malformation kinds (see :mod:`dataflows.simulator.badrows`).
    ``tape_daily``: the daily bars of sessions in the window take their vwap and transactions
    from the simulated trades (under the update rules), as a real tape's daily bar does; else
    they are drawn apart from the trades (cheap: no trades are generated for a daily bar).
    """

    def __init__(
        self,
        seed: int = 7,
        n_symbols: int = 200,
        start: dt.date = dt.date(2025, 1, 2),
        end: dt.date = dt.date(2025, 12, 31),
        *,
        history_start: dt.date | None = None,
        bad_rows: Mapping[dt.date, Iterable[str] | str] | Iterable[dt.date] | None = None,
        trades_per_minute: int = 12,
        tape_daily: bool = False,
    ) -> None:
        history_start = history_start or start
        if not calendar.EPOCH <= history_start <= start <= end <= calendar.HORIZON:
            msg = f"need {calendar.EPOCH} <= history_start <= start <= end <= {calendar.HORIZON}"
            raise ValueError(msg)
        if n_symbols < 1 or trades_per_minute < 2:
            msg = "need n_symbols >= 1 and trades_per_minute >= 2"
            raise ValueError(msg)
        all_days = calendar.session_days()
        lo = int(np.searchsorted(all_days, calendar.to_days(history_start), side="left"))
        hi = int(np.searchsorted(all_days, calendar.to_days(end), side="right"))
        if hi <= lo:
            msg = f"no XNYS session between {history_start} and {end}"
            raise ValueError(msg)
        self.seed = seed
        self.n_symbols = n_symbols
        self.start = start
        self.end = end
        self.history_start = history_start
        self.trades_per_minute = trades_per_minute
        self.tape_daily = tape_daily
        self.bad_rows: dict[dt.date, tuple[str, ...]] = badrows.normalise(bad_rows)
        self.days: npt.NDArray[np.int32] = all_days[lo:hi]
        self.n_sessions = hi - lo
        self.window_first = int(np.searchsorted(self.days, calendar.to_days(start), side="left"))
        static = universe.listings_static(seed, n_symbols)
        self.tickers: npt.NDArray[np.object_] = np.array([s[0] for s in static], dtype=object)
        self._static = static
        self._index = {t: i for i, t in enumerate(self.tickers.tolist())}
        self.params = universe.params(seed, [s[2] for s in static])
        self.list_i, self.delist_i = universe.lifetimes(
            seed, n_symbols, self.n_sessions, self.window_first
        )
        self.paths = PricePaths(
            seed,
            lo,
            self.n_sessions,
            self.params,
            self.list_i,
            self.delist_i,
            self._forced_splits(),
        )
        ev = self.paths.splits
        self._split_log = ev.log_ratio
        self.log_f_end = np.bincount(ev.sym, weights=self._split_log, minlength=n_symbols)

    # -- calendar helpers ---------------------------------------------------------------------
    def session_dates(self) -> list[dt.date]:
        """Every simulated session, oldest first."""
        return [_UNIX + dt.timedelta(days=int(d)) for d in self.days]

    def window(self) -> list[dt.date]:
        """Sessions of the replay window [start, end]."""
        return self.session_dates()[self.window_first :]

    def session_of(self, day: dt.date) -> int | None:
        """Local session index of ``day``, or None when it is not a simulated session."""
        d = calendar.to_days(day)
        i = int(np.searchsorted(self.days, d))
        return i if i < self.n_sessions and int(self.days[i]) == d else None

    @cached_property
    def _midnights(self) -> I64:
        return np.array(
            [ny_midnight_ms(_UNIX + dt.timedelta(days=int(d))) for d in self.days], dtype=np.int64
        )

    def grouped_t(self, day: dt.date) -> int:
        """Polygon's ``t`` for a grouped-daily bar: 16:00 New York on ``day``."""
        return ny_midnight_ms(day) + 16 * 3_600_000

    # -- listings ---------------------------------------------------------------------------
    def index_of(self, ticker: str) -> int:
        """Symbol index of ``ticker``; KeyError when the market has no such ticker."""
        return self._index[ticker]

    @cached_property
    def _listings(self) -> list[Listing]:
        first = _UNIX + dt.timedelta(days=int(self.days[0]))
        dates = self.session_dates()
        u = noise.unit(noise.keys(noise.scalar_key(self.seed, 0x1157), np.arange(self.n_symbols)))
        out = []
        for i, (ticker, name, typ, exch, sic) in enumerate(self._static):
            li, di = int(self.list_i[i]), int(self.delist_i[i])
            if li == 0:
                listed = first - dt.timedelta(days=int(30 + u[i] * 30 * 365))
                listed -= dt.timedelta(days=max(0, listed.weekday() - 4))
            else:
                listed = dates[li]
            key = noise.scalar_key(self.seed, 0xF16, i)
            out.append(
                Listing(
                    index=i,
                    ticker=ticker,
                    name=name,
                    type=typ,
                    exchange=exch,
                    sic_code=sic,
                    sic_description=universe.SIC.get(sic) if sic else None,
                    list_date=listed,
                    delist_date=dates[di] if di < self.n_sessions else None,
                    cik=f"{key % 2_000_000:010d}",
                    composite_figi=f"BBG{key % 36**9:09d}"[:12].upper(),
                    share_class_figi=f"BBG{(key >> 20) % 36**9:09d}"[:12].upper(),
                )
            )
        return out

    def symbols(self, as_of: dt.date | None = None) -> list[Listing]:
        """Listings known on ``as_of`` (default: all, including those listing later)."""
        if as_of is None:
            return list(self._listings)
        return [x for x in self._listings if x.list_date <= as_of]

    def listing(self, ticker: str) -> Listing:
        """Reference data of ``ticker`` (KeyError when unknown)."""
        return self._listings[self._index[ticker]]

    def is_active(self, listing: Listing, as_of: dt.date) -> bool:
        """Listed on ``as_of`` and not yet delisted."""
        return listing.list_date <= as_of and (
            listing.delist_date is None or as_of < listing.delist_date
        )

    # -- splits -----------------------------------------------------------------------------
    @cached_property
    def _splits(self) -> list[Split]:
        ev = self.paths.splits
        dates = self.session_dates()
        out = []
        for s, i, frm, to in zip(
            ev.sym.tolist(),
            ev.session.tolist(),
            ev.split_from.tolist(),
            ev.split_to.tolist(),
            strict=True,
        ):
            key = noise.scalar_key(self.seed, 0x5B17, s, i)
            out.append(Split(f"E{key:016x}", str(self.tickers[s]), dates[i], frm, to))
        return out

    def splits(self, ticker: str | None = None) -> list[Split]:
        """Splits by execution date (optionally of one ticker)."""
        if ticker is None:
            return list(self._splits)
        return [x for x in self._splits if x.ticker == ticker]

    def _forced_splits(self) -> list[tuple[int, int, str]]:
        """(symbol, session, kind) of the splits every window long enough holds, for tests.

        A forward split followed by a second one on the same symbol, a 1-for-10 reverse split
        and a 5% stock dividend.
        """
        window = self.n_sessions - self.window_first
        by_price = self.forced_candidates()
        if window < 20 or len(by_price) < 2:
            return []
        first = self.window_first
        forced = [
            (by_price[-1], first + window // 3, "forward"),
            (by_price[0], first + (2 * window) // 3, "reverse"),
        ]
        if len(by_price) >= 3:
            forced.append((by_price[len(by_price) // 2], first + window // 2, "stock"))
        if window >= 48:  # room for a second split after the first one's cooldown
            forced.append((by_price[-1], first + (5 * window) // 6, "forward"))
        return forced

    def forced_candidates(self) -> list[int]:
        """Common stocks trading through the whole market, by listing price.

        The forced corporate actions go to them: the most expensive gets the forward splits,
        the cheapest the reverse one.
        """
        candidates = [
            i
            for i in range(len(universe._FAMOUS), self.n_symbols)
            if self.list_i[i] == 0
            and self.delist_i[i] == self.n_sessions
            and self._static[i][2] == universe.CS
        ]
        return sorted(candidates, key=lambda i: float(self.params.log_p0[i]))

    def _log_f_at(self, i: int) -> F64:
        ev = self.paths.splits
        done = ev.session <= i
        out = np.bincount(ev.sym[done], weights=self._split_log[done], minlength=self.n_symbols)
        return out.astype(np.float64, copy=False)

    def _log_f_rows(self, s: int, rows: I64) -> tuple[F64, float]:
        ev = self.paths.splits
        mine = ev.sym == s
        cum = np.concatenate([[0.0], np.cumsum(self._split_log[mine])])
        return cum[np.searchsorted(ev.session[mine], rows, side="right")], float(cum[-1])

    # -- daily bars -------------------------------------------------------------------------
    def _cells(
        self, sym: I64, rows: I64, prev: F64, cur: F64, log_f: F64
    ) -> tuple[Bars, npt.NDArray[np.bool_]]:
        """Unadjusted bars for (symbol, session) cells, and which of them trade."""
        p = self.paths.p
        sk, dk = self.paths.sym_key[sym], self.paths.sess_key[rows]

        def u(stream: int) -> F64:
            return noise.unit(noise.combine(sk, dk, stream))

        sig = p.sigma[sym]
        o_l = prev + 0.25 * sig * noise.logistic(u(_GAP))
        top = np.maximum(o_l, cur) - 0.5 * sig * np.log(u(_TOP))
        bot = np.minimum(o_l, cur) + 0.5 * sig * np.log(u(_BOT))
        o = tick_round(np.exp(o_l - log_f))
        c = tick_round(np.exp(cur - log_f))
        h = tick_round(np.exp(top - log_f))
        lo = tick_round(np.exp(bot - log_f))
        m = self.paths.market[rows]
        idio = np.abs(cur - prev - p.beta[sym] * m)
        vol = np.exp(
            p.log_volume[sym]
            + 0.35 * noise.logistic(u(_VOL))
            + 5.0 * idio
            + 2.0 * np.abs(m)
            + log_f
        )
        vol = np.maximum(np.round(vol), MIN_VOLUME)
        typical = (h + lo + c) / 3.0
        vw: F64 = np.clip(
            np.round(np.clip(typical + (u(_VW) - 0.5) * 0.2 * (h - lo), lo, h), 4), lo, h
        )
        n = np.maximum(1, np.round(vol / p.trade_size[sym] * (0.7 + 0.6 * u(_TXN)))).astype(
            np.int64
        )
        listed = (rows >= self.list_i[sym]) & (rows < self.delist_i[sym])
        halted = (u(_HALT) < p.halt_p[sym]) & (rows != self.list_i[sym])
        bars = Bars(
            symbol=self.tickers[sym],
            day=self.days[rows],
            t=np.zeros(len(sym), dtype=np.int64),
            open=o,
            high=h,
            low=lo,
            close=c,
            volume=vol,
            vwap=vw,
            transactions=n,
        )
        return bars, listed & ~halted

    def session_bars(self, i: int) -> tuple[I64, Bars]:
        """Clean unadjusted bars of every symbol trading in session ``i``, with their indices."""
        prev, cur = self.paths.row(i)
        sym = np.arange(self.n_symbols)
        bars, keep = self._cells(sym, np.full(self.n_symbols, i), prev, cur, self._log_f_at(i))
        return sym[keep], bars.take(keep)

    def grouped(
        self,
        day: dt.date,
        adjusted: bool = False,
        *,
        inject: bool = True,
        bad_rows: Mapping[dt.date, tuple[str, ...]] | None = None,
    ) -> Bars:
        """Every symbol's bar for ``day`` (none on holidays, weekends or outside the market).

        ``inject`` adds the malformed rows of ``bad_rows`` (default: the market's own).
        """
        i = self.session_of(day)
        if i is None:
            return empty()
        sym, bars = self.session_bars(i)
        if self.tape_daily and i >= self.window_first:
            bars.vwap[:], bars.transactions[:] = self.intraday.day_totals(
                self.intraday.day(i), bars.vwap
            )
        bars.t[:] = self.grouped_t(day)
        if adjusted:
            bars = adjust(bars, np.exp(self._log_f_at(i) - self.log_f_end)[sym])
        kinds = (self.bad_rows if bad_rows is None else bad_rows).get(day) if inject else None
        if kinds:
            bars = badrows.grouped(bars, day, kinds, self.seed, self.grouped_t)
        return bars

    def daily(
        self,
        symbol: str,
        first: dt.date,
        last: dt.date,
        adjusted: bool = False,
        *,
        inject: bool = True,
        bad_rows: Mapping[dt.date, tuple[str, ...]] | None = None,
    ) -> Bars:
        """Daily bars of ``symbol`` on sessions in [first, last], oldest first.

        ``inject`` applies the malformations of ``bad_rows`` (default: the market's own) to the
        bars on and after each listed date, and adds a weekend-dated copy for ``weekend``.
        """
        s = self._index.get(symbol)
        if s is None or last < first:
            return empty()
        lo = max(
            int(np.searchsorted(self.days, calendar.to_days(first), side="left")),
            int(self.list_i[s]),
        )
        hi = min(
            int(np.searchsorted(self.days, calendar.to_days(last), side="right")),
            int(self.delist_i[s]),
        )
        if hi <= lo:
            return empty()
        rows = np.arange(lo, hi)
        if lo == 0:
            col = self.paths.column(s, 0, hi)
            prev = np.concatenate([[self.paths.checkpoints[0, s]], col[:-1]])
        else:
            col = self.paths.column(s, lo - 1, hi)
            prev, col = col[:-1], col[1:]
        log_f, log_f_end = self._log_f_rows(s, rows)
        bars, keep = self._cells(np.full(len(rows), s), rows, prev, col, log_f)
        bars = bars.take(keep)
        if self.tape_daily:
            self._tape_fields(s, rows[keep], bars)
        bars.t[:] = self._midnights[rows[keep]]
        if adjusted:
            bars = adjust(bars, np.exp(log_f[keep] - log_f_end))
        bad = self.bad_rows if bad_rows is None else bad_rows
        if inject and bad:
            bars = badrows.ranged(bars, bad, first, last, ny_midnight_ms)
        return bars

    def _tape_fields(self, s: int, rows: I64, bars: Bars) -> None:
        """Replace vwap and transactions of the window's sessions by the tape's, in place."""
        for r, i in enumerate(rows.tolist()):
            if i >= self.window_first:
                one = bars.take([r])
                dp = self.intraday.path(i, np.array([s]), one)
                vwap, count = self.intraday.day_totals(dp, one.vwap)
                bars.vwap[r], bars.transactions[r] = vwap[0], count[0]

    def shares_outstanding(self, ticker: str, day: dt.date) -> float:
        """Shares outstanding on ``day``, after the splits executed by then."""
        s = self._index[ticker]
        i = int(np.searchsorted(self.days, calendar.to_days(day), side="right")) - 1
        log_f, _ = self._log_f_rows(s, np.array([max(i, 0)]))
        return float(round(self.params.shares[s] * np.exp(log_f[0])))

    def last_close(self, ticker: str, day: dt.date) -> float | None:
        """Unadjusted close of the last bar on or before ``day`` (None before the first bar)."""
        s = self._index[ticker]
        i = int(np.searchsorted(self.days, calendar.to_days(day), side="right")) - 1
        lo = max(int(self.list_i[s]), i - 40, 0)
        if i < lo:
            return None
        bars = self.daily(ticker, self.session_dates()[lo], self.session_dates()[i], inject=False)
        return float(bars.close[-1]) if len(bars) else None

    def market_cap(self, ticker: str, day: dt.date) -> float | None:
        """Last close times shares outstanding; None for ETFs and before the first bar."""
        if self.listing(ticker).type != universe.CS:
            return None
        close = self.last_close(ticker, day)
        return None if close is None else round(close * self.shares_outstanding(ticker, day), 2)

    # -- intraday ---------------------------------------------------------------------------
    @cached_property
    def intraday(self) -> Intraday:
        """Minute paths, minute bars and trades."""
        return Intraday(self)

    def minute(self, symbol: str, first: dt.date, last: dt.date, adjusted: bool = False) -> Bars:
        """One-minute bars of ``symbol`` over regular hours of sessions in [first, last]."""
        return self.intraday.minute_bars(symbol, first, last, adjusted)

    def trades(
        self,
        day: dt.date,
        start: dt.datetime,
        end: dt.datetime,
        symbols: Sequence[str] | None = None,
    ) -> Trades:
        """Trades with timestamps in [start, end) on session ``day`` (all symbols by default)."""
        return self.intraday.trades(day, start, end, symbols)
