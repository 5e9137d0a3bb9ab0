"""A metadata file that shards may update concurrently: one main file plus a part per shard.

``--shard I/N`` runs of one job own disjoint symbols but share a metadata file. Each shard
writes ``<name>.shard-I-of-N.parquet`` beside ``<name>.parquet`` instead, readers combine the
main file with every part, and an unsharded run folds the parts back into the main file (the
parts are deleted only after the main file is written, so a crash loses nothing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from core.lake import Lake, LakeError
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


def read_parquet(lake: Lake, key: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Read one Parquet file whole, as :meth:`Lake.read_table` but cheaper for a batch job.

    ``pq.read_table`` goes through ``pyarrow.dataset``, whose import pulls in pandas: seconds
    of CPU in every process that reads a metadata file. One read of the bytes and a
    ``ParquetFile`` give the same table without it.
    """
    try:
        source = pa.BufferReader(lake.read_bytes(key))
        return pq.ParquetFile(source).read(
            columns=list(columns) if columns else None, use_threads=False
        )
    except (OSError, pa.ArrowInvalid) as exc:
        msg = f"cannot read {lake.uri(key)}: {exc}"
        raise LakeError(msg) from exc


def read_all(lake: Lake, main_key: str) -> list[pa.Table]:
    """The main file (when present) and every part, in that order."""
    keys = ([main_key] if lake.exists(main_key) else []) + part_keys(lake, main_key)
    return [read_parquet(lake, k) for k in keys]


def write(lake: Lake, main_key: str, table: pa.Table, shard: Shard) -> None:
    """Write the combined ``table`` (unsharded) or this shard's rows of it (sharded)."""
    if shard.count == 1:
        stale = part_keys(lake, main_key)
        lake.write_table(main_key, table)
        for key in stale:
            lake.delete(key)
    else:
        lake.write_table(part_key(main_key, shard), table)
