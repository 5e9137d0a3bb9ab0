"""Retention: keep raw_ohlcv to its cache window and move older rows to raw_ohlcv_archive.

raw_ohlcv serves fast recent queries, so it holds only the last five years and one month
(``CACHE_WINDOW_DAYS``). Each batch is one transaction that copies a set of keys into the
archive (a key archived before keeps whichever row wins under the lake's precedence rule, so a
newer value in raw_ohlcv is never dropped) and deletes exactly those keys, so a crash at any
point leaves every row in one of the two tables and a rerun picks up where it stopped. The run's counts are updated in ``retention_log`` inside the same
transactions, so the log never disagrees with the data. Plain PostgreSQL, no extensions.

Usage: ``python -m batch.retention [--keep-days N] [--batch-size N] [--dry-run]``
(needs ``DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql
from tqdm import tqdm

from batch.engine import common
from core import calendar
from core.settings import CACHE_WINDOW_DAYS, BatchSettings
from core.sharding import Shard
from core.stores import postgres

log = logging.getLogger("batch.retention")

RETENTION_LOCK = 72_410_002
"""Advisory lock id: one retention run at a time per database."""
DEFAULT_BATCH = 50_000
WHOLE_DATABASE = Shard()
"""The default shard: every symbol."""
_COLS = postgres.DAILY_COLUMNS


class RetentionError(RuntimeError):
    """Retention cannot run (no database, lock held, bad arguments)."""


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one run did (or, with ``dry_run``, would do)."""

    cutoff: dt.date
    candidates: int
    archived: int
    deleted: int
    batches: int
    already_archived: int
    dry_run: bool

    @property
    def ok(self) -> bool:
        """True when every row found older than the cutoff left raw_ohlcv (or a dry run)."""
        return self.dry_run or self.deleted >= self.candidates

    def summary(self) -> str:
        """One line for logs and the console."""
        verb = "would move" if self.dry_run else "moved"
        return (
            f"{'[dry run] ' if self.dry_run else ''}retention cutoff {self.cutoff}: {verb} "
            f"{self.candidates} rows ({self.already_archived} already archived); archived "
            f"{self.archived}, deleted {self.deleted} in {self.batches} batches"
        )

    def counts(self) -> dict[str, Any]:
        """JSON-friendly counts for batch_jobs."""
        return {
            k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in asdict(self).items()
        }


def cutoff_for(today: dt.date, keep_days: int = CACHE_WINDOW_DAYS) -> dt.date:
    """First date kept: rows dated before it leave raw_ohlcv."""
    if keep_days < 1:
        msg = f"keep-days must be at least 1, got {keep_days}"
        raise RetentionError(msg)
    return today - dt.timedelta(days=keep_days)


def today_new_york(now: dt.datetime | None = None) -> dt.date:
    """The exchange's calendar date, so the cutoff does not move at UTC midnight."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(calendar.NEW_YORK).date()


def _where(filtered: bool) -> sql.Composable:
    """Rows to move (alias ``r``): older than the cutoff, optionally only some symbols."""
    base = sql.SQL("r.date < %s")
    return base + sql.SQL(" AND r.symbol = ANY(%s)") if filtered else base


def _batch_sql(where: sql.Composable) -> sql.Composed:
    """One batch: lock the next N old keys after a (symbol, date) cursor, archive, delete them.

    Walking the primary key from a cursor reads each index entry once per run; restarting
    from the oldest date every batch would rescan the entries earlier batches deleted.
    """
    cols = sql.SQL(", ").join(map(sql.Identifier, _COLS))
    return sql.SQL(
        """
        WITH victims AS MATERIALIZED (
            SELECT {cols} FROM raw_ohlcv r
            WHERE {where} AND (r.symbol, r.date) > (%s, %s)
            ORDER BY r.symbol, r.date LIMIT %s FOR UPDATE
        ), moved AS (
            INSERT INTO raw_ohlcv_archive AS t ({cols}) SELECT {cols} FROM victims
            ON CONFLICT (symbol, date) DO UPDATE SET {update} WHERE {replaces} RETURNING 1
        ), gone AS (
            DELETE FROM raw_ohlcv d USING victims v
            WHERE d.symbol = v.symbol AND d.date = v.date RETURNING 1
        ), last AS (
            SELECT symbol, date FROM victims ORDER BY symbol DESC, date DESC LIMIT 1
        )
        SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM gone),
               (SELECT symbol FROM last), (SELECT date FROM last)
        """
    ).format(
        cols=cols,
        where=where,
        update=sql.SQL(postgres.UPDATE_ALL),  # constant text, no input in it
        replaces=sql.SQL(postgres.replaces_sql("EXCLUDED", "t")),
    )


def _count_sql(where: sql.Composable) -> sql.Composed:
    return sql.SQL(
        "SELECT count(*), count(a.symbol) FROM raw_ohlcv r"
        " LEFT JOIN raw_ohlcv_archive a ON a.symbol = r.symbol AND a.date = r.date WHERE {}"
    ).format(where)


def _acquire_lock(conn: psycopg.Connection[Any], wait_s: float) -> None:
    """Hold the retention lock for this session, waiting a little for a dying predecessor."""
    deadline = time.monotonic() + wait_s
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (RETENTION_LOCK,)).fetchone()
        if row and row[0]:
            return
        if time.monotonic() >= deadline:
            msg = f"another retention run holds the lock (waited {wait_s:.0f}s)"
            raise RetentionError(msg)
        time.sleep(0.5)


def _symbols_in_scope(
    conn: psycopg.Connection[Any], cutoff: dt.date, symbols: Sequence[str] | None, shard: Shard
) -> list[str] | None:
    """None means every symbol (no filter); otherwise the explicit list to move."""
    if symbols is None and shard.count == 1:
        return None
    if symbols is None:
        rows = conn.execute(
            "SELECT DISTINCT symbol FROM raw_ohlcv WHERE date < %s", (cutoff,)
        ).fetchall()
        symbols = [r[0] for r in rows]
    return shard.select(sorted(symbols))


def run(
    url: str,
    *,
    cutoff: dt.date,
    batch_size: int = DEFAULT_BATCH,
    symbols: Sequence[str] | None = None,
    shard: Shard = WHOLE_DATABASE,
    dry_run: bool = False,
    run_id: str | None = None,
    lock_wait_s: float = 30.0,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> RetentionReport:
    """Move rows dated before ``cutoff`` to the archive in batches of ``batch_size`` keys."""
    if batch_size < 1:
        msg = f"batch-size must be at least 1, got {batch_size}"
        raise RetentionError(msg)
    run_id = run_id or uuid.uuid4().hex
    with postgres.connect(url, autocommit=True, application_name="condvest-retention") as conn:
        postgres.migrate(conn)
        _acquire_lock(conn, lock_wait_s)
        # holding the lock, no other run is alive: a row still 'running' is a killed run's
        conn.execute(
            "UPDATE retention_log SET status = 'abandoned', finished_at = now(),"
            " error = 'stopped before it finished (killed?)' WHERE status = 'running'"
        )
        chosen = _symbols_in_scope(conn, cutoff, symbols, shard)
        where = _where(chosen is not None)
        params: tuple[Any, ...] = (cutoff,) if chosen is None else (cutoff, chosen)
        counted = conn.execute(_count_sql(where), params).fetchone()
        candidates, already = (int(counted[0]), int(counted[1])) if counted else (0, 0)
        log.info(
            "cutoff %s: %d rows to move (%d already archived)%s",
            cutoff, candidates, already, " [dry run]" if dry_run else "",
        )  # fmt: skip
        if on_start is not None:
            on_start(candidates)
        log_id = _log_start(conn, run_id, cutoff, dry_run, whole=chosen is None)
        archived = deleted = batches = 0
        try:
            if not dry_run:
                stmt = _batch_sql(where)
                cursor: tuple[str, dt.date] = ("", dt.date.min)
                while True:
                    with conn.transaction():
                        row = conn.execute(stmt, (*params, *cursor, batch_size)).fetchone()
                        if row is None or row[2] is None:
                            break
                        moved, gone = int(row[0]), int(row[1])
                        cursor = (row[2], row[3])
                        batches += 1
                        archived += moved
                        deleted += gone
                        _log_progress(conn, log_id, archived, deleted, batches)
                    if on_batch is not None:
                        on_batch(gone)
        except BaseException as exc:
            _log_finish(conn, log_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        _log_finish(conn, log_id, "succeeded", None)
    return RetentionReport(cutoff, candidates, archived, deleted, batches, already, dry_run)


def _log_start(
    conn: psycopg.Connection[Any], run_id: str, cutoff: dt.date, dry_run: bool, *, whole: bool
) -> int:
    row = conn.execute(
        "INSERT INTO retention_log"
        " (run_id, cutoff, archived, deleted, batches, dry_run, status, whole)"
        " VALUES (%s, %s, 0, 0, 0, %s, 'running', %s) RETURNING id",
        (run_id, cutoff, dry_run, whole),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _log_progress(
    conn: psycopg.Connection[Any], log_id: int, archived: int, deleted: int, batches: int
) -> None:
    conn.execute(
        "UPDATE retention_log SET archived = %s, deleted = %s, batches = %s WHERE id = %s",
        (archived, deleted, batches, log_id),
    )


def _log_finish(conn: psycopg.Connection[Any], log_id: int, status: str, error: str | None) -> None:
    if conn.closed or conn.broken:
        return
    conn.execute(
        "UPDATE retention_log SET status = %s, error = %s, finished_at = now() WHERE id = %s",
        (status, error, log_id),
    )


def last_success(url: str) -> dt.datetime | None:
    """When the last real retention run over the whole database succeeded; None if never.

    Dry runs and runs limited to symbols or a shard do not count.
    """
    with postgres.connect(url, autocommit=True) as conn:
        postgres.migrate(conn)
        row = conn.execute(
            "SELECT max(coalesce(finished_at, run_at)) FROM retention_log"
            " WHERE status = 'succeeded' AND NOT dry_run AND whole"
        ).fetchone()
    return row[0] if row else None


def require_database(settings: BatchSettings | None = None) -> str:
    """``DATABASE_URL``, or a clear error: retention has nothing to do without Postgres."""
    s = settings or BatchSettings()
    if s.database_url is None:
        msg = "retention needs DATABASE_URL (the PostgreSQL holding raw_ohlcv); it is not set"
        raise RetentionError(msg)
    return s.database_url.get_secret_value()


def build_parser() -> argparse.ArgumentParser:
    """The command line: the common job options plus the retention knobs."""
    p = common.parser(
        "retention", "Move raw_ohlcv rows older than the cache window to the archive."
    )
    p.add_argument(
        "--keep-days",
        type=int,
        default=None,
        help=f"days raw_ohlcv keeps (default: $CACHE_WINDOW_DAYS or {CACHE_WINDOW_DAYS}, "
        "five years and one month)",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="keys per transaction")
    p.add_argument(
        "--as-of",
        type=dt.date.fromisoformat,
        default=None,
        metavar="YYYY-MM-DD",
        help="count the window back from this date (default: today in New York)",
    )
    return p


@contextmanager
def _progress(enabled: bool) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """(on_start, on_batch) callbacks driving a progress bar on stderr when ``enabled``."""
    bar = tqdm(desc="retention", unit="row", disable=not enabled, leave=False)

    def start(total: int) -> None:
        bar.reset(total=total)

    def tick(rows: int) -> None:
        bar.update(rows)
        log.debug("batch committed: %d rows", rows)

    try:
        yield start, tick
    finally:
        bar.close()


@common.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    """Run retention once; exit 0 only when every batch committed."""
    args = common.parse(build_parser(), argv)
    settings = BatchSettings()
    url = require_database(settings)
    ns = args.extra
    keep = ns.keep_days if ns.keep_days is not None else settings.cache_window_days
    cutoff = cutoff_for(ns.as_of or today_new_york(), keep)
    with common.recorded("retention") as counts:
        with _progress(args.progress) as (start, tick):
            report = run(
                url,
                cutoff=cutoff,
                batch_size=ns.batch_size,
                symbols=args.symbols,
                shard=args.shard,
                dry_run=args.dry_run,
                on_start=start,
                on_batch=tick,
            )
        counts.update(report.counts())
        print(report.summary())
        if not report.ok:
            msg = f"{report.candidates - report.deleted} old rows are still in raw_ohlcv"
            raise RuntimeError(msg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(None))
