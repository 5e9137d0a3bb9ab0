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

How: each symbol's files are read on the process pool (one GET each, only the ``date`` column)
and compared with the session table by vectorised look-ups, so the cost is one pass over the
dates (the full market, 22.6M rows, in seconds); market gaps come from a coverage count over
the symbols' spans less their misses. Rows dated on non-sessions are counted and reported.

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
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch.engine import common, gap_alerts, pool
from batch.engine import manifest as mf
from batch.engine.manifest import FragmentId
from core import calendar, layout, notify
from core.lake import Lake, reading
from core.settings import BatchSettings
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
    failed: dict[str, str] = field(default_factory=dict)
    spans: dict[str, tuple[dt.date, dt.date]] = field(default_factory=dict)
    """First and last date held by each reported symbol."""
    lake_last: dt.date | None = None
    """The last session any symbol holds."""

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
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True unless a symbol could not be read or a requested replay failed."""
        return not self.failed and self.fix_exit in (None, 0)

    def summary(self) -> str:
        """One line for logs and the console."""
        fix = ""
        if self.fix_exit is not None:
            fix = f"; replayed {self.replayed} sessions (exit {self.fix_exit})"
        return (
            f"{'[dry run] ' if self.dry_run else ''}{self.symbols} symbols from {self.files} "
            f"files: {self.symbol_gaps} missing (symbol, session) pairs in "
            f"{self.symbols_with_gaps} symbols, {self.market_gaps} market-wide gaps, "
            f"{self.off_calendar} rows dated off the XNYS calendar{fix}; {len(self.failed)} "
            f"failed, {self.seconds:.2f}s"
        )


# -- per symbol (pure) ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SymbolScan:
    """One symbol's dates against the calendar: span and missing sessions as session indices."""

    symbol: str
    first: int  # session index of the first date held; -1 when no date is a session
    last: int
    missing: npt.NDArray[np.int32]
    rows: int
    off_calendar: int
    error: str | None = None


def scan_dates(symbol: str, days: npt.NDArray[np.int32]) -> SymbolScan:
    """Sessions missing between the first and last session ``days`` (date32 values) hold."""
    sessions = calendar.session_days()
    held = np.unique(days)
    idx = np.searchsorted(sessions, held).astype(np.int64)
    on = (idx < len(sessions)) & (sessions[np.minimum(idx, len(sessions) - 1)] == held)
    present = idx[on]
    off = int(len(held) - len(present))
    if not len(present):
        return SymbolScan(symbol, -1, -1, np.zeros(0, np.int32), len(days), off)
    first, last = int(present[0]), int(present[-1])
    mask = np.ones(last - first + 1, dtype=bool)
    mask[present - first] = False
    missing = (np.flatnonzero(mask) + first).astype(np.int32)
    return SymbolScan(symbol, first, last, missing, len(days), off)


def _longest_run(missing: npt.NDArray[np.int32]) -> int:
    if not len(missing):
        return 0
    breaks = np.flatnonzero(np.diff(missing) != 1)
    edges = np.concatenate([[-1], breaks, [len(missing) - 1]])
    return int(np.diff(edges).max())


def _day(value: Any) -> dt.date:
    """One date32 value of the session table as a date."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(value))


def _as_dates(idx: npt.NDArray[np.integer[Any]]) -> pa.Array:
    return pa.array(calendar.session_days()[idx], pa.int32()).cast(pa.date32())


def assemble(
    scans: Sequence[SymbolScan], chosen: Sequence[str] | None = None, since: dt.date | None = None
) -> Gaps:
    """Symbol gaps of ``chosen`` (all when None) and market gaps over all ``scans``.

    A session is a market gap when it lies between the lake's first and last session and every
    symbol either does not span it or misses it: a coverage count over spans, less the misses.
    """
    sessions = calendar.session_days()
    floor = calendar.session_index(since) if since is not None else 0
    spans = [s for s in scans if s.first >= 0]
    market_idx = np.zeros(0, np.int64)
    if spans:
        cover = np.zeros(len(sessions) + 1, dtype=np.int64)
        np.add.at(cover, [s.first for s in spans], 1)
        np.add.at(cover, [s.last + 1 for s in spans], -1)
        cover = np.cumsum(cover)[:-1]
        misses = np.concatenate([s.missing for s in spans]).astype(np.int64)
        np.subtract.at(cover, misses, 1)
        lo, hi = min(s.first for s in spans), max(s.last for s in spans)
        market_idx = np.flatnonzero(cover[lo : hi + 1] == 0) + lo
        market_idx = market_idx[market_idx >= floor]
    wanted = set(chosen) if chosen is not None else None
    picked = sorted(
        (s for s in spans if wanted is None or s.symbol in wanted), key=lambda s: s.symbol
    )
    names: list[str] = []
    counts: list[int] = []
    parts: list[npt.NDArray[np.int32]] = []
    rows: list[tuple[Any, ...]] = []
    for s in picked:
        miss = s.missing[s.missing >= floor]
        if not len(miss):
            continue
        names.append(s.symbol)
        counts.append(len(miss))
        parts.append(miss)
        rows.append((s.symbol, s.first, s.last, s.last - s.first + 1, len(miss),
                     _longest_run(miss), int(miss[0]), int(miss[-1])))  # fmt: skip
    missing = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    symbol_gaps = pa.table(
        {
            "symbol": pa.array(np.repeat(np.asarray(names, dtype=object), counts), pa.string()),
            "date": _as_dates(missing),
            "market_wide": pa.array(np.isin(missing, market_idx), pa.bool_()),
        },
        schema=SYMBOL_GAPS,
    )
    rows.sort(key=lambda r: (-r[4], r[0]))  # most sessions missing first
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in SUMMARY.names]
    summary = {name: list(col) for name, col in zip(SUMMARY.names, columns, strict=True)}
    for name in ("first", "last", "first_missing", "last_missing"):
        summary[name] = _as_dates(np.asarray(summary[name], dtype=np.int64)).to_pylist()
    days = calendar.session_days()
    return Gaps(
        spans={s.symbol: (_day(days[s.first]), _day(days[s.last])) for s in picked},
        lake_last=_day(days[max(s.last for s in spans)]) if spans else None,
        symbol_gaps=symbol_gaps,
        market_gaps=pa.table({"date": _as_dates(market_idx)}, schema=MARKET_GAPS),
        summary=pa.table(summary, schema=SUMMARY),
        symbols=len(picked) if chosen is not None else len(scans),
        rows=sum(s.rows for s in scans if wanted is None or s.symbol in wanted),
        off_calendar=sum(s.off_calendar for s in scans if wanted is None or s.symbol in wanted),
    )


# -- reading ---------------------------------------------------------------------------------
def daily_files(lake: Lake, merged: Collection[FragmentId] = ()) -> dict[str, list[str]]:
    """Per symbol: its data.parquet and fragment keys, from one listing of bronze.

    Fragments in ``merged`` are left out: their accepted rows are in data.parquet, and a row
    consolidation refused (in the quarantine) is no session's data.
    """
    out: dict[str, list[str]] = {}
    for e in lake.list(layout.DAILY, suffix=".parquet"):
        parsed = layout.parse_fragment(e.key)
        if parsed is not None:
            if merged and FragmentId.of(e) in merged:
                continue
            symbol = parsed[0]
        elif e.key.endswith("/data.parquet"):
            symbol = e.key.rsplit("/", 2)[-2].removeprefix("symbol=")
        else:
            continue
        out.setdefault(symbol, []).append(e.key)
    return out


def read_dates(lake: Lake, key: str) -> npt.NDArray[np.int32]:
    """The ``date`` column of one file as date32 values (one GET, only that column decoded)."""
    with reading(key):
        source = pa.BufferReader(lake.read_bytes(key))
        column = pq.ParquetFile(source).read(columns=["date"], use_threads=False)["date"]
        return np.asarray(pc.cast(column, pa.date32()).cast(pa.int32()).to_numpy(), dtype=np.int32)


def scan_symbol(lake: Lake, symbol: str, keys: Sequence[str]) -> SymbolScan:
    """Read every file of one symbol and scan its dates."""
    days = [read_dates(lake, k) for k in keys]
    return scan_dates(symbol, np.concatenate(days) if days else np.zeros(0, np.int32))


_LAKE: Lake | None = None


def _init_worker(url: str, endpoint: str | None, region: str | None) -> None:
    global _LAKE
    _LAKE = Lake(url, endpoint_url=endpoint, region=region)
    pool.single_threaded_arrow()


def _work(item: tuple[str, tuple[str, ...]]) -> SymbolScan:
    assert _LAKE is not None, "worker not initialised"
    symbol, keys = item
    try:
        return scan_symbol(_LAKE, symbol, keys)
    except Exception as exc:  # reported per symbol; the run exits non-zero
        log.debug("scanning %s failed", symbol, exc_info=True)
        return SymbolScan(
            symbol, -1, -1, np.zeros(0, np.int32), 0, 0, f"{type(exc).__name__}: {exc}"
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
    workers: int = 1,
    progress: bool = False,
) -> tuple[Gaps, int]:
    """Scan the lake; returns the gaps and the number of files read.

    Every symbol is read, since market gaps need them all; ``symbols`` and ``shard`` choose
    whose symbol gaps are reported. A symbol that cannot be read is in ``Gaps.failed``.
    """
    merged = {f for state in mf.read(lake).values() for f in state.fragments}
    files = daily_files(lake, merged)
    items = [(s, tuple(files[s])) for s in sorted(files)]
    n_files = sum(len(k) for _, k in items)
    log.info("reading dates of %d symbols from %d files", len(items), n_files)
    scans = pool.map_items(
        _work,
        items,
        workers=workers,
        progress=progress,
        desc="gaps",
        initializer=_init_worker,
        initargs=(lake.url, lake.endpoint_url, lake.region),
    )
    chosen: list[str] | None = None
    if symbols is not None or shard.count > 1:
        chosen = shard.select(sorted(symbols) if symbols is not None else sorted(files))
    found = assemble([s for s in scans if s.error is None], chosen, since)
    found.failed = {s.symbol: s.error for s in scans if s.error is not None}
    return found, n_files


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
    p.add_argument(
        "--alert",
        action="store_true",
        help="sort the gaps (halts and delistings are explained) and publish the unexplained "
        "ones with counts to the SNS topic",
    )
    p.add_argument(
        "--sns-topic-arn", metavar="ARN", help="topic of --alert (default: $SNS_TOPIC_ARN)"
    )
    return p


def alert(
    lake: Lake, gaps: Gaps, *, topic: str | None, dry_run: bool, run_id: str | None
) -> gap_alerts.Sorted:
    """Sort ``gaps`` and publish the unexplained ones to ``topic`` (logged when none is set)."""
    pairs = [(r["symbol"], r["date"], r["market_wide"]) for r in gaps.symbol_gaps.to_pylist()]
    own_days = {d for _, d, market in pairs if not market}
    found = gap_alerts.sort_gaps(
        pairs,
        gaps.market_gaps["date"].to_pylist(),
        gaps.spans,
        lake_last=gaps.lake_last,
        quarantined=gap_alerts.quarantined_keys(lake, own_days) if own_days else set(),
        active=gap_alerts.listings(lake),
    )
    print("gap kinds: " + ", ".join(f"{k} {n}" for k, n in found.counts.items()))
    if not found.total_unexplained:
        return found
    message = found.message(lake.url, run_id)
    if dry_run or not topic:
        why = "dry run" if dry_run else "no SNS topic (--sns-topic-arn, SNS_TOPIC_ARN)"
        log.warning("%d unexplained gaps, not published (%s)", found.total_unexplained, why)
        return found
    settings = BatchSettings()
    notify.publish(
        topic,
        f"condvest: {found.total_unexplained} unexplained gaps",
        message,
        endpoint_url=settings.aws_endpoint_url,
        region=settings.aws_default_region,
    )
    log.info("%d unexplained gaps published to %s", found.total_unexplained, topic)
    return found


@common.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m batch.gaps``."""
    p = build_parser()
    args = common.parse(p, argv, reads_lake=True)
    ns = args.extra
    if ns.top < 0:
        p.error("--top must be >= 0")
    started = time.perf_counter()
    report = GapsReport(dry_run=args.dry_run)
    with common.recorded("gaps") as counts:
        gaps, report.files = run(
            args.lake, args.symbols, args.shard, since=ns.since, workers=args.workers,
            progress=args.progress,
        )  # fmt: skip
        report.failed = gaps.failed
        report.symbols = gaps.symbols
        report.symbol_gaps = gaps.symbol_gaps.num_rows
        report.symbols_with_gaps = gaps.summary.num_rows
        report.market_gaps = gaps.market_gaps.num_rows
        report.off_calendar = gaps.off_calendar
        print(render(gaps, ns.top))
        complete = not gaps.failed  # a symbol not read could fake market gaps: write nothing
        if complete and not args.dry_run:
            if ns.out:
                target = Lake(ns.out, endpoint_url=args.lake.endpoint_url, region=args.lake.region)
                report.written = write(target, "", gaps, args.shard)
            else:
                report.written = write(args.lake, GAPS_DIR, gaps, args.shard)
            for uri in report.written:
                log.info("wrote %s", uri)
        if complete and ns.alert:
            topic = ns.sns_topic_arn or BatchSettings().sns_topic_arn
            run_id = os.environ.get("BATCH_RUN_ID")
            kinds = alert(args.lake, gaps, topic=topic, dry_run=args.dry_run, run_id=run_id)
            counts.update({f"{k}_gaps": n for k, n in kinds.counts.items()})
            counts["unexplained_gaps"] = kinds.total_unexplained
        sessions = gaps.sessions_to_replay()
        if complete and ns.fix and sessions:
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
        common.fail_on_symbols(report.failed, "symbols could not be read")
        if not report.ok:
            msg = f"the replay of {report.replayed} sessions exited {report.fix_exit}"
            raise RuntimeError(msg)
    if ns.fail_on_gaps and (report.symbol_gaps or report.market_gaps):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(None))
