"""Find the XNYS sessions the lake is missing, per symbol and market-wide; optionally replay them.

``python -m batch.gaps`` reads the dates held for every symbol (its consolidated
``data.parquet`` plus fragments not yet merged, so a fresh replay counts before consolidation)
and reports:

- symbol gaps: every XNYS session between a symbol's first and last date with no row for it.
  Sessions before a listing or after a delisting are outside [first, last], so never reported;
  holidays are not sessions, so never reported. A halt shows as a gap of that symbol only.
- market gaps: sessions between the lake's first and last date with no row for any symbol
  (a replay that never ran). Always computed over the whole lake, even with ``--symbols`` or
  ``--shard``, since "no symbol has it" needs every symbol.

Outputs (overwritten each run; ``--out DIR`` puts them in DIR instead of the lake):
- ``processing_metadata/gaps/symbol_gaps.parquet``: ``symbol`` string, ``date`` date32,
  ``market_wide`` bool (the session is also a market gap), sorted by symbol and date; with
  ``--shard I/N`` the name is ``symbol_gaps_{I}of{N}.parquet``;
- ``processing_metadata/gaps/market_gaps.parquet``: ``date`` date32, sorted.

A table of the worst symbols (``--top N``) and the market gaps goes to stdout. ``--fix`` replays
the sessions missing (symbol and market gaps) by running the replay flow as a subprocess:
``python -m bytewax.run dataflows.replay:flow`` with ``REPLAY_SESSIONS`` set to the ISO dates,
comma-separated, and ``LAKE_URL`` set to the lake examined; the rest of the environment
(``DATABASE_URL``, ``POLYGON_*``) passes through unchanged and is never logged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import duckdb
import pyarrow as pa

from batch import common
from core import calendar, duck, layout
from core.lake import Lake
from core.sharding import Shard

log = logging.getLogger("batch.gaps")

WHOLE_MARKET: Final = Shard()
"""The default shard: every symbol."""
GAPS_DIR: Final = f"{layout.META}/gaps"
SYMBOL_GAPS: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),
        pa.field("market_wide", pa.bool_(), nullable=False),
    ]
)
MARKET_GAPS: Final = pa.schema([pa.field("date", pa.date32(), nullable=False)])
SUMMARY: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("first", pa.date32(), nullable=False),
        pa.field("last", pa.date32(), nullable=False),
        pa.field("sessions", pa.int64(), nullable=False),
        pa.field("missing", pa.int64(), nullable=False),
        pa.field("longest_run", pa.int64(), nullable=False),
        pa.field("first_missing", pa.date32()),
        pa.field("last_missing", pa.date32()),
    ]
)
"""Per symbol with gaps: its span, sessions expected in it, missing, longest run of missing."""
REPLAY_FLOW: Final = ("-m", "bytewax.run", "dataflows.replay:flow")


@dataclass
class Gaps:
    """The result of one scan."""

    symbol_gaps: pa.Table
    market_gaps: pa.Table
    summary: pa.Table
    symbols: int = 0
    rows: int = 0
    off_calendar: int = 0

    def sessions_to_replay(self) -> list[dt.date]:
        """Every session some symbol (or the whole market) lacks, ascending."""
        days = set(self.symbol_gaps["date"].to_pylist()) | set(self.market_gaps["date"].to_pylist())
        return sorted(days)


@dataclass
class GapsReport:
    """What one run found and did."""

    symbols: int = 0
    files: int = 0
    symbol_gaps: int = 0
    symbols_with_gaps: int = 0
    market_gaps: int = 0
    off_calendar: int = 0
    written: list[str] = field(default_factory=list)
    replayed: int = 0
    fix_exit: int | None = None
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True unless a requested replay failed."""
        return self.fix_exit in (None, 0)

    def summary(self) -> str:
        """One line for logs and the console."""
        fix = ""
        if self.fix_exit is not None:
            fix = f"; replayed {self.replayed} sessions (exit {self.fix_exit})"
        return (
            f"{'[dry run] ' if self.dry_run else ''}{self.symbols} symbols from {self.files} "
            f"files: {self.symbol_gaps} missing (symbol, session) pairs in "
            f"{self.symbols_with_gaps} symbols, {self.market_gaps} market-wide gaps, "
            f"{self.off_calendar} rows dated off the XNYS calendar{fix}; {self.seconds:.2f}s"
        )


# -- reading ---------------------------------------------------------------------------------
def daily_files(lake: Lake) -> dict[str, list[str]]:
    """Per symbol: its data.parquet and fragment keys, from one listing of bronze."""
    out: dict[str, list[str]] = {}
    for e in lake.list(layout.DAILY, suffix=".parquet"):
        parsed = layout.parse_fragment(e.key)
        if parsed is not None:
            symbol = parsed[0]
        elif e.key.endswith("/data.parquet"):
            symbol = e.key.rsplit("/", 2)[-2].removeprefix("symbol=")
        else:
            continue
        out.setdefault(symbol, []).append(e.key)
    return out


def observed(lake: Lake, keys: Sequence[str]) -> pa.Table:
    """Distinct (symbol, date) held in ``keys``, as symbol string and date date32."""
    if not keys:
        return pa.table({"symbol": pa.array([], pa.string()), "date": pa.array([], pa.date32())})
    paths = [lake.path(k) if lake.is_local else lake.uri(k) for k in keys]
    with duck.connect(lake) as con:
        return _arrow(
            con,
            "SELECT DISTINCT CAST(symbol AS VARCHAR) AS symbol, CAST(date AS DATE) AS date"
            " FROM read_parquet($files, union_by_name = true)",
            {"files": paths},
        )


# -- finding ---------------------------------------------------------------------------------
def _arrow(con: duckdb.DuckDBPyConnection, query: str, params: object = None) -> pa.Table:
    """The result of ``query`` as an Arrow table (a relation: no extra copy of the rows)."""
    table: pa.Table = con.sql(query, params=params).to_arrow_table()
    return table


def _calendar_table() -> pa.Table:
    days = calendar.session_days()
    return pa.table(
        {
            "day": pa.array(days, pa.int32()).cast(pa.date32()),
            "idx": pa.array(range(len(days)), pa.int64()),
        }
    )


def find(held: pa.Table, chosen: Sequence[str] | None = None, since: dt.date | None = None) -> Gaps:
    """Gaps of the (symbol, date) pairs in ``held``; symbol gaps only for ``chosen`` symbols.

    Pure: DuckDB in memory over Arrow tables. ``since`` drops gaps before that date (spans and
    market-wide bounds still come from all of ``held``).
    """
    cal = _calendar_table()
    picks = pa.table({"symbol": pa.array(sorted(set(chosen or [])), pa.string())})
    limit = since or dt.date.min
    with duck.connect() as con:
        con.register("held", held)
        con.register("cal", cal)
        con.register("picks", picks)
        con.execute(
            "CREATE TEMP TABLE scope AS SELECT symbol, date FROM held"
            " WHERE $all OR symbol IN (SELECT symbol FROM picks)",
            {"all": chosen is None},
        )
        con.execute(
            """
            CREATE TEMP TABLE market AS
            SELECT c.day AS date FROM cal c
            WHERE c.day BETWEEN (SELECT min(date) FROM held) AND (SELECT max(date) FROM held)
              AND c.day >= $since
              AND NOT EXISTS (SELECT 1 FROM held h WHERE h.date = c.day)
            """,
            {"since": limit},
        )
        con.execute(
            """
            CREATE TEMP TABLE missing AS
            WITH span AS (
                SELECT symbol, min(date) AS first, max(date) AS last FROM scope GROUP BY symbol
            )
            SELECT s.symbol, c.day AS date, c.idx FROM span s
            JOIN cal c ON c.day BETWEEN s.first AND s.last
            WHERE c.day >= $since
              AND NOT EXISTS (SELECT 1 FROM scope h WHERE h.symbol = s.symbol AND h.date = c.day)
            """,
            {"since": limit},
        )
        symbol_gaps = _arrow(
            con,
            "SELECT m.symbol, m.date, m.date IN (SELECT date FROM market) AS market_wide"
            " FROM missing m ORDER BY m.symbol, m.date",
        )
        summary = _arrow(
            con,
            """
            WITH span AS (
                SELECT symbol, min(date) AS first, max(date) AS last FROM scope GROUP BY symbol
            ), runs AS (
                SELECT symbol, idx - row_number() OVER (PARTITION BY symbol ORDER BY idx) AS run
                FROM missing
            ), longest AS (
                SELECT symbol, max(n) AS longest_run
                FROM (SELECT symbol, run, count(*) AS n FROM runs GROUP BY symbol, run)
                GROUP BY symbol
            ), agg AS (
                SELECT symbol, count(*) AS missing, min(date) AS first_missing,
                       max(date) AS last_missing
                FROM missing GROUP BY symbol
            )
            SELECT s.symbol, s.first, s.last,
                   (SELECT count(*) FROM cal c WHERE c.day BETWEEN s.first AND s.last) AS sessions,
                   a.missing, l.longest_run, a.first_missing, a.last_missing
            FROM span s JOIN agg a USING (symbol) JOIN longest l USING (symbol)
            ORDER BY a.missing DESC, s.symbol
            """,
        )
        market = _arrow(con, "SELECT date FROM market ORDER BY date")
        counts = con.execute(
            "SELECT count(DISTINCT symbol), count(*),"
            " count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM cal c WHERE c.day = scope.date))"
            " FROM scope"
        ).fetchone()
    n_symbols, n_rows, off = counts if counts else (0, 0, 0)
    return Gaps(
        symbol_gaps=symbol_gaps.cast(SYMBOL_GAPS),
        market_gaps=market.cast(MARKET_GAPS),
        summary=summary.cast(SUMMARY),
        symbols=int(n_symbols),
        rows=int(n_rows),
        off_calendar=int(off),
    )


# -- output ----------------------------------------------------------------------------------
def output_keys(shard: Shard) -> tuple[str, str]:
    """(symbol gaps, market gaps) file names; a shard's symbol gaps carry its I and N."""
    name = "symbol_gaps" if shard.count == 1 else f"symbol_gaps_{shard.index}of{shard.count}"
    return f"{name}.parquet", "market_gaps.parquet"


def write(target: Lake, prefix: str, gaps: Gaps, shard: Shard) -> list[str]:
    """Write both Parquet outputs under ``prefix`` of ``target``; returns their URIs."""
    sym_name, market_name = output_keys(shard)
    out = []
    for name, table in ((sym_name, gaps.symbol_gaps), (market_name, gaps.market_gaps)):
        key = f"{prefix}/{name}" if prefix else name
        target.write_table(key, table)
        out.append(target.uri(key))
    return out


def render(gaps: Gaps, top: int) -> str:
    """The stdout table: worst symbols first, then the market-wide gaps."""
    lines = []
    s = gaps.summary
    lines.append(
        f"symbol gaps: {gaps.symbol_gaps.num_rows} missing sessions in {s.num_rows} symbols"
        + (f" (top {top})" if s.num_rows > top else "")
    )
    if s.num_rows:
        head = ("symbol", "first", "last", "sessions", "missing", "longest", "first_missing",
                "last_missing")  # fmt: skip
        rows = [[str(v) for v in r.values()] for r in s.slice(0, top).to_pylist()]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    market = gaps.market_gaps["date"].to_pylist()
    lines.append(f"market-wide gaps: {len(market)} sessions with no row for any symbol")
    lines += [f"  {d.isoformat()}" for d in market[:top]]
    if len(market) > top:
        lines.append(f"  ... and {len(market) - top} more")
    return "\n".join(lines)


# -- fixing ----------------------------------------------------------------------------------
def fix_command(
    sessions: Sequence[dt.date], lake_url: str, env: Mapping[str, str], python: str = sys.executable
) -> tuple[list[str], dict[str, str]]:
    """The replay subprocess for ``sessions``: argv and its environment (``env`` plus ours)."""
    if not sessions:
        msg = "no sessions to replay"
        raise ValueError(msg)
    child = dict(env)
    child["REPLAY_SESSIONS"] = ",".join(d.isoformat() for d in sorted(set(sessions)))
    child["LAKE_URL"] = lake_url
    return [python, *REPLAY_FLOW], child


def replay(sessions: Sequence[dt.date], lake: Lake, *, python: str = sys.executable) -> int:
    """Run the replay flow over ``sessions``; its output streams through; returns its exit."""
    argv, env = fix_command(sessions, lake.url, os.environ, python)
    if lake.endpoint_url and "AWS_ENDPOINT_URL" not in env:
        env["AWS_ENDPOINT_URL"] = lake.endpoint_url
    log.info(
        "replaying %d sessions (%s .. %s): %s",
        len(sessions), sessions[0], sessions[-1], " ".join(argv[1:]),
    )  # fmt: skip
    return subprocess.run(argv, env=env, check=False).returncode


# -- the job ---------------------------------------------------------------------------------
def run(
    lake: Lake,
    symbols: Sequence[str] | None = None,
    shard: Shard = WHOLE_MARKET,
    *,
    since: dt.date | None = None,
) -> tuple[Gaps, int]:
    """Scan the lake; returns the gaps and the number of files read."""
    files = daily_files(lake)
    keys = [k for ks in files.values() for k in ks]
    log.info("reading dates of %d symbols from %d files", len(files), len(keys))
    held = observed(lake, keys)
    chosen: list[str] | None = None
    if symbols is not None or shard.count > 1:
        chosen = shard.select(sorted(symbols) if symbols is not None else sorted(files))
    return find(held, chosen, since), len(keys)


def build_parser() -> argparse.ArgumentParser:
    """The command line: the common job options plus the gaps knobs."""
    p = common.parser(
        "gaps",
        "Report XNYS sessions missing per symbol (between its first and last date) and "
        f"market-wide, as a table and as Parquet under {GAPS_DIR}/; --fix replays them.",
    )
    p.add_argument("--top", type=int, default=20, help="rows of the stdout table (default 20)")
    p.add_argument("--out", metavar="DIR", help=f"write the Parquet here instead of {GAPS_DIR}/")
    p.add_argument(
        "--since", type=dt.date.fromisoformat, metavar="YYYY-MM-DD", help="ignore earlier gaps"
    )
    p.add_argument(
        "--fix",
        action="store_true",
        help="replay the missing sessions: python -m bytewax.run dataflows.replay:flow with "
        "REPLAY_SESSIONS (with --dry-run: print what would be replayed)",
    )
    p.add_argument("--fail-on-gaps", action="store_true", help="exit 2 when any gap is found")
    return p


@common.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m batch.gaps``."""
    p = build_parser()
    args = common.parse(p, argv)
    ns = args.extra
    if ns.top < 0:
        p.error("--top must be >= 0")
    started = time.perf_counter()
    report = GapsReport(dry_run=args.dry_run)
    with common.recorded("gaps") as counts:
        gaps, report.files = run(args.lake, args.symbols, args.shard, since=ns.since)
        report.symbols = gaps.symbols
        report.symbol_gaps = gaps.symbol_gaps.num_rows
        report.symbols_with_gaps = gaps.summary.num_rows
        report.market_gaps = gaps.market_gaps.num_rows
        report.off_calendar = gaps.off_calendar
        print(render(gaps, ns.top))
        if not args.dry_run:
            if ns.out:
                target = Lake(ns.out, endpoint_url=args.lake.endpoint_url, region=args.lake.region)
                report.written = write(target, "", gaps, args.shard)
            else:
                report.written = write(args.lake, GAPS_DIR, gaps, args.shard)
            for uri in report.written:
                log.info("wrote %s", uri)
        sessions = gaps.sessions_to_replay()
        if ns.fix and sessions:
            report.replayed = len(sessions)
            if args.dry_run:
                print("would replay: " + ",".join(d.isoformat() for d in sessions))
            else:
                report.fix_exit = replay(sessions, args.lake)
        report.seconds = time.perf_counter() - started
        counts.update(
            symbols=report.symbols,
            symbol_gaps=report.symbol_gaps,
            market_gaps=report.market_gaps,
            replayed=report.replayed,
        )
        print(report.summary())
        if not report.ok:
            msg = f"the replay of {report.replayed} sessions exited {report.fix_exit}"
            raise RuntimeError(msg)
    if ns.fail_on_gaps and (report.symbol_gaps or report.market_gaps):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(None))
