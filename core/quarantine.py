"""Writing rejected rows to the lake's quarantine, the same way from every writer.

The part id is a digest of the payloads, so a rerun over the same input rewrites the same file
instead of adding a duplicate.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pyarrow as pa
import pyarrow.compute as pc

from core import layout
from core.lake import Lake


def day_of(rejected: pa.Table, now: dt.datetime) -> dt.date:
    """The day ``rejected`` (a QUARANTINE table) is filed under.

    Its rows' earliest date, so a rerun on another day rewrites the same file; ``now``'s day
    when no row has a date.
    """
    first = pc.min(rejected["date"]).as_py() if rejected.num_rows else None
    return first if isinstance(first, dt.date) else now.date()


def key_of(source: str, day: dt.date, symbol: str, rejected: pa.Table) -> str:
    """Where :func:`write` stores ``rejected``: the same rows always get the same key."""
    digest = hashlib.blake2b(
        "\n".join(rejected["payload"].to_pylist()).encode(), digest_size=8
    ).hexdigest()
    try:
        name = layout.check_symbol(symbol)
    except layout.LayoutError:  # a name that is no ticker never becomes a path segment
        name = "invalid"
    return layout.quarantine_part(source, day, f"{name}-{digest}")


def write(lake: Lake, source: str, day: dt.date, symbol: str, rejected: pa.Table) -> str:
    """Store ``rejected`` (a QUARANTINE table) under ``quarantine/{source}/{day}/``; its key."""
    key = key_of(source, day, symbol, rejected)
    lake.write_table(key, rejected)
    return key
