"""A metadata file that shards may update concurrently: one main file plus a part per shard.

``--shard I/N`` runs of one job own disjoint symbols but share a metadata file. Each shard
writes ``<name>.shard-I-of-N.parquet`` beside ``<name>.parquet`` instead, readers combine the
main file with every part, and an unsharded run folds the parts back into the main file (the
parts are deleted only after the main file is written, so a crash loses nothing).
"""

from __future__ import annotations

import re

import pyarrow as pa

from core.lake import Lake
from core.sharding import Shard


def part_key(main_key: str, shard: Shard) -> str:
    """Where shard ``I/N`` writes its rows of ``main_key``."""
    return f"{main_key.removesuffix('.parquet')}.shard-{shard.index}-of-{shard.count}.parquet"


def part_keys(lake: Lake, main_key: str) -> list[str]:
    """The shard parts of ``main_key`` present in the lake, sorted."""
    folder, _, name = main_key.rpartition("/")
    pattern = re.compile(re.escape(name.removesuffix(".parquet")) + r"\.shard-\d+-of-\d+\.parquet$")
    return [
        e.key
        for e in lake.list(folder)
        if e.key.count("/") == main_key.count("/") and pattern.search(e.key)
    ]


def read_all(lake: Lake, main_key: str) -> list[pa.Table]:
    """The main file (when present) and every part, in that order."""
    keys = ([main_key] if lake.exists(main_key) else []) + part_keys(lake, main_key)
    return [lake.read_table(k) for k in keys]


def write(lake: Lake, main_key: str, table: pa.Table, shard: Shard) -> None:
    """Write the combined ``table`` (unsharded) or this shard's rows of it (sharded)."""
    if shard.count == 1:
        stale = part_keys(lake, main_key)
        lake.write_table(main_key, table)
        for key in stale:
            lake.delete(key)
    else:
        lake.write_table(part_key(main_key, shard), table)
