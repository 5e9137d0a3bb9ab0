"""Columnar bars: what the market model returns and the server serialises.

Columns stay numpy arrays end to end so a 5,000-row grouped-daily response never becomes 5,000
Python dicts unless a caller asks for them (:meth:`Bars.to_dicts`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
Obj = npt.NDArray[np.object_]

_UNIX = dt.date(1970, 1, 1)
# Polygon's short keys, in the order Polygon writes them.
POLYGON_KEYS = (
    ("v", "volume"),
    ("vw", "vwap"),
    ("o", "open"),
    ("c", "close"),
    ("h", "high"),
    ("l", "low"),
)


@dataclass(frozen=True, slots=True)
class Bars:
    """OHLCV bars, one row per (symbol, period); ``defect`` names injected malformations."""

    symbol: Obj
    day: I32
    """Session date as days since 1970-01-01 (Arrow date32)."""
    t: I64
    """Polygon's ``t`` in Unix milliseconds (daily: midnight New York, grouped: 16:00)."""
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    vwap: F64
    transactions: I64
    defect: Obj | None = None
    """Per row: "" when clean, else the injected malformation (NaN marks a missing field)."""

    def __len__(self) -> int:
        return len(self.t)

    def take(self, idx: npt.ArrayLike) -> Bars:
        """Rows at ``idx`` (an index array or a boolean mask)."""
        picked: dict[str, Any] = {}
        for f in fields(self):
            col = getattr(self, f.name)
            picked[f.name] = None if col is None else col[idx]
        return Bars(**picked)

    def dates(self) -> list[dt.date]:
        """The ``day`` column as dates."""
        return [_UNIX + dt.timedelta(days=int(d)) for d in self.day]

    def defects(self) -> Obj:
        """Per-row defect names ("" for clean rows)."""
        if self.defect is None:
            return np.full(len(self), "", dtype=object)
        return self.defect

    def to_dicts(self, *, ticker_key: bool = True) -> list[dict[str, Any]]:
        """Rows as Polygon JSON objects (``T`` only when ``ticker_key``); NaN fields are omitted."""
        out: list[dict[str, Any]] = []
        cols = [(k, getattr(self, name).tolist()) for k, name in POLYGON_KEYS]
        syms = self.symbol.tolist()
        ts = self.t.tolist()
        ns = self.transactions.tolist()
        for r in range(len(self)):
            row: dict[str, Any] = {"T": syms[r]} if ticker_key else {}
            for k, col in cols:
                v = col[r]
                if not math.isnan(v):
                    row[k] = v
            row["t"] = ts[r]
            row["n"] = ns[r]
            out.append(row)
        return out

    def to_arrow(self) -> pa.Table:
        """The bars as an Arrow table (``date`` as date32; ``defect`` when any row has one)."""
        cols: dict[str, Any] = {
            "symbol": pa.array(self.symbol, pa.string()),
            "date": pa.array(self.day, pa.date32()),
            "t": pa.array(self.t, pa.int64()),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "vwap": self.vwap,
            "transactions": self.transactions,
        }
        if self.defect is not None:
            cols["defect"] = pa.array(self.defect, pa.string())
        return pa.table(cols)

    def with_defects(self, defect: Obj) -> Bars:
        """A copy carrying ``defect``."""
        return replace(self, defect=defect)


def tick_round(x: F64) -> F64:
    """Round to the quote increment: cents at or above $1, hundredths of a cent below."""
    return np.maximum(np.where(x >= 1.0, np.round(x, 2), np.round(x, 4)), 0.0001)


def adjust(b: Bars, factor: F64) -> Bars:
    """Prices times ``factor`` and volumes divided by it (split adjustment)."""
    return replace(
        b,
        open=b.open * factor,
        high=b.high * factor,
        low=b.low * factor,
        close=b.close * factor,
        volume=b.volume / factor,
        vwap=b.vwap * factor,
    )


def concat(parts: list[Bars]) -> Bars:
    """Rows of all ``parts`` in order."""
    if not parts:
        return empty()
    if len(parts) == 1:
        return parts[0]
    merged: dict[str, Any] = {}
    any_defect = any(p.defect is not None for p in parts)
    for f in fields(Bars):
        if f.name == "defect":
            merged[f.name] = np.concatenate([p.defects() for p in parts]) if any_defect else None
        else:
            merged[f.name] = np.concatenate([getattr(p, f.name) for p in parts])
    return Bars(**merged)


def empty() -> Bars:
    """No rows."""
    f = np.empty(0, dtype=np.float64)
    return Bars(
        symbol=np.empty(0, dtype=object),
        day=np.empty(0, dtype=np.int32),
        t=np.empty(0, dtype=np.int64),
        open=f,
        high=f,
        low=f,
        close=f,
        volume=f,
        vwap=f,
        transactions=np.empty(0, dtype=np.int64),
    )
