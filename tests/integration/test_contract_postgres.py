"""Contract review: raw_ohlcv in a real Postgres follows the lake's precedence rule."""

from __future__ import annotations

import datetime as dt

import pytest

from core.stores import postgres
from tests.batch_support import Row, table_of

pytestmark = pytest.mark.integration
DAY = dt.date(2025, 3, 4)


def _close(pg_url: str, *batches: list[Row]) -> float:
    with postgres.connect(pg_url) as conn:
        postgres.migrate(conn)
        for rows in batches:
            postgres.upsert_daily(conn, table_of(rows))
        with conn.cursor() as cur:
            cur.execute("SELECT close FROM raw_ohlcv WHERE symbol = %s AND date = %s", ("P", DAY))
            row = cur.fetchone()
    assert row is not None
    return float(row[0])


def test_newer_wins_and_live_never_replaces_rest(pg_url: str) -> None:
    rest = [Row("P", DAY, 10, 12, 9, 11, 100, "rest", 0)]
    newer = [Row("P", DAY, 10, 12, 9, 12, 100, "rest", 50)]
    live = [Row("P", DAY, 10, 12, 9, 13, 100, "live", 99)]
    assert _close(pg_url, rest, newer, live) == 12.0


def test_an_export_row_tied_on_ingested_at_does_not_replace_rest(pg_url: str) -> None:
    rest = [Row("P", DAY, 10, 12, 9, 11, 100, "rest", 5)]
    export = [Row("P", DAY, 10, 12, 9, 11.5, 100, "export", 5)]
    assert _close(pg_url, rest, export) == 11.0  # the lake keeps rest (higher rank) on a tie


def test_a_rest_row_tied_on_ingested_at_replaces_export(pg_url: str) -> None:
    rest = [Row("P", DAY, 10, 12, 9, 11, 100, "rest", 5)]
    export = [Row("P", DAY, 10, 12, 9, 11.5, 100, "export", 5)]
    assert _close(pg_url, export, rest) == 11.0


def test_rest_arriving_after_a_newer_live_row_replaces_it(pg_url: str) -> None:
    live = [Row("P", DAY, 10, 12, 9, 13, 100, "live", 99)]
    rest = [Row("P", DAY, 10, 12, 9, 11, 100, "rest", 0)]
    assert _close(pg_url, live, rest) == 11.0
