"""The shared bronze writer for daily bars: validated rows to per-symbol Parquet fragments.

One call writes one table of BRONZE_DAILY rows. Each symbol's rows land in one file: a
``date=`` fragment when they cover one session, a ``range=FIRST_LAST`` file when they span
several, so a multi-session write makes at most one file per symbol. Names are functions of
the content (symbol, first and last date), so rewriting the same input overwrites the same keys
rather than adding duplicates, and each write is atomic (:meth:`core.lake.Lake.write_table`).

Files are written from a thread pool: Parquet encoding releases the GIL and on S3 every file is
one PUT, so thousands of small files per session go out in parallel.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.lake import Lake
from core.layout import daily_fragment, range_fragment
from core.schemas import BRONZE_DAILY, conform

DEFAULT_CONCURRENCY: Final = 16
FRAGMENT_COMPRESSION: Final = "snappy"
"""Fragments are small and short-lived (consolidation rewrites them with zstd); snappy writes
a one-row file about four times faster than zstd, whose per-column context dominates there."""


class BronzeError(ValueError):
    """A table that cannot be written as bronze (e.g. two rows for one symbol and date)."""


@dataclass(frozen=True, slots=True)
class Fragment:
    """One file to write: its lake key and its rows (one symbol, sorted by date)."""

    key: str
    symbol: str
    first: dt.date
    last: dt.date
    table: pa.Table


@dataclass(frozen=True, slots=True)
class Written:
    """What one write produced."""

    files: int
    rows: int
    bytes: int

    def __add__(self, other: Written) -> Written:
        return Written(self.files + other.files, self.rows + other.rows, self.bytes + other.bytes)


NOTHING: Final = Written(0, 0, 0)


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("symbol", "ascending"), ("date", "ascending")])


def fragments(table: pa.Table) -> Iterator[Fragment]:
    """Per-symbol fragments of ``table`` (any row order); pure, no I/O.

    Raises :class:`BronzeError` when a (symbol, date) appears twice: which row is right is not
    the writer's call.
    """
    t = _sorted(conform(table, BRONZE_DAILY))
    n = t.num_rows
    if n == 0:
        return
    symbols = t["symbol"].combine_chunks()
    days = pc.cast(t["date"], pa.int32()).to_numpy(zero_copy_only=False)
    codes = pc.dictionary_encode(symbols).indices.to_numpy(zero_copy_only=False)
    new_symbol = np.concatenate([[True], codes[1:] != codes[:-1]])
    same_day = np.concatenate([[False], days[1:] == days[:-1]]) & ~new_symbol
    if same_day.any():
        i = int(np.flatnonzero(same_day)[0])
        msg = (
            f"{int(same_day.sum())} duplicate (symbol, date) rows, e.g. "
            f"{symbols[i].as_py()} {t['date'][i].as_py()}"
        )
        raise BronzeError(msg)
    starts = np.flatnonzero(new_symbol)
    ends = np.append(starts[1:], n)
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        symbol = str(symbols[lo].as_py())
        first = dt.date.fromordinal(int(days[lo]) + _UNIX_ORDINAL)
        last = dt.date.fromordinal(int(days[hi - 1]) + _UNIX_ORDINAL)
        key = (
            daily_fragment(symbol, first) if first == last else range_fragment(symbol, first, last)
        )
        yield Fragment(key, symbol, first, last, t.slice(lo, hi - lo))


_UNIX_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()


class BronzeWriter:
    """Writes BRONZE_DAILY tables to the lake, one file per symbol per call, in parallel."""

    def __init__(self, lake: Lake, *, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.lake = lake
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bronze")

    def _write(self, frag: Fragment) -> int:
        return self.lake.write_parquet(frag.key, frag.table, compression=FRAGMENT_COMPRESSION)

    def write(self, table: pa.Table) -> Written:
        """Write ``table``'s rows; returns files, rows and bytes. A failed file raises."""
        frags = list(fragments(table))
        sizes = list(self._pool.map(self._write, frags))
        return Written(len(frags), sum(f.table.num_rows for f in frags), sum(sizes))

    def close(self) -> None:
        """Wait for and release the threads."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> BronzeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _BronzePartition(StatelessSinkPartition[pa.Table]):
    def __init__(self, lake: Lake, concurrency: int) -> None:
        self._writer = BronzeWriter(lake, concurrency=concurrency)

    def write_batch(self, items: list[pa.Table]) -> None:
        if items:
            self._writer.write(pa.concat_tables([conform(t, BRONZE_DAILY) for t in items]))

    def close(self) -> None:
        self._writer.close()


class BronzeSink(DynamicSink[pa.Table]):
    """A Bytewax sink of BRONZE_DAILY tables; each batch becomes one file per symbol."""

    def __init__(self, lake: Lake, *, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.lake = lake
        self.concurrency = concurrency

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[pa.Table]:
        """One writer per worker."""
        return _BronzePartition(self.lake, self.concurrency)
