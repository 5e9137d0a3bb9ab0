"""Minute history from Polygon's REST minute aggregates into session-partitioned fragments.

``python -m dataflows.backfill --minutes --symbols A,B --start D --end D`` or ``--all``.

The live flow only holds minutes from the day it started; a backtest needs years of them. Each
symbol's missing sessions are fetched with one range request (``/range/1/minute/...``,
``adjusted=false``, every ``next_url`` page: Polygon truncates silently at the limit) through
the same rate-limited, retried gateway as the daily backfill. ``--all`` walks the market
session by session: one grouped-daily request names the symbols that traded, then one minute
request per symbol. Rows are checked like every other input (rejects to
``quarantine/backfill_minutes/`` with a reason); the valid ones land as ``source=rest``
fragments ``bronze/raw_ohlcv_1m/date=D/part-rest-{id}.parquet``, one per session and group of
symbols, named by the session and the symbols (a rerun of the same work overwrites the same
file). ``batch.consolidate --minutes`` merges them, rest beating live.

The completeness ledger (``ingest_minutes``, one row per session and symbol, ``*`` for a whole
market session) is written only after the fragment is durable, so a rerun fetches only what is
missing and a killed run loses nothing but the work in flight.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from core import calendar, layout, quarantine
from core import counts as job_counts
from core.cli import iso_date
from core.lake import Lake
from core.schemas import BRONZE_MINUTE, UTC_US, conform
from core.secrets import install_redaction, redact
from core.stores import ledger, postgres
from core.validation import quarantine_table, rule_masks
from dataflows.backfill import MAX_LIMIT, Fetch, _floats, _ints, fetch_aggs, ms_to_ny_dates

log = logging.getLogger("dataflows.minute_history")

QUARANTINE_SOURCE: Final = "backfill_minutes"
GROUP: Final = 250
"""Symbols per fragment: a whole-market session is about twenty files, not five thousand."""
_MINUTE_US: Final = 60_000_000
_FIELDS: Final = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}


# -- pure logic -----------------------------------------------------------------------------
def minute_rows(symbol: str, results: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Polygon minute aggregates as bronze minute columns (before validation)."""
    n = len(results)
    t = _ints([r.get("t") for r in results])
    cols: dict[str, pa.Array] = {
        "symbol": pa.array([symbol] * n, pa.string()),
        "date": ms_to_ny_dates(t),
        "start": pc.cast(pc.multiply(t, 1000), UTC_US),
    }
    for short, name in _FIELDS.items():
        cols[name] = _floats([r.get(short) for r in results])
    cols["vwap"] = _floats([r.get("vw") for r in results])
    cols["trades"] = _ints([r.get("n") for r in results])
    return pa.table(cols)


def check_minutes(raw: pa.Table, received_at: dt.datetime) -> tuple[pa.Table, pa.Table]:
    """(valid BRONZE_MINUTE rows, QUARANTINE rows): the daily rules plus the minute's own."""
    n = raw.num_rows
    t = raw.append_column("source", pa.array(["rest"] * n, pa.string()))
    start = pc.cast(t["start"], pa.int64()).to_numpy(zero_copy_only=False)
    start = np.nan_to_num(np.asarray(start, dtype=np.float64), nan=1.0)
    masks = [
        *rule_masks(t),
        ("start is not on the minute", np.fmod(start, _MINUTE_US) != 0),
        (
            "missing trades",
            np.asarray(pc.is_null(t["trades"]).to_numpy(zero_copy_only=False), bool),
        ),
    ]
    table = np.stack([m for _, m in masks]) if n else np.zeros((len(masks), 0), bool)
    bad = np.any(table, axis=0)
    reasons = ["; ".join(masks[j][0] for j in np.flatnonzero(table[:, i]))
               for i in np.flatnonzero(bad)]  # fmt: skip
    rows = t.filter(pa.array(~bad))
    rows = rows.append_column("revision", pa.array(np.zeros(rows.num_rows, np.int32)))
    rows = rows.append_column("partial", pa.array(np.zeros(rows.num_rows, bool)))
    rows = rows.append_column("ingested_at", pa.array([received_at] * rows.num_rows, UTC_US))
    valid = conform(rows, BRONZE_MINUTE).sort_by([("symbol", "ascending"), ("start", "ascending")])
    rejected = quarantine_table(t.filter(pa.array(bad)), reasons, "rest", received_at)
    return valid, rejected


def dedupe(table: pa.Table) -> pa.Table:
    """One row per (symbol, start), the last received kept (pages may overlap)."""
    if table.num_rows < 2:
        return table
    idx = pa.array(np.arange(table.num_rows), pa.int64())
    t = table.append_column("_i", idx).sort_by(
        [("symbol", "ascending"), ("start", "ascending"), ("_i", "descending")]
    )
    sym = np.asarray(t["symbol"].to_numpy(zero_copy_only=False), dtype=object)
    st = pc.cast(t["start"], pa.int64()).to_numpy()
    keep = np.ones(t.num_rows, bool)
    keep[1:] = (sym[1:] != sym[:-1]) | (st[1:] != st[:-1])
    return t.filter(pa.array(keep)).drop_columns(["_i"])


def fragment_id(day: dt.date, symbols: Sequence[str]) -> str:
    """Deterministic: the same session and symbols always land on the same key."""
    h = hashlib.blake2b(digest_size=8)
    h.update(day.isoformat().encode())
    for s in sorted(symbols):
        h.update(b"\0" + s.encode())
    return f"rest-{h.hexdigest()}"


def spans(pending: Mapping[str, Sequence[dt.date]]) -> dict[str, tuple[dt.date, dt.date]]:
    """Per symbol, the first and last session it still misses (one range request covers them)."""
    return {s: (min(days), max(days)) for s, days in pending.items() if days}


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    """``items`` in groups of ``size``."""
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


# -- work -----------------------------------------------------------------------------------
@dataclass(slots=True)
class Fetched:
    """One symbol's minutes over its span, split by session, or its error."""

    symbol: str
    by_day: dict[dt.date, pa.Table] = field(default_factory=dict)
    rejected: pa.Table | None = None
    pages: int = 0
    error: str | None = None


def fetch_symbol(
    fetch: Fetch, symbol: str, first: dt.date, last: dt.date, received: dt.datetime, limit: int
) -> Fetched:
    """Fetch and check one symbol's minutes in [first, last]; errors are returned, not raised."""
    out = Fetched(symbol)
    try:
        rows, out.pages = fetch_aggs(fetch, symbol, first, last, timespan="minute", limit=limit)
        valid, rejected = check_minutes(minute_rows(symbol, rows), received)
        valid = dedupe(valid)
        out.rejected = rejected if rejected.num_rows else None
        days = pc.cast(valid["date"], pa.int32()).to_numpy()
        for d in np.unique(days):
            out.by_day[calendar.from_days(int(d))] = valid.filter(pa.array(days == d))
    except Exception as exc:  # reported per symbol; the run exits non-zero
        out.error = redact(f"{type(exc).__name__}: {exc}")
    return out


@dataclass(slots=True)
class MinuteSummary:
    """Totals of one run."""

    sessions: int = 0
    symbols: int = 0
    pages: int = 0
    rows: int = 0
    quarantined: int = 0
    files: int = 0
    skipped: int = 0
    empty: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        """One log line."""
        return (
            f"minute backfill: {self.sessions} sessions, {self.symbols} symbol-sessions fetched"
            f" ({self.skipped} already complete, {self.empty} empty), {self.pages} pages,"
            f" {self.rows} rows ({self.quarantined} quarantined), {self.files} fragments,"
            f" {len(self.failed)} failed, {self.seconds:.1f}s"
        )


def _group(
    fetch: Fetch,
    lake: Lake,
    conn: psycopg.Connection[Any] | None,
    pending: Mapping[str, Sequence[dt.date]],
    *,
    pool: ThreadPoolExecutor,
    limit: int,
    summary: MinuteSummary,
) -> None:
    """Fetch one group of symbols, write one fragment per session, then record the ledger."""
    received = dt.datetime.now(dt.UTC)
    jobs = [
        pool.submit(fetch_symbol, fetch, s, a, b, received, limit)
        for s, (a, b) in sorted(spans(pending).items())
    ]
    results = [j.result() for j in jobs]
    per_day: dict[dt.date, list[pa.Table]] = defaultdict(list)
    outcomes: list[ledger.MinuteOutcome] = []
    for res in results:
        summary.pages += res.pages
        if res.error is not None:
            summary.failed[res.symbol] = res.error
            log.error("minutes of %s failed: %s", res.symbol, res.error)
            outcomes += [
                ledger.MinuteOutcome(d, res.symbol, "failed", error=res.error)
                for d in pending[res.symbol]
            ]
            continue
        if res.rejected is not None:
            quarantine.write(lake, QUARANTINE_SOURCE, received.date(), res.symbol, res.rejected)
            summary.quarantined += res.rejected.num_rows
        for d in pending[res.symbol]:
            rows = res.by_day.get(d)
            if rows is None or rows.num_rows == 0:
                summary.empty += 1
                outcomes.append(ledger.MinuteOutcome(d, res.symbol, "empty", fetched_at=received))
                continue
            per_day[d].append(rows)
            summary.rows += rows.num_rows
            outcomes.append(
                ledger.MinuteOutcome(d, res.symbol, "complete", rows.num_rows, fetched_at=received)
            )
    for day, tables in sorted(per_day.items()):
        table = pa.concat_tables(tables).sort_by([("symbol", "ascending"), ("start", "ascending")])
        names = [s for s in pending if day in pending[s]]
        lake.write_table(layout.minute_fragment(day, fragment_id(day, names)), table)
        summary.files += 1
    summary.symbols += sum(len(v) for v in pending.values())
    if conn is not None:
        ledger.record_minutes(conn, outcomes)  # only after the fragments are durable


def run_symbols(
    fetch: Fetch,
    lake: Lake,
    conn: psycopg.Connection[Any] | None,
    symbols: Sequence[str],
    sessions: Sequence[dt.date],
    *,
    workers: int = 4,
    limit: int = MAX_LIMIT,
    progress: bool = False,
) -> MinuteSummary:
    """Minutes of ``symbols`` over ``sessions``, skipping what the ledger holds complete."""
    started = time.perf_counter()
    summary = MinuteSummary(sessions=len(sessions))
    if not sessions:
        return summary
    done = ledger.complete_minutes(conn, sessions[0], sessions[-1]) if conn is not None else set()
    pending = {s: [d for d in sessions if (d, s) not in done] for s in sorted(set(symbols))}
    summary.skipped = sum(len(sessions) - len(v) for v in pending.values())
    todo = [s for s, days in pending.items() if days]
    with (
        ThreadPoolExecutor(max(1, workers), thread_name_prefix="minutes") as pool,
        tqdm(total=len(todo), desc="minutes", unit="sym", disable=not progress) as bar,
    ):
        for group in chunks(todo, GROUP):
            _group(fetch, lake, conn, {s: pending[s] for s in group},
                   pool=pool, limit=limit, summary=summary)  # fmt: skip
            bar.update(len(group))
            if not progress:
                log.info("minutes: %d/%d symbols done", min(len(todo), bar.n), len(todo))
    summary.seconds = time.perf_counter() - started
    return summary


def market_symbols(fetch: Fetch, day: dt.date) -> list[str]:
    """Symbols that traded on ``day``: its grouped-daily tickers (one request)."""
    body = fetch(
        f"/v2/aggs/grouped/locale/us/market/stocks/{day.isoformat()}", {"adjusted": "false"}
    )
    results = body.get("results") or []
    names = {r.get("T") for r in results if isinstance(r, dict)}
    return sorted(n for n in names if isinstance(n, str) and layout.SYMBOL_RE.match(n))


def run_market(
    fetch: Fetch,
    lake: Lake,
    conn: psycopg.Connection[Any],
    sessions: Sequence[dt.date],
    *,
    workers: int = 4,
    limit: int = MAX_LIMIT,
    progress: bool = False,
    keep: Callable[[str], bool] | None = None,
) -> MinuteSummary:
    """The whole market, session by session; a session is ``*``-complete once every symbol is."""
    started = time.perf_counter()
    total = MinuteSummary()
    done = ledger.complete_minutes(conn, sessions[0], sessions[-1]) if sessions else set()
    for n, day in enumerate(sessions, 1):
        total.sessions += 1
        if (day, ledger.MARKET) in done:
            log.info("minutes %s: complete already (%d/%d)", day, n, len(sessions))
            continue
        try:
            names = [s for s in market_symbols(fetch, day) if keep is None or keep(s)]
        except Exception as exc:  # the session fails; the next one is tried
            total.failed[day.isoformat()] = redact(f"{type(exc).__name__}: {exc}")
            continue
        one = run_symbols(fetch, lake, conn, names, [day], workers=workers, limit=limit,
                          progress=progress)  # fmt: skip
        for name in ("symbols", "pages", "rows", "quarantined", "files", "skipped", "empty"):
            setattr(total, name, getattr(total, name) + getattr(one, name))
        total.failed.update({f"{s}@{day}": e for s, e in one.failed.items()})
        status: ledger.Status = "complete" if names and not one.failed else "empty"
        if one.failed:
            status = "failed"
        ledger.record_minutes(
            conn, [ledger.MinuteOutcome(day, ledger.MARKET, status, one.rows + one.skipped)]
        )
        log.info("minutes %s: %d symbols, %d rows (%d/%d sessions)",
                 day, len(names), one.rows, n, len(sessions))  # fmt: skip
    total.seconds = time.perf_counter() - started
    return total


# -- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The CLI (``python -m dataflows.backfill --minutes ...``)."""
    p = argparse.ArgumentParser(
        prog="python -m dataflows.backfill --minutes",
        description="Fetch REST minute aggregates (every page) into session-partitioned minute"
        " fragments (source=rest); the ledger (ingest_minutes) makes reruns fetch only what"
        " is missing.",
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--symbols", metavar="A,B", help="these symbols")
    who.add_argument(
        "--all", action="store_true", help="the whole market, session by session (grouped daily"
        " names the symbols that traded)",
    )  # fmt: skip
    p.add_argument("--start", type=iso_date, help="first session (default: --end)")
    p.add_argument("--end", type=iso_date, help="last session (default: the last settled one)")
    p.add_argument("--lake", metavar="URL", help="lake root (default: $LAKE_URL)")
    p.add_argument("--workers", type=int, default=4, help="symbols fetched at once (default 4)")
    p.add_argument("--limit", type=int, default=MAX_LIMIT, help="rows per page (max 50000)")
    p.add_argument("--shard", metavar="I/N", default="0/1", help="with --all: symbols of shard I")
    p.add_argument("--dry-run", action="store_true", help="list the sessions, fetch nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """0 when everything was fetched, 1 when anything failed, 2 on bad input."""
    from core.settings import ReplaySettings
    from core.sharding import Shard
    from dataflows.connectors.polygon import PolygonGateway

    p = build_parser()
    ns = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_redaction()
    settings = ReplaySettings()
    if not 1 <= ns.limit <= MAX_LIMIT:
        p.error(f"--limit must be in 1..{MAX_LIMIT}")
    try:
        shard = Shard.parse(ns.shard)
        symbols = (
            sorted({layout.normalise_symbol(s) for s in ns.symbols.split(",") if s.strip()})
            if ns.symbols
            else []
        )
    except ValueError as exc:
        p.error(str(exc))
    now = dt.datetime.now(dt.UTC)
    settle = dt.timedelta(minutes=settings.settle_minutes)
    end = ns.end or calendar.settled_sessions(now.date() - dt.timedelta(days=10), now.date(),
                                              now, settle)[-1]  # fmt: skip
    start = ns.start or end
    if end < start:
        p.error(f"--end {end} is before --start {start}")
    sessions = calendar.settled_sessions(start, end, now, settle)
    log.info("minute backfill: %d sessions %s..%s", len(sessions), start, end)
    if ns.dry_run:
        print("\n".join(d.isoformat() for d in sessions))
        return 0
    lake = Lake(ns.lake or settings.lake_url, endpoint_url=settings.aws_endpoint_url,
                region=settings.aws_default_region)  # fmt: skip
    gateway = PolygonGateway.from_settings(settings)
    progress = not ns.no_progress and sys.stderr.isatty()
    try:
        with postgres.connect(postgres.database_url(settings), autocommit=True) as conn:
            postgres.migrate(conn)
            if ns.all:
                summary = run_market(gateway.get_json, lake, conn, sessions, workers=ns.workers,
                                     limit=ns.limit, progress=progress, keep=shard.owns)  # fmt: skip
            else:
                summary = run_symbols(gateway.get_json, lake, conn, symbols, sessions,
                                      workers=ns.workers, limit=ns.limit, progress=progress)  # fmt: skip
    finally:
        gateway.close()
    log.info("%s", summary.line())
    job_counts.hand({"sessions": summary.sessions, "pages": summary.pages, "rows": summary.rows,
                     "files": summary.files, "quarantined": summary.quarantined,
                     "failed": len(summary.failed)})  # fmt: skip
    for what, error in sorted(summary.failed.items()):
        log.error("failed: %s: %s", what, error)
    return 1 if summary.failed else 0
