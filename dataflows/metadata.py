"""Ticker reference data: Polygon's tickers list and details into ``symbol_metadata`` and the lake.

``python -m dataflows.metadata [--date D] [--details all|new|none]``

Every run reads the whole active list (paginated), fetches details (market cap, SIC code and
description, list date) and upserts one typed row per ticker: ``active`` boolean, ``market_cap``
numeric, dates as dates. A ticker we hold as active that is missing from today's list has been
delisted: it is marked inactive with its ``delisted_utc`` date (from its details, else the run's
date). New listings are counted and reported; ``python -m dataflows.backfill --new`` then
fetches their history. The whole table is then written to the lake as
``reference/tickers/tickers.parquet`` (SYMBOL_META), so lake-only consumers see the same data.

An empty active list is refused rather than taken as "everything delisted". A ticker whose
details fail is still upserted from the list row, and the run exits 1 naming it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal, cast

import psycopg
import pyarrow as pa
from tqdm import tqdm

from core import counts as job_counts
from core import layout
from core.cli import iso_date
from core.lake import Lake
from core.schemas import SYMBOL_META
from core.secrets import install_redaction, redact
from core.stores import postgres
from dataflows.backfill import Fetch, pages
from dataflows.connectors.polygon import PolygonError

log = logging.getLogger("dataflows.metadata")

TICKERS_PATH: Final = "/v3/reference/tickers"
PAGE_LIMIT: Final = 1000
DetailsMode = Literal["all", "new", "none"]
COLUMNS: Final = tuple(f.name for f in SYMBOL_META)


class MetadataError(RuntimeError):
    """The run cannot go on safely (e.g. the active list came back empty)."""


# -- pure conversion ------------------------------------------------------------------------
def parse_day(value: Any) -> dt.date | None:
    """A Polygon date (``2024-02-06`` or ``2024-02-06T00:00:00Z``) as a date, else None."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def meta_row(
    listed: Mapping[str, Any], details: Mapping[str, Any] | None, now: dt.datetime
) -> dict[str, Any]:
    """One SYMBOL_META row from a tickers-list object and (optionally) its details."""
    d: Mapping[str, Any] = details or {}

    def pick(name: str) -> Any:
        return d.get(name, listed.get(name))

    active = pick("active")
    return {
        "symbol": str(listed["ticker"]),
        "name": _text(pick("name")),
        "type": _text(pick("type")),
        "exchange": _text(pick("primary_exchange")),
        "active": bool(active) if isinstance(active, bool) else True,
        "market_cap": _number(d.get("market_cap")),
        "sic_code": _text(d.get("sic_code")),
        "sic_description": _text(d.get("sic_description")),
        "list_date": parse_day(d.get("list_date")),
        "delist_date": parse_day(pick("delisted_utc")),
        "updated_at": now,
    }


def delisted(held_active: Iterable[str], listed: Iterable[str]) -> list[str]:
    """Tickers we hold as active that the active list no longer names."""
    return sorted(set(held_active) - set(listed))


def to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows as a SYMBOL_META table (numeric market caps as float64)."""
    cols = {
        name: [float(r[name]) if isinstance(r[name], Decimal) else r[name] for r in rows]
        for name in COLUMNS
    }
    return pa.table(cols, schema=SYMBOL_META)


# -- Polygon --------------------------------------------------------------------------------
def _as_of(as_of: dt.date | None) -> dict[str, Any]:
    return {"date": as_of.isoformat()} if as_of else {}


def list_active(fetch: Fetch, as_of: dt.date | None = None) -> list[dict[str, Any]]:
    """Every active US stock ticker (all pages), optionally as of a past date."""
    params = {"market": "stocks", "active": "true", "limit": str(PAGE_LIMIT), **_as_of(as_of)}
    out: list[dict[str, Any]] = []
    for body in pages(fetch, TICKERS_PATH, params):
        results = body.get("results") or []
        if not isinstance(results, list):
            msg = f"tickers list: 'results' is {type(results).__name__}, not a list"
            raise MetadataError(msg)
        out.extend(r for r in results if isinstance(r, dict) and isinstance(r.get("ticker"), str))
    return out


def ticker_details(fetch: Fetch, ticker: str, as_of: dt.date | None = None) -> dict[str, Any]:
    """``/v3/reference/tickers/{ticker}``'s ``results`` object."""
    body = fetch(f"{TICKERS_PATH}/{layout.check_symbol(ticker)}", _as_of(as_of))
    results = body.get("results")
    if not isinstance(results, dict):
        msg = f"details of {ticker}: no results object"
        raise MetadataError(msg)
    return results


# -- Postgres -------------------------------------------------------------------------------
_UPSERT: Final = """
INSERT INTO symbol_metadata AS m (symbol, name, type, exchange, active, market_cap, sic_code,
    sic_description, list_date, delist_date, updated_at)
VALUES (%(symbol)s, %(name)s, %(type)s, %(exchange)s, %(active)s, %(market_cap)s, %(sic_code)s,
    %(sic_description)s, %(list_date)s, %(delist_date)s, %(updated_at)s)
ON CONFLICT (symbol) DO UPDATE SET
    name = COALESCE(EXCLUDED.name, m.name),
    type = COALESCE(EXCLUDED.type, m.type),
    exchange = COALESCE(EXCLUDED.exchange, m.exchange),
    active = EXCLUDED.active,
    market_cap = COALESCE(EXCLUDED.market_cap, m.market_cap),
    sic_code = COALESCE(EXCLUDED.sic_code, m.sic_code),
    sic_description = COALESCE(EXCLUDED.sic_description, m.sic_description),
    list_date = COALESCE(EXCLUDED.list_date, m.list_date),
    delist_date = EXCLUDED.delist_date,
    updated_at = EXCLUDED.updated_at
"""
_DEACTIVATE: Final = """
UPDATE symbol_metadata SET active = false, delist_date = COALESCE(%s, delist_date, %s),
    market_cap = COALESCE(%s, market_cap), updated_at = %s
WHERE symbol = %s
"""


def held(conn: psycopg.Connection[Any]) -> dict[str, bool]:
    """Every symbol in ``symbol_metadata`` and whether it is active."""
    return dict(conn.execute("SELECT symbol, active FROM symbol_metadata").fetchall())


def upsert(conn: psycopg.Connection[Any], rows: Sequence[Mapping[str, Any]]) -> int:
    """Upsert rows in one transaction; a detail missing this time keeps the stored value."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_UPSERT, rows)
    return len(rows)


def deactivate(
    conn: psycopg.Connection[Any],
    symbol: str,
    delist_date: dt.date | None,
    fallback: dt.date,
    market_cap: float | None,
    now: dt.datetime,
) -> None:
    """Mark ``symbol`` inactive (delisted on ``delist_date``, else ``fallback``)."""
    with conn.transaction():
        conn.execute(_DEACTIVATE, (delist_date, fallback, market_cap, now, symbol))


def read_all(conn: psycopg.Connection[Any]) -> pa.Table:
    """The whole table as SYMBOL_META, sorted by symbol."""
    cur = conn.execute(
        "SELECT symbol, name, type, exchange, active, market_cap, sic_code, sic_description,"
        " list_date, delist_date, updated_at FROM symbol_metadata ORDER BY symbol"
    )
    return to_table([dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()])


# -- the run --------------------------------------------------------------------------------
@dataclass(slots=True)
class Summary:
    """Totals of one run."""

    listed: int = 0
    details: int = 0
    upserted: int = 0
    new: list[str] = field(default_factory=list)
    delisted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    lake_key: str | None = None
    seconds: float = 0.0

    def line(self) -> str:
        """One log line."""
        return (
            f"metadata: {self.listed} active tickers, {self.details} details, {self.upserted}"
            f" upserted, {len(self.new)} new listings, {len(self.delisted)} delisted,"
            f" {len(self.failed)} failed, {self.seconds:.1f}s"
        )


def _details_or_error(
    fetch: Fetch, ticker: str, as_of: dt.date | None
) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return ticker_details(fetch, ticker, as_of), None
    except PolygonError as exc:
        if exc.status == 404:  # Polygon has no details for it: not a failure of ours
            return None, None
        return None, redact(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # reported per ticker, and the run exits non-zero
        return None, redact(f"{type(exc).__name__}: {exc}")


def run(
    fetch: Fetch,
    lake: Lake | None,
    database_url: str,
    *,
    as_of: dt.date | None = None,
    details: DetailsMode = "all",
    workers: int = 8,
    progress: bool = False,
) -> Summary:
    """One metadata refresh: list, details, upsert, delistings, lake snapshot."""
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    today = as_of or now.date()
    summary = Summary()
    listed = list_active(fetch, as_of)
    unsupported = [r["ticker"] for r in listed if not layout.SYMBOL_RE.match(r["ticker"])]
    if unsupported:
        log.warning(
            "skipping %d tickers whose symbols the lake cannot hold, e.g. %s",
            len(unsupported),
            ", ".join(unsupported[:10]),
        )
        listed = [r for r in listed if layout.SYMBOL_RE.match(r["ticker"])]
    if not listed:
        msg = "the active tickers list came back empty; refusing to mark every ticker delisted"
        raise MetadataError(msg)
    summary.listed = len(listed)
    with postgres.connect(database_url, autocommit=True) as conn:
        postgres.migrate(conn)
        before = held(conn)
        tickers = [str(r["ticker"]) for r in listed]
        summary.new = sorted(t for t in tickers if t not in before)
        gone = delisted((s for s, active in before.items() if active), tickers)
        wanted = {"all": tickers, "new": summary.new, "none": []}[details] + gone
        found: dict[str, dict[str, Any]] = {}
        with (
            ThreadPoolExecutor(max(1, workers), thread_name_prefix="metadata") as pool,
            tqdm(total=len(wanted), desc="details", unit="tkr", disable=not progress) as bar,
        ):
            for ticker, (doc, error) in zip(
                wanted, pool.map(lambda t: _details_or_error(fetch, t, as_of), wanted), strict=True
            ):
                bar.update(1)
                if doc is not None:
                    found[ticker] = doc
                elif error is not None:
                    summary.failed[ticker] = error
                    log.error("details of %s failed: %s", ticker, error)
        summary.details = len(found)
        rows = [meta_row(r, found.get(str(r["ticker"])), now) for r in listed]
        summary.upserted = upsert(conn, rows)
        for ticker in gone:
            doc = found.get(ticker, {})
            still_active = doc.get("active") is True
            if still_active:  # missing from the list, yet its details say active: keep it
                log.warning("%s is missing from the active list but active in its details", ticker)
                continue
            deactivate(
                conn, ticker, parse_day(doc.get("delisted_utc")), today,
                _number(doc.get("market_cap")), now,
            )  # fmt: skip
            summary.delisted.append(ticker)
        if lake is not None:
            summary.lake_key = layout.reference_tickers()
            lake.write_table(summary.lake_key, read_all(conn))
    summary.seconds = time.perf_counter() - started
    return summary


# -- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The CLI."""
    p = argparse.ArgumentParser(
        prog="python -m dataflows.metadata",
        description="Refresh symbol_metadata from Polygon's tickers list and details, mark"
        " delisted tickers inactive, and write reference/tickers/tickers.parquet to the lake.",
    )
    p.add_argument("--date", type=iso_date, help="reference data as of this date (default: today)")
    p.add_argument(
        "--details",
        choices=("all", "new", "none"),
        help="which tickers get a details request (market cap, SIC): all, new or none"
        " (default: all, or new when the plan allows under one request a second)",
    )
    p.add_argument("--lake", metavar="URL", help="lake root (default: $LAKE_URL)")
    p.add_argument("--no-lake", action="store_true", help="do not write the lake snapshot")
    p.add_argument("--workers", type=int, default=8, help="details requests at once (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; 0 on success, 1 when anything failed."""
    ns = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_redaction()
    from core.settings import ReplaySettings
    from dataflows.connectors.polygon import PolygonGateway

    settings = ReplaySettings()
    details = ns.details or ("all" if settings.requests_per_second >= 1 else "new")
    lake = None
    if not ns.no_lake:
        lake = Lake(
            ns.lake or settings.lake_url,
            endpoint_url=settings.aws_endpoint_url,
            region=settings.aws_default_region,
        )
    try:
        summary = run(
            PolygonGateway.from_settings(settings).get_json,
            lake,
            postgres.database_url(settings),
            as_of=ns.date,
            details=cast(DetailsMode, details),
            workers=ns.workers,
            progress=not ns.no_progress and sys.stderr.isatty(),
        )
    except (MetadataError, PolygonError, psycopg.Error) as exc:
        log.error("metadata failed: %s", redact(f"{type(exc).__name__}: {exc}"))
        return 1
    log.info("%s", summary.line())
    job_counts.hand(
        {
            "listed": summary.listed,
            "details": summary.details,
            "upserted": summary.upserted,
            "new": len(summary.new),
            "delisted": len(summary.delisted),
            "failed": len(summary.failed),
        }
    )
    if summary.new:
        log.info("new listings: %s", ", ".join(summary.new[:50]))
    if summary.delisted:
        log.info("delisted: %s", ", ".join(summary.delisted[:50]))
    for ticker, error in sorted(summary.failed.items()):
        log.error("failed: %s: %s", ticker, error)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
