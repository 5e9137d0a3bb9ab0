"""The recent rows of each changed symbol, handed from consolidation to resampling.

After a daily run every symbol has changed, but resampling only needs the rows of the groups
touching the change: at most ``MAX_BACK`` rows before the earliest changed date, and the rows
after it. The consolidator has them in memory anyway, so it writes them, tagged with the
symbol's manifest version, to ``processing_metadata/consolidation_tails.parquet``; resampling
reads this one file instead of every data.parquet. It is only a cache: resampling uses a tail
only when its version is the manifest's and it reaches back far enough, and reads data.parquet
otherwise.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch.engine import fib, parts
from core import arrays, layout
from core.lake import Lake
from core.schemas import FIB_INTERVALS
from core.sharding import Shard

KEY: Final = f"{layout.META}/consolidation_tails.parquet"
MAX_BACK: Final = max(FIB_INTERVALS) - 1
"""A group reaches at most N - 1 rows (or sessions) back from any of its rows."""
ROWS: Final = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        *[pa.field(c, pa.float64(), nullable=False) for c in fib.PRICE_COLUMNS],
    ]
)
SCHEMA: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("first_row", pa.int64(), nullable=False),
        *ROWS,
    ]
)


@dataclass(frozen=True)
class Tail:
    """Rows ``first_row`` onwards of a symbol's data.parquet at manifest ``version``."""

    version: int
    first_row: int
    rows: pa.Table


def tail_of(data: pa.Table, version: int, earliest_day: int) -> Tail:
    """The tail of a consolidated table for a change at ``earliest_day`` (date32)."""
    days = np.asarray(arrays.to_numpy(pc.cast(data["date"], pa.int32())), dtype=np.int32)
    first = max(0, int(np.searchsorted(days, earliest_day, side="left")) - MAX_BACK)
    # copies: a slice would drag (and pickle) the whole history's buffers along
    part = data.slice(first)
    columns = [arrays.from_numpy(days[first:].copy(), pa.date32())]
    for name in fib.PRICE_COLUMNS:
        values = np.asarray(arrays.to_numpy(part[name]), dtype=np.float64)
        columns.append(arrays.from_numpy(values.copy()))
    return Tail(version, first, pa.table(columns, schema=ROWS))


def _to_table(tails: Mapping[str, Tail]) -> pa.Table:
    symbols = sorted(tails)
    if not symbols:
        return arrays.empty_table(SCHEMA)
    counts = np.array([tails[s].rows.num_rows for s in symbols], dtype=np.int64)
    codes = np.repeat(np.arange(len(symbols), dtype=np.int32), counts)
    symbol = pa.DictionaryArray.from_arrays(arrays.from_numpy(codes), arrays.strings(symbols))
    versions = np.array([tails[s].version for s in symbols], dtype=np.int64)
    firsts = np.array([tails[s].first_row for s in symbols], dtype=np.int64)
    rows = pa.concat_tables([tails[s].rows for s in symbols])
    return pa.table(
        [
            symbol.cast(pa.string()),
            arrays.from_numpy(np.repeat(versions, counts)),
            arrays.from_numpy(np.repeat(firsts, counts)),
            *rows.columns,
        ],
        schema=SCHEMA,
    )


def _from_tables(tables: list[pa.Table]) -> dict[str, Tail]:
    out: dict[str, Tail] = {}
    for table in tables:
        if table.num_rows == 0:
            continue
        table = table.cast(SCHEMA)
        # runs of equal symbols from dictionary codes: strings as objects would load pandas
        encoded = table["symbol"].combine_chunks().dictionary_encode()
        names = encoded.dictionary.to_pylist()
        codes = np.asarray(arrays.to_numpy(encoded.indices), dtype=np.int64)
        edges = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        bounds = [0, *edges.tolist(), len(codes)]
        versions = arrays.to_numpy(table["version"])
        firsts = arrays.to_numpy(table["first_row"])
        rows = table.select(list(ROWS.names))
        for lo, hi in itertools.pairwise(bounds):
            symbol = str(names[codes[lo]])
            tail = Tail(int(versions[lo]), int(firsts[lo]), rows.slice(lo, hi - lo))
            held = out.get(symbol)
            if held is None or tail.version >= held.version:
                out[symbol] = tail
    return out


def read(lake: Lake) -> dict[str, Tail]:
    """Every symbol's latest tail (main file and shard parts)."""
    return _from_tables(parts.read_all(lake, KEY))


def write(lake: Lake, new: Mapping[str, Tail], shard: Shard) -> None:
    """Replace the tails of the symbols in ``new``, keeping the others.

    An unsharded run also folds the shards' parts back in, even with nothing new.
    """
    if not new and (shard.count != 1 or not parts.part_keys(lake, KEY)):
        return
    if shard.count == 1:
        held = _from_tables(parts.read_all(lake, KEY))
    else:
        own = parts.part_key(KEY, shard)
        held = _from_tables([parts.read_parquet(lake, own)] if lake.exists(own) else [])
    held.update(new)
    parts.write(lake, KEY, _to_table(held), shard)
