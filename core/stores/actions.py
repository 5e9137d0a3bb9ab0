"""Postgres ``splits`` and ``dividends``: a fetched scope replaces what the table held for it.

A fetch covers a scope (some or all symbols, actions from a date on or all of them). Inside it
the table becomes exactly what the vendor now reports: new actions are inserted, changed ones
updated (their ``ingested_at`` moves), withdrawn ones deleted, unchanged ones left as they were
(so a rerun changes nothing), all in one transaction. Two exceptions keep a scope from lying:
an action whose vendor object was rejected (unreadable) is kept as held, not withdrawn; and an
action the vendor moved to another date (same id) leaves its old date even when that date is
outside the scope, so it is never held twice. Identifiers come from a fixed allow-list.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
import pyarrow as pa
from psycopg import sql

from core.schemas import DIVIDENDS, SPLITS


@dataclass(frozen=True)
class TableSpec:
    """One corporate-actions table: its name, schema, key and date column."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    date: str

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column, in schema order."""
        return tuple(self.schema.names)

    @property
    def values(self) -> tuple[str, ...]:
        """The columns that make an action what it is (not its key or ingestion time)."""
        return tuple(c for c in self.columns if c not in self.key and c != "ingested_at")


SPLITS_TABLE: Final = TableSpec("splits", SPLITS, ("symbol", "execution_date"), "execution_date")
DIVIDENDS_TABLE: Final = TableSpec(
    "dividends", DIVIDENDS, ("symbol", "ex_dividend_date", "distribution_type"), "ex_dividend_date"
)


@dataclass
class SyncResult:
    """What one sync did to a table; keys as (symbol, date[, type]) tuples."""

    table: str
    fetched: int = 0
    new: list[tuple[Any, ...]] = field(default_factory=list)
    changed: list[tuple[Any, ...]] = field(default_factory=list)
    withdrawn: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def unchanged(self) -> int:
        """Fetched rows that were already held as they are."""
        return self.fetched - len(self.new) - len(self.changed)

    def symbols_touched(self) -> set[str]:
        """Symbols with a new, changed or withdrawn action."""
        return {k[0] for k in (*self.new, *self.changed, *self.withdrawn)}

    def line(self) -> str:
        """One log line."""
        return (
            f"{self.table}: {self.fetched} fetched, {len(self.new)} new, {len(self.changed)} "
            f"changed, {len(self.withdrawn)} withdrawn, {self.unchanged} unchanged"
        )


def _scope(spec: TableSpec, alias: str) -> sql.Composed:
    t = sql.Identifier(alias)
    return sql.SQL(
        "(%(symbols)s::text[] IS NULL OR {t}.symbol = ANY(%(symbols)s::text[]))"
        " AND (%(since)s::date IS NULL OR {t}.{d} >= %(since)s::date)"
    ).format(t=t, d=sql.Identifier(spec.date))


def sync(
    conn: psycopg.Connection[Any],
    spec: TableSpec,
    rows: Sequence[Mapping[str, Any]],
    *,
    symbols: Sequence[str] | None,
    since: dt.date | None,
    kept: Sequence[Mapping[str, Any]] = (),
) -> SyncResult:
    """Make ``spec``'s rows inside the scope (``symbols``, ``since``) equal ``rows``.

    ``rows`` must lie inside the scope (the fetch asked for exactly it). ``kept``: the key
    columns and ``id`` of objects the vendor sent but that were rejected; held rows matching
    one (whole key or id) stay. A held row whose ``id`` comes back under another key is
    withdrawn wherever it is.
    """
    result = SyncResult(spec.name, fetched=len(rows))
    table = sql.Identifier(spec.name)
    stage = sql.Identifier(f"_stage_{spec.name}")
    keep = sql.Identifier(f"_keep_{spec.name}")
    cols = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
    key_match = sql.SQL(" AND ").join(
        sql.SQL("s.{c} = t.{c}").format(c=sql.Identifier(c)) for c in spec.key
    )
    keep_match = sql.SQL(" AND ").join(
        sql.SQL("k.{c} = t.{c}").format(c=sql.Identifier(c)) for c in spec.key
    )
    keep_cols = sql.SQL(", ").join(map(sql.Identifier, (*spec.key, "id")))
    old_values = sql.SQL(", ").join(
        sql.SQL("t.{c}").format(c=sql.Identifier(c)) for c in spec.values
    )
    new_values = sql.SQL(", ").join(
        sql.SQL("EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in spec.values
    )
    updates = sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
        for c in (*spec.values, "ingested_at")
    )
    params = {"symbols": list(symbols) if symbols is not None else None, "since": since}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {s} (LIKE {t}) ON COMMIT DROP").format(s=stage, t=table)
        )
        with cur.copy(sql.SQL("COPY {s} ({c}) FROM STDIN").format(s=stage, c=cols)) as copy:
            for r in rows:
                copy.write_row([r[c] for c in spec.columns])
        cur.execute(
            sql.SQL(
                "CREATE TEMP TABLE {k} ON COMMIT DROP AS SELECT {kc} FROM {t} WITH NO DATA"
            ).format(k=keep, kc=keep_cols, t=table)
        )
        with cur.copy(sql.SQL("COPY {k} ({kc}) FROM STDIN").format(k=keep, kc=keep_cols)) as copy:
            for m in kept:
                copy.write_row([m.get(c) for c in (*spec.key, "id")])
        cur.execute(
            sql.SQL(
                "DELETE FROM {t} AS t WHERE NOT EXISTS (SELECT 1 FROM {s} AS s WHERE {match})"
                " AND (({scope} AND NOT EXISTS"
                " (SELECT 1 FROM {k} AS k WHERE ({kmatch}) OR k.id = t.id))"
                " OR EXISTS (SELECT 1 FROM {s} AS s WHERE s.id = t.id))"
                " RETURNING {key}"
            ).format(
                t=table,
                scope=_scope(spec, "t"),
                s=stage,
                match=key_match,
                k=keep,
                kmatch=keep_match,
                key=key,
            ),
            params,
        )
        result.withdrawn = sorted(tuple(r) for r in cur.fetchall())
        cur.execute(
            sql.SQL(
                "INSERT INTO {t} AS t ({c}) SELECT {c} FROM {s} ORDER BY {key}"
                " ON CONFLICT ({key}) DO UPDATE SET {updates}"
                " WHERE ({old}) IS DISTINCT FROM ({new})"
                " RETURNING (xmax = 0), {key}"
            ).format(
                t=table, c=cols, s=stage, key=key, updates=updates, old=old_values, new=new_values
            )
        )
        for inserted, *k in cur.fetchall():
            (result.new if inserted else result.changed).append(tuple(k))
    result.new.sort()
    result.changed.sort()
    return result


def read_all(conn: psycopg.Connection[Any], spec: TableSpec) -> pa.Table:
    """The whole table as its lake schema, sorted by key (deterministic lake bytes)."""
    cols = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
    query = sql.SQL("SELECT {c} FROM {t} ORDER BY {k}").format(
        c=cols, t=sql.Identifier(spec.name), k=key
    )
    rows = conn.execute(query).fetchall()
    data = {c: [r[i] for r in rows] for i, c in enumerate(spec.columns)}
    return pa.table(data, schema=spec.schema)
