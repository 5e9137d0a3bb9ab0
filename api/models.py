"""Response models: the API's JSON shapes, validated on the way out and shown at /docs."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.intraday import IntradayBar, MinuteBarOut
from api.problems import ProblemDetail

DailyInterval = Literal["1d", "3d", "5d", "8d", "13d", "21d", "34d"]
"""Daily and Fibonacci bars (and their indicators)."""
Interval = Literal[
    "1d", "3d", "5d", "8d", "13d", "21d", "34d", "1m", "5m", "15m", "30m", "1h", "2h", "4h"
]
"""Every bar interval ``/v1/bars`` serves: daily, Fibonacci and intraday."""


class DailyBar(BaseModel):
    """One session of one symbol, adjusted as the response's ``adjusted`` says."""

    date: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None = None
    transactions: int | None = None
    source: str


class FibBar(BaseModel):
    """One Fibonacci bar; ``complete`` is false while the group can still change."""

    start_date: dt.date
    end_date: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: float
    days: int
    complete: bool


Adjusted = Literal["split", "none", "total"]


class SplitInfo(BaseModel):
    """A split executed after the first bar served (it moves the bars before it)."""

    execution_date: dt.date
    split_from: float
    split_to: float
    adjustment_type: str


class SkippedDividend(BaseModel):
    """A dividend total-return adjustment could not apply, and why."""

    ex_dividend_date: dt.date
    distribution_type: str
    cash_amount: float
    currency: str
    reason: str


class Adjustment(BaseModel):
    """What was served, and what could not be applied.

    ``split``: prices x S(d), volume / S(d); ``total``: prices x T(d), volume / S(d); ``none``:
    as stored.
    """

    mode: Adjusted
    split_version: str | None = Field(
        None, description="digest of the symbol's splits; null when none were ever fetched"
    )
    splits: list[SplitInfo] = Field(default_factory=list)
    dividends_applied: int = 0
    dividends_skipped: list[SkippedDividend] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class BarsResponse(BaseModel):
    """Bars of one symbol and interval, ascending by date (one page), and the adjustment served."""

    symbol: str
    interval: Interval
    adjusted: Adjusted
    adjustment: Adjustment
    served_by: dict[str, int] = Field(
        default_factory=dict,
        description="rows of this page by the source that served them: postgres, lake",
    )
    next: str | None = Field(None, description="the next page (path and query), null on the last")
    bars: list[DailyBar] | list[FibBar] | list[MinuteBarOut] | list[IntradayBar]


class IndicatorsResponse(BaseModel):
    """Gold rows: one symbol's history (``symbol``) or every symbol on one ``date``.

    A row holds its keys (``date``, or ``start_date``, ``end_date``, ``complete``; ``symbol`` in
    a cross-section), the split-adjusted ``close``, ``ema_8`` .. ``ema_169``, ``macd_fast``,
    ``macd_slow``, ``rsi_14``, ``atr_14`` and ``vegas`` (null until an indicator has enough bars).
    """

    interval: Interval
    symbol: str | None = None
    date: dt.date | None = None
    rows: list[dict[str, Any]]


class DailyBarOf(DailyBar):
    """A daily bar with its symbol (in a cross-section)."""

    symbol: str


class FibBarOf(FibBar):
    """A Fibonacci bar with its symbol (in a cross-section)."""

    symbol: str


class CrossSectionResponse(BaseModel):
    """One date across many symbols: each symbol's bar in effect on that date, by symbol."""

    interval: DailyInterval
    date: dt.date
    adjusted: Literal["split"] = "split"
    served_by: dict[str, int] = Field(default_factory=dict)
    next: str | None = None
    bars: list[DailyBarOf] | list[FibBarOf]


class SymbolSummary(BaseModel):
    """A ticker's reference data, as the vendor's tickers list gives it."""

    symbol: str
    name: str | None = None
    type: str | None = None
    exchange: str | None = None
    active: bool
    market_cap: float | None = None
    list_date: dt.date | None = None
    delist_date: dt.date | None = None


class SymbolsResponse(BaseModel):
    """One page of tickers, by symbol."""

    next: str | None = None
    symbols: list[SymbolSummary]


class SymbolDetail(SymbolSummary):
    """A ticker with the span of its daily history (lake and Postgres) and its splits."""

    active: bool | None = None  # type: ignore[assignment]  # unknown without reference data
    sic_code: str | None = None
    sic_description: str | None = None
    first_date: dt.date | None = Field(None, description="first daily bar held")
    last_date: dt.date | None = Field(None, description="last daily bar held")
    splits: list[SplitInfo] = Field(default_factory=list)


class LatestResponse(BaseModel):
    """What the live flow holds in Redis for one symbol, and how old it is."""

    symbol: str
    as_of: dt.datetime | None = Field(
        None,
        description="event time of the newest of them: the last trade's SIP timestamp, else the"
        " end of the newest bar",
    )
    stale: bool = Field(
        description="true when as_of is older than LIVE_STALE_S (the feed or the symbol is quiet)"
    )
    trade: dict[str, Any] | None = Field(
        None, description="last trade: price, size, ts (ISO), exchange, conditions, sequence, id"
    )
    bar: dict[str, Any] | None = Field(
        None,
        description="the minute bar forming now (final false): start, open, high, low, close,"
        " volume, vwap, trades, revision, partial, updated_at",
    )
    final: dict[str, Any] | None = Field(
        None, description="the last closed minute bar (final true), at its latest revision"
    )


class HealthResponse(BaseModel):
    """``ok`` when every dependency answers; else ``degraded`` and which one failed."""

    model_config = ConfigDict(json_schema_extra={"example": {"status": "ok", "checks": {}}})

    status: Literal["ok", "degraded"]
    checks: dict[str, str]


class LatestManyResponse(BaseModel):
    """The latest of several symbols; those without live data are listed in ``missing``."""

    latest: list[LatestResponse]
    missing: list[str]


ErrorResponse = ProblemDetail
"""Every error is a problem (RFC 9457); kept under its old name for route modules' ``responses``."""
