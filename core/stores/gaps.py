"""``live_gaps``: spans the live flow knows it missed, until the healer has filled them.

A row is market-wide when ``symbol`` is NULL. Recording is idempotent (a replay after recovery
records the same gap again and nothing changes); healing sets ``healed_at``, or ``heal_error``
when the REST fetch failed, so the next healer run retries it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True, slots=True)
class GapRow:
    """One recorded gap."""

    id: int
    symbol: str | None
    start: dt.datetime
    end: dt.datetime
    reason: str


def record(
    conn: psycopg.Connection[Any],
    gaps: Iterable[tuple[str | None, dt.datetime, dt.datetime, str]],
) -> int:
    """Insert (symbol, start, end, reason) rows, skipping ones already recorded; rows added."""
    rows = list(gaps)
    if not rows:
        return 0
    added = 0
    with conn.cursor() as cur:
        for row in rows:
            cur.execute(
                "INSERT INTO live_gaps (symbol, start_at, end_at, reason) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT ((COALESCE(symbol, '')), start_at, end_at, reason) DO NOTHING",
                row,
            )
            added += cur.rowcount
    return added


def open_gaps(conn: psycopg.Connection[Any], *, since: dt.datetime | None = None) -> list[GapRow]:
    """Gaps not healed yet (oldest first), optionally only those ending after ``since``."""
    rows = conn.execute(
        "SELECT id, symbol, start_at, end_at, reason FROM live_gaps"
        " WHERE healed_at IS NULL AND (%s::timestamptz IS NULL OR end_at > %s::timestamptz)"
        " ORDER BY start_at, id",
        (since, since),
    ).fetchall()
    return [GapRow(*r) for r in rows]


def mark_healed(conn: psycopg.Connection[Any], ids: Sequence[int]) -> None:
    """Record that these gaps were filled from REST."""
    conn.execute(
        "UPDATE live_gaps SET healed_at = now(), heal_error = NULL WHERE id = ANY(%s)", (list(ids),)
    )


def mark_failed(conn: psycopg.Connection[Any], gap_id: int, error: str) -> None:
    """Record why healing a gap failed (it stays open)."""
    conn.execute("UPDATE live_gaps SET heal_error = %s WHERE id = %s", (error[:500], gap_id))
