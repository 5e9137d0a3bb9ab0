"""PostgreSQL store: schema, connections and the fast upsert path for daily bars.

Prices are double precision (the old DECIMAL(10,2) rounded sub-penny prices). Upserts follow
the lake's rule: the newer ``ingested_at`` wins, except that ``live`` never replaces ``rest``.
All values travel as bound parameters or COPY data, never inside SQL text.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pyarrow as pa

from core.schemas import BRONZE_DAILY, SOURCE_RANK
from core.settings import ServiceSettings
from core.stores import pgcopy

SCHEMA_LOCK = 72_410_001
"""Advisory lock id serialising migrations across processes."""

DDL = (
    """
    CREATE TABLE IF NOT EXISTS raw_ohlcv (
        symbol text NOT NULL,
        date date NOT NULL,
        open double precision NOT NULL,
        high double precision NOT NULL,
        low double precision NOT NULL,
        close double precision NOT NULL,
        volume double precision NOT NULL,
        vwap double precision,
        transactions bigint,
        source text NOT NULL,
        ingested_at timestamptz NOT NULL,
        PRIMARY KEY (symbol, date)
    )
    """,
    "CREATE INDEX IF NOT EXISTS raw_ohlcv_date_idx ON raw_ohlcv (date)",
    """
    CREATE TABLE IF NOT EXISTS raw_ohlcv_archive (
        LIKE raw_ohlcv INCLUDING DEFAULTS,
        archived_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (symbol, date)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS retention_log (
        id bigserial PRIMARY KEY,
        run_at timestamptz NOT NULL DEFAULT now(),
        cutoff date NOT NULL,
        archived bigint NOT NULL,
        deleted bigint NOT NULL,
        batches integer NOT NULL,
        dry_run boolean NOT NULL DEFAULT false
    )
    """,
    # Added by batch.retention: per-run status, so an interrupted run is visible as 'running'.
    "ALTER TABLE retention_log ADD COLUMN IF NOT EXISTS run_id text",
    "ALTER TABLE retention_log ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'succeeded'",
    "ALTER TABLE retention_log ADD COLUMN IF NOT EXISTS finished_at timestamptz",
    "ALTER TABLE retention_log ADD COLUMN IF NOT EXISTS error text",
    "ALTER TABLE retention_log ADD COLUMN IF NOT EXISTS whole boolean NOT NULL DEFAULT true",
    """
    CREATE TABLE IF NOT EXISTS symbol_metadata (
        symbol text PRIMARY KEY,
        name text,
        type text,
        exchange text,
        active boolean NOT NULL,
        market_cap numeric,
        sic_code text,
        sic_description text,
        list_date date,
        delist_date date,
        first_seen timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ingest_sessions (
        session date PRIMARY KEY,
        status text NOT NULL CHECK (status IN ('pending', 'complete', 'empty', 'failed')),
        rows integer NOT NULL DEFAULT 0,
        quarantined integer NOT NULL DEFAULT 0,
        source text NOT NULL DEFAULT 'rest',
        fetched_at timestamptz,
        attempts integer NOT NULL DEFAULT 0,
        last_error text
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ingest_symbols (
        symbol text PRIMARY KEY,
        first_date date NOT NULL,
        last_date date NOT NULL,
        backfilled_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS batch_jobs (
        id bigserial PRIMARY KEY,
        run_id text NOT NULL,
        job text NOT NULL,
        status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
        started_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        duration_s double precision,
        counts jsonb NOT NULL DEFAULT '{}'::jsonb,
        error text
    )
    """,
    "CREATE INDEX IF NOT EXISTS batch_jobs_run_idx ON batch_jobs (run_id)",
    # Corporate actions as the vendor reports them (dataflows.corporate_actions); raw_ohlcv
    # stays unadjusted and readers adjust on read (core.adjustments).
    """
    CREATE TABLE IF NOT EXISTS splits (
        symbol text NOT NULL,
        execution_date date NOT NULL,
        split_from double precision NOT NULL CHECK (split_from > 0),
        split_to double precision NOT NULL CHECK (split_to > 0),
        adjustment_type text NOT NULL
            CHECK (adjustment_type IN ('forward_split', 'reverse_split', 'stock_dividend')),
        vendor_factor double precision,
        id text,
        ingested_at timestamptz NOT NULL,
        PRIMARY KEY (symbol, execution_date)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS dividends (
        symbol text NOT NULL,
        ex_dividend_date date NOT NULL,
        cash_amount double precision NOT NULL,
        currency text NOT NULL,
        distribution_type text NOT NULL CHECK (distribution_type IN
            ('recurring', 'special', 'supplemental', 'irregular', 'unknown')),
        pay_date date,
        record_date date,
        declaration_date date,
        frequency integer,
        vendor_factor double precision,
        id text,
        ingested_at timestamptz NOT NULL,
        PRIMARY KEY (symbol, ex_dividend_date, distribution_type)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS live_gaps (
        id bigserial PRIMARY KEY,
        symbol text,
        start_at timestamptz NOT NULL,
        end_at timestamptz NOT NULL,
        reason text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        healed_at timestamptz,
        heal_error text,
        CHECK (end_at > start_at)
    )
    """,
    """
    CREATE UNIQUE INDEX IF NOT EXISTS live_gaps_key
        ON live_gaps ((COALESCE(symbol, '')), start_at, end_at, reason)
    """,
    "CREATE INDEX IF NOT EXISTS live_gaps_open_idx ON live_gaps (start_at) WHERE healed_at IS NULL",
    # Minute history (dataflows.minute_history): one row per (session, symbol) fetched, and
    # symbol '*' once a whole-market session is complete.
    """
    CREATE TABLE IF NOT EXISTS ingest_minutes (
        session date NOT NULL,
        symbol text NOT NULL,
        status text NOT NULL CHECK (status IN ('complete', 'empty', 'failed')),
        rows integer NOT NULL DEFAULT 0,
        quarantined integer NOT NULL DEFAULT 0,
        fetched_at timestamptz,
        attempts integer NOT NULL DEFAULT 0,
        last_error text,
        PRIMARY KEY (session, symbol)
    )
    """,
    # Alerts (core.stores.alerts): rules per owner (an API key's id), and every event fired,
    # keyed by its deterministic id so a replay after a crash inserts nothing twice.
    """
    CREATE TABLE IF NOT EXISTS alert_rules (
        id text PRIMARY KEY,
        owner text NOT NULL,
        symbol text NOT NULL,
        timeframe text NOT NULL,
        kind text NOT NULL,
        params jsonb NOT NULL,
        cooldown integer NOT NULL DEFAULT 0 CHECK (cooldown >= 0),
        active boolean NOT NULL DEFAULT true,
        expires_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX IF NOT EXISTS alert_rules_owner_idx ON alert_rules (owner, created_at)",
    "CREATE INDEX IF NOT EXISTS alert_rules_updated_idx ON alert_rules (updated_at)",
    """
    CREATE TABLE IF NOT EXISTS alert_events (
        id text PRIMARY KEY,
        rule_id text NOT NULL REFERENCES alert_rules (id),
        owner text NOT NULL,
        symbol text NOT NULL,
        timeframe text NOT NULL,
        kind text NOT NULL,
        fired_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        event_at timestamptz NOT NULL,
        value double precision NOT NULL,
        message text NOT NULL,
        observation text NOT NULL,
        delivered_at timestamptz
    )
    """,
    "CREATE INDEX IF NOT EXISTS alert_events_owner_idx ON alert_events (owner, fired_at)",
    """
    CREATE INDEX IF NOT EXISTS alert_events_pending_idx ON alert_events (fired_at)
        WHERE delivered_at IS NULL
    """,
)

DAILY_COLUMNS = (
    "symbol", "date", "open", "high", "low", "close", "volume",
    "vwap", "transactions", "source", "ingested_at",
)  # fmt: skip


def _rank_sql(alias: str) -> str:
    """core.schemas.SOURCE_RANK as a SQL expression over ``alias.source`` (constants only)."""
    whens = " ".join(f"WHEN '{src}' THEN {rank}" for src, rank in SOURCE_RANK.items())
    return f"CASE {alias}.source {whens} ELSE -1 END"


def replaces_sql(new: str, old: str) -> str:
    """The lake's rule (core.precedence) as a SQL condition: row ``new`` replaces ``old``."""
    values = "{a}.close, {a}.open, {a}.high, {a}.low, {a}.volume, COALESCE({a}.vwap, '-Infinity'),"
    values += " COALESCE({a}.transactions::double precision, '-Infinity')"
    return (
        f"({new}.source = 'rest' AND {old}.source = 'live') "
        f"OR (NOT ({old}.source = 'rest' AND {new}.source = 'live') "
        f"AND ({new}.ingested_at, {_rank_sql(new)}, {values.format(a=new)}) "
        f">= ({old}.ingested_at, {_rank_sql(old)}, {values.format(a=old)}))"
    )


UPDATE_ALL = (
    "open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, "
    "volume = EXCLUDED.volume, vwap = EXCLUDED.vwap, transactions = EXCLUDED.transactions, "
    "source = EXCLUDED.source, ingested_at = EXCLUDED.ingested_at"
)
"""The SET list of an upsert that takes every value of the incoming row."""

_UPSERT = f"""
INSERT INTO raw_ohlcv AS t SELECT * FROM _stage_ohlcv ORDER BY symbol, date
ON CONFLICT (symbol, date) DO UPDATE SET {UPDATE_ALL}
WHERE {replaces_sql("EXCLUDED", "t")}
"""
"""The lake's rule (core.precedence) in SQL, so recent bars and history agree on every row:
``rest`` always beats ``live``; ``live`` never replaces ``rest``; otherwise the newer
``ingested_at`` wins, ties broken by source rank (rest > flatfile > export > live), then by the
larger close, open, high, low, volume, vwap, transactions."""


def database_url(settings: ServiceSettings | None = None) -> str:
    """``DATABASE_URL``, or the embedded server's URL when it is unset."""
    s = settings or ServiceSettings()
    if s.database_url is not None:
        return s.database_url.get_secret_value()
    from core.embedded import postgres_url

    return postgres_url(s.data_dir)


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A new connection; the caller closes it (use ``with``)."""
    return psycopg.connect(url, **kwargs)


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Create every table the project uses; safe to run concurrently and repeatedly."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for stmt in DDL:
            conn.execute(stmt)


def _copy_data(bars: pa.Table) -> memoryview:
    """``bars`` as binary COPY data in DAILY_COLUMNS order (floats bit-exact, no text to parse)."""
    cols = []
    for name in DAILY_COLUMNS:
        col, want = bars[name], BRONZE_DAILY.field(name).type
        cols.append(col if col.type == want else col.cast(want))
    return pgcopy.encode(pa.table(cols, names=list(DAILY_COLUMNS)))


_COLUMN_LIST = (
    "(symbol, date, open, high, low, close, volume, vwap, transactions, source, ingested_at)"
)
_COPY_DIRECT = "COPY raw_ohlcv " + _COLUMN_LIST + " FROM STDIN (FORMAT binary)"
_COPY_STAGE = "COPY _stage_ohlcv " + _COLUMN_LIST + " FROM STDIN (FORMAT binary)"
_COPY_STEP = 1 << 20


def _send(cur: psycopg.Cursor[Any], statement: str, data: memoryview) -> None:
    with cur.copy(statement) as copy:
        for i in range(0, len(data), _COPY_STEP):
            copy.write(data[i : i + _COPY_STEP])


def upsert_daily(conn: psycopg.Connection[Any], bars: pa.Table) -> int:
    """Upsert BRONZE_DAILY rows; returns rows written.

    First an optimistic binary COPY straight into raw_ohlcv inside a savepoint: new rows (a
    first replay, a new session) need nothing more, at a third of the upsert's cost. A key that
    is already there aborts it at that row, and the rows go through a staging table and the
    conflict rule instead (newer ``ingested_at`` wins; ``live`` never replaces ``rest``).

    The transaction commits without waiting for its WAL flush (``synchronous_commit = off``):
    a server crash may lose the last commits, but WAL is replayed in order, so it loses them
    together with every later commit, including the ledger's, which callers write only after
    this returns. Sessions whose rows were lost are then not complete in the ledger and are
    fetched again; nothing is marked done without its rows.
    """
    if bars.num_rows == 0:
        return 0
    data = _copy_data(bars)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL synchronous_commit = off")
        try:
            with conn.transaction():
                _send(cur, _COPY_DIRECT, data)
            return int(bars.num_rows)
        except psycopg.errors.UniqueViolation:
            pass  # some keys exist: take the conflict-aware path
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _stage_ohlcv (LIKE raw_ohlcv) ON COMMIT DELETE ROWS"
        )
        _send(cur, _COPY_STAGE, data)
        cur.execute(_UPSERT)
        return cur.rowcount


@contextmanager
def job_run(conn: psycopg.Connection[Any], run_id: str, job: str) -> Iterator[dict[str, Any]]:
    """Record one job in batch_jobs: running, then succeeded or failed with the error.

    The caller fills the yielded dict with counts; an exception is recorded and re-raised.
    """
    started = dt.datetime.now(dt.UTC)
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO batch_jobs (run_id, job, status, started_at) VALUES (%s, %s, 'running', %s)"
            " RETURNING id",
            (run_id, job, started),
        ).fetchone()
    assert row is not None
    counts: dict[str, Any] = {}
    try:
        yield counts
    except BaseException as exc:
        _finish(conn, row[0], started, "failed", counts, f"{type(exc).__name__}: {exc}")
        raise
    _finish(conn, row[0], started, "succeeded", counts, None)


def _finish(
    conn: psycopg.Connection[Any],
    job_id: int,
    started: dt.datetime,
    status: str,
    counts: dict[str, Any],
    error: str | None,
) -> None:
    finished = dt.datetime.now(dt.UTC)
    with conn.transaction():
        conn.execute(
            "UPDATE batch_jobs SET status = %s, finished_at = %s, duration_s = %s, counts = %s,"
            " error = %s WHERE id = %s",
            (
                status,
                finished,
                (finished - started).total_seconds(),
                json.dumps(counts, default=str),
                error,
                job_id,
            ),
        )
