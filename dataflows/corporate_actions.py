"""Splits and dividends from the vendor into Postgres and the lake, checked against our factors.

``python -m dataflows.corporate_actions [--symbols A,B] [--since D]``

Reads every page (``next_url``) of the vendor's current ``/stocks/v1/splits`` and
``/stocks/v1/dividends`` through the same rate-limited, retried gateway as every other Polygon
call, converts them (:mod:`dataflows.action_rows`; bad objects go to
``quarantine/corporate_actions/`` with a reason) and makes the ``splits`` and ``dividends``
tables equal to what the vendor now reports for the scope (all symbols or ``--symbols``, every
action or those from ``--since`` on): new actions added, changed ones updated, withdrawn ones
deleted, nothing duplicated (:mod:`core.stores.actions`); an action whose object was rejected
keeps what was held for it, and one moved to another date (same id) leaves its old one. The
whole tables are then written to ``reference/splits/splits.parquet`` and
``reference/dividends/dividends.parquet``.

Last, each symbol's vendor ``historical_adjustment_factor`` is compared with ours
(:func:`core.adjustments.vendor_disagreements`, dividends against the raw closes of the lake's
consolidated rows) and every symbol that differs by more than 1e-6 is reported, as are the
dividends that cannot be applied. Raw data is never changed here: readers adjust on read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
import pyarrow as pa

from core import adjustments as adj
from core import arrays, layout, quarantine
from core import counts as job_counts
from core.cli import iso_date
from core.lake import Lake, LakeError, open_lake
from core.secrets import install_redaction, redact
from core.stores import actions as store
from core.stores import postgres
from dataflows import action_rows
from dataflows.backfill import Fetch, pages
from dataflows.connectors.polygon import PolygonError

log = logging.getLogger("dataflows.corporate_actions")

SPLITS_PATH: Final = "/stocks/v1/splits"
DIVIDENDS_PATH: Final = "/stocks/v1/dividends"
PAGE_LIMIT: Final = 5000
SYMBOLS_PER_REQUEST: Final = 100
"""``ticker.any_of`` names at most this many symbols, so a URL stays short."""
QUARANTINE_SOURCE: Final = "corporate_actions"


class ActionsError(RuntimeError):
    """The vendor's answer cannot be used (e.g. ``results`` is not a list)."""


# -- fetching -----------------------------------------------------------------------------------
def fetch_all(
    fetch: Fetch,
    path: str,
    date_field: str,
    symbols: Sequence[str] | None,
    since: dt.date | None,
    page_limit: int = PAGE_LIMIT,
) -> list[Any]:
    """Every result object of ``path`` in the scope, all pages."""
    base: dict[str, str] = {"limit": str(page_limit)}
    if since is not None:
        base[f"{date_field}.gte"] = since.isoformat()
    groups: list[dict[str, str]] = [base]
    if symbols is not None:
        groups = [
            {**base, "ticker.any_of": ",".join(symbols[i : i + SYMBOLS_PER_REQUEST])}
            for i in range(0, len(symbols), SYMBOLS_PER_REQUEST)
        ]
    out: list[Any] = []
    for params in groups:
        for body in pages(fetch, path, params):
            results = body.get("results") or []
            if not isinstance(results, list):
                msg = f"{path}: 'results' is {type(results).__name__}, not a list"
                raise ActionsError(msg)
            out.extend(results)
    return out


# -- checking against the vendor ----------------------------------------------------------------
def _closes(lake: Lake, symbol: str) -> adj.CloseBefore | None:
    """The raw closes of ``symbol``'s consolidated rows, or None without a data.parquet."""
    key = layout.consolidated(symbol)
    if not lake.exists(key):
        return None
    table = lake.read_table(key, columns=["date", "close"]).sort_by("date")
    return adj.close_before_from(arrays.date_days(table), arrays.to_numpy(table["close"]))


@dataclass
class Check:
    """Vendor factors that differ from ours, and dividends that cannot be applied."""

    disagreements: list[adj.Disagreement] = field(default_factory=list)
    unapplicable: list[adj.Skipped] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    """Symbols with dividends but no consolidated rows (their dividends were not compared)."""

    def symbols(self) -> list[str]:
        """Symbols with at least one disagreement."""
        return sorted({d.symbol for d in self.disagreements})


def check(actions: Mapping[str, adj.Actions], lake: Lake | None, workers: int = 8) -> Check:
    """Compare every symbol's vendor factors with ours (dividends need the lake's closes)."""
    out = Check()

    def one(a: adj.Actions) -> tuple[list[adj.Disagreement], list[adj.Skipped], bool]:
        closes = _closes(lake, a.symbol) if lake is not None and a.dividends else None
        found = adj.vendor_disagreements(a, closes)
        if closes is None:
            return found, [], bool(a.dividends)
        return found, adj.dividend_terms(a.symbol, a.dividends, closes)[1], False

    with ThreadPoolExecutor(max(1, workers)) as ex:
        for a, (found, skipped, unchecked) in zip(
            actions.values(), ex.map(one, actions.values()), strict=True
        ):
            out.disagreements += found
            out.unapplicable += skipped
            if unchecked:
                out.unchecked.append(a.symbol)
    return out


# -- the run ------------------------------------------------------------------------------------
@dataclass
class Summary:
    """Totals of one run."""

    splits: store.SyncResult | None = None
    dividends: store.SyncResult | None = None
    rejected: int = 0
    quarantined: list[str] = field(default_factory=list)
    lake_keys: list[str] = field(default_factory=list)
    check: Check = field(default_factory=Check)
    seconds: float = 0.0
    dry_run: bool = False
    """Nothing was written: the results are what a run would change."""

    def symbols_changed(self) -> list[str]:
        """Symbols whose splits are new, changed or withdrawn: their silver and gold rebuild."""
        return sorted(self.splits.symbols_touched()) if self.splits else []

    def counts(self) -> dict[str, Any]:
        """What the pipeline records in batch_jobs."""
        out: dict[str, Any] = {"rejected": self.rejected, "dry_run": self.dry_run}
        for r in (self.splits, self.dividends):
            if r is not None:
                out[r.table] = {
                    "fetched": r.fetched,
                    "new": len(r.new),
                    "changed": len(r.changed),
                    "withdrawn": len(r.withdrawn),
                }
        out["split_symbols_changed"] = self.symbols_changed()
        out["disagreements"] = len(self.check.disagreements)
        out["disagreeing_symbols"] = self.check.symbols()
        out["dividends_unapplicable"] = len(self.check.unapplicable)
        return out


def run(
    fetch: Fetch,
    lake: Lake | None,
    database_url: str,
    *,
    symbols: Sequence[str] | None = None,
    since: dt.date | None = None,
    verify: bool = True,
    page_limit: int = PAGE_LIMIT,
    dry_run: bool = False,
) -> Summary:
    """One refresh of both tables and their lake files, then the check; see the module doc.

    ``dry_run``: the same fetch, comparison and check, in a database transaction rolled back
    at the end, and nothing written to the lake (reference/, quarantine): the summary says
    what a run would change.
    """
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    summary = Summary(dry_run=dry_run)
    fetched = {
        "splits": fetch_all(fetch, SPLITS_PATH, "execution_date", symbols, since, page_limit),
        "dividends": fetch_all(
            fetch, DIVIDENDS_PATH, "ex_dividend_date", symbols, since, page_limit
        ),
    }
    converted = {
        "splits": action_rows.convert(
            fetched["splits"], action_rows.split_row, action_rows.SPLIT_KEY, now
        ),
        "dividends": action_rows.convert(
            fetched["dividends"], action_rows.dividend_row, action_rows.DIVIDEND_KEY, now
        ),
    }
    for name, (_, rejected) in converted.items():
        summary.rejected += len(rejected)
        if rejected and lake is not None and not dry_run:
            table = action_rows.quarantine_table(rejected, QUARANTINE_SOURCE, now)
            key = quarantine.write(
                lake, QUARANTINE_SOURCE, quarantine.day_of(table, now), name.upper(), table
            )
            summary.quarantined.append(key)
        for obj, reason in rejected[:20]:
            log.warning("rejected %s object %s: %s", name, _short(obj), reason)
    with postgres.connect(database_url, autocommit=True) as conn:
        if dry_run:  # one transaction, rolled back: the tables as they were
            with conn.transaction() as tx:
                synced, split_table, dividend_table = _store(conn, converted, symbols, since)
                raise psycopg.Rollback(tx)
        else:
            synced, split_table, dividend_table = _store(conn, converted, symbols, since)
    summary.splits, summary.dividends = synced["splits"], synced["dividends"]
    if lake is not None and not dry_run:
        lake.write_table(layout.reference_splits(), split_table)
        lake.write_table(layout.reference_dividends(), dividend_table)
        summary.lake_keys = [layout.reference_splits(), layout.reference_dividends()]
    if verify:
        everything = adj.actions_from_tables(split_table, dividend_table, symbols)
        summary.check = check(everything, lake)
    summary.seconds = time.perf_counter() - started
    return summary


def _store(
    conn: psycopg.Connection[Any],
    converted: dict[str, tuple[list[action_rows.Row], list[action_rows.Rejected]]],
    symbols: Sequence[str] | None,
    since: dt.date | None,
) -> tuple[dict[str, store.SyncResult], pa.Table, pa.Table]:
    """Both tables synced to the converted rows; the results and both tables as they are."""
    postgres.migrate(conn)
    synced = {
        name: store.sync(
            conn,
            spec,
            converted[name][0],
            symbols=symbols,
            since=since,
            kept=action_rows.rejected_marks(converted[name][1], spec.key),
        )
        for name, spec in (("splits", store.SPLITS_TABLE), ("dividends", store.DIVIDENDS_TABLE))
    }
    return (
        synced,
        store.read_all(conn, store.SPLITS_TABLE),
        store.read_all(conn, store.DIVIDENDS_TABLE),
    )


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 160 else text[:157] + "..."


# -- command line -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The CLI."""
    p = argparse.ArgumentParser(
        prog="python -m dataflows.corporate_actions",
        description="Fetch the vendor's splits and dividends (/stocks/v1/...) into the splits "
        "and dividends tables and reference/ in the lake; report every symbol whose vendor "
        "adjustment factor differs from ours and every dividend that cannot be applied.",
    )
    p.add_argument("--symbols", metavar="A,B", help="only these symbols (default: every symbol)")
    p.add_argument(
        "--since",
        type=iso_date,
        metavar="YYYY-MM-DD",
        help="only actions dated on or after this day (default: the whole history)",
    )
    p.add_argument("--lake", metavar="URL", help="lake root (default: $LAKE_URL)")
    p.add_argument("--no-lake", action="store_true", help="do not write reference/ in the lake")
    p.add_argument("--no-check", action="store_true", help="do not compare the vendor's factors")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="fetch, compare and check, then write nothing (tables, reference/, quarantine): "
        "report what a run would change",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; 0 on success, 1 when the fetch or the database failed, 2 for usage."""
    p = build_parser()
    ns = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_redaction()
    symbols = None
    if ns.symbols is not None:
        try:
            symbols = sorted(
                {layout.normalise_symbol(s) for s in ns.symbols.split(",") if s.strip()}
            )
        except layout.LayoutError as exc:
            p.error(str(exc))
        if not symbols:
            p.error("--symbols names no symbol")
    from core.settings import ReplaySettings
    from dataflows.connectors.polygon import PolygonGateway

    settings = ReplaySettings()
    lake = None if ns.no_lake else open_lake(ns.lake)
    try:
        summary = run(
            PolygonGateway.from_settings(settings).get_json,
            lake,
            postgres.database_url(settings),
            symbols=symbols,
            since=ns.since,
            verify=not ns.no_check,
            dry_run=ns.dry_run,
        )
    except (ActionsError, PolygonError, psycopg.Error, LakeError) as exc:
        log.error("corporate actions failed: %s", redact(f"{type(exc).__name__}: {exc}"))
        return 1
    report(summary)
    job_counts.hand(summary.counts())
    return 0


def report(summary: Summary) -> None:
    """Log what the run did, every disagreement and every dividend that cannot be applied."""
    if summary.dry_run:
        log.info("dry run: nothing written; below is what a run would change")
    for r in (summary.splits, summary.dividends):
        if r is not None:
            log.info("%s", r.line())
            for kind, keys in (("new", r.new), ("changed", r.changed), ("withdrawn", r.withdrawn)):
                if keys and kind != "new":
                    log.info("%s %s: %s", r.table, kind, ", ".join(map(_key, keys[:20])))
    if summary.rejected:
        log.warning(
            "%d objects rejected (see %s)", summary.rejected, ", ".join(summary.quarantined)
        )
    changed = summary.symbols_changed()
    if changed:
        log.info(
            "splits changed for %d symbols (their silver rebuilds on the next resample): %s",
            len(changed),
            ", ".join(changed[:50]),
        )
    c = summary.check
    if c.disagreements:
        log.warning(
            "vendor and our adjustment factors differ by more than %g for %d symbols: %s",
            adj.VENDOR_TOLERANCE,
            len(c.symbols()),
            ", ".join(c.symbols()),
        )
        for d in c.disagreements:
            log.warning("  %s", d.line())
    for s in c.unapplicable:
        log.warning("dividend not applied: %s", s.line())
    if c.unchecked:
        log.info("%d symbols with dividends have no consolidated rows to check against",
                 len(c.unchecked))  # fmt: skip
    log.info("corporate actions done in %.1fs", summary.seconds)


def _key(k: Sequence[Any]) -> str:
    return " ".join(str(x) for x in k)


if __name__ == "__main__":
    sys.exit(main())
