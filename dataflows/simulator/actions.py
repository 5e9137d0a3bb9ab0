"""Corporate actions of the simulated market, as the vendor's ``/stocks/v1`` endpoints give them.

Pure computation over a :class:`~dataflows.simulator.market.Market`, no I/O. Splits come from
the price walk (the bars follow them); cash dividends are drawn here, inside the replay window:
about a third of the symbols pay quarterly (``recurring``), and every window long enough holds
the awkward cases a consumer must handle, one of each: a ``special``, a ``supplemental`` paid on
the same ex-date as a recurring one, an ``irregular`` and an ``unknown`` distribution, a
dividend in another currency, one on the ex-date of a split (declared in the new share basis),
and one on a symbol's first session (no earlier row to take a close from).

Each action carries the vendor's ``historical_adjustment_factor``: for a split, the product of
split_from / split_to over it and every later split of the symbol; for a dividend, the product
of (1 - cash / close) over it and every later dividend, the close being the last one before the
ex-date in the dividend's own share basis (the vendor converts across a split on the ex-date).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Final

import numpy as np

from dataflows.simulator import noise, universe
from dataflows.simulator.market import Market, Split

RECURRING_SHARE: Final = 0.35
"""Share of symbols paying a quarterly dividend."""
QUARTER: Final = 63
"""Sessions between two recurring ex-dates."""
_DIV: Final = 0xD1F1D
DISTRIBUTION_TYPES: Final = ("recurring", "special", "supplemental", "irregular", "unknown")


@dataclass(frozen=True, slots=True)
class CashDividend:
    """One cash dividend; ``cash_amount`` in the share basis of its ex-date."""

    id: str
    ticker: str
    ex_dividend_date: dt.date
    declaration_date: dt.date
    record_date: dt.date
    pay_date: dt.date
    cash_amount: float
    currency: str
    distribution_type: str
    frequency: int | None
    historical_adjustment_factor: float | None = None
    split_adjusted_cash_amount: float | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    symbol: int
    session: int
    kind: str
    frequency: int | None
    yield_: float
    currency: str = "USD"


class CorporateActions:
    """Splits and dividends of ``market`` with the vendor's factors (computed once, lazily)."""

    def __init__(self, market: Market) -> None:
        self.market = market

    # -- splits ---------------------------------------------------------------------------------
    def split_factor(self, s: Split) -> float:
        """The vendor's cumulative factor of ``s``: prices before it times this = today's basis."""
        later = [x for x in self.market.splits(s.ticker) if x.execution_date >= s.execution_date]
        return math.prod(x.split_from / x.split_to for x in later)

    def split_row(self, s: Split) -> dict[str, Any]:
        """A ``/stocks/v1/splits`` result object."""
        return {
            "adjustment_type": s.adjustment_type,
            "execution_date": s.execution_date.isoformat(),
            "historical_adjustment_factor": self.split_factor(s),
            "id": s.id,
            "split_from": s.split_from,
            "split_to": s.split_to,
            "ticker": s.ticker,
        }

    # -- dividends ------------------------------------------------------------------------------
    def _plans(self) -> list[_Plan]:
        m = self.market
        dates = m.session_dates()
        first, n = m.window_first, m.n_sessions
        out: list[_Plan] = []
        u = noise.unit(noise.keys(noise.scalar_key(m.seed, _DIV), np.arange(m.n_symbols)))
        v = noise.unit(noise.keys(noise.scalar_key(m.seed, _DIV, 1), np.arange(m.n_symbols)))
        for s in range(m.n_symbols):
            if u[s] >= RECURRING_SHARE or m._static[s][2] != universe.CS:
                continue
            phase = int(v[s] * QUARTER)
            for i in range(first + phase, n, QUARTER):
                if m.list_i[s] < i < m.delist_i[s]:
                    out.append(_Plan(s, i, "recurring", 4, 0.002 + 0.008 * float(u[s])))
        window = n - first
        candidates = m.forced_candidates()
        if window < 20 or len(candidates) < 8:
            return out
        mid = first + window // 2
        late = first + (3 * window) // 4
        # the awkward cases, one each, on symbols that trade through the whole window
        c = candidates
        out += [
            _Plan(c[1], mid, "special", 0, 0.05),
            _Plan(c[2], late, "recurring", 4, 0.004),
            _Plan(c[2], late, "supplemental", None, 0.002),
            _Plan(c[3], mid, "irregular", 0, 0.01),
            _Plan(c[4], late, "unknown", None, 0.006),
            _Plan(c[5], mid, "recurring", 2, 0.008, currency="CAD"),
        ]
        forward = [x for x in m.splits(str(m.tickers[c[-1]])) if x.execution_date > dates[first]]
        if forward:
            out.append(_Plan(c[-1], m.session_of(forward[0].execution_date) or mid, "recurring",
                             4, 0.003))  # fmt: skip
        newcomers = [s for s in range(m.n_symbols) if first < m.list_i[s] < n - 1]
        if newcomers:
            s = newcomers[0]
            out.append(_Plan(s, int(m.list_i[s]), "special", 0, 0.01))
        return out

    @cached_property
    def _dividends(self) -> list[CashDividend]:
        m = self.market
        dates = m.session_dates()
        drafts: list[tuple[CashDividend, float | None]] = []
        for p in self._plans():
            ticker = str(m.tickers[p.symbol])
            ex = dates[p.session]
            listed = p.session > m.list_i[p.symbol]
            close = m.last_close(ticker, dates[p.session - 1]) if listed else None
            # the close in the ex-date's share basis: a split executing on the ex-date divides it
            basis = math.prod(
                x.split_from / x.split_to
                for x in m.splits(ticker)
                if dates[p.session - 1] < x.execution_date <= ex
            )
            ref = close * basis if close is not None else (m.last_close(ticker, ex) or 1.0)
            cash = round(p.yield_ * ref, 4)
            kind = DISTRIBUTION_TYPES.index(p.kind)
            key = noise.scalar_key(m.seed, _DIV, p.symbol, p.session, kind)
            div = CashDividend(
                id=f"D{key:016x}",
                ticker=ticker,
                ex_dividend_date=ex,
                declaration_date=ex - dt.timedelta(days=14),
                record_date=ex + dt.timedelta(days=1),
                pay_date=ex + dt.timedelta(days=21),
                cash_amount=cash,
                currency=p.currency,
                distribution_type=p.kind,
                frequency=p.frequency,
            )
            term = (
                1.0 - cash / (close * basis) if close is not None and p.currency == "USD" else None
            )
            drafts.append((div, term))
        drafts.sort(key=lambda d: (d[0].ticker, d[0].ex_dividend_date, d[0].distribution_type))
        out: list[CashDividend] = []
        for div, term in drafts:
            later = [
                t
                for d, t in drafts
                if d.ticker == div.ticker
                and d.ex_dividend_date >= div.ex_dividend_date
                and t is not None
            ]
            splits_after = [
                x for x in m.splits(div.ticker) if x.execution_date > div.ex_dividend_date
            ]
            out.append(
                replace(
                    div,
                    historical_adjustment_factor=math.prod(later) if term is not None else None,
                    split_adjusted_cash_amount=round(
                        div.cash_amount
                        * math.prod(x.split_from / x.split_to for x in splits_after),
                        6,
                    ),
                )
            )
        return out

    def dividends(self, ticker: str | None = None) -> list[CashDividend]:
        """Cash dividends by (ticker, ex-date), optionally of one ticker."""
        if ticker is None:
            return list(self._dividends)
        return [d for d in self._dividends if d.ticker == ticker]


def dividend_row(d: CashDividend) -> dict[str, Any]:
    """A ``/stocks/v1/dividends`` result object."""
    row: dict[str, Any] = {
        "cash_amount": d.cash_amount,
        "currency": d.currency,
        "declaration_date": d.declaration_date.isoformat(),
        "distribution_type": d.distribution_type,
        "ex_dividend_date": d.ex_dividend_date.isoformat(),
        "historical_adjustment_factor": d.historical_adjustment_factor,
        "id": d.id,
        "pay_date": d.pay_date.isoformat(),
        "record_date": d.record_date.isoformat(),
        "split_adjusted_cash_amount": d.split_adjusted_cash_amount,
        "ticker": d.ticker,
    }
    if d.frequency is not None:
        row["frequency"] = d.frequency
    return {k: v for k, v in row.items() if v is not None}


def edited(
    row: dict[str, Any], edits: Mapping[str, Mapping[str, Any] | None]
) -> dict[str, Any] | None:
    """``row`` with the control API's edits for its id applied; None when withdrawn."""
    if row["id"] not in edits:
        return row
    change = edits[row["id"]]
    return None if change is None else {**row, **change}
