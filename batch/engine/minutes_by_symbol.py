"""Keep the per-symbol month files of consolidated minutes (:mod:`core.minutes_by_symbol`).

``python -m batch.consolidate --minutes`` runs it after merging the sessions. A month is rebuilt
when its record no longer matches the session files (one consolidated, re-consolidated, added or
removed), from the session files themselves, a chunk of symbols at a time (read through the
groups' symbol statistics, so memory stays bounded whatever the market). Each file is written
atomically and carries the versions of the sessions it holds, stamped before they are read (a
session rewritten meanwhile then fails the reader's check and is read from its own file, never
served stale); files of symbols gone from the month are removed, and the record is written last.
A kill leaves old or new files and the old record, so the rerun rebuilds the month, to the same
bytes.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batch.engine import minutes
from core import layout, symbol_groups
from core.lake import Lake, LakeError, reading
from core.minutes_by_symbol import (
    SOURCES_KEY,
    Month,
    MonthRecord,
    by_month,
    encode_sources,
    read_record,
    version_of,
)
from core.schemas import BRONZE_MINUTE, conform

log = logging.getLogger("batch.minutes_by_symbol")
CHUNK_ROWS: Final = 2_000_000
"""Rows of a month held at once (about 200 MB): a few hundred symbols' month."""
CODEC: Final = "snappy"
"""A month file is read whole; snappy decodes fastest of the codecs that still halve it."""
DICTIONARY: Final = ("symbol", "source")
SETTLE_S: Final = 2.0
"""Seconds a session file must have stood before an S3 lake's files record it (see settled)."""
LOCAL_SETTLE_S: Final = 0.05
"""The same on a local disk, whose stamps are as coarse as the kernel's tick."""
STATISTICS: Final = ("date",)


@dataclass
class ByMonthReport:
    """What a run did, per month."""

    months: int = 0
    built: int = 0
    unchanged: int = 0
    files: int = 0
    removed: int = 0
    rows: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the log and the terminal."""
        return (
            f"minutes by symbol: {self.months} months ({self.built} rebuilt, {self.unchanged}"
            f" unchanged, {len(self.failed)} failed); files written: {self.files}, removed:"
            f" {self.removed}; rows: {self.rows}"
        )


def label(month: Month) -> str:
    """``YYYY-MM``."""
    return f"{month[0]:04d}-{month[1]:02d}"


def consolidated(lake: Lake) -> dict[dt.date, pafs.FileInfo]:
    """Every session with a consolidated file, with its version (one stat each)."""
    days = minutes.sessions(lake)
    infos = lake.fs.get_file_info([lake.path(layout.minute_consolidated(d)) for d in days])
    return {d: i for d, i in zip(days, infos, strict=True) if i.type == pafs.FileType.File}


def settled(lake: Lake, *, now: Callable[[], float] = time.time) -> dict[dt.date, pafs.FileInfo]:
    """:func:`consolidated`, once no session was written within the store's time granule.

    S3 stamps an object to the second (and Linux a file to the kernel's tick, a few ms): a
    session rewritten within the granule it was stamped in, to the same size, would keep its
    version. Waiting out the granule after the newest write makes any later rewrite carry a
    later stamp, so a file never vouches for a session it does not hold.
    """
    sessions = consolidated(lake)
    granule = LOCAL_SETTLE_S if lake.is_local else SETTLE_S
    if not sessions:
        return sessions
    newest = max(int(i.mtime_ns or 0) for i in sessions.values()) / 1e9
    wait = newest + granule - now()
    if wait > 0:
        time.sleep(min(wait, granule))
        sessions = consolidated(lake)
    return sessions


def symbol_chunks(counts: dict[str, int], rows: int = CHUNK_ROWS) -> list[tuple[str, str]]:
    """Consecutive symbol ranges [low, high] of about ``rows`` rows each (whole symbols)."""
    out: list[tuple[str, str]] = []
    low: str | None = None
    held = 0
    for symbol in sorted(counts):
        low = symbol if low is None else low
        held += counts[symbol]
        if held >= rows:
            out.append((low, symbol))
            low, held = None, 0
    if low is not None:
        out.append((low, max(counts)))
    return out


def _counts(lake: Lake, infos: list[pafs.FileInfo]) -> dict[str, int]:
    def one(info: pafs.FileInfo) -> pa.Table:
        with reading(info.path), lake.fs.open_input_file(info.path) as fh:
            return pq.ParquetFile(fh).read(columns=["symbol"], use_threads=False)

    counts: dict[str, int] = {}
    for t in symbol_groups.map_threads(one, infos):
        for row in pc.value_counts(t["symbol"]).to_pylist():
            counts[row["values"]] = counts.get(row["values"], 0) + int(row["counts"])
    return counts


def _runs(symbols: pa.ChunkedArray) -> list[tuple[str, int, int]]:
    """(symbol, offset, rows) of each run of a column sorted by symbol."""
    n = len(symbols)
    if n == 0:
        return []
    change = pc.not_equal(symbols.slice(1), symbols.slice(0, n - 1))
    starts = [0, *(np.flatnonzero(change.to_numpy(zero_copy_only=False)) + 1).tolist()]
    ends = [*starts[1:], n]
    return [(str(symbols[s].as_py()), s, e - s) for s, e in zip(starts, ends, strict=True)]


def _between(lake: Lake, low: str, high: str, info: pafs.FileInfo) -> pa.Table:
    return symbol_groups.read_between(lake.fs, info, low, high)


def write_file(lake: Lake, symbol: str, month: Month, table: pa.Table, sources: bytes) -> int:
    """Write one symbol's month (sorted by start) with the sessions it holds in its metadata."""
    meta = {SOURCES_KEY: sources}
    return lake.write_parquet(
        layout.minute_month_file(symbol, *month),
        table.replace_schema_metadata(meta),
        compression=CODEC,
        statistics=STATISTICS,
        dictionary=DICTIONARY,
    )


def build_month(
    lake: Lake, month: Month, sessions: dict[dt.date, pafs.FileInfo]
) -> tuple[int, int, int]:
    """Rebuild one month from its session files; (files written, files removed, rows)."""
    days = sorted(sessions)
    infos = [sessions[d] for d in days]
    record = MonthRecord({d: version_of(sessions[d]) for d in days}, frozenset())
    sources = encode_sources(record.sources)  # stamped before any read: never newer than read
    counts = _counts(lake, infos)
    named = {s: n for s, n in counts.items() if layout.SYMBOL_RE.match(s)}
    if len(named) < len(counts):  # readers never ask for them: the session files serve them
        log.warning("%s: %d symbols not valid as file names left out, e.g. %s", label(month),
                    len(counts) - len(named), sorted(set(counts) - set(named))[:3])  # fmt: skip
    files = rows = 0
    for low, high in symbol_chunks(named):
        between = functools.partial(_between, lake, low, high)
        parts = symbol_groups.map_threads(between, infos)
        table = pa.concat_tables([conform(p, BRONZE_MINUTE).replace_schema_metadata(None)
                                  for p in parts])  # fmt: skip
        table = table.sort_by([("symbol", "ascending"), ("start", "ascending")])
        for symbol, offset, n in _runs(table["symbol"]):
            if symbol not in named:
                continue
            write_file(lake, symbol, month, table.slice(offset, n), sources)
            files += 1
            rows += n
    kept = frozenset(named)
    removed = 0
    for e in lake.list(layout.minute_month_dir(*month) + "/", suffix=".parquet"):
        name = e.key.rsplit("/", 1)[-1].removeprefix("symbol=").removesuffix(".parquet")
        if name not in kept:
            removed += 1
            lake.delete(e.key)
    done = MonthRecord(record.sources, kept)
    lake.write_json(layout.minute_month_record(*month), done.to_json())
    return files, removed, rows


def run(lake: Lake, days: list[dt.date] | None = None, *, dry_run: bool = False) -> ByMonthReport:
    """Bring the months of ``days`` (default: every month) in line with their session files."""
    report = ByMonthReport()
    sessions = settled(lake)
    months = by_month(list(sessions))
    wanted = set(by_month(days)) if days is not None else set(months)
    if days is None:  # months whose sessions are all gone (retention): their files go too
        for name in lake.list_dirs(layout.MINUTE_BY_SYMBOL):
            gone = layout.minute_month(name)
            if gone is not None and gone not in months:
                report.months += 1
                report.built += 1
                if not dry_run:
                    lake.delete_prefix(layout.minute_month_dir(*gone))
    for month in sorted(wanted):
        in_month = {d: sessions[d] for d in months.get(month, [])}
        if not in_month:
            continue
        report.months += 1
        name = label(month)
        try:
            record = read_record(lake, month)
            if record is not None and record.sources == {
                d: version_of(i) for d, i in in_month.items()
            }:
                report.unchanged += 1
                continue
            if dry_run:  # what would be rebuilt, without reading a month of the market
                report.built += 1
                continue
            files, removed, rows = build_month(lake, month, in_month)
        except (LakeError, OSError, pa.ArrowException) as exc:
            report.failed[name] = str(exc)
            log.error("minutes by symbol %s failed: %s", name, exc)
            continue
        report.built += 1
        report.files += files
        report.removed += removed
        report.rows += rows
        log.info("minutes by symbol %s: %d files, %d rows", name, files, rows)
    return report
