"""A small market for API tests: a local lake, a Postgres schema and a Redis prefix, seeded.

AAPL: lake history (data.parquet and a newer fragment) and recent rows in Postgres too; MSFT:
fragments only, where a later live row must not replace a rest row; FIB: silver 3d bars over two
months; PGONLY: in Postgres only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
from pydantic import SecretStr

from core import layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY, SILVER
from core.settings import ApiSettings
from core.stores import postgres

KEY = "k-secret"
HEADERS = {"X-API-Key": KEY}
TODAY = dt.datetime.now(dt.UTC).date()
OLD = [dt.date(2015, 1, 5) + dt.timedelta(days=i) for i in range(5)]  # Mon..Fri
RECENT = [TODAY - dt.timedelta(days=d) for d in (3, 2, 1)]
INGESTED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
FIB_DAYS = [dt.date(2015, 1, 26) + dt.timedelta(days=i) for i in range(0, 12) if i % 7 < 5]


def daily(
    symbol: str,
    days: list[dt.date],
    source: str,
    base: float = 10.0,
    ingested: dt.datetime = INGESTED,
) -> pa.Table:
    rows: list[dict[str, Any]] = [
        {
            "symbol": symbol,
            "date": d,
            "open": base + i,
            "high": base + i + 1.5,
            "low": base + i - 0.5,
            "close": base + i + 0.25,
            "volume": 1000.0 * (i + 1),
            "vwap": base + i + 0.1,
            "transactions": 10 + i,
            "source": source,
            "ingested_at": ingested,
        }
        for i, d in enumerate(days)
    ]
    return pa.Table.from_pylist(rows, schema=BRONZE_DAILY)


def silver(symbol: str, starts: list[dt.date], n: int) -> list[dict[str, Any]]:
    return [
        {
            "symbol": symbol,
            "start_date": s,
            "end_date": s + dt.timedelta(days=n - 1),
            "open": 1.0 + i,
            "high": 2.0 + i,
            "low": 0.5 + i,
            "close": 1.5 + i,
            "volume": 100.0,
            "days": n,
            "complete": i < len(starts) - 1,
        }
        for i, s in enumerate(starts)
    ]


def write_silver(lake: Lake, n: int, rows: list[dict[str, Any]]) -> None:
    by_month: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in rows:
        by_month.setdefault((r["start_date"].year, r["start_date"].month), []).append(r)
    for (y, m), month_rows in by_month.items():
        table = pa.Table.from_pylist(month_rows, schema=SILVER).sort_by(
            [("symbol", "ascending"), ("start_date", "ascending")]
        )
        lake.write_table(layout.silver_file(n, y, m), table)


def api_settings(
    lake: Lake, pg_url: str, redis_url: str, redis_prefix: str, keys: str = KEY
) -> ApiSettings:
    """Settings of an API over ``lake`` and a test's own Postgres schema and Redis prefix."""
    return ApiSettings(
        lake_url=lake.url,
        database_url=SecretStr(pg_url),
        redis_url=SecretStr(redis_url),
        redis_prefix=redis_prefix,
        api_keys=SecretStr(keys),
    )


def seeded_settings(
    local_lake: Lake, pg_url: str, redis_server_url: str, redis_prefix: str
) -> ApiSettings:
    """Seed the market and return settings pointing at it."""
    # AAPL: lake history (data.parquet + a newer fragment), recent rows in Postgres.
    local_lake.write_table(layout.consolidated("AAPL"), daily("AAPL", OLD[:4], "flatfile"))
    local_lake.write_table(
        layout.daily_fragment("AAPL", OLD[4]), daily("AAPL", OLD[4:], "flatfile", 20.0)
    )
    local_lake.write_table(
        layout.range_fragment("AAPL", RECENT[0], RECENT[-1]), daily("AAPL", RECENT, "rest", 30.0)
    )
    # MSFT: fragments only, where a live row must not replace the rest row of the same date.
    local_lake.write_table(
        layout.range_fragment("MSFT", OLD[0], OLD[1]), daily("MSFT", OLD[:2], "rest", 50.0)
    )
    late_live = daily("MSFT", OLD[1:2], "live", 99.0, INGESTED + dt.timedelta(days=1))
    local_lake.write_table(layout.daily_fragment("MSFT", OLD[1]), late_live)
    # silver 3d: FIB over two months (its data.parquet spans them), MSFT (fragments only) one.
    local_lake.write_table(layout.consolidated("FIB"), daily("FIB", FIB_DAYS, "rest"))
    starts = [dt.date(2015, 1, 26), dt.date(2015, 1, 29), dt.date(2015, 2, 3)]
    stray = silver("FIB", [dt.date(2014, 12, 1)], 3)  # outside FIB's history: never opened
    write_silver(local_lake, 3, silver("FIB", starts, 3) + silver("MSFT", starts[:1], 3) + stray)
    with postgres.connect(pg_url) as conn:
        postgres.migrate(conn)
        postgres.upsert_daily(conn, daily("AAPL", RECENT, "rest", 40.0))
        postgres.upsert_daily(conn, daily("PGONLY", RECENT, "rest", 60.0))
    return api_settings(local_lake, pg_url, redis_server_url, redis_prefix, f"other,{KEY}")
