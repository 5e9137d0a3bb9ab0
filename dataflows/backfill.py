"""Backfill the whole daily history of symbols that are new to us, one range file per symbol.

``python -m dataflows.backfill --symbols A,B [--start D] [--end D]``, ``--new``, or ``--all``
(the whole market since 1962, resumable: :mod:`dataflows.history`); with ``--minutes``, minute
history instead (:mod:`dataflows.minute_history`).

The replay flow fetches one grouped-daily page per session: cheap for the market, useless for a
symbol whose history predates what we hold. A new symbol gets per-ticker range aggregates
(``adjusted=false``, ``limit=50000``) instead, and every ``next_url`` page is followed: Polygon
truncates silently at the limit, so stopping after the first page loses history without an
error. Rows are validated like every other input (rejects go to quarantine with a reason), the
valid ones land in ONE ``range={FIRST}_{LAST}.parquet`` per symbol, the sessions inside the cache
window are upserted into ``raw_ohlcv``, and ``ingest_symbols`` records what we now hold.

A symbol that fails (after the gateway's retries) is reported and makes the run exit 1; the
others are still written. Reruns are idempotent: the same rows land on the same keys.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from core import calendar, layout, quarantine
from core import counts as job_counts
from core.bronze import fragments
from core.cli import iso_date
from core.lake import Lake
from core.schemas import BRONZE_DAILY
from core.secrets import install_redaction, redact
from core.stores import postgres
from core.validation import check_daily

log = logging.getLogger("dataflows.backfill")

Fetch = Callable[[str, dict[str, Any]], dict[str, Any]]
"""One GET returning the JSON body: ``PolygonGateway.get_json`` (rate-limited, retried)."""
MAX_LIMIT: Final = 50_000
"""Polygon's largest page of aggregates (the default, 5,000, truncates silently too)."""
MAX_PAGES: Final = 100_000
QUARANTINE_SOURCE: Final = "backfill"
_AGG_FIELDS: Final = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}


class PaginationError(RuntimeError):
    """The server's ``next_url`` chain does not end or repeats itself."""


# -- pure logic -----------------------------------------------------------------------------
def split_next_url(url: str) -> tuple[str, dict[str, str]]:
    """Path and query of a ``next_url``.

    Only the path is followed, on the configured base URL: the key is never sent to a host
    named by a response, and an ``apiKey`` in the URL is dropped (the gateway sends its own).
    """
    parts = urlsplit(url)
    params = {k: v for k, v in parse_qsl(parts.query) if k.lower() != "apikey"}
    return parts.path, params


def pages(
    fetch: Fetch, path: str, params: Mapping[str, str], *, max_pages: int = MAX_PAGES
) -> Iterator[dict[str, Any]]:
    """Every page of a paginated endpoint, following ``next_url`` until it is absent."""
    seen: set[str] = set()
    current_path, current = path, dict[str, Any](params)
    for _ in range(max_pages):
        body = fetch(current_path, current)
        yield body
        nxt = body.get("next_url")
        if not nxt:
            return
        if nxt in seen:
            msg = f"next_url repeats itself after {len(seen)} pages of {path}"
            raise PaginationError(msg)
        seen.add(nxt)
        current_path, query = split_next_url(str(nxt))
        current = dict[str, Any](query)
    msg = f"more than {max_pages} pages of {path}"
    raise PaginationError(msg)


def aggs_path(ticker: str, first: dt.date, last: dt.date, timespan: str = "day") -> str:
    """The range-aggregates path of one ticker (multiplier 1)."""
    layout.check_symbol(ticker)
    return f"/v2/aggs/ticker/{ticker}/range/1/{timespan}/{first.isoformat()}/{last.isoformat()}"


def fetch_aggs(
    fetch: Fetch,
    ticker: str,
    first: dt.date,
    last: dt.date,
    *,
    timespan: str = "day",
    limit: int = MAX_LIMIT,
) -> tuple[list[dict[str, Any]], int]:
    """All unadjusted aggregates of ``ticker`` in [first, last], and how many pages it took."""
    params = {"adjusted": "false", "sort": "asc", "limit": str(limit)}
    rows: list[dict[str, Any]] = []
    n = 0
    for body in pages(fetch, aggs_path(ticker, first, last, timespan), params):
        n += 1
        results = body.get("results") or []
        if not isinstance(results, list):
            msg = f"{ticker}: 'results' is {type(results).__name__}, not a list"
            raise TypeError(msg)
        rows.extend(results)
    return rows, n


def _floats(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array(
            [
                float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
                for v in values
            ],
            pa.float64(),
        )


def _ints(values: list[Any]) -> pa.Array:
    return pa.array(
        [
            int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
            for v in values
        ],
        pa.int64(),
    )


NY_SHIFT_MS: Final = 4 * 3_600_000
"""New York is 4 or 5 hours behind UTC: a stamp from 00:00 to 19:59 New York time (midnight for
range bars, 16:00 for grouped ones) minus 4 hours falls on its own New York date, without the
time-zone database (whose first load in Arrow costs seconds)."""


def ms_to_ny_dates(ms: pa.Array) -> pa.Array:
    """Polygon's daily ``t`` (Unix ms, New York midnight) as the session date."""
    days = pc.floor(pc.divide(pc.cast(pc.subtract(ms, NY_SHIFT_MS), pa.float64()), 86_400_000.0))
    return pc.cast(pc.cast(days, pa.int32()), pa.date32())


def aggs_table(ticker: str, results: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Polygon aggregate objects as bronze columns; odd values become nulls (then quarantine)."""
    n = len(results)
    cols: dict[str, pa.Array] = {"symbol": pa.array([ticker] * n, pa.string())}
    cols["date"] = ms_to_ny_dates(_ints([r.get("t") for r in results]))
    for short, name in _AGG_FIELDS.items():
        cols[name] = _floats([r.get(short) for r in results])
    cols["vwap"] = _floats([r.get("vw") for r in results])
    cols["transactions"] = _ints([r.get("n") for r in results])
    return pa.table(cols)


def dedupe_sorted(table: pa.Table) -> pa.Table:
    """Rows sorted by date, the last one kept where a date repeats."""
    if table.num_rows == 0:
        return table
    idx = pa.array(range(table.num_rows), pa.int64())
    t = table.append_column("_i", idx).sort_by([("date", "ascending"), ("_i", "descending")])
    days = pc.cast(t["date"], pa.int32()).to_numpy()
    keep = np.concatenate([[True], days[1:] != days[:-1]])
    return t.filter(pa.array(keep)).drop_columns(["_i"])


def new_symbols(candidates: Iterable[str], ingested: Iterable[str]) -> list[str]:
    """Candidates (lake folders, metadata) that ``ingest_symbols`` does not know yet."""
    known = set(ingested)
    return sorted({s for s in candidates if s not in known and layout.SYMBOL_RE.match(s)})


def cache_cutoff(today: dt.date, window_days: int) -> dt.date:
    """Oldest date ``raw_ohlcv`` keeps (the cache window: five years and one month)."""
    return today - dt.timedelta(days=window_days)


# -- per-symbol work (lake) -----------------------------------------------------------------
@dataclass(slots=True)
class SymbolResult:
    """What one symbol's backfill produced."""

    symbol: str
    pages: int = 0
    fetched: int = 0
    valid: pa.Table = field(default_factory=BRONZE_DAILY.empty_table)
    quarantined: int = 0
    key: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def first(self) -> dt.date | None:
        """Oldest date written."""
        return self.valid["date"][0].as_py() if self.valid.num_rows else None

    @property
    def last(self) -> dt.date | None:
        """Newest date written."""
        return self.valid["date"][-1].as_py() if self.valid.num_rows else None


def backfill_symbol(
    fetch: Fetch,
    lake: Lake,
    symbol: str,
    start: dt.date,
    end: dt.date,
    *,
    limit: int = MAX_LIMIT,
    now: dt.datetime | None = None,
) -> SymbolResult:
    """Fetch, validate and write one symbol's history; errors are returned, not raised."""
    started = time.perf_counter()
    out = SymbolResult(symbol)
    try:
        received = now or dt.datetime.now(dt.UTC)
        rows, out.pages = fetch_aggs(fetch, symbol, start, end, limit=limit)
        out.fetched = len(rows)
        checked = check_daily(aggs_table(symbol, rows), source="rest", received_at=received)
        out.valid = dedupe_sorted(checked.valid)
        out.quarantined = checked.rejected.num_rows
        if checked.rejected.num_rows:
            quarantine.write(lake, QUARANTINE_SOURCE, received.date(), symbol, checked.rejected)
        for frag in fragments(out.valid):  # the shared naming: one range= file (date= if 1 row)
            out.key = frag.key
            lake.write_table(frag.key, frag.table)
    except Exception as exc:  # reported per symbol, and the run exits non-zero
        out.error = redact(f"{type(exc).__name__}: {exc}")
    out.seconds = time.perf_counter() - started
    return out


# -- Postgres -------------------------------------------------------------------------------
def ingested_symbols(conn: psycopg.Connection[Any]) -> set[str]:
    """Symbols ``ingest_symbols`` holds."""
    return {r[0] for r in conn.execute("SELECT symbol FROM ingest_symbols").fetchall()}


def metadata_symbols(conn: psycopg.Connection[Any]) -> set[str]:
    """Symbols ``symbol_metadata`` knows (active or not)."""
    return {r[0] for r in conn.execute("SELECT symbol FROM symbol_metadata").fetchall()}


def lake_symbols(lake: Lake) -> set[str]:
    """Symbols with a folder in the lake's daily bronze."""
    return {
        d.removeprefix("symbol=") for d in lake.list_dirs(layout.DAILY) if d.startswith("symbol=")
    }


def unbackfilled(conn: psycopg.Connection[Any], lake: Lake) -> list[str]:
    """Symbols in the lake's bronze or in ``symbol_metadata`` that ``ingest_symbols`` lacks."""
    return new_symbols(metadata_symbols(conn) | lake_symbols(lake), ingested_symbols(conn))


def record(conn: psycopg.Connection[Any], result: SymbolResult, cutoff: dt.date) -> int:
    """Upsert the cache-window rows into raw_ohlcv and widen ``ingest_symbols``; rows upserted."""
    if result.first is None or result.last is None:
        return 0
    recent = result.valid.filter(pc.greater_equal(result.valid["date"], pa.scalar(cutoff)))
    written = postgres.upsert_daily(conn, recent)
    with conn.transaction():
        conn.execute(
            "INSERT INTO ingest_symbols AS s (symbol, first_date, last_date, backfilled_at,"
            " updated_at) VALUES (%s, %s, %s, now(), now())"
            " ON CONFLICT (symbol) DO UPDATE SET"
            " first_date = LEAST(s.first_date, EXCLUDED.first_date),"
            " last_date = GREATEST(s.last_date, EXCLUDED.last_date),"
            " backfilled_at = now(), updated_at = now()",
            (result.symbol, result.first, result.last),
        )
    return written


# -- the run --------------------------------------------------------------------------------
@dataclass(slots=True)
class Summary:
    """Totals of one run."""

    symbols: int = 0
    pages: int = 0
    rows: int = 0
    quarantined: int = 0
    upserted: int = 0
    files: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        """One log line."""
        return (
            f"backfill: {self.symbols} symbols, {self.pages} pages, {self.rows} rows"
            f" ({self.quarantined} quarantined), {self.files} range files,"
            f" {self.upserted} raw_ohlcv rows upserted, {len(self.failed)} failed,"
            f" {self.seconds:.1f}s"
        )


def run(
    fetch: Fetch,
    lake: Lake,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    database_url: str | None,
    cache_window_days: int,
    workers: int = 4,
    limit: int = MAX_LIMIT,
    progress: bool = False,
    today: dt.date | None = None,
    on_done: Callable[[str], None] | None = None,
) -> Summary:
    """Backfill ``symbols`` over [start, end]; Postgres is written only with a database URL.

    ``on_done`` hears each symbol whose history is durable (lake and Postgres), in completion
    order: ``--all`` records it so a rerun resumes.
    """
    started = time.perf_counter()
    summary = Summary(symbols=len(symbols))
    cutoff = cache_cutoff(today or dt.datetime.now(dt.UTC).date(), cache_window_days)
    conn = postgres.connect(database_url, autocommit=True) if database_url else None
    try:
        if conn is not None:
            postgres.migrate(conn)
        with (
            ThreadPoolExecutor(max(1, workers), thread_name_prefix="backfill") as pool,
            tqdm(total=len(symbols), desc="backfill", unit="sym", disable=not progress) as bar,
        ):
            futures: list[Future[SymbolResult]] = [
                pool.submit(backfill_symbol, fetch, lake, s, start, end, limit=limit)
                for s in symbols
            ]
            for done, fut in enumerate(as_completed(futures), 1):
                res = fut.result()
                bar.update(1)
                if res.error is None and conn is not None:
                    try:
                        summary.upserted += record(conn, res, cutoff)
                    except psycopg.Error as exc:
                        res.error = redact(f"postgres: {type(exc).__name__}: {exc}")
                summary.pages += res.pages
                summary.rows += res.valid.num_rows
                summary.quarantined += res.quarantined
                summary.files += res.key is not None
                if res.error is not None:
                    summary.failed[res.symbol] = res.error
                    log.error("backfill %s failed: %s", res.symbol, res.error)
                elif on_done is not None:
                    on_done(res.symbol)
                elif not progress and (done % 100 == 0 or done == len(symbols)):
                    log.info("backfill: %d/%d symbols done", done, len(symbols))
    finally:
        if conn is not None:
            conn.close()
    summary.seconds = time.perf_counter() - started
    return summary


# -- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The CLI."""
    p = argparse.ArgumentParser(
        prog="python -m dataflows.backfill",
        description="Fetch the whole daily history of new symbols (per-ticker range aggregates,"
        " every page) into one range= file per symbol, raw_ohlcv and ingest_symbols.",
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--symbols", metavar="A,B", help="these symbols (backfilled even if known)")
    who.add_argument(
        "--new",
        action="store_true",
        help="symbols in the lake or symbol_metadata that ingest_symbols does not hold",
    )
    who.add_argument(
        "--all",
        action="store_true",
        help="the whole market: every symbol in symbol_metadata, Polygon's delisted tickers and"
        " the lake; resumable (symbols done are recorded under processing_metadata/backfill/)",
    )
    p.add_argument("--restart", action="store_true", help="with --all: forget the symbols done")
    p.add_argument("--start", type=iso_date, default=calendar.EPOCH, help="first date (1962-01-02)")
    p.add_argument("--end", type=iso_date, help="last date (default: the last settled session)")
    p.add_argument("--lake", metavar="URL", help="lake root (default: $LAKE_URL)")
    p.add_argument("--workers", type=int, default=4, help="symbols fetched at once (default 4)")
    p.add_argument("--limit", type=int, default=MAX_LIMIT, help="rows per page (max 50000)")
    p.add_argument("--dry-run", action="store_true", help="list the symbols, fetch nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument(
        "--minutes", action="store_true", help="minute history instead (see --minutes -h)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; 0 when every symbol was backfilled, 1 when any failed, 2 on bad input."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--minutes" in args:  # minute history: its own options (dataflows.minute_history)
        from dataflows import minute_history

        return minute_history.main([a for a in args if a != "--minutes"])
    p = build_parser()
    ns = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_redaction()
    from core.settings import ReplaySettings
    from dataflows import history
    from dataflows.connectors.polygon import PolygonGateway

    settings = ReplaySettings()
    if not 1 <= ns.limit <= MAX_LIMIT:
        p.error(f"--limit must be in 1..{MAX_LIMIT}")
    now = dt.datetime.now(dt.UTC)
    end = (
        ns.end
        or calendar.settled_sessions(
            now.date() - dt.timedelta(days=10),
            now.date(),
            now,
            dt.timedelta(minutes=settings.settle_minutes),
        )[-1]
    )
    if end < ns.start:
        p.error(f"--end {end} is before --start {ns.start}")
    lake = Lake(
        ns.lake or settings.lake_url,
        endpoint_url=settings.aws_endpoint_url,
        region=settings.aws_default_region,
    )
    db_url = postgres.database_url(settings)
    if ns.restart and not ns.all:
        p.error("--restart goes with --all")
    gateway: PolygonGateway | None = None
    tracker: history.Progress | None = None
    if ns.all:
        gateway = PolygonGateway.from_settings(settings)
        tracker = history.Progress.load(lake, ns.start, restart=ns.restart)
        with postgres.connect(db_url, autocommit=True) as conn:
            postgres.migrate(conn)
            known = metadata_symbols(conn)
        every = history.universe(known, history.delisted_tickers(gateway.get_json),
                                 lake_symbols(lake))  # fmt: skip
        symbols = tracker.remaining(every)
        bound = history.request_bound(len(symbols), settings.requests_per_second)
        log.info(
            "history: %d symbols (%d done before, %d known); at %s's %.3g requests/s the"
            " requests alone take %s",
            len(symbols), len(every) - len(symbols), len(every), settings.polygon_plan,
            settings.requests_per_second, history.duration(bound),
        )  # fmt: skip
    elif ns.symbols:
        try:
            symbols = sorted(
                {layout.normalise_symbol(s) for s in ns.symbols.split(",") if s.strip()}
            )
        except layout.LayoutError as exc:
            p.error(str(exc))
    else:
        with postgres.connect(db_url, autocommit=True) as conn:
            postgres.migrate(conn)
            symbols = unbackfilled(conn, lake)
    log.info("backfill: %d symbols, %s..%s", len(symbols), ns.start, end)
    if ns.dry_run:
        print("\n".join(symbols))
        return 0
    gateway = gateway or PolygonGateway.from_settings(settings)
    summary = run(
        gateway.get_json,
        lake,
        symbols,
        ns.start,
        end,
        database_url=db_url,
        cache_window_days=settings.cache_window_days,
        workers=ns.workers,
        limit=ns.limit,
        progress=not ns.no_progress and sys.stderr.isatty(),
        on_done=tracker.mark if tracker is not None else None,
    )
    if tracker is not None:
        tracker.flush()
    log.info("%s", summary.line())
    job_counts.hand(
        {
            "symbols": summary.symbols,
            "pages": summary.pages,
            "rows": summary.rows,
            "quarantined": summary.quarantined,
            "files": summary.files,
            "upserted": summary.upserted,
            "failed": len(summary.failed),
        }
    )
    for symbol, error in sorted(summary.failed.items()):
        log.error("failed: %s: %s", symbol, error)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
