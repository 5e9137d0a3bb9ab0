"""Which daily row wins when bronze rows disagree: pure, vectorised, no I/O.

The contract: one row per (symbol, date); the newer ``ingested_at`` wins, except that ``live``
never replaces ``rest``. Read over a *set* of candidate rows for one date: when any candidate is
``rest``, the ``live`` candidates drop out; of the rest, the newest ``ingested_at`` wins.

Ties on ``ingested_at`` are broken without looking at input order, so the outcome never depends
on which file was listed first: the higher source rank wins (rest > flatfile > export > live:
the exchange's own daily aggregate before files derived from it, provisional live bars last),
then the larger values in the order close, open, high, low, volume, vwap, transactions. Rows
equal in all of those are equal in every column, so any choice among them is the same row.

The rule is not associative in one corner: a date with ``rest``, ``live`` and a third source
where the ``live`` row is the newest and the ``rest`` row the oldest (the contract's pairwise
rules form a cycle there). Merging such a date in two batches can keep the ``live`` row where
one batch keeps the third. Every other mix merges the same in any batching.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from core import arrays
from core.schemas import SOURCE_RANK

VALUE_COLUMNS: Final = ("open", "high", "low", "close", "volume", "vwap", "transactions")
"""Columns compared when checking that a fragment row is present in data.parquet."""
_TIE_VALUES: Final = ("close", "open", "high", "low", "volume", "vwap", "transactions")


def _ranks(table: pa.Table) -> npt.NDArray[np.int8]:
    src = arrays.to_numpy(table["source"])
    out = np.full(len(src), -1, dtype=np.int8)
    for name, rank in SOURCE_RANK.items():
        out[src == name] = rank
    return out


def _float(table: pa.Table, name: str) -> npt.NDArray[np.float64]:
    col = pc.cast(table[name], pa.float64())
    return np.asarray(arrays.to_numpy(pc.fill_null(col, -np.inf)), dtype=np.float64)


def order_keys(table: pa.Table) -> list[npt.NDArray[np.generic]]:
    """Sort keys for ``np.lexsort``, least significant first: the winner of a date sorts last.

    Primary key is the date, then eligibility (a ``live`` row on a date that has a ``rest`` row
    is ineligible), then ``ingested_at``, source rank and the values of the tie-break.
    """
    days = np.asarray(arrays.to_numpy(pc.cast(table["date"], pa.int32())), dtype=np.int32)
    ranks = _ranks(table)
    ingested = np.asarray(
        arrays.to_numpy(pc.cast(table["ingested_at"], pa.int64())), dtype=np.int64
    )
    rest_days = np.unique(days[ranks == SOURCE_RANK["rest"]])
    eligible = ~((ranks == SOURCE_RANK["live"]) & np.isin(days, rest_days))
    ties = [_float(table, name) for name in reversed(_TIE_VALUES)]
    return [*ties, ranks, ingested, eligible, days]


def winners(table: pa.Table) -> npt.NDArray[np.intp]:
    """Indices of the winning row of each date, in date order."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.intp)
    keys = order_keys(table)
    order = np.lexsort(keys)
    days = keys[-1][order]
    last_of_day = np.ones(len(order), dtype=bool)
    last_of_day[:-1] = days[1:] != days[:-1]
    return np.asarray(order[last_of_day], dtype=np.intp)


def merge(table: pa.Table) -> pa.Table:
    """One row per date (the winner), sorted by date."""
    return table.take(winners(table))


def beats_or_equals(kept: pa.Table, other: pa.Table) -> npt.NDArray[np.bool_]:
    """Row by row: True where ``kept[i]`` is ``other[i]`` or would win against it.

    This is how cleanup proves a fragment row is accounted for in data.parquet: the consolidated
    row for that date either carries the same values or supersedes it under the rule above.
    """
    if kept.num_rows != other.num_rows:
        msg = "beats_or_equals needs tables of equal length"
        raise ValueError(msg)
    n = kept.num_rows
    if n == 0:
        return np.zeros(0, dtype=bool)
    both = pa.concat_tables([kept.select(other.column_names), other])
    same = np.ones(n, dtype=bool)
    for name in (*VALUE_COLUMNS, "source", "ingested_at", "date"):
        a, b = kept[name], other[name]
        eq = pc.fill_null(pc.equal(a, b), False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        same &= np.asarray(arrays.to_numpy(pc.or_(eq, both_null)), dtype=bool)
    keys = order_keys(both)
    # Each pair is its own "date" for the comparison: rebase the primary key on the pair index.
    pair = np.concatenate([np.arange(n), np.arange(n)]).astype(np.int64)
    ranks = keys[-4]
    live_vs_rest = np.zeros(2 * n, dtype=bool)
    rest_in_pair = (ranks[:n] == SOURCE_RANK["rest"]) | (ranks[n:] == SOURCE_RANK["rest"])
    live_vs_rest[:n] = (ranks[:n] == SOURCE_RANK["live"]) & rest_in_pair
    live_vs_rest[n:] = (ranks[n:] == SOURCE_RANK["live"]) & rest_in_pair
    keys = [*keys[:-2], ~live_vs_rest, pair]
    order = np.lexsort(keys)
    winner_of_pair = order[1::2]  # each pair sorts to two adjacent slots; the winner is second
    kept_wins = np.zeros(n, dtype=bool)
    kept_wins[winner_of_pair[winner_of_pair < n]] = True
    same_day = np.asarray(arrays.to_numpy(pc.equal(kept["date"], other["date"])), dtype=bool)
    return np.asarray(same | (kept_wins & same_day), dtype=bool)


# -- minute bars ------------------------------------------------------------------------------
MINUTE_SOURCE_RANK: Final = {"live": 0, "flatfile": 1, "rest": 2}
_MINUTE_TIES: Final = ("close", "open", "high", "low", "volume", "vwap", "trades")


def minute_winners(table: pa.Table) -> npt.NDArray[np.intp]:
    """Indices of the winning row per (``symbol``, ``start``), sorted by them.

    Per key: a ``partial`` bar never beats a non-partial one; then ``rest`` beats ``flatfile``
    beats ``live``; within a source the higher ``revision``, then the newer ``ingested_at``;
    then the values (so the outcome never depends on input order).
    """
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.intp)
    symbols = pc.cast(table["symbol"], pa.string())
    names, codes = np.unique(
        np.asarray(arrays.to_numpy(symbols), dtype=object), return_inverse=True
    )
    del names
    src = np.asarray(arrays.to_numpy(table["source"]), dtype=object)
    rank = np.zeros(len(src), dtype=np.int8)
    for name, r in MINUTE_SOURCE_RANK.items():
        rank[src == name] = r
    starts = np.asarray(arrays.to_numpy(pc.cast(table["start"], pa.int64())), dtype=np.int64)
    ingested = np.asarray(
        arrays.to_numpy(pc.cast(table["ingested_at"], pa.int64())), dtype=np.int64
    )
    revision = np.asarray(arrays.to_numpy(pc.cast(table["revision"], pa.int64())), dtype=np.int64)
    complete = np.logical_not(np.asarray(arrays.to_numpy(table["partial"]), dtype=bool))
    keys: list[npt.NDArray[np.generic]] = [_float(table, name) for name in reversed(_MINUTE_TIES)]
    keys += [ingested, revision, rank, complete, starts, np.asarray(codes, dtype=np.int64)]
    order = np.lexsort(keys)
    c, s = codes[order], starts[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (c[1:] != c[:-1]) | (s[1:] != s[:-1])
    return np.asarray(order[last], dtype=np.intp)
