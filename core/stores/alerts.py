"""``alert_rules`` and ``alert_events``: rules per owner, and every event fired, once.

An event's primary key is its deterministic id (:func:`core.alerts.event_id`), so inserting the
same event again (a replay after recovery, a rerun of the pipeline) changes nothing. Delivery
follows the insert: ``delivered_at`` stays NULL until the event went out, so a crash between
the two leaves it pending and the next run delivers it (:func:`pending`).

Deleting a rule deactivates it (``active`` false): its events stay readable.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from core.alerts import AlertEvent, Rule

RULE_COLUMNS: Final = (
    "id, owner, symbol, timeframe, kind, params, cooldown, active, expires_at, created_at"
)
EVENT_COLUMNS: Final = (
    "id, rule_id, owner, symbol, timeframe, kind, fired_at, event_at, value, message, delivered_at"
)


def _ms(t: dt.datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)


def to_rule(row: Mapping[str, Any]) -> Rule:
    """A stored row as the engine's rule."""
    return Rule(
        id=row["id"],
        owner=row["owner"],
        symbol=row["symbol"],
        timeframe=row["timeframe"],
        kind=row["kind"],
        params=dict(row["params"]),
        cooldown_s=int(row["cooldown"]),
        created_ms=_ms(row["created_at"]) or 0,
        expires_ms=_ms(row["expires_at"]),
        active=bool(row["active"]),
    )


@dataclass(frozen=True)
class NewRule:
    """A validated rule to store."""

    owner: str
    symbol: str
    timeframe: str
    kind: str
    params: Mapping[str, Any]
    cooldown: int = 0
    expires_at: dt.datetime | None = None


def create_rule(conn: psycopg.Connection[Any], rule: NewRule) -> dict[str, Any]:
    """Store ``rule``; the stored row."""
    rule_id = "rule_" + uuid.uuid4().hex
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO alert_rules (id, owner, symbol, timeframe, kind, params, cooldown,"
            " expires_at, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp(), clock_timestamp())"
            " RETURNING " + RULE_COLUMNS,
            (
                rule_id, rule.owner, rule.symbol, rule.timeframe, rule.kind,
                json.dumps(dict(rule.params)), rule.cooldown, rule.expires_at,
            ),
        )  # fmt: skip
        row = cur.fetchone()
    assert row is not None
    return row


def owner_rules(conn: psycopg.Connection[Any], owner: str) -> list[dict[str, Any]]:
    """The owner's active rules, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT " + RULE_COLUMNS + " FROM alert_rules WHERE owner = %s AND active"
            " ORDER BY created_at, id",
            (owner,),
        )
        return cur.fetchall()


def deactivate(conn: psycopg.Connection[Any], owner: str, rule_id: str) -> bool:
    """Deactivate the owner's rule; False when the owner has no such active rule."""
    cur = conn.execute(
        "UPDATE alert_rules SET active = false, updated_at = clock_timestamp()"
        " WHERE id = %s AND owner = %s AND active",
        (rule_id, owner),
    )
    return cur.rowcount == 1


def active_rules(
    conn: psycopg.Connection[Any],
    *,
    timeframes: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
) -> list[Rule]:
    """Active rules, of these timeframes or ids; expired ones too (stopped in event time)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT " + RULE_COLUMNS + " FROM alert_rules WHERE active"
            " AND (%s::text[] IS NULL OR timeframe = ANY(%s::text[]))"
            " AND (%s::text[] IS NULL OR id = ANY(%s::text[])) ORDER BY id",
            (timeframes, timeframes, ids, ids),
        )
        return [to_rule(r) for r in cur.fetchall()]


def rules_version(conn: psycopg.Connection[Any]) -> tuple[int, dt.datetime | None]:
    """(rule count, newest change): changes when any rule is added or deactivated."""
    row = conn.execute("SELECT count(*), max(updated_at) FROM alert_rules").fetchone()
    assert row is not None
    return int(row[0]), row[1]


def insert_events(conn: psycopg.Connection[Any], events: Iterable[AlertEvent]) -> list[str]:
    """Store events, skipping ids already stored; the ids still waiting for delivery.

    One statement (one round trip, and on an autocommit connection one commit): the live flow
    stores every batch's events before the batch returns.
    """
    rows = [
        (e.id, e.rule_id, e.owner, e.symbol, e.timeframe, e.kind, _utc(e.event_ms), e.value,
         e.message, e.observation)
        for e in events
    ]  # fmt: skip
    if not rows:
        return []
    columns = [list(c) for c in zip(*rows, strict=True)]
    found = conn.execute(
        "WITH new AS (INSERT INTO alert_events (id, rule_id, owner, symbol, timeframe, kind,"
        " event_at, value, message, observation) SELECT * FROM unnest(%s::text[], %s::text[],"
        " %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],"
        " %s::double precision[], %s::text[], %s::text[]) ON CONFLICT (id) DO NOTHING"
        " RETURNING id)"
        " SELECT id FROM new UNION"
        " SELECT id FROM alert_events WHERE id = ANY(%s) AND delivered_at IS NULL",
        (*columns, columns[0]),
    ).fetchall()
    return [str(r[0]) for r in found]


def mark_delivered(conn: psycopg.Connection[Any], ids: Sequence[str]) -> None:
    """Record that these events went out."""
    if ids:
        conn.execute(
            "UPDATE alert_events SET delivered_at = clock_timestamp()"
            " WHERE id = ANY(%s) AND delivered_at IS NULL",
            (list(ids),),
        )


def pending(conn: psycopg.Connection[Any], *, limit: int = 1000) -> list[AlertEvent]:
    """Stored events not delivered yet, oldest first (left behind by a crash)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, rule_id, owner, symbol, timeframe, kind, event_at, value, message,"
            " observation FROM alert_events WHERE delivered_at IS NULL"
            " ORDER BY fired_at, id LIMIT %s",
            (limit,),
        )
        return [
            AlertEvent(
                id=r["id"], rule_id=r["rule_id"], owner=r["owner"], symbol=r["symbol"],
                timeframe=r["timeframe"], kind=r["kind"], event_ms=_ms(r["event_at"]) or 0,
                value=r["value"], message=r["message"], observation=r["observation"],
            )
            for r in cur.fetchall()
        ]  # fmt: skip


def owner_events(
    conn: psycopg.Connection[Any], owner: str, since: dt.datetime | None, limit: int
) -> list[dict[str, Any]]:
    """The owner's events fired after ``since`` (all when None), oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT " + EVENT_COLUMNS + " FROM alert_events WHERE owner = %s"
            " AND (%s::timestamptz IS NULL OR fired_at > %s::timestamptz)"
            " ORDER BY fired_at, id LIMIT %s",
            (owner, since, since, limit),
        )
        return cur.fetchall()
