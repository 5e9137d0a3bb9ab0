"""Arrow schemas of the lake contract (ARCHITECTURE.md, "Lake contract").

These are the single source of truth: writers cast to them and readers may rely on them.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

from core.indicators import EMA_SPANS

UTC_US: Final = pa.timestamp("us", tz="UTC")
SOURCES: Final = ("rest", "live", "export", "flatfile")
"""Allowed values of ``source``. ``live`` never replaces ``rest`` on consolidation."""
SOURCE_RANK: Final = {"live": 0, "export": 1, "flatfile": 2, "rest": 3}
"""Tie-break on equal ``ingested_at``, higher wins: the exchange's own daily aggregate first,
files derived from it next, provisional live bars last. The lake and Postgres both use it."""
FIB_INTERVALS: Final = (3, 5, 8, 13, 21, 34)

BRONZE_DAILY: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("vwap", pa.float64(), nullable=True),
        pa.field("transactions", pa.int64(), nullable=True),
        pa.field("source", pa.string(), nullable=False),
        pa.field("ingested_at", UTC_US, nullable=False),
    ]
)

MINUTE_SOURCES: Final = ("rest", "live", "flatfile")
"""Allowed values of ``source`` for minute bars."""

BRONZE_MINUTE: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),
        pa.field("start", UTC_US, nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("vwap", pa.float64(), nullable=True),
        pa.field("trades", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("revision", pa.int32(), nullable=False),
        pa.field("partial", pa.bool_(), nullable=False),
        pa.field("ingested_at", UTC_US, nullable=False),
    ]
)
"""Minute bars (live flow and REST minute aggregates), one session per folder.

``revision`` is 0 at a minute's first close and +1 for each late trade that revised it;
``partial`` marks a bar the writer knows missed part of its minute (connect, reconnect,
restart). ``vwap`` is null when no trade of the minute counted for volume."""

SILVER: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("start_date", pa.date32(), nullable=False),
        pa.field("end_date", pa.date32(), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("days", pa.int32(), nullable=False),
        pa.field("complete", pa.bool_(), nullable=False),
    ]
)

GOLD_INTERVALS: Final = ("1d", *(f"{n}d" for n in FIB_INTERVALS))
"""Intervals of gold: the daily bars and the six Fibonacci lengths."""
INDICATORS: Final = [
    *(pa.field(f"ema_{n}", pa.float64()) for n in EMA_SPANS),
    pa.field("macd_fast", pa.float64()),
    pa.field("macd_slow", pa.float64()),
    pa.field("rsi_14", pa.float64()),
    pa.field("atr_14", pa.float64()),
    pa.field("vegas", pa.int8()),
]
"""Indicator columns of gold (:mod:`core.indicators`); null until each has enough bars."""

GOLD_DAILY: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        *INDICATORS,
    ]
)
"""``gold/indicators_1d``: one row per daily bar (split-adjusted close)."""

GOLD_FIB: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("start_date", pa.date32(), nullable=False),
        pa.field("end_date", pa.date32(), nullable=False),
        pa.field("complete", pa.bool_(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        *INDICATORS,
    ]
)
"""``gold/indicators_{N}d``: one row per Fibonacci bar, keyed as silver's bars."""


def gold_schema(interval: str) -> pa.Schema:
    """The gold schema of an interval label (``1d``, ``3d``, ...)."""
    if interval not in GOLD_INTERVALS:
        msg = f"unknown gold interval {interval!r}; choose from {', '.join(GOLD_INTERVALS)}"
        raise ValueError(msg)
    return GOLD_DAILY if interval == "1d" else GOLD_FIB


SILVER_INTRADAY: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("start", UTC_US, nullable=False),
        pa.field("end", UTC_US, nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("vwap", pa.float64(), nullable=True),
        pa.field("trades", pa.int64(), nullable=False),
        pa.field("minutes", pa.int32(), nullable=False),
        pa.field("complete", pa.bool_(), nullable=False),
    ]
)
"""``silver/silver_{I}/date=D/data.parquet``: regular-session bars of 5m..4h (core.intraday);
``end`` is exclusive, ``minutes`` the minute bars in the bar."""

TRADES: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("sip_timestamp", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("size", pa.float64(), nullable=False),
        pa.field("exchange", pa.int32(), nullable=True),
        pa.field("conditions", pa.list_(pa.int32()), nullable=True),
        pa.field("id", pa.string(), nullable=True),
        pa.field("sequence", pa.int64(), nullable=True),
        pa.field("tape", pa.int32(), nullable=True),
        pa.field("received_at", UTC_US, nullable=False),
    ]
)
"""``bronze/trades/date=D/part-{id}.parquet``: every accepted raw trade of the live flow, as
received (duplicates and late trades included: the fold decides), market-wide per flush."""

QUARANTINE: Final = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=True),
        pa.field("date", pa.date32(), nullable=True),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("payload", pa.string(), nullable=False),
        pa.field("received_at", UTC_US, nullable=False),
    ]
)
"""Rejected input keeps its raw payload (JSON) so nothing is lost and it can be replayed."""

SYMBOL_META: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("type", pa.string()),
        pa.field("exchange", pa.string()),
        pa.field("active", pa.bool_(), nullable=False),
        pa.field("market_cap", pa.float64()),
        pa.field("sic_code", pa.string()),
        pa.field("sic_description", pa.string()),
        pa.field("list_date", pa.date32()),
        pa.field("delist_date", pa.date32()),
        pa.field("updated_at", UTC_US, nullable=False),
    ]
)


SPLIT_TYPES: Final = ("forward_split", "reverse_split", "stock_dividend")
"""``adjustment_type`` of a split; all three adjust prices the same way."""
DISTRIBUTION_TYPES: Final = ("recurring", "special", "supplemental", "irregular", "unknown")
"""``distribution_type`` of a cash dividend."""

SPLITS: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("execution_date", pa.date32(), nullable=False),
        pa.field("split_from", pa.float64(), nullable=False),
        pa.field("split_to", pa.float64(), nullable=False),
        pa.field("adjustment_type", pa.string(), nullable=False),
        pa.field("vendor_factor", pa.float64()),
        pa.field("id", pa.string()),
        pa.field("ingested_at", UTC_US, nullable=False),
    ]
)
"""``reference/splits/splits.parquet``: one row per (symbol, execution_date)."""

DIVIDENDS: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("ex_dividend_date", pa.date32(), nullable=False),
        pa.field("cash_amount", pa.float64(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("distribution_type", pa.string(), nullable=False),
        pa.field("pay_date", pa.date32()),
        pa.field("record_date", pa.date32()),
        pa.field("declaration_date", pa.date32()),
        pa.field("frequency", pa.int32()),
        pa.field("vendor_factor", pa.float64()),
        pa.field("id", pa.string()),
        pa.field("ingested_at", UTC_US, nullable=False),
    ]
)
"""``reference/dividends/dividends.parquet``: one row per (symbol, ex_dividend_date,
distribution_type); ``cash_amount`` as declared, in the share basis of its ex-date."""

ADJUSTMENTS: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("split_version", pa.string(), nullable=False),
        pa.field("applied_at", UTC_US, nullable=False),
    ]
)
"""``processing_metadata/adjustments.parquet``: the splits silver was built with, per symbol."""


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``table`` to ``schema`` exactly (column order, types, no extras).

    A nullable column the table lacks is added as nulls: writers that never knew ``vwap`` or
    ``transactions`` still produce valid rows. A missing required column is an error.
    """
    for field in schema:
        if field.nullable and field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        msg = f"table lacks columns required by the schema: {missing}"
        raise ValueError(msg)
    return table.select(schema.names).cast(schema)
