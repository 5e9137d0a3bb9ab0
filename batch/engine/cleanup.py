"""Safe deletion of merged fragments, shared by ``batch.vacuum`` and the consolidator.

A fragment is deleted only when all of these hold:

- the consolidation manifest records it (same key, size and mtime) as merged, so a fragment
  written after the last consolidation, or rewritten in place, is never touched;
- it is older than the retention (``FRAGMENT_RETENTION_DAYS``, by its modification time);
- every one of its rows is verified against data.parquet: the consolidated row of that date
  carries the same values, or supersedes it under the precedence rule.

What is removed is recorded in ``processing_metadata/cleanup_manifest.parquet`` *before* the
files are deleted; rows are keyed by the fragment's identity, so a rerun after a crash records
nothing twice. Sharded runs write shard parts of it (see :mod:`batch.engine.parts`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch.engine import parts, screen
from batch.engine.manifest import FragmentId
from core import arrays, layout, precedence
from core.lake import Lake
from core.schemas import UTC_US
from core.sharding import Shard

MANIFEST_KEY: Final = f"{layout.META}/cleanup_manifest.parquet"
SCHEMA: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_us", pa.int64(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("first_date", pa.date32(), nullable=False),
        pa.field("last_date", pa.date32(), nullable=False),
        pa.field("removed_at", UTC_US, nullable=False),
        pa.field("removed_by", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True, slots=True)
class Removal:
    """A fragment proven safe to delete."""

    symbol: str
    fragment: FragmentId
    rows: int
    first_date: dt.date
    last_date: dt.date


def is_due(fragment: FragmentId, now: dt.datetime, retention_days: int) -> bool:
    """True when the fragment is older than the retention."""
    cutoff = now - dt.timedelta(days=retention_days)
    return fragment.mtime_us <= (cutoff - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(
        microseconds=1
    )


def all_rows_present(data: pa.Table, fragment: pa.Table) -> bool:
    """True when every fragment row is in ``data`` or superseded by ``data``'s row of that date.

    ``data`` is a consolidated table (sorted by date, one row per date).
    """
    if fragment.num_rows == 0:
        return True
    if data.num_rows == 0:
        return False
    data_days = np.asarray(arrays.to_numpy(pc.cast(data["date"], pa.int32())), dtype=np.int32)
    frag_days = np.asarray(arrays.to_numpy(pc.cast(fragment["date"], pa.int32())), dtype=np.int32)
    at = np.clip(np.searchsorted(data_days, frag_days), 0, len(data_days) - 1)
    if not bool(np.all(data_days[at] == frag_days)):
        return False
    kept = data.take(pa.array(at)).select(fragment.column_names).cast(fragment.schema)
    return bool(np.all(precedence.beats_or_equals(kept, fragment)))


def verified(
    lake: Lake, symbol: str, data: pa.Table, screened: tuple[pa.Table, list[str], pa.Table]
) -> bool:
    """True when deleting a fragment loses nothing.

    Its accepted rows are in ``data`` (or superseded there) and its refused rows are in the
    quarantine.

    ``screened``: the fragment after :func:`batch.engine.screen.split` (accepted, reasons, refused).
    """
    accepted, reasons, refused = screened
    return all_rows_present(data, accepted) and screen.in_quarantine(lake, symbol, refused, reasons)


def removal(symbol: str, fragment: FragmentId, table: pa.Table) -> Removal:
    """Describe a verified fragment for the cleanup manifest."""
    days = pc.min_max(table["date"]).as_py() if table.num_rows else {"min": None, "max": None}
    first = days["min"] or dt.date(1970, 1, 1)
    return Removal(symbol, fragment, table.num_rows, first, days["max"] or first)


def _table(removals: Iterable[Removal], at: dt.datetime, by: str) -> pa.Table:
    rows = [
        {
            "symbol": r.symbol,
            "key": r.fragment.key,
            "size": r.fragment.size,
            "mtime_us": r.fragment.mtime_us,
            "rows": r.rows,
            "first_date": r.first_date,
            "last_date": r.last_date,
            "removed_at": at,
            "removed_by": by,
        }
        for r in removals
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _dedupe(tables: Sequence[pa.Table]) -> pa.Table:
    """One row per fragment identity (the earliest record), sorted by key."""
    if not tables:
        return arrays.empty_table(SCHEMA)
    both = pa.concat_tables([t.cast(SCHEMA) for t in tables])
    order = pc.sort_indices(
        both,
        sort_keys=[
            ("key", "ascending"),
            ("size", "ascending"),
            ("mtime_us", "ascending"),
            ("removed_at", "ascending"),
        ],
    )
    both = both.take(order)
    if both.num_rows == 0:
        return both
    key = arrays.to_numpy(both["key"])
    size = arrays.to_numpy(both["size"])
    mtime = arrays.to_numpy(both["mtime_us"])
    first = np.ones(both.num_rows, dtype=bool)
    first[1:] = (key[1:] != key[:-1]) | (size[1:] != size[:-1]) | (mtime[1:] != mtime[:-1])
    return both.filter(pa.array(first))


def read_manifest(lake: Lake) -> pa.Table:
    """Everything removed so far (main file and shard parts)."""
    return _dedupe(parts.read_all(lake, MANIFEST_KEY))


def remove(
    lake: Lake, removals: Sequence[Removal], shard: Shard, *, at: dt.datetime, by: str
) -> None:
    """Record ``removals`` in the cleanup manifest, then delete the files."""
    if not removals:
        return
    new = _table(removals, at, by)
    if shard.count == 1:
        held = parts.read_all(lake, MANIFEST_KEY)
    else:
        own = parts.part_key(MANIFEST_KEY, shard)
        held = [parts.read_parquet(lake, own)] if lake.exists(own) else []
    parts.write(lake, MANIFEST_KEY, _dedupe([*held, new]), shard)
    for r in removals:
        lake.delete(r.fragment.key)
