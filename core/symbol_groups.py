"""One symbol's rows from Parquet files sorted by symbol, through their row groups' statistics.

A consolidated minute session holds the whole market in one file, in row groups cut at symbol
boundaries; a one-symbol read needs that file's footer (to find the symbol's row group) and
the group itself. Parsing the footer is most of a cold read, and a year of one symbol opens
252 of them, so footers are kept in a small in-process cache keyed by path and checked
against the file's size and modification time (a rewritten file is a new entry, never a
stale read). Many files are read on a few threads: pyarrow decodes without the GIL.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

CACHED_FOOTERS: Final = 4096
"""Footers kept (a few years of sessions); each is a few hundred kB parsed at most."""
READ_THREADS: Final = 4
"""Threads for a many-file read: enough to overlap I/O with decoding on a small machine."""
SYMBOL: Final = "symbol"
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Footer:
    """A file's parsed footer and each row group's symbol range (None without statistics)."""

    metadata: pq.FileMetaData
    lows: tuple[str, ...] | None
    highs: tuple[str, ...] | None

    def groups_of(self, symbol: str) -> list[int]:
        """Row groups whose symbol range holds ``symbol`` (every group without statistics)."""
        return self.groups_between(symbol, symbol)

    def groups_between(self, low: str, high: str) -> list[int]:
        """Row groups that may hold a symbol in [``low``, ``high``] (all without statistics)."""
        if self.lows is None or self.highs is None:
            return list(range(self.metadata.num_row_groups))
        first = bisect.bisect_left(self.highs, low)  # highs ascend: the file is sorted
        last = bisect.bisect_right(self.lows, high)
        return list(range(first, last))


def footer_of(metadata: pq.FileMetaData) -> Footer:
    """The symbol ranges of ``metadata``'s row groups, read once."""
    names = metadata.schema.to_arrow_schema().names
    if SYMBOL not in names:
        return Footer(metadata, None, None)
    col = names.index(SYMBOL)
    lows, highs = [], []
    for i in range(metadata.num_row_groups):
        stats = metadata.row_group(i).column(col).statistics
        if stats is None or not stats.has_min_max:
            return Footer(metadata, None, None)
        lows.append(stats.min)
        highs.append(stats.max)
    return Footer(metadata, tuple(lows), tuple(highs))


class FooterCache:
    """Footers by path, valid while the file keeps its size and modification time."""

    def __init__(self, capacity: int = CACHED_FOOTERS) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[tuple[int, int], Footer]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, fs: pafs.FileSystem, info: pafs.FileInfo) -> Footer:
        """The footer of the file ``info`` describes (parsed now if unknown or changed)."""
        stamp = (int(info.size or 0), int(info.mtime_ns or 0))
        with self._lock:
            hit = self._items.get(info.path)
            if hit is not None and hit[0] == stamp:
                self._items.move_to_end(info.path)
                return hit[1]
        with fs.open_input_file(info.path) as fh:
            footer = footer_of(pq.ParquetFile(fh).metadata)
        with self._lock:
            self._items[info.path] = (stamp, footer)
            self._items.move_to_end(info.path)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return footer

    def clear(self) -> None:
        """Forget every footer (tests; a cold read in a benchmark)."""
        with self._lock:
            self._items.clear()


FOOTERS: Final = FooterCache()
_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(READ_THREADS, thread_name_prefix="symbol-groups"))
        return _POOL[0]


def read_symbol(
    fs: pafs.FileSystem,
    info: pafs.FileInfo,
    symbol: str,
    columns: Sequence[str] | None = None,
    *,
    cache: FooterCache = FOOTERS,
) -> pa.Table:
    """``symbol``'s rows of one file (``columns``, default all), reading only its row groups."""
    footer = cache.get(fs, info)
    cols = None if columns is None else list(dict.fromkeys([*columns, SYMBOL]))
    with fs.open_input_file(info.path) as fh:
        pf = pq.ParquetFile(fh, metadata=footer.metadata, read_dictionary=[SYMBOL])
        table = pf.read_row_groups(footer.groups_of(symbol), columns=cols, use_threads=False)
    rows = _rows_of(table[SYMBOL], symbol)
    if rows.size and rows[-1] - rows[0] + 1 == rows.size:  # one run: the file is sorted
        table = table.slice(int(rows[0]), int(rows.size))
    else:
        table = table.take(pa.array(rows))
    if columns is not None:
        return table.select(list(columns))
    plain = pa.array(np.full(table.num_rows, symbol, dtype=object), pa.string())
    return table.set_column(table.schema.get_field_index(SYMBOL), SYMBOL, plain)


def _rows_of(symbols: pa.ChunkedArray, symbol: str) -> np.ndarray:
    """Rows of ``symbol`` in a dictionary-encoded column, ascending.

    A group holds a handful of symbols: comparing their dictionary codes is much cheaper than
    comparing strings row by row.
    """
    found, offset = [], 0
    for chunk in symbols.chunks:
        code = chunk.dictionary.index(symbol).as_py()
        if code >= 0:
            found.append(
                np.flatnonzero(chunk.indices.to_numpy(zero_copy_only=False) == code) + offset
            )
        offset += len(chunk)
    return np.concatenate(found) if found else np.empty(0, np.int64)


def read_between(
    fs: pafs.FileSystem,
    info: pafs.FileInfo,
    low: str,
    high: str,
    *,
    cache: FooterCache = FOOTERS,
) -> pa.Table:
    """The rows of one file whose symbol is in [``low``, ``high``], reading only their groups."""
    footer = cache.get(fs, info)
    with fs.open_input_file(info.path) as fh:
        pf = pq.ParquetFile(fh, metadata=footer.metadata)
        table = pf.read_row_groups(footer.groups_between(low, high), use_threads=False)
    symbols = table[SYMBOL]
    keep = pc.and_(pc.greater_equal(symbols, low), pc.less_equal(symbols, high))
    return table.filter(keep)


def map_threads(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``fn`` over ``items`` in order, on the shared reader threads (inline for one item)."""
    if len(items) < 2:
        return [fn(i) for i in items]
    return list(_pool().map(fn, items))


def read_symbol_many(
    fs: pafs.FileSystem,
    infos: Sequence[pafs.FileInfo],
    symbol: str,
    columns: Sequence[str] | None = None,
    *,
    cache: FooterCache = FOOTERS,
) -> list[pa.Table]:
    """:func:`read_symbol` over many files, in their order, on a few threads."""
    return map_threads(lambda i: read_symbol(fs, i, symbol, columns, cache=cache), infos)
