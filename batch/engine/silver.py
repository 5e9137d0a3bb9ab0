"""Silver month files: deterministic bytes, and patches that replace one symbol's tail.

A month file holds every symbol's bars starting in that month, so incremental runs never
overwrite it with only the new bars: they apply a :class:`Patch`, which replaces, per symbol,
exactly the bars starting on or after that symbol's cut and keeps every other row. A full
rebuild is the patch that replaces everything. Either way the file is written from a table
sorted by (symbol, start_date) with fixed writer options, so equal content gives equal bytes
and an incremental run is byte-for-byte a full rebuild.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch.engine import fib
from batch.engine.months import MONTH_BASE, bar_months, year_month
from core import arrays, layout
from core.lake import Lake
from core.schemas import SILVER
from core.sharding import Shard, shard_of

MIN_DAY: Final = -(2**31)
"""A cut before any date: the whole symbol is replaced."""
MAX_DAY: Final = 2**31 - 1
"""No upper bound: every bar from the cut on is replaced."""
SPLICE_MAX: Final = 16
"""Patches of at most this many symbols are spliced into a month file instead of re-sorted."""


def month_file(interval: int, month: int) -> str:
    """Lake key of one month file."""
    year, mon = year_month(month)
    return layout.silver_file(interval, year, mon)


def serialize(table: pa.Table) -> pa.Buffer:
    """Parquet bytes of a month table; a pure function of its rows (fixed writer options).

    Floats byte-stream-split then LZ4: a quarter of zstd's time to write, a third larger.
    Rows are sorted by (symbol, start_date) with statistics on the key columns (those on
    prices cost a quarter of the write and serve no filter), in row groups of 64k rows, so a
    reader filtering one symbol can skip row groups once a month file outgrows one group (on
    the full US market a month file holds at most about 34k rows: one group, as before).
    """
    if not table.schema.equals(SILVER, check_metadata=True):
        table = table.cast(SILVER).replace_schema_metadata(None)
    table = table.combine_chunks()
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="lz4",
        use_dictionary=["symbol"],
        use_byte_stream_split=["open", "high", "low", "close", "volume"],
        write_statistics=["symbol", "start_date", "end_date"],
        row_group_size=1 << 16,
        data_page_size=1 << 20,
        version="2.6",
        data_page_version="1.0",
        store_schema=True,
        sorting_columns=[pq.SortingColumn(0), pq.SortingColumn(1)],
    )
    return sink.getvalue()  # the Arrow buffer itself: a copy to bytes cost 660 MB per rebuild


def sort_bars(table: pa.Table, key: str = "start_date") -> pa.Table:
    """Rows in file order: (symbol, ``key``); no copy when already in order."""
    if table.num_rows < 2:
        return table
    encoded = table["symbol"].combine_chunks().dictionary_encode()
    rank = np.argsort(np.argsort(np.asarray(encoded.dictionary.to_pylist(), dtype=object)))
    codes = rank[np.asarray(arrays.to_numpy(encoded.indices), dtype=np.int64)]
    starts = np.asarray(arrays.to_numpy(pc.cast(table[key], pa.int32())), dtype=np.int64)
    order = np.lexsort((starts, codes))
    if bool(np.all(order[1:] > order[:-1])):
        return table
    return table.take(arrays.from_numpy(order))


def month_groups(bars: pa.Table) -> dict[int, npt.NDArray[np.int64]]:
    """Row indices of ``bars`` per start month, keeping their order within a month.

    Indices rather than tables, so the (costly) gathers run later, in parallel, per month.
    """
    if bars.num_rows == 0:
        return {}
    order = fib.month_order(bars)
    sorted_months = bar_months(bars)[order]
    return {m: order[lo:hi] for m, lo, hi in _runs(sorted_months)}


def month_slices(bars: pa.Table, key: str = "start_date") -> dict[int, tuple[int, int]] | None:
    """Row ranges of ``bars`` per start month when they are in month order, else None.

    :func:`batch.engine.fib.bars` returns bars in that order, so a month file's rows are a zero-copy
    slice instead of a gather.
    """
    if bars.num_rows == 0:
        return {}
    months = bar_months(bars, key)
    if not bool(np.all(months[1:] >= months[:-1])):
        return None
    return {m: (lo, hi) for m, lo, hi in _runs(months)}


def _runs(sorted_months: npt.NDArray[np.int16]) -> list[tuple[int, int, int]]:
    """(month, first row, end row) of each run of equal months."""
    edges = np.flatnonzero(np.diff(sorted_months)) + 1
    bounds = [0, *edges.tolist(), len(sorted_months)]
    return [(int(sorted_months[lo]), lo, hi) for lo, hi in itertools.pairwise(bounds)]


def listed_months(lake: Lake, interval: int) -> dict[int, int]:
    """Month files present for ``interval``: month index -> size."""
    return listed_months_in(lake, layout.silver_dir(interval))


def listed_months_in(lake: Lake, folder: str) -> dict[int, int]:
    """Month files (``..._{YYYYMM}.parquet``) under ``folder``: month index -> size."""
    out = {}
    for e in lake.list(folder, suffix=".parquet"):
        name = e.key.rsplit("/", 1)[-1]  # data_{N}d_{YYYYMM}.parquet
        stamp = name.removesuffix(".parquet").rsplit("_", 1)[-1]
        if len(stamp) == 6 and stamp.isdigit():
            out[(int(stamp[:4]) * 12 + int(stamp[4:]) - 1) - MONTH_BASE] = e.size
    return out


@dataclass
class Patch:
    """Replace, per symbol, every bar starting on or after ``cuts[symbol]`` with ``rows``.

    ``upto[symbol]``, where given, bounds that from above: only bars starting before it are
    replaced (a new split moves the prices of the bars before it only). ``replace_shards``
    additionally replaces every bar of the symbols those shards own (a full rebuild of a shard,
    or of everything with ``Shard()``). ``months`` are the month files the patch may change:
    where new rows start and where replaced rows may sit.
    """

    cuts: dict[str, int] = field(default_factory=dict)
    rows: pa.Table = field(default_factory=lambda: arrays.empty_table(SILVER))
    months: set[int] = field(default_factory=set)
    replace_shards: list[Shard] = field(default_factory=list)
    upto: dict[str, int] = field(default_factory=dict)

    @classmethod
    def combine(cls, patches: Iterable[Patch]) -> Patch:
        """One patch from the patches of disjoint symbol sets (shards)."""
        out = cls()
        tables = []
        for p in patches:
            out.cuts.update(p.cuts)
            out.upto.update(p.upto)
            tables.append(p.rows)
            out.months |= p.months
            out.replace_shards.extend(p.replace_shards)
        if tables:
            out.rows = pa.concat_tables(tables)
        return out

    def replaces_everything(self) -> bool:
        """True for an unsharded full rebuild: existing files need not be read."""
        return any(s.count == 1 for s in self.replace_shards)


def replaced(existing: pa.Table, patch: Patch, key: str = "start_date") -> npt.NDArray[np.bool_]:
    """Rows of ``existing`` that ``patch`` replaces (by ``key``, the bars' date column)."""
    n = existing.num_rows
    drop = np.zeros(n, dtype=bool)
    if n == 0:
        return drop
    symbols = existing["symbol"]
    if patch.replace_shards:
        unique = pc.unique(symbols).to_pylist()
        owned = [s for s in unique if any(_owns(sh, s) for sh in patch.replace_shards)]
        if owned:
            drop |= np.asarray(
                arrays.to_numpy(pc.is_in(symbols, value_set=arrays.strings(owned))),
                dtype=bool,
            )
    if patch.cuts:
        names = list(patch.cuts)
        cut_values = np.array([patch.cuts[s] for s in names], dtype=np.int64)
        upto_values = np.array([patch.upto.get(s, MAX_DAY) for s in names], dtype=np.int64)
        pos = arrays.index_in(symbols, names)
        has = pos >= 0
        pos = np.maximum(pos, 0)
        starts = np.asarray(arrays.to_numpy(pc.cast(existing[key], pa.int32())), np.int64)
        drop |= has & (starts >= cut_values[pos]) & (starts < upto_values[pos])
    return drop


def _owns(shard: Shard, symbol: str) -> bool:
    return shard.count == 1 or shard_of(symbol, shard.count) == shard.index


def _int_days(column: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.int64]:
    return np.asarray(arrays.to_numpy(pc.cast(column, pa.int32())), dtype=np.int64)


def splice(
    existing: pa.Table, patch_rows: pa.Table, patch: Patch, key: str = "start_date"
) -> pa.Table | None:
    """``existing`` (sorted) with each patched symbol's replaced bars swapped for its new rows.

    The file order holds by construction (a symbol's bars are one run, sorted by start date, and
    the replaced ones a run inside it), so nothing is re-sorted: a patch of a few symbols costs
    a few slices instead of a sort of the whole month. None when the patch is not of that kind
    (shards replaced, many symbols, rows outside their symbol's replaced range). ``key``: the
    date the rows are sorted and cut by (gold's 1d files use ``date``).
    """
    if patch.replace_shards or len(patch.cuts) > SPLICE_MAX:
        return None
    symbols = existing["symbol"]
    new_symbols = patch_rows["symbol"]
    pieces: list[pa.Table] = []
    taken = 0
    at = 0
    for s in sorted(patch.cuts):
        value = arrays.strings([s])[0]  # pa.scalar(s) would load pandas in a fresh worker
        lo = int(pc.sum(pc.less(symbols, value)).as_py() or 0)
        hi = lo + int(pc.sum(pc.equal(symbols, value)).as_py() or 0)
        run = _int_days(existing[key].slice(lo, hi - lo))  # this symbol's dates only
        cut, upto = patch.cuts[s], patch.upto.get(s, MAX_DAY)
        a = lo + int(np.searchsorted(run, cut, "left"))
        b = lo + int(np.searchsorted(run, upto, "left"))
        mine = patch_rows.filter(pc.equal(new_symbols, value))
        new_starts = _int_days(mine[key])
        if len(new_starts) and not (
            new_starts[0] >= cut and new_starts[-1] < upto and bool(np.all(np.diff(new_starts) > 0))
        ):
            return None
        if a < at:
            return None
        pieces += [existing.slice(at, a - at), mine]
        taken += mine.num_rows
        at = b
    if taken != patch_rows.num_rows:
        return None  # rows of symbols the patch does not name
    pieces.append(existing.slice(at))
    return pa.concat_tables([p for p in pieces if p.num_rows] or [existing.slice(0, 0)])


def conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` cast to ``schema``, untouched when it has it already.

    A month file read back has it: a cast per column of every file rewritten cost about a tenth
    of a split's gold.
    """
    return table if table.schema.equals(schema) else table.cast(schema)


def apply(
    existing: pa.Table | None,
    patch_rows: pa.Table,
    patch: Patch,
    interval: int,
    anchor: fib.Anchor,
    last_day: int | None,
    *,
    complete_current: bool = False,
) -> pa.Table:
    """The month's new content: ``existing`` minus what ``patch`` replaces, plus its rows.

    ``complete`` is recomputed for every row (a pure function of start date and the lake's
    last date under the calendar anchor), which also flips bars the last date has overtaken;
    ``complete_current``: ``existing`` was written against ``last_day`` already, so its flags
    stand (the patch's rows carry their own).
    """
    table = None
    if existing is not None and existing.num_rows:
        existing = conformed(existing, SILVER)
        table = splice(existing, conformed(patch_rows, SILVER), patch)
        if table is None:
            existing = existing.filter(arrays.from_numpy(~replaced(existing, patch)))
    if table is None:
        tables = [
            t for t in (existing, conformed(patch_rows, SILVER)) if t is not None and t.num_rows
        ]
        if not tables:
            return arrays.empty_table(SILVER)
        table = sort_bars(tables[0] if len(tables) == 1 else pa.concat_tables(tables))
    elif complete_current:
        return table
    if anchor == "calendar" and table.num_rows:
        starts = np.asarray(
            arrays.to_numpy(pc.cast(table["start_date"], pa.int32())), dtype=np.int32
        )
        complete = fib.complete_calendar(starts, interval, last_day)
        table = table.set_column(
            SILVER.get_field_index("complete"), "complete", arrays.from_numpy(complete)
        )
    return table
