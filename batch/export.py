"""Export Postgres daily bars (raw_ohlcv and raw_ohlcv_archive) into the lake's bronze.

For users migrating an existing database: ``python -m batch.export`` writes every symbol's rows
as one bronze fragment (``range={FIRST}_{LAST}.parquet``, or ``date=`` for a single session),
conformed to ``BRONZE_DAILY``, which ``batch.consolidate`` then merges like any other input.

Rules that keep the lake's precedence honest:
- ``ingested_at`` is the database's, so an exported row never beats a newer ``rest`` row in
  the lake (and loses ties to it, by source rank); ``source`` becomes ``export``, except that
  ``live`` rows stay ``live`` so they still never replace a ``rest`` row.
- a key in both tables (archived, then written again) is exported once: of its valid copies,
  the row that wins under the lake's rule (:mod:`core.precedence`: newer ``ingested_at``;
  ``live`` never over ``rest``; ties by source rank, then values), so the database's ``rest``
  beats its ``export`` at an equal ``ingested_at``. Invalid copies go to quarantine, filed under
  their earliest date.
- a database of the design we replace (DECIMAL prices, no ``vwap``/``transactions``/``source``/
  ``ingested_at`` columns, no archive) exports too: see :func:`sources`.
- if the fragment's key already exists (say a backfill wrote the same range), the two are
  merged under the same rules rather than overwritten, so nothing in the lake is lost.

Reads are keyset-paginated by (symbol, date) per symbol (``--page-size`` rows a query, each an
index range scan), symbols in a fixed order. Progress is checkpointed in the lake
(``processing_metadata/export_checkpoint.json``, one per ``--shard``) after each chunk of
symbols, so a killed run resumes after the last chunk it finished; writes are deterministic
per symbol, so redoing a chunk writes the same files again, never duplicates. Transient
Postgres and lake errors are retried with backoff; a symbol that still fails makes the run
exit non-zero and the next run starts from it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from tqdm import tqdm

from batch.engine import common, retry
from core import layout, precedence, quarantine
from core.lake import Lake, LakeError
from core.schemas import BRONZE_DAILY, SOURCE_RANK, conform
from core.settings import BatchSettings
from core.sharding import Shard
from core.stores import postgres
from core.validation import check_daily

log = logging.getLogger("batch.export")

WHOLE_DATABASE: Final = Shard()
"""The default shard: every symbol."""
TABLES: Final = ("raw_ohlcv", "raw_ohlcv_archive")
"""Where rows come from."""
DEFAULT_PAGE: Final = 20_000
DEFAULT_CHUNK: Final = 64
TRANSIENT: Final = (psycopg.OperationalError, LakeError, OSError)
"""Errors worth another attempt: lost connections, throttling, network failures."""
_COLS: Final = postgres.DAILY_COLUMNS
_TYPES: Final = {
    "symbol": "text", "date": "date", "open": "double precision", "high": "double precision",
    "low": "double precision", "close": "double precision", "volume": "double precision",
    "vwap": "double precision", "transactions": "bigint", "source": "text",
    "ingested_at": "timestamptz",
}  # fmt: skip
REQUIRED: Final = ("symbol", "date", "open", "high", "low", "close", "volume")
LEGACY_INGESTED_AT: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
"""``ingested_at`` of rows from a table without one: older than anything, so lake rows win."""
_CHECKPOINT_VERSION: Final = 1


class ExportError(RuntimeError):
    """The export cannot run (no database, bad arguments)."""


@dataclass
class ExportReport:
    """What one export run did (or, with ``dry_run``, would do)."""

    symbols: int = 0
    skipped: int = 0
    exported: int = 0
    rows: int = 0
    files: int = 0
    merged_existing: int = 0
    quarantined: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    resumed_after: str | None = None
    complete: bool = False
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no symbol failed."""
        return not self.failed

    def summary(self) -> str:
        """One line for logs and the console."""
        rate = self.rows / self.seconds if self.seconds else 0.0
        resumed = f" (resumed after {self.resumed_after})" if self.resumed_after else ""
        verb = "would export" if self.dry_run else "exported"
        return (
            f"{'[dry run] ' if self.dry_run else ''}{self.symbols} symbols in scope{resumed}, "
            f"{self.skipped} done before; {verb} {self.exported} symbols, {self.rows} rows in "
            f"{self.files} files ({self.merged_existing} merged with an existing fragment), "
            f"{self.quarantined} rows quarantined; "
            f"{len(self.failed)} failed, {self.seconds:.2f}s ({rate:.0f} rows/s)"
        )

    def counts(self) -> dict[str, Any]:
        """JSON-friendly counts for batch_jobs."""
        return {
            "symbols": self.symbols,
            "skipped": self.skipped,
            "exported": self.exported,
            "rows": self.rows,
            "files": self.files,
            "quarantined": self.quarantined,
            "failed": len(self.failed),
            "complete": self.complete,
        }


# -- pure logic ------------------------------------------------------------------------------
def checkpoint_key(shard: Shard, symbols: Sequence[str] | None = None) -> str:
    """The checkpoint of one shard (the whole database has the plain name).

    A run limited to ``--symbols`` keeps its own, so it never overwrites the progress of an
    interrupted run over everything.
    """
    name = "export_checkpoint"
    if shard.count != 1:
        name += f"_{shard.index}of{shard.count}"
    if symbols is not None:
        name += f"_symbols-{scope_id(symbols, shard)}"
    return f"{layout.META}/{name}.json"


def scope_id(symbols: Sequence[str] | None, shard: Shard) -> str:
    """A fingerprint of what a run covers; a checkpoint of another scope is not resumed."""
    text = json.dumps({"symbols": sorted(symbols) if symbols is not None else None,
                       "shard": [shard.index, shard.count]})  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pending(symbols: Sequence[str], after: str | None) -> list[str]:
    """Symbols still to export: those after the checkpoint's last one, in sorted order."""
    ordered = sorted(symbols)
    return ordered if after is None else [s for s in ordered if s > after]


def to_bronze(rows: Sequence[tuple[Any, ...]]) -> pa.Table:
    """Database rows as ``BRONZE_DAILY``, keeping their sources for the lake's precedence.

    An unknown source reads as ``export``.
    """
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in _COLS]
    data = {name: list(values) for name, values in zip(_COLS, cols, strict=True)}
    data["source"] = [s if s in SOURCE_RANK else "export" for s in data["source"]]
    data["ingested_at"] = [t.astimezone(dt.UTC) for t in data["ingested_at"]]
    return pa.Table.from_pydict(data, schema=BRONZE_DAILY)


def exported(valid: pa.Table) -> pa.Table:
    """One row per date: the winner under the lake's rule (:mod:`core.precedence`).

    ``source`` becomes ``export``, except ``live``, which so still never replaces ``rest``.
    """
    if valid.num_rows == 0:
        return valid
    kept = precedence.merge(valid)
    source = pc.if_else(pc.equal(kept["source"], "live"), "live", "export")
    at = kept.schema.get_field_index("source")
    return kept.set_column(at, BRONZE_DAILY.field("source"), source)


def fragment_for(symbol: str, table: pa.Table) -> str:
    """``range=`` for several sessions, ``date=`` for one (the contract's naming)."""
    first = table["date"][0].as_py()
    last = table["date"][-1].as_py()
    if first == last:
        return layout.daily_fragment(symbol, first)
    return layout.range_fragment(symbol, first, last)


# -- I/O -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Source:
    """A table to export and the select list that reads it as :data:`postgres.DAILY_COLUMNS`."""

    table: str
    select: sql.Composable


def sources(conn: psycopg.Connection[Any]) -> list[Source]:
    """The tables present, each read with casts to our types.

    A database of the design we replace may have DECIMAL prices, no ``vwap``/``transactions``,
    no ``source`` or ``ingested_at``, and no archive: prices are cast to double precision,
    missing optional columns are NULL, a missing ``source`` is ``export`` and a missing
    ``ingested_at`` is :data:`LEGACY_INGESTED_AT`.
    """
    out = []
    for table in TABLES:
        present = {
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute"
                " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (table,),
            )
        }
        if not present:
            log.info("no table %s in the database: skipped", table)
            continue
        if missing := [c for c in REQUIRED if c not in present]:
            msg = f"{table} lacks the columns {missing}; cannot export it"
            raise ExportError(msg)
        exprs: list[sql.Composable] = []
        for name in _COLS:
            kind = sql.SQL(_TYPES[name])  # a constant of this module, never input
            if name in present:
                exprs.append(sql.SQL("CAST({} AS {})").format(sql.Identifier(name), kind))
            elif name == "source":
                exprs.append(sql.Literal("export"))
            elif name == "ingested_at":
                exprs.append(
                    sql.SQL("CAST({} AS {})").format(sql.Literal(LEGACY_INGESTED_AT), kind)
                )
            else:
                exprs.append(sql.SQL("CAST(NULL AS {})").format(kind))
        out.append(Source(table, sql.SQL(", ").join(exprs)))
    if not out:
        msg = f"none of {', '.join(TABLES)} exists in the database (check DATABASE_URL)"
        raise ExportError(msg)
    return out


def list_symbols(conn: psycopg.Connection[Any], tables: Sequence[Source]) -> list[str]:
    """Every symbol in the tables, by a loose index scan (one index probe per symbol)."""
    out: set[str] = set()
    for src in tables:
        stmt = sql.SQL(
            """
            WITH RECURSIVE s(symbol) AS (
                (SELECT symbol FROM {t} ORDER BY symbol LIMIT 1)
                UNION ALL
                SELECT (SELECT symbol FROM {t} WHERE symbol > s.symbol ORDER BY symbol LIMIT 1)
                FROM s WHERE s.symbol IS NOT NULL
            )
            SELECT symbol FROM s WHERE symbol IS NOT NULL
            """
        ).format(t=sql.Identifier(src.table))
        out.update(str(r[0]) for r in conn.execute(stmt))
    return sorted(out)


def read_symbol(
    conn: psycopg.Connection[Any], symbol: str, page_size: int, tables: Sequence[Source]
) -> list[tuple[Any, ...]]:
    """All rows of one symbol from the tables (a date may come twice); keyset pages."""
    per_table: list[list[tuple[Any, ...]]] = []
    for src in tables:
        stmt = sql.SQL(
            "SELECT {cols} FROM {t} WHERE symbol = %s AND date > %s ORDER BY date LIMIT %s"
        ).format(cols=src.select, t=sql.Identifier(src.table))
        rows: list[tuple[Any, ...]] = []
        after = dt.date.min
        while True:
            page = conn.execute(stmt, (symbol, after, page_size)).fetchall()
            rows.extend(page)
            if len(page) < page_size:
                break
            after = page[-1][1]
        per_table.append(rows)
    return [row for rows in per_table for row in rows]


def write_symbol(lake: Lake, symbol: str, table: pa.Table) -> tuple[str, bool]:
    """Write one symbol's fragment; merge with a fragment already at that key. (key, merged)."""
    key = fragment_for(symbol, table)
    merged = False
    if lake.exists(key):
        existing = conform(lake.read_table(key), BRONZE_DAILY)
        if existing.equals(table):
            return key, False  # written by an earlier, interrupted run: nothing to redo
        table = precedence.merge(pa.concat_tables([existing, table]))
        merged = True
    lake.write_table(key, table)
    return key, merged


@dataclass(slots=True)
class _Done:
    symbol: str
    rows: int = 0
    key: str | None = None
    merged: bool = False
    quarantined: int = 0
    error: str | None = None


class _Connections:
    """One Postgres connection per worker thread, replaced after a connection error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def get(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = postgres.connect(self.url, autocommit=True, application_name="condvest-export")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def drop(self, _: BaseException | None = None) -> None:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and not conn.closed:
            conn.close()

    def close_all(self) -> None:
        with self._lock:
            for conn in self._all:
                if not conn.closed:
                    conn.close()
            self._all.clear()


@dataclass(frozen=True, slots=True)
class Options:
    """Knobs of one run."""

    page_size: int = DEFAULT_PAGE
    chunk: int = DEFAULT_CHUNK
    workers: int = 4
    backoff: retry.Backoff = field(default_factory=retry.Backoff)
    dry_run: bool = False
    restart: bool = False


def _export_one(
    conns: _Connections, lake: Lake, symbol: str, tables: Sequence[Source], opts: Options
) -> _Done:
    def attempt() -> _Done:
        rows = read_symbol(conns.get(), symbol, opts.page_size, tables)
        if not rows:
            return _Done(symbol)
        now = dt.datetime.now(dt.UTC)
        # validate every copy before choosing, so an invalid winner never hides a valid row
        checked = check_daily(to_bronze(rows), source="export", received_at=now)
        valid, bad = exported(checked.valid), checked.rejected.num_rows
        if opts.dry_run:
            return _Done(symbol, rows=valid.num_rows, quarantined=bad)
        if bad:
            day = quarantine.day_of(checked.rejected, now)
            quarantine.write(lake, "export", day, symbol, checked.rejected)
        if valid.num_rows == 0:
            return _Done(symbol, rows=0, quarantined=bad)
        key, merged = write_symbol(lake, symbol, valid)
        return _Done(symbol, rows=valid.num_rows, key=key, merged=merged, quarantined=bad)

    try:
        return retry.call(
            attempt, transient=TRANSIENT, backoff=opts.backoff, what=f"export of {symbol}",
            on_retry=conns.drop,
        )  # fmt: skip
    except Exception as exc:  # reported per symbol; the run exits non-zero
        log.debug("export of %s failed", symbol, exc_info=True)
        return _Done(symbol, error=f"{type(exc).__name__}: {exc}")


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def run(
    url: str,
    lake: Lake,
    *,
    symbols: Sequence[str] | None = None,
    shard: Shard = WHOLE_DATABASE,
    options: Options | None = None,
    progress: bool = False,
    on_chunk: Callable[[Sequence[str]], None] | None = None,
) -> ExportReport:
    """Export the symbols in scope not yet done by an earlier run of the same scope."""
    opts = options or Options()
    if opts.page_size < 1 or opts.chunk < 1 or opts.workers < 1:
        msg = "page-size, chunk and workers must be at least 1"
        raise ExportError(msg)
    started = time.perf_counter()
    report = ExportReport(dry_run=opts.dry_run)
    conns = _Connections(url)
    try:
        tables = retry.call(
            lambda: sources(conns.get()), transient=TRANSIENT, backoff=opts.backoff,
            what="reading the schema", on_retry=conns.drop,
        )  # fmt: skip
        everything = retry.call(
            lambda: list_symbols(conns.get(), tables), transient=TRANSIENT, backoff=opts.backoff,
            what="listing symbols", on_retry=conns.drop,
        )  # fmt: skip
        chosen = shard.select(sorted(symbols) if symbols is not None else everything)
        report.symbols = len(chosen)
        scope = scope_id(symbols, shard)
        ckey = checkpoint_key(shard, symbols)
        saved = {} if opts.restart else (lake.read_json(ckey, default={}) or {})
        after: str | None = None
        if saved.get("scope") == scope and saved.get("version") == _CHECKPOINT_VERSION:
            after = saved.get("last_symbol")
            report.resumed_after = after
        elif saved:
            log.warning("ignoring %s: it belongs to another --symbols/--shard scope", ckey)
        todo = pending(chosen, after)
        report.skipped = len(chosen) - len(todo)
        totals = {k: int(saved.get(k, 0)) for k in ("rows", "files")} if after else {}
        bar = tqdm(total=len(todo), desc="export", unit="sym", disable=not progress, leave=False)
        try:
            with ThreadPoolExecutor(opts.workers) as pool:
                for chunk in _chunks(todo, opts.chunk):
                    done = list(
                        pool.map(lambda s: _export_one(conns, lake, s, tables, opts), chunk)
                    )
                    ok_prefix: str | None = None
                    for d in done:
                        if d.error is not None:
                            report.failed[d.symbol] = d.error
                        elif not report.failed:
                            ok_prefix = d.symbol
                        if d.error is None and d.rows:
                            report.exported += 1
                            report.rows += d.rows
                            report.files += d.key is not None
                            report.merged_existing += d.merged
                        report.quarantined += d.quarantined
                    bar.update(len(chunk))
                    if not opts.dry_run and ok_prefix is not None:
                        totals = _save_checkpoint(lake, ckey, scope, ok_prefix, totals, done)
                    if on_chunk is not None:
                        on_chunk(chunk)
                    if report.failed:
                        break  # later chunks wait for the rerun, which restarts at the failure
        finally:
            bar.close()
        report.complete = not report.failed
        if report.complete and not opts.dry_run:
            _save_checkpoint(
                lake, ckey, scope, _scope_end(chosen, after), totals, [], finished=True
            )
    finally:
        conns.close_all()
    report.seconds = time.perf_counter() - started
    return report


def _scope_end(chosen: Sequence[str], after: str | None) -> str | None:
    """The last symbol of the scope (or the resumed position when the scope is empty)."""
    return max(chosen) if chosen else after


def _save_checkpoint(
    lake: Lake,
    key: str,
    scope: str,
    last_symbol: str | None,
    totals: dict[str, int],
    done: Sequence[_Done],
    *,
    finished: bool = False,
) -> dict[str, int]:
    """Record the last symbol of the contiguous finished prefix; returns running totals."""
    ok = [d for d in done if d.error is None and (last_symbol is None or d.symbol <= last_symbol)]
    totals = {
        "rows": totals.get("rows", 0) + sum(d.rows for d in ok),
        "files": totals.get("files", 0) + sum(d.key is not None for d in ok),
    }
    retry.call(
        lambda: lake.write_json(
            key,
            {
                "version": _CHECKPOINT_VERSION,
                "scope": scope,
                "last_symbol": last_symbol,
                "done": finished,
                "updated_at": dt.datetime.now(dt.UTC).isoformat(),
                **totals,
            },
        ),
        transient=TRANSIENT,
        what=f"writing {key}",
    )
    return totals


def require_database(settings: BatchSettings | None = None) -> str:
    """``DATABASE_URL``, or a clear error: the export reads from it."""
    s = settings or BatchSettings()
    if s.database_url is None:
        msg = "export needs DATABASE_URL (the PostgreSQL holding raw_ohlcv); it is not set"
        raise ExportError(msg)
    return s.database_url.get_secret_value()


def build_parser() -> argparse.ArgumentParser:
    """The command line: the common job options plus the export knobs."""
    p = common.parser(
        "export",
        "Export raw_ohlcv and raw_ohlcv_archive from DATABASE_URL into the lake's bronze "
        "(source=export, one fragment per symbol), resumable from "
        "processing_metadata/export_checkpoint.json.",
    )
    p.add_argument("--page-size", type=int, default=DEFAULT_PAGE, help="rows per query")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="symbols between checkpoints")
    p.add_argument("--attempts", type=int, default=5, help="tries per symbol on transient errors")
    p.add_argument("--restart", action="store_true", help="ignore the checkpoint; export all")
    return p


@common.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m batch.export``."""
    p = build_parser()
    args = common.parse(p, argv)
    ns = args.extra
    if ns.page_size < 1 or ns.chunk < 1 or ns.attempts < 1:
        p.error("--page-size, --chunk and --attempts must be at least 1")
    url = require_database()
    opts = Options(
        page_size=ns.page_size,
        chunk=ns.chunk,
        workers=max(1, args.workers),
        backoff=retry.Backoff(attempts=ns.attempts),
        dry_run=args.dry_run,
        restart=ns.restart,
    )
    with common.recorded("export") as counts:
        report = run(
            url, args.lake, symbols=args.symbols, shard=args.shard, options=opts,
            progress=args.progress,
        )  # fmt: skip
        counts.update(report.counts())
        print(report.summary())
        common.fail_on_symbols(
            report.failed, "symbols failed; rerun to resume from the first of them"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(None))
