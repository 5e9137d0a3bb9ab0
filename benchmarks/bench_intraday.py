"""Intraday data at scale: ``python -m benchmarks.bench_intraday [--symbols N --trades N --days N]``.

A synthetic session of ``--symbols`` symbols (390 regular minutes each) and ``--trades`` trades:
bytes per archived trade and files per session (minutes and trades, at the default flush
policies), consolidating the session's minutes, the market's 5m..4h rollups, reading one
symbol-day, and 1m bars of one symbol over ``--days`` sessions through the API's reader. Each
read is compared with the naive way in the same run (whole file, then filter).
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from api import intraday as api_intraday
from batch import intraday as job
from batch.engine import minutes
from batch.engine import minutes_by_symbol as by_symbol
from benchmarks.report import write_section
from core import calendar, layout, symbol_groups
from core.intraday import INTERVALS
from core.lake import Lake
from core.minutes_by_symbol import month_of
from core.schemas import BRONZE_MINUTE
from core.settings import LiveSettings
from dataflows.connectors.trades_sink import write_archive
from dataflows.trades import TradeBatch

DAY = dt.date(2025, 6, 3)


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def minute_session(day: dt.date, symbols: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = symbols * 390
    opened = int(calendar.session_open(day).timestamp() * 1_000_000)
    start = opened + np.tile(np.arange(390, dtype=np.int64), symbols) * 60_000_000
    price = 10 + rng.random(n) * 100
    names = np.repeat(np.array([f"S{i:05d}" for i in range(symbols)], dtype=object), 390)
    return pa.table(
        {
            "symbol": pa.array(names.tolist(), pa.string()),
            "date": pa.array([day] * n, pa.date32()),
            "start": pa.array(start).cast(BRONZE_MINUTE.field("start").type),
            "open": price, "high": price * 1.01, "low": price * 0.99, "close": price,
            "volume": rng.integers(100, 10_000, n).astype(float), "vwap": price,
            "trades": rng.integers(1, 50, n), "source": ["live"] * n,
            "revision": pa.array(np.zeros(n, np.int32)), "partial": np.zeros(n, bool),
            "ingested_at": pa.array(start + 60_000_000).cast(BRONZE_MINUTE.field("start").type),
        },
        schema=BRONZE_MINUTE,
    )  # fmt: skip


def trade_batch(
    n: int, symbols: int, first_ms: int, read_at: int, rng: np.random.Generator
) -> TradeBatch:
    sym = np.array([f"S{i:05d}" for i in rng.integers(0, symbols, n)], dtype=object)
    conds = np.empty(n, dtype=object)
    conds[:] = [() if c < 0.6 else (37,) for c in rng.random(n)]
    ids = np.empty(n, dtype=object)
    ids[:] = [str(i) for i in rng.integers(0, 10**9, n)]
    t = first_ms + np.sort(rng.integers(0, 60_000, n))
    return TradeBatch(
        part="p0", read_at=read_at, caught_up=False, connected=False, symbol=sym, t=t,
        price=np.round(10 + rng.random(n) * 100, 2), size=rng.integers(1, 500, n).astype(float),
        exchange=rng.integers(1, 20, n), id=ids, sequence=np.arange(n, dtype=np.int64),
        tape=rng.integers(1, 4, n), conditions=conds, high_low=np.ones(n, bool),
        open_close=np.ones(n, bool), volume=np.ones(n, bool),
    )  # fmt: skip


def progress(msg: str) -> None:
    print(f"[bench_intraday] {msg}", file=sys.stderr, flush=True)


def at_most(hours: float, every_s: float) -> int:
    """Files a sink writes in ``hours`` when it may write every ``every_s`` seconds."""
    return int(hours * 3600 / every_s)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_intraday", description=__doc__)
    p.add_argument("--symbols", type=int, default=5000)
    p.add_argument("--trades", type=int, default=20_000_000)
    p.add_argument("--days", type=int, default=252, help="sessions for the one-symbol year read")
    p.add_argument("--year-symbols", type=int, default=500, help="symbols per session of that year")
    p.add_argument("--no-write", action="store_true", help="print only")
    a = p.parse_args()
    if min(a.symbols, a.trades, a.days, a.year_symbols) < 1 or a.symbols < 43:
        p.error("--symbols must be at least 43 (S00042 is read), the others at least 1")
    live = LiveSettings.model_fields
    minute_flush = float(live["live_flush_s"].default)
    trades_flush = float(live["trades_flush_s"].default)
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake((Path(tmp) / "lake").as_uri())
        rng = np.random.default_rng(3)
        # trades archive: one flush a minute (TRADES_FLUSH_S=60) over the regular session
        per_min = max(1, a.trades // 390)
        opened = int(calendar.session_open(DAY).timestamp() * 1000)
        t0 = time.perf_counter()
        for m in range(390):
            b = trade_batch(per_min, a.symbols, opened + m * 60_000, opened + (m + 1) * 60_000, rng)
            write_archive(lake, [b])
            if m % 39 == 38:
                progress(f"trades archive: {(m + 1) * per_min:,} trades written")
        archive_s = time.perf_counter() - t0
        entries = lake.list(layout.trades_dir(DAY))
        bytes_per_trade = sum(e.size for e in entries) / (per_min * 390)
        # minutes: one fragment a minute (the final bars of each minute); the sink may write
        # one per LIVE_FLUSH_S flush (revisions, snapshots): the bound is reported beside it
        table = minute_session(DAY, a.symbols)
        starts = pc.cast(table["start"], pa.int64()).to_numpy()
        for m in range(390):
            part = table.filter(pa.array(starts == starts[0] + m * 60_000_000))
            lake.write_table(layout.minute_fragment(DAY, f"m{m:03d}"), part)
        fragments = len(minutes.fragments(lake, DAY))
        progress(f"minutes: {fragments} fragments of {table.num_rows:,} bars written")

        def consolidate() -> None:
            lake.delete(layout.minute_consolidated(DAY))
            minutes.consolidate_session(lake, DAY)

        consolidate_s = timed(consolidate, 1)
        bytes_per_bar = lake.list(layout.minute_consolidated(DAY))[0].size / table.num_rows
        naive_s = timed(lambda: pa.concat_tables(
            [lake.read_table(e.key) for e in lake.list(layout.minute_dir(DAY) + "/")
             if "part-" in e.key]).sort_by([("symbol", "ascending"), ("start", "ascending")]), 1)  # fmt: skip
        progress(f"consolidated in {consolidate_s:.1f} s")
        rollup_s = timed(lambda: job.build_session(lake, DAY, list(INTERVALS),
                                                   full=True, now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)), 1)  # fmt: skip
        progress(f"rollups in {rollup_s:.1f} s")
        sym = "S00042"
        symbol_groups.FOOTERS.clear()
        day_cold = timed(lambda: minutes.read_symbol_day(lake, DAY, sym), 1)
        day_s = timed(lambda: minutes.read_symbol_day(lake, DAY, sym), 9)
        day_naive = timed(lambda: lake.read_table(layout.minute_consolidated(DAY)).filter(
            pc.equal(pc.field("symbol"), sym)), 3)  # fmt: skip
        del table
        # one symbol's 1m bars over a year of consolidated sessions, written as consolidation does
        days = calendar.sessions_between(dt.date(2024, 1, 2), dt.date(2025, 6, 30))[: a.days]
        for i, d in enumerate(days):
            minutes.write_consolidated(lake, d, minute_session(d, a.year_symbols, i))
            if i % 42 == 41:
                progress(f"year: {i + 1} of {len(days)} sessions written")
        now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

        def year() -> pa.Table:
            return api_intraday.read_table(lake, sym, "1m", days[0], days[-1], None, now=now)

        t0 = time.perf_counter()
        built = by_symbol.run(lake)
        build_s = time.perf_counter() - t0
        progress(f"per-symbol month files: {built.files:,} in {build_s:.1f} s")
        month_bytes = sum(e.size for e in lake.list(layout.MINUTE_BY_SYMBOL, suffix=".parquet"))
        stats = by_symbol.consolidated(lake)
        newest = month_of(days[-1])
        in_newest = {d: i for d, i in stats.items() if month_of(d) == newest}
        rebuild_s = timed(lambda: by_symbol.build_month(lake, newest, in_newest), 1)
        symbol_groups.FOOTERS.clear()
        year_cold = timed(year, 1)  # derived files are not cached: every read opens twelve
        year_s = timed(year, 5)
        rows = year().num_rows
        # the alternative granularity: the same rows as one file per symbol and year
        months = [lake.read_table(e.key) for e in lake.list(layout.MINUTE_BY_SYMBOL, suffix=".parquet")
                  if e.key.endswith(f"symbol={sym}.parquet")]  # fmt: skip
        one_year = "bench/year_file.parquet"
        lake.write_parquet(one_year, pa.concat_tables(months), compression=by_symbol.CODEC,
                           statistics=by_symbol.STATISTICS, dictionary=by_symbol.DICTIONARY)  # fmt: skip
        year_file_s = timed(lambda: pq.ParquetFile(lake.path(one_year)).read(), 5)
        year_file_mb = lake.list(one_year)[0].size / 2**20
        lake.delete_prefix(layout.MINUTE_BY_SYMBOL)  # now the session files only
        symbol_groups.FOOTERS.clear()
        sessions_cold = timed(year, 1)
        sessions_s = timed(year, 5)
        paths = [lake.path(layout.minute_consolidated(d)) for d in days]
        year_naive = timed(lambda: pads.dataset(paths, format="parquet", filesystem=lake.fs)
                           .to_table(filter=pads.field("symbol") == sym).sort_by("start"), 3)  # fmt: skip
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    trades = per_min * 390
    body = f"""## Intraday data (`python -m benchmarks.bench_intraday`)

{a.symbols:,} symbols x 390 minutes; {trades:,} synthetic trades archived one flush a minute;
{len(days)} sessions of {a.year_symbols:,} symbols for the year read (a warm read decodes the
symbol's own row group of each session, whatever the symbols per session). Measured {when}; peak
memory {peak_gb:.1f} GB.

| what | figure | same run, naive |
| --- | ---: | ---: |
| trades archive: files per session, written here (one a minute) | {len(entries)} | |
| trades archive: files per 16 h day at most (a flush every {trades_flush:.0f} s `TRADES_FLUSH_S` or 5 s recovery snapshot) | {at_most(16, 5):,} | |
| trades archive: bytes per trade (zstd) | {bytes_per_trade:.1f} | |
| trades archive: write time for the session | {archive_s:.1f} s | |
| minute fragments per session, written here (one a minute) | {fragments} | |
| minute fragments per 16 h day at most (a flush every {minute_flush:.0f} s `LIVE_FLUSH_S`) | {at_most(16, minute_flush):,} | |
| consolidated minutes: bytes per bar | {bytes_per_bar:.1f} | |
| consolidate one session's minutes | {consolidate_s:.2f} s | read + sort only: {naive_s:.2f} s |
| rollups 5m..4h of the session, the market | {rollup_s:.2f} s | |
| read one symbol-day of minutes ({a.symbols:,}-symbol session), warm | {day_s * 1000:.1f} ms | whole file + filter: {day_naive * 1000:.1f} ms; target < 10 ms: {"met" if day_s < 0.01 else "**not met**"} |
| read one symbol-day, cold footer | {day_cold * 1000:.1f} ms | |
| 1m bars of one symbol over {len(days)} sessions ({rows:,} bars) through the API's reader, per-symbol month files, warm | {year_s * 1000:.1f} ms | session files only: {sessions_s * 1000:.0f} ms; one filtered dataset over them: {year_naive * 1000:.0f} ms; target < 100 ms: {"met" if year_s < 0.1 else "**not met**"} |
| the same, first read in the process | {year_cold * 1000:.1f} ms | session files only, footers not cached: {sessions_cold * 1000:.0f} ms |
| the year as one file per symbol instead (the other granularity): read, warm | {year_file_s * 1000:.1f} ms | {year_file_mb:.2f} MB rewritten for every symbol each session, against one month's file |
| per-symbol month files: build all ({built.files:,} files, {month_bytes / 2**20:.0f} MB) | {build_s:.1f} s | |
| per-symbol month files: rebuild one month ({len(in_newest)} sessions, {a.year_symbols:,} files) | {rebuild_s:.2f} s | |
"""
    print(body)
    if not a.no_write:
        write_section("intraday", body)


if __name__ == "__main__":
    main()
