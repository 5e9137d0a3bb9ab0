"""Typed records shared by flows, batch jobs and the API.

Timestamps are UTC; a bar is stamped at its open (``start``) and, for daily bars, by its
session date. Validation here mirrors :mod:`core.validation`, which does the same checks in
bulk on Arrow batches.
"""

from __future__ import annotations

import datetime as dt
import math

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core import calendar
from core.layout import SYMBOL_RE
from core.schemas import SOURCES


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("symbol", check_fields=False)
    @classmethod
    def _symbol(cls, v: str) -> str:
        if not SYMBOL_RE.match(v):
            msg = f"invalid symbol {v!r}"
            raise ValueError(msg)
        return v


def _utc(v: dt.datetime) -> dt.datetime:
    if v.tzinfo is None:
        msg = "timestamp must be timezone-aware (UTC)"
        raise ValueError(msg)
    return v.astimezone(dt.UTC)


class Tick(_Record):
    """One trade."""

    symbol: str
    price: float = Field(gt=0, allow_inf_nan=False)
    size: float = Field(ge=0, allow_inf_nan=False)
    ts: dt.datetime
    exchange: int | None = None
    conditions: tuple[int, ...] = ()
    sequence: int | None = None

    _ts = field_validator("ts")(classmethod(lambda cls, v: _utc(v)))


class Bar(_Record):
    """A daily (``start`` None) or intraday bar for one symbol."""

    symbol: str
    date: dt.date
    open: float = Field(gt=0, allow_inf_nan=False)
    high: float = Field(gt=0, allow_inf_nan=False)
    low: float = Field(gt=0, allow_inf_nan=False)
    close: float = Field(gt=0, allow_inf_nan=False)
    volume: float = Field(ge=0, allow_inf_nan=False)
    vwap: float | None = None
    transactions: int | None = None
    source: str = "rest"
    ingested_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    start: dt.datetime | None = None
    trades: int | None = None

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v not in SOURCES:
            msg = f"source must be one of {SOURCES}, not {v!r}"
            raise ValueError(msg)
        return v

    @field_validator("ingested_at", "start")
    @classmethod
    def _stamps(cls, v: dt.datetime | None) -> dt.datetime | None:
        return None if v is None else _utc(v)

    @field_validator("vwap")
    @classmethod
    def _vwap(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v <= 0):
            msg = "vwap must be a positive finite price"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _shape(self) -> Bar:
        if self.high < self.low:
            msg = f"high {self.high} < low {self.low}"
            raise ValueError(msg)
        if not self.low <= self.open <= self.high:
            msg = f"open {self.open} outside [low {self.low}, high {self.high}]"
            raise ValueError(msg)
        if not self.low <= self.close <= self.high:
            msg = f"close {self.close} outside [low {self.low}, high {self.high}]"
            raise ValueError(msg)
        if not calendar.is_session(self.date):
            msg = f"{self.date.isoformat()} is not an XNYS session"
            raise ValueError(msg)
        return self


class SymbolMeta(_Record):
    """Reference data for one ticker."""

    symbol: str
    name: str | None = None
    type: str | None = None
    exchange: str | None = None
    active: bool = True
    market_cap: float | None = None
    sic_code: str | None = None
    sic_description: str | None = None
    list_date: dt.date | None = None
    delist_date: dt.date | None = None
