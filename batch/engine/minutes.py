"""Consolidate a session's minute fragments into ``bronze/raw_ohlcv_1m/date=D/data.parquet``.

``python -m batch.consolidate --minutes`` runs it. Per session: the fragments (live flushes,
REST heals) and the previous data.parquet are merged under the minute precedence rule of
:func:`core.precedence.minute_winners` (a partial bar never beats a complete one; rest beats
flatfile beats live; then the higher revision, then the newer ``ingested_at``), sorted by
(symbol, start), and written atomically in small row groups, so one symbol's day is read by
statistics pruning without the rest of the market. The file records a digest of the fragments
it merged: a session whose fragments did not change is skipped, and a rerun after a kill gives
the same file. Fragments are kept (the flow may still be writing the session); merging them
again is idempotent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import layout, precedence, symbol_groups
from core.lake import Lake, LakeError
from core.schemas import BRONZE_MINUTE, conform

log = logging.getLogger("batch.minutes")
ROW_GROUP: Final = 2048
"""Rows at which a row group closes (at the next symbol): about five symbols' regular session,
so a one-symbol read decodes little, and a whole market's footer (parsed on a cold open) stays
under a thousand row groups: about 5 ms."""
STATISTICS: Final = ("symbol", "date", "start")
"""Columns with row-group statistics: what readers prune on (the footer stays small)."""
CODEC: Final = "snappy"
"""Codec of consolidated sessions: a year of one symbol decodes 252 x 12 small column chunks,
and zstd's per-chunk set-up made that read twice as slow (about 15 % more bytes)."""
DICTIONARY: Final = ("symbol", "source")
"""Columns worth a dictionary; prices, times and counts are mostly distinct within a group."""
_DIGEST: Final = b"condvest.minute_fragments"


@dataclass
class MinuteReport:
    """What a run did, per session."""

    sessions: int = 0
    merged: int = 0
    skipped: int = 0
    fragments: int = 0
    rows: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the log and the terminal."""
        return (
            f"minute sessions: {self.sessions} ({self.merged} merged, {self.skipped} unchanged,"
            f" {len(self.failed)} failed); fragments read: {self.fragments}; rows: {self.rows}"
        )


def sessions(lake: Lake) -> list[dt.date]:
    """Every session with a minute folder."""
    days = (layout.minute_session(d) for d in lake.list_dirs(layout.MINUTE))
    return sorted(d for d in days if d is not None)


def fragments(lake: Lake, day: dt.date) -> list[tuple[str, int]]:
    """(key, size) of the session's fragments, by key."""
    entries = lake.list(layout.minute_dir(day) + "/", suffix=".parquet")
    return sorted((e.key, e.size) for e in entries if e.key.rsplit("/", 1)[-1].startswith("part-"))


def digest(parts: list[tuple[str, int]]) -> bytes:
    """What a data.parquet was merged from."""
    h = hashlib.blake2b(digest_size=16)
    for key, size in parts:
        h.update(f"{key}\0{size}\n".encode())
    return h.hexdigest().encode()


def _merged_from(lake: Lake, key: str) -> bytes | None:
    if not lake.exists(key):
        return None
    meta = pq.ParquetFile(lake.path(key), filesystem=lake.fs).schema_arrow.metadata or {}
    return meta.get(_DIGEST)


def merge(table: pa.Table) -> pa.Table:
    """One row per (symbol, start): the winner under the precedence rule, sorted by them."""
    return table.take(precedence.minute_winners(table))


def consolidate_session(
    lake: Lake, day: dt.date, *, dry_run: bool = False
) -> tuple[bool, int, int]:
    """Merge one session; (changed, fragments read, rows written)."""
    parts = fragments(lake, day)
    target = layout.minute_consolidated(day)
    stamp = digest(parts)
    if not parts or _merged_from(lake, target) == stamp:
        return False, 0, 0
    tables = []
    for key, _ in parts:
        try:
            tables.append(conform(lake.read_table(key), BRONZE_MINUTE))
        except (LakeError, ValueError, pa.ArrowInvalid) as exc:
            msg = f"{key}: {exc}"
            raise LakeError(msg) from exc
    if lake.exists(target):
        tables.append(conform(lake.read_table(target), BRONZE_MINUTE))
    merged = merge(pa.concat_tables(tables))
    wrong = pc.sum(pc.not_equal(merged["date"], pa.scalar(day, pa.date32()))).as_py() or 0
    if wrong:
        msg = f"{wrong} rows of {layout.minute_dir(day)} belong to another session"
        raise LakeError(msg)
    if not dry_run:
        meta = {**(merged.schema.metadata or {}), _DIGEST: stamp}
        write_consolidated(lake, day, merged.replace_schema_metadata(meta))
    return True, len(parts), merged.num_rows


def write_consolidated(lake: Lake, day: dt.date, table: pa.Table) -> int:
    """Write a session's merged minutes (sorted by symbol, start) as readers expect them."""
    return lake.write_parquet(
        layout.minute_consolidated(day),
        table,
        compression=CODEC,
        statistics=STATISTICS,
        dictionary=DICTIONARY,
        row_groups=row_groups(table["symbol"]),
    )


def run(lake: Lake, days: list[dt.date] | None = None, *, dry_run: bool = False) -> MinuteReport:
    """Consolidate ``days`` (default: every session with minute fragments)."""
    report = MinuteReport()
    for day in days if days is not None else sessions(lake):
        report.sessions += 1
        try:
            changed, n, rows = consolidate_session(lake, day, dry_run=dry_run)
        except (LakeError, OSError) as exc:
            report.failed[day.isoformat()] = str(exc)
            log.error("minutes %s failed: %s", day, exc)
            continue
        report.merged += int(changed)
        report.skipped += int(not changed)
        report.fragments += n
        report.rows += rows
        if changed:
            log.info("minutes %s: %d fragments -> %d rows", day, n, rows)
    return report


def read_symbol_day(lake: Lake, day: dt.date, symbol: str) -> pa.Table:
    """One symbol's consolidated minute bars of one session: its own row group only.

    The file is sorted by symbol and cut into groups at symbol boundaries, so the group is
    found by bisecting the groups' ``symbol`` statistics (footers cached while unchanged).
    """
    info = lake.fs.get_file_info(lake.path(layout.minute_consolidated(day)))
    return symbol_groups.read_symbol(lake.fs, info, symbol)


def row_groups(symbols: pa.ChunkedArray, target: int = ROW_GROUP) -> list[int]:
    """Rows per row group: whole symbols, each group closed once it reaches ``target`` rows.

    A symbol's day then sits in one group (one decode, not two), and a group holds a handful
    of symbols so the footer of a whole market stays a few hundred kB.
    """
    n = len(symbols)
    if n == 0:
        return []
    codes = pc.not_equal(symbols.slice(1), symbols.slice(0, n - 1))
    change = np.flatnonzero(codes.to_numpy(zero_copy_only=False)) + 1  # first row of a symbol
    sizes, begin = [], 0
    for cut in change.tolist():
        if cut - begin >= target:
            sizes.append(cut - begin)
            begin = cut
    sizes.append(n - begin)
    return sizes
