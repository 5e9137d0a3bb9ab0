"""The completeness ledger: what the lake holds per session and per symbol (Postgres).

``ingest_sessions`` has one row per XNYS session ever attempted: ``complete`` once its rows are
durable in the lake (and Postgres), ``empty`` when Polygon answered with no rows (retried on
the next run, never complete), ``failed`` when the request failed for good. ``ingest_symbols``
keeps each symbol's first and last date held. Sessions to fetch are computed against the
calendar, never against a single watermark, so any hole heals on the next run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final, Literal

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from core import calendar

Status = Literal["complete", "empty", "failed"]
STATUSES: Final = ("pending", "complete", "empty", "failed")


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    """What one run learnt about one session."""

    session: dt.date
    status: Status
    rows: int = 0
    quarantined: int = 0
    attempts: int = 0
    source: str = "rest"
    fetched_at: dt.datetime | None = None
    error: str | None = None


_RECORD = """
INSERT INTO ingest_sessions AS s
    (session, status, rows, quarantined, source, fetched_at, attempts, last_error)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (session) DO UPDATE SET
    status = CASE WHEN s.status = 'complete' AND EXCLUDED.status <> 'complete'
                  THEN 'complete' ELSE EXCLUDED.status END,
    rows = CASE WHEN s.status = 'complete' AND EXCLUDED.status <> 'complete'
                THEN s.rows ELSE EXCLUDED.rows END,
    quarantined = CASE WHEN s.status = 'complete' AND EXCLUDED.status <> 'complete'
                       THEN s.quarantined ELSE EXCLUDED.quarantined END,
    source = EXCLUDED.source,
    fetched_at = COALESCE(EXCLUDED.fetched_at, s.fetched_at),
    attempts = s.attempts + EXCLUDED.attempts,
    last_error = EXCLUDED.last_error
"""

_SYMBOLS = """
INSERT INTO ingest_symbols AS s (symbol, first_date, last_date, updated_at)
SELECT symbol, first_date, last_date, now()
FROM unnest(%s::text[], %s::date[], %s::date[]) AS u(symbol, first_date, last_date)
ON CONFLICT (symbol) DO UPDATE SET
    first_date = LEAST(s.first_date, EXCLUDED.first_date),
    last_date = GREATEST(s.last_date, EXCLUDED.last_date),
    updated_at = now()
"""


def record_sessions(conn: psycopg.Connection[Any], outcomes: list[SessionOutcome]) -> None:
    """Record outcomes in one transaction.

    A complete session is never downgraded by a later failed or empty refetch (its data is
    still held); the refetch's error is still kept.
    """
    if not outcomes:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            _RECORD,
            [
                (
                    o.session,
                    o.status,
                    o.rows,
                    o.quarantined,
                    o.source,
                    o.fetched_at,
                    o.attempts,
                    o.error,
                )
                for o in outcomes
            ],
        )


def record_symbols(conn: psycopg.Connection[Any], bars: pa.Table) -> int:
    """Widen each symbol's [first_date, last_date] by the rows of ``bars``; returns symbols."""
    if bars.num_rows == 0:
        return 0
    spans = bars.group_by("symbol").aggregate([("date", "min"), ("date", "max")])
    with conn.transaction():
        conn.execute(
            _SYMBOLS,
            (
                spans["symbol"].to_pylist(),
                spans["date_min"].to_pylist(),
                spans["date_max"].to_pylist(),
            ),
        )
    return int(pc.count(spans["symbol"]).as_py())


def statuses(conn: psycopg.Connection[Any], first: dt.date, last: dt.date) -> dict[dt.date, str]:
    """Ledger status of every session recorded in [first, last]."""
    rows = conn.execute(
        "SELECT session, status FROM ingest_sessions WHERE session BETWEEN %s AND %s",
        (first, last),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def missing_sessions(
    conn: psycopg.Connection[Any],
    first: dt.date,
    last: dt.date,
    now: dt.datetime,
    settle: dt.timedelta,
) -> list[dt.date]:
    """XNYS sessions in [first, last], settled by ``now``, that are not complete in the ledger.

    Holidays and weekends are never listed; today is listed only ``settle`` after the close.
    """
    wanted = calendar.settled_sessions(first, last, now, settle)
    if not wanted:
        return []
    done = {d for d, s in statuses(conn, wanted[0], wanted[-1]).items() if s == "complete"}
    return [d for d in wanted if d not in done]


# -- minute sessions ------------------------------------------------------------------------
MARKET: Final = "*"
"""The ``ingest_minutes`` symbol of a whole-market session (``backfill --minutes --all``)."""


@dataclass(frozen=True, slots=True)
class MinuteOutcome:
    """What one run learnt about one symbol's minutes of one session (or the market's)."""

    session: dt.date
    symbol: str
    status: Status
    rows: int = 0
    quarantined: int = 0
    fetched_at: dt.datetime | None = None
    error: str | None = None


_RECORD_MINUTES = """
INSERT INTO ingest_minutes AS m
    (session, symbol, status, rows, quarantined, fetched_at, attempts, last_error)
VALUES (%s, %s, %s, %s, %s, %s, 1, %s)
ON CONFLICT (session, symbol) DO UPDATE SET
    status = CASE WHEN m.status = 'complete' AND EXCLUDED.status <> 'complete'
                  THEN 'complete' ELSE EXCLUDED.status END,
    rows = CASE WHEN m.status = 'complete' AND EXCLUDED.status <> 'complete'
                THEN m.rows ELSE EXCLUDED.rows END,
    quarantined = CASE WHEN m.status = 'complete' AND EXCLUDED.status <> 'complete'
                       THEN m.quarantined ELSE EXCLUDED.quarantined END,
    fetched_at = COALESCE(EXCLUDED.fetched_at, m.fetched_at),
    attempts = m.attempts + 1,
    last_error = EXCLUDED.last_error
"""


def record_minutes(conn: psycopg.Connection[Any], outcomes: list[MinuteOutcome]) -> None:
    """Record minute outcomes in one transaction; a complete one is never downgraded."""
    if not outcomes:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            _RECORD_MINUTES,
            [
                (o.session, o.symbol, o.status, o.rows, o.quarantined, o.fetched_at, o.error)
                for o in outcomes
            ],
        )


def complete_minutes(
    conn: psycopg.Connection[Any], first: dt.date, last: dt.date
) -> set[tuple[dt.date, str]]:
    """(session, symbol) pairs in [first, last] whose minutes are complete (``*``: the market)."""
    rows = conn.execute(
        "SELECT session, symbol FROM ingest_minutes"
        " WHERE session BETWEEN %s AND %s AND status = 'complete'",
        (first, last),
    ).fetchall()
    return {(r[0], r[1]) for r in rows}
