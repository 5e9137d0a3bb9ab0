"""Contract review: rows of a legacy database that the lake contract rejects, through export."""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest
from psycopg import sql

from batch import consolidate, export
from batch.engine import retry
from core import calendar, layout
from core.lake import Lake
from core.stores import postgres
from tests.batch_support import T0, Row, simple_rows

pytestmark = pytest.mark.integration
FAST = export.Options(workers=1, chunk=2, page_size=50, backoff=retry.Backoff(base_s=0.0))


def _insert(url: str, rows: list[Row]) -> None:
    stmt = sql.SQL("INSERT INTO raw_ohlcv ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, postgres.DAILY_COLUMNS)),
        sql.SQL(", ").join([sql.Placeholder()] * len(postgres.DAILY_COLUMNS)),
    )
    values = [
        (r.symbol, r.date, r.open, r.high, r.low, r.close, r.volume, r.vwap, r.transactions,
         r.source, T0 + dt.timedelta(seconds=r.ingested))
        for r in rows
    ]  # fmt: skip
    with postgres.connect(url) as conn:
        postgres.migrate(conn)
        with conn.cursor() as cur:
            cur.executemany(stmt, values)


def test_export_of_dotted_symbols_round_trips(pg_url: str, local_lake: Lake) -> None:
    days = calendar.sessions_between(dt.date(2024, 12, 20), dt.date(2025, 1, 15))
    rows = [*simple_rows("BRK.B", days), *simple_rows("BF-A", days[:1])]
    _insert(pg_url, rows)
    assert export.run(pg_url, local_lake, options=FAST).ok
    keys = {e.key for e in local_lake.list("bronze")}
    assert layout.range_fragment("BRK.B", days[0], days[-1]) in keys
    assert layout.daily_fragment("BF-A", days[0]) in keys
    assert consolidate.run(local_lake, workers=1).ok
    t = pq.read_table(local_lake.path(layout.consolidated("BRK.B")))
    assert t["date"].to_pylist() == days
    assert set(t["source"].to_pylist()) == {"export"}


def test_export_never_brings_a_non_session_row_into_bronze(pg_url: str, local_lake: Lake) -> None:
    days = calendar.sessions_between(dt.date(2025, 1, 6), dt.date(2025, 1, 14))
    _insert(
        pg_url, [*simple_rows("OLD", days), Row("OLD", dt.date(2025, 1, 11), 1, 2, 0.5, 1.5, 9)]
    )
    assert export.run(pg_url, local_lake, options=FAST).ok
    assert consolidate.run(local_lake, workers=1).ok
    t = pq.read_table(local_lake.path(layout.consolidated("OLD")))
    assert t["date"].to_pylist() == days
    quarantined = [e.key for e in local_lake.list("quarantine/export")]
    assert len(quarantined) == 1
    q = local_lake.read_table(quarantined[0])
    assert q["date"].to_pylist() == [dt.date(2025, 1, 11)]
    assert "session" in q["reason"][0].as_py()
