"""Response models: the API's JSON shapes, validated on the way out and shown at /docs."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Interval = Literal["1d", "3d", "5d", "8d", "13d", "21d", "34d"]


class DailyBar(BaseModel):
    """One session of one symbol, unadjusted, as held in bronze or raw_ohlcv."""

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
    """One Fibonacci bar from silver; ``complete`` is false while the group can still change."""

    start_date: dt.date
    end_date: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: float
    days: int
    complete: bool


class BarsResponse(BaseModel):
    """Bars of one symbol and interval, ascending by date."""

    symbol: str
    interval: Interval
    bars: list[DailyBar] | list[FibBar]


class LatestResponse(BaseModel):
    """The latest trade and the current live minute bar the live flow stored in Redis."""

    symbol: str
    trade: dict[str, Any] | None = Field(
        None, description="price, size, ts (ISO), exchange, conditions, sequence"
    )
    bar: dict[str, Any] | None = Field(
        None, description="start, open, high, low, close, volume, vwap, trades, updated_at"
    )


class HealthResponse(BaseModel):
    """``ok`` when every dependency answers; else ``degraded`` and which one failed."""

    model_config = ConfigDict(json_schema_extra={"example": {"status": "ok", "checks": {}}})

    status: Literal["ok", "degraded"]
    checks: dict[str, str]


class ErrorResponse(BaseModel):
    """Every error: a human-readable ``detail``."""

    detail: str
