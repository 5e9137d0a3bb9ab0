"""Consolidated daily rows as resample and gold read them: tails, data.parquet, forked reads.

Both jobs recompute a symbol from the date its history changed, so they read the same rows the
same way: the consolidator's tail (:mod:`batch.engine.tails`) when it is current and reaches back
far enough, else the symbol's data.parquet, read on threads or, for a large local read, by
forked workers into shared arrays (:mod:`batch.engine.shared_load`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from batch.engine import fib, forking, parts, planning, pool, shared_load, tails
from batch.engine import manifest as mf
from batch.engine.checkpoint import SymbolMark
from batch.engine.fib import Anchor
from core import arrays, layout
from core.lake import Entry, Lake


def data_entries(lake: Lake) -> dict[str, Entry]:
    """Every symbol's data.parquet, from one listing of bronze."""
    out = {}
    for e in lake.list(layout.DAILY, suffix="/data.parquet"):
        out[e.key.rsplit("/", 2)[-2].removeprefix("symbol=")] = e
    return out


def read_daily(lake: Lake, symbol: str) -> pa.Table:
    """One symbol's consolidated rows (the columns resampling needs), checked sorted."""
    key = layout.consolidated(symbol)
    # one read of the whole object, then decoding from memory: a third less CPU than the
    # file's ranged reads (footer, then each column chunk), and one GET instead of several on S3
    source = pa.BufferReader(lake.read_bytes(key))
    table = pq.ParquetFile(source).read(columns=list(fib.READ_COLUMNS), use_threads=False)
    days = arrays.date_days(table)
    if len(days) > 1 and not bool(np.all(days[1:] > days[:-1])):
        order = np.argsort(days, kind="stable")
        if bool(np.any(np.diff(days[order]) == 0)):
            msg = f"{lake.uri(key)} has more than one row for a date; consolidate it first"
            raise ValueError(msg)
        table = table.take(arrays.from_numpy(order))
    return table


def read_many(lake: Lake, symbols: Sequence[str], workers: int, progress: bool) -> list[pa.Table]:
    """Many symbols' rows, read on threads (Parquet decoding releases the GIL)."""
    n = max(2, pool.worker_count(workers) * 2)
    with (
        ThreadPoolExecutor(n) as ex,
        tqdm(total=len(symbols), desc="read", unit="sym", disable=not progress, leave=False) as bar,
    ):
        out = []
        for t in ex.map(lambda s: read_daily(lake, s), symbols):
            out.append(t)
            bar.update(1)
        return out


def _footer_last_day(lake: Lake, key: str) -> int | None:
    with lake.fs.open_input_file(lake.path(key)) as f:
        meta = pq.ParquetFile(f).metadata
        col = meta.schema.names.index("date")
        best = None
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(col).statistics
            if stats is None or not stats.has_min_max:
                best = None
                break
            value = _days(stats.max)
            best = value if best is None else max(best, value)
        if best is not None or meta.num_rows == 0:
            return best
    table = parts.read_parquet(lake, key, columns=["date"])
    top = pc.max(table["date"]).as_py()
    return None if top is None else _days(top)


def _days(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days


def lake_last_day(
    lake: Lake,
    entries: dict[str, Entry],
    states: dict[str, mf.SymbolState],
    loaded: Mapping[str, int | None],
    workers: int,
) -> int | None:
    """The last date over all consolidated data (not only this run's symbols or shard).

    From the rows already read, else the manifest when it describes the file as listed, else the
    file's footer statistics.
    """
    best: int | None = None
    unknown = []
    for symbol, e in entries.items():
        if symbol in loaded:
            value = loaded[symbol]
        elif (st := states.get(symbol)) is not None and st.data_size == e.size:
            value = _days(st.last_date) if st.last_date else None
        else:
            unknown.append(e.key)
            continue
        if value is not None:
            best = value if best is None else max(best, value)
    if unknown:
        with ThreadPoolExecutor(max(2, pool.worker_count(workers) * 2)) as ex:
            for value in ex.map(lambda k: _footer_last_day(lake, k), unknown):
                if value is not None:
                    best = value if best is None else max(best, value)
    return best


def tail_sources(
    lake: Lake,
    symbols: Sequence[str],
    redo: dict[int, dict[str, int | None]],
    entries: Mapping[str, Entry],
    states: Mapping[str, mf.SymbolState],
) -> dict[str, tuple[pa.Table, int]]:
    """(rows, first row) of the symbols whose consolidator's tail is current and usable."""
    cache = (
        tails.read(lake)
        if symbols and any(any(v is not None for v in t.values()) for t in redo.values())
        else {}
    )
    sources: dict[str, tuple[pa.Table, int]] = {}
    for s in symbols:
        tail, state = cache.get(s), states.get(s)
        if (
            tail is not None
            and state is not None
            and state.data_size == entries[s].size
            and tail.version == state.version
            and all(t.get(s, 0) is not None for t in redo.values())
        ):
            sources[s] = (tail.rows, tail.first_row)
    return sources


def load(
    lake: Lake,
    symbols: Sequence[str],
    redo: dict[int, dict[str, int | None]],
    entries: dict[str, Entry],
    states: dict[str, mf.SymbolState],
    anchor: Anchor,
    workers: int,
    progress: bool,
    *,
    counts: Mapping[str, int] | None = None,
    after_fork: Callable[[], None] | None = None,
    sources: dict[str, tuple[pa.Table, int]] | None = None,
) -> tuple[fib.Daily, dict[str, SymbolMark]]:
    """The rows to resample ``symbols`` from, and their new checkpoint marks.

    A symbol changed at a known date is taken from the consolidator's tail when it is current
    and reaches back to every interval's cut; otherwise its data.parquet is read. With
    ``counts`` (every symbol's rows, from the manifest) whole histories are read by forked
    workers (:mod:`batch.engine.shared_load`), and ``after_fork`` runs once they exist. ``sources``:
    the tails to use (:func:`tail_sources`), when the caller has them already.
    """
    if sources is None:
        sources = tail_sources(lake, symbols, redo, entries, states)
    daily = None
    if counts is not None and not sources:
        daily = _load_forked(lake, symbols, counts, workers, progress, after_fork)
    if daily is None:
        daily = _flatten(lake, symbols, sources, workers, progress)
    short = _not_reaching(daily, redo, anchor)
    if short:  # tails that do not reach back far enough: read those histories whole
        for s in short:
            sources.pop(s, None)
        daily = _flatten(lake, symbols, sources, workers, progress)
    marks = {}
    for i, s in enumerate(daily.symbols):
        lo, hi = int(daily.offsets[i]), int(daily.offsets[i + 1])
        state = states.get(s)
        if daily.first_row[i] == 0 or state is None or state.first_date is None:
            first = int(daily.date[lo]) if hi > lo else 0
        else:
            first = mf.to_days(state.first_date)
        last = int(daily.date[hi - 1]) if hi > lo else 0
        marks[s] = planning.mark_of(entries[s], state, first, last)
    return daily, marks


PROCESS_MIN_ROWS: Final = 2_000_000
"""Rows to read from which a resample runs on forked workers by default."""


def row_counts(
    symbols: Sequence[str], entries: Mapping[str, Entry], states: Mapping[str, mf.SymbolState]
) -> dict[str, int]:
    """Rows of each symbol's data.parquet, where the manifest describes the file listed."""
    out = {}
    for s in symbols:
        state = states.get(s)
        if state is not None and state.data_size == entries[s].size:
            out[s] = state.rows
    return out


def use_processes(
    lake: Lake, processes: bool | None, workers: int, counts: Mapping[str, int]
) -> bool:
    """Whether to read and compute on forked workers: asked for, or a large local read."""
    if not (lake.is_local and forking.available()) or processes is False:
        return False
    if processes:
        return True
    return pool.worker_count(workers) > 1 and sum(counts.values()) >= PROCESS_MIN_ROWS


def _load_forked(
    lake: Lake,
    symbols: Sequence[str],
    counts: Mapping[str, int],
    workers: int,
    progress: bool,
    after_fork: Callable[[], None] | None,
) -> fib.Daily | None:
    if any(s not in counts for s in symbols):
        return None
    with tqdm(
        total=len(symbols), desc="read", unit="sym", disable=not progress, leave=False
    ) as bar:

        def tick(done: int) -> None:
            bar.update(done)

        return shared_load.load(
            symbols,
            [counts[s] for s in symbols],
            lambda s: read_daily(lake, s),
            pool.worker_count(workers),
            tick,
            after_fork,
        )


def _flatten(
    lake: Lake,
    symbols: Sequence[str],
    sources: dict[str, tuple[pa.Table, int]],
    workers: int,
    progress: bool,
) -> fib.Daily:
    reads = [s for s in symbols if s not in sources]
    read = dict(zip(reads, read_many(lake, reads, workers, progress), strict=True))
    tables = [sources[s][0] if s in sources else read[s] for s in symbols]
    firsts = [sources[s][1] if s in sources else 0 for s in symbols]
    return fib.Daily.from_tables(list(symbols), tables, firsts)


def _not_reaching(
    daily: fib.Daily, redo: dict[int, dict[str, int | None]], anchor: Anchor
) -> set[str]:
    index = {s: i for i, s in enumerate(daily.symbols)}
    short: set[str] = set()
    for n, todo in redo.items():
        names = [s for s, e in todo.items() if e is not None and daily.first_row[index[s]] > 0]
        if not names:
            continue
        segments = np.array([index[s] for s in names], dtype=np.int64)
        earliest = np.array([todo[s] for s in names], dtype=np.int64)
        whole = np.zeros(len(names), dtype=bool)
        _, _, reaches = planning.tail_cuts(daily, segments, earliest, whole, n, anchor)
        short.update(s for s, ok in zip(names, reaches.tolist(), strict=True) if not ok)
    return short
