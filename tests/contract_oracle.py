"""Independent oracles for the contract checks, written from the contract text in pandas.

Nothing here imports the project's adjustment, resampling, indicator or calendar code: the
sessions come straight from ``exchange_calendars``, and each definition is spelled out as the
contract words it (S(d), T(d), Fibonacci groups, the indicator ``ewm`` expressions), so a test
comparing the pipeline's output with these catches a disagreement with the contract rather
than repeating the pipeline's own reading of it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

EPOCH = dt.date(1962, 1, 2)
EMA_SPANS = (8, 13, 21, 55, 89, 144, 169)


@lru_cache(maxsize=1)
def xnys() -> tuple[dt.date, ...]:
    """Every XNYS session from 1962-01-02 to 2030, from exchange_calendars itself."""
    import exchange_calendars as xc

    cal = xc.get_calendar("XNYS", start=EPOCH.isoformat(), end="2030-12-31")
    return tuple(ts.date() for ts in cal.sessions)


def session_k(day: dt.date) -> int:
    """Number of XNYS sessions s with 1962-01-02 <= s < day."""
    import bisect

    return bisect.bisect_left(xnys(), day)


def sessions_from(first: dt.date, count: int) -> list[dt.date]:
    """``count`` sessions from ``first`` (a session) on."""
    i = session_k(first)
    return list(xnys()[i : i + count])


def session_window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """(open, close) of the session ``day`` in UTC, from exchange_calendars."""
    import exchange_calendars as xc

    cal = xc.get_calendar("XNYS", start="2020-01-01", end="2030-12-31")
    ts = pd.Timestamp(day)
    return (
        cal.session_open(ts).to_pydatetime().astimezone(dt.UTC),
        cal.session_close(ts).to_pydatetime().astimezone(dt.UTC),
    )


# -- corporate actions -------------------------------------------------------------------------
@dataclass(frozen=True)
class OSplit:
    """A split as the contract's splits file holds it."""

    execution_date: dt.date
    split_from: float
    split_to: float


@dataclass(frozen=True)
class ODividend:
    """A dividend as the contract's dividends file holds it."""

    ex_dividend_date: dt.date
    cash_amount: float
    currency: str
    distribution_type: str


def s_factor(day: dt.date, splits: Iterable[OSplit]) -> float:
    """S(d): product over the splits with execution_date > d of split_from / split_to."""
    return math.prod(s.split_from / s.split_to for s in splits if s.execution_date > day)


def usable_dividends(
    rows: pd.DataFrame, dividends: Iterable[ODividend]
) -> tuple[list[tuple[ODividend, float]], list[ODividend]]:
    """(dividend, C) of each dividend T(d) applies, and the skipped ones.

    ``rows``: one symbol's raw rows (``date``, ``close``). C is the raw close of the last row
    strictly before the ex-date; USD only; no such row, or cash_amount >= C, is skipped.
    """
    used, skipped = [], []
    for d in dividends:
        before = rows[rows["date"] < d.ex_dividend_date]
        if d.currency != "USD" or before.empty:
            skipped.append(d)
            continue
        c = float(before.sort_values("date")["close"].iloc[-1])
        if d.cash_amount >= c:
            skipped.append(d)
            continue
        used.append((d, c))
    return used, skipped


def t_factor(
    day: dt.date, splits: Iterable[OSplit], used: Sequence[tuple[ODividend, float]]
) -> float:
    """T(d) = S(d) x product over applied dividends with ex_dividend_date > d of (1 - cash/C)."""
    terms = math.prod(1 - d.cash_amount / c for d, c in used if d.ex_dividend_date > day)
    return s_factor(day, splits) * terms


def adjusted(
    rows: pd.DataFrame,
    splits: Sequence[OSplit],
    dividends: Sequence[ODividend] = (),
    mode: str = "split",
) -> pd.DataFrame:
    """Raw daily rows adjusted as the contract says (prices x factor, volume / S(d))."""
    out = rows.sort_values("date").reset_index(drop=True).copy()
    if mode == "none":
        return out
    used, _ = usable_dividends(rows, dividends)
    s = out["date"].map(lambda d: s_factor(d, splits)).astype(float)
    f = s if mode == "split" else out["date"].map(lambda d: t_factor(d, splits, used)).astype(float)
    for c in ("open", "high", "low", "close", "vwap"):
        if c in out:
            out[c] = out[c] * f
    out["volume"] = out["volume"] / s
    return out


# -- Fibonacci bars ----------------------------------------------------------------------------
def fib_bars(
    rows: pd.DataFrame, n: int, anchor: str = "calendar", lake_last: dt.date | None = None
) -> pd.DataFrame:
    """One symbol's Fibonacci bars from its (adjusted) daily rows, per the contract."""
    r = rows.sort_values("date").reset_index(drop=True)
    if anchor == "calendar":
        g = r["date"].map(lambda d: session_k(d) // n)
    else:
        g = pd.Series(np.arange(len(r)) // n)
    last = lake_last or r["date"].max()
    out = []
    for key, grp in r.groupby(g, sort=True):
        if anchor == "calendar":
            group_last = xnys()[(int(key) + 1) * n - 1]
            complete = group_last <= last
        else:
            complete = len(grp) == n
        out.append(
            {
                "start_date": grp["date"].iloc[0],
                "end_date": grp["date"].iloc[-1],
                "open": float(grp["open"].iloc[0]),
                "high": float(grp["high"].max()),
                "low": float(grp["low"].min()),
                "close": float(grp["close"].iloc[-1]),
                "volume": float(grp["volume"].sum()),
                "days": len(grp),
                "complete": bool(complete),
            }
        )
    return pd.DataFrame(out)


# -- gold --------------------------------------------------------------------------------------
def indicators(bars: pd.DataFrame) -> pd.DataFrame:
    """Every gold indicator of one symbol's bars (``high``, ``low``, ``close``) in pandas."""
    close = bars["close"].astype(float).reset_index(drop=True)
    high = bars["high"].astype(float).reset_index(drop=True)
    low = bars["low"].astype(float).reset_index(drop=True)
    out = pd.DataFrame({"close": close})
    for n in EMA_SPANS:
        out[f"ema_{n}"] = close.ewm(span=n, adjust=False, min_periods=n).mean()
    out["macd_fast"] = out["ema_13"] - out["ema_21"]
    out["macd_slow"] = out["ema_55"] - out["ema_89"]
    d = close.diff().iloc[1:]
    g = d.clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    loss = (-d).clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    total = g + loss
    rsi = (100 * g / total).where(total != 0, 50.0).where(g.notna())
    out["rsi_14"] = pd.concat([pd.Series([np.nan]), rsi]).reset_index(drop=True)
    prev = close.shift(1)
    tr = pd.concat([high, prev], axis=1).max(axis=1) - pd.concat([low, prev], axis=1).min(axis=1)
    tr.iloc[0] = high.iloc[0] - low.iloc[0]
    out["atr_14"] = tr.ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    hi = out[["ema_144", "ema_169"]].max(axis=1, skipna=False)
    lo = out[["ema_144", "ema_169"]].min(axis=1, skipna=False)
    vegas = pd.Series(np.where(close > hi, 1, np.where(close < lo, -1, 0)), dtype="Int8")
    out["vegas"] = vegas.where(out["ema_144"].notna() & out["ema_169"].notna())
    return out


def close_rel(a: float | None, b: float | None, rel: float = 1e-9, floor: float = 1.0) -> bool:
    """Both null, or equal to ``rel`` relative (absolute below ``floor``; 0: purely relative)."""
    a_null = a is None or (isinstance(a, float) and math.isnan(a))
    b_null = b is None or (isinstance(b, float) and math.isnan(b))
    if a_null or b_null:
        return a_null and b_null
    assert a is not None and b is not None
    return abs(float(a) - float(b)) <= rel * max(floor, abs(float(a)), abs(float(b)))
