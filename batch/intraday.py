"""Intraday silver: ``silver/silver_{I}/date=D/data.parquet`` for I in 5m..4h, from consolidated minutes.

``python -m batch.intraday [--intervals 5m,1h] [--sessions D,..|--start D --end D] [--full]``.

Per session and interval, :func:`core.intraday.rollup` over the session's consolidated minute
file, written atomically, sorted by (symbol, start), in small row groups. Incremental by
session: each file records what it was built from (the minute file's own record of the
fragments it merged, and whether the session was over), so a run rebuilds only the sessions
whose minutes changed, or that closed since their last build; ``--full`` rebuilds every one.
Files hold the whole market of a session, so ``--shard I/N`` splits sessions (by a stable hash
of the date): N shards still write exactly what one run writes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from batch.engine import common, minutes
from core import calendar, intraday, layout
from core.cli import iso_date
from core.lake import Lake, LakeError
from core.sharding import shard_of

log = logging.getLogger("batch.intraday")
ROW_GROUP: Final = 2048
"""Rows per row group: one symbol's session is read by statistics pruning."""
_STAMP: Final = b"condvest.intraday_source"
KERNEL: Final = "1"
"""Bumped when the rollup changes, so every session is rebuilt once."""
MINUTE_COLUMNS: Final = (
    "symbol", "date", "start", "open", "high", "low", "close", "volume", "vwap", "trades",
)  # fmt: skip


@dataclass
class IntradayReport:
    """What a run did."""

    sessions: int = 0
    built: int = 0
    skipped: int = 0
    bars: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the log and the terminal."""
        return (
            f"intraday: {self.sessions} sessions, {self.built} files built, {self.skipped}"
            f" unchanged, {self.bars} bars, {len(self.failed)} failed"
        )


def consolidated_sessions(lake: Lake) -> list[dt.date]:
    """Sessions whose minutes are consolidated (a ``data.parquet`` in their folder)."""
    days = []
    for d in minutes.sessions(lake):
        if lake.exists(layout.minute_consolidated(d)):
            days.append(d)
    return days


def horizon_us(table: pa.Table, day: dt.date, now: dt.datetime) -> int:
    """Up to when the session's minutes are known: its close once over, else the newest minute."""
    close = calendar.session_close(day)
    if now >= close:
        return int(close.timestamp()) * 1_000_000
    newest = pc.max(table["start"]).as_py() if table.num_rows else None
    return int(newest.timestamp() * 1_000_000) + intraday.MINUTE_US if newest else 0


def _recorded(lake: Lake, key: str) -> bytes | None:
    if not lake.exists(key):
        return None
    meta = pq.ParquetFile(lake.path(key), filesystem=lake.fs).schema_arrow.metadata or {}
    return meta.get(_STAMP)


def _source_stamp(lake: Lake, day: dt.date, closed: bool) -> bytes:
    key = layout.minute_consolidated(day)
    meta = pq.ParquetFile(lake.path(key), filesystem=lake.fs).schema_arrow.metadata or {}
    merged = meta.get(minutes._DIGEST) or b""
    size = lake.fs.get_file_info(lake.path(key)).size
    h = hashlib.blake2b(digest_size=16)
    h.update(b"%s|%d|%d|%s" % (merged, size, closed, KERNEL.encode()))
    return h.hexdigest().encode()


def build_session(
    lake: Lake,
    day: dt.date,
    intervals: Sequence[str],
    *,
    full: bool = False,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> tuple[int, int]:
    """Build the session's files that are out of date; (files built, bars written)."""
    now = now or dt.datetime.now(dt.UTC)
    closed = now >= calendar.session_close(day)
    stamp = _source_stamp(lake, day, closed)
    todo = [i for i in intervals if full or _recorded(lake, layout.intraday_file(i, day)) != stamp]
    if not todo:
        return 0, 0
    table = lake.read_table(layout.minute_consolidated(day), columns=list(MINUTE_COLUMNS))
    horizon = horizon_us(table, day, now)
    built = bars = 0
    for name in todo:
        out = intraday.rollup(table, name, horizon_us=horizon)
        if not dry_run:
            meta = {**(out.schema.metadata or {}), _STAMP: stamp}
            lake.write_table(
                layout.intraday_file(name, day),
                out.replace_schema_metadata(meta),
                row_group_size=ROW_GROUP,
            )
        built += 1
        bars += out.num_rows
    return built, bars


def run(
    lake: Lake,
    days: Sequence[dt.date] | None = None,
    intervals: Sequence[str] = tuple(intraday.INTERVALS),
    *,
    full: bool = False,
    dry_run: bool = False,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    progress: bool = False,
    now: dt.datetime | None = None,
) -> IntradayReport:
    """Build intraday silver for ``days`` (default: every consolidated session)."""
    chosen = list(days) if days is not None else consolidated_sessions(lake)
    index, count = shard
    chosen = [d for d in chosen if count == 1 or shard_of(d.isoformat(), count) == index]
    report = IntradayReport(sessions=len(chosen))

    def one(day: dt.date) -> tuple[dt.date, int, int, str | None]:
        try:
            built, bars = build_session(lake, day, intervals, full=full, dry_run=dry_run, now=now)
        except (LakeError, OSError, pa.ArrowException, calendar.CalendarError) as exc:
            return day, 0, 0, f"{type(exc).__name__}: {exc}"
        return day, built, bars, None

    with (
        ThreadPoolExecutor(max(1, workers), thread_name_prefix="intraday") as pool,
        tqdm(total=len(chosen), desc="intraday", unit="session", disable=not progress) as bar,
    ):
        for day, built, bars, error in pool.map(one, chosen):
            bar.update(1)
            if error is not None:
                report.failed[day.isoformat()] = error
                log.error("intraday %s failed: %s", day, error)
                continue
            report.built += built
            report.skipped += int(built == 0)
            report.bars += bars
    return report


def read_symbol_day(lake: Lake, interval: str, day: dt.date, symbol: str) -> pa.Table:
    """One symbol's bars of one interval and session (row groups pruned by statistics)."""
    return pq.read_table(
        lake.path(layout.intraday_file(interval, day)),
        filesystem=lake.fs,
        filters=[("symbol", "==", symbol)],
        use_threads=False,
    )


def _sessions(text: str) -> list[dt.date]:
    return sorted({iso_date(d.strip()) for d in text.split(",") if d.strip()})


@common.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; exits 1 naming the sessions that failed, 2 on bad input."""
    p = common.parser(
        "intraday",
        "Build intraday silver (5m, 15m, 30m, 1h, 2h, 4h bars of the regular session) from"
        " consolidated minute bars, incrementally by session.",
    )
    p.add_argument(
        "--intervals",
        dest="intraday_intervals",
        metavar="5m,1h",
        default=",".join(intraday.INTERVALS),
        help="intervals to build (default: all six)",
    )
    p.add_argument("--sessions", metavar="D1,D2", help="only these sessions (YYYY-MM-DD)")
    p.add_argument("--start", type=iso_date, help="first session")
    p.add_argument("--end", type=iso_date, help="last session")
    p.add_argument("--full", action="store_true", help="rebuild every session, changed or not")
    args = common.parse(p, argv, reads_lake=True)
    ns = args.extra
    if args.symbols:
        p.error("--symbols: intraday files hold the whole market of a session; use --sessions")
    try:
        names = intraday.parse_intervals(ns.intraday_intervals)
        picked = _sessions(ns.sessions) if ns.sessions else None
    except (ValueError, TypeError) as exc:
        p.error(str(exc))
    if ns.start and ns.end and ns.end < ns.start:
        p.error(f"--end {ns.end} is before --start {ns.start}")
    days = consolidated_sessions(args.lake) if picked is None else picked
    days = [d for d in days if (not ns.start or d >= ns.start) and (not ns.end or d <= ns.end)]
    if picked is not None:
        missing = [d for d in days if not args.lake.exists(layout.minute_consolidated(d))]
        if missing:
            p.error(f"no consolidated minutes for {', '.join(map(str, missing))}")
    with common.recorded("intraday") as counts:
        report = run(
            args.lake,
            days,
            names,
            full=ns.full,
            dry_run=args.dry_run,
            shard=(args.shard.index, args.shard.count),
            workers=args.workers,
            progress=args.progress,
        )
        counts.update(sessions=report.sessions, built=report.built, skipped=report.skipped,
                      bars=report.bars, failed=len(report.failed))  # fmt: skip
        print(report.summary())
        common.fail_on_symbols(report.failed, "sessions failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(None))
