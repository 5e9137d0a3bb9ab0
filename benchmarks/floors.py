"""What rewriting month files costs before any reading or computing: the floor under a job.

Gold and silver keep every symbol of a month in one file per interval, so a job that changes
them re-encodes whole files. Timing the encoder alone, with the jobs' own writer options, over
the files a job produced, says how fast that job could ever be in this layout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa

from batch.engine import gold_files, silver
from core import layout
from core.lake import Lake
from core.schemas import FIB_INTERVALS, GOLD_INTERVALS


@dataclass(frozen=True)
class Floor:
    """CPU seconds to encode ``files`` month files holding ``rows`` rows, in one process."""

    files: int
    rows: int
    cpu_s: float

    @property
    def per_file_ms(self) -> float:
        return 1000 * self.cpu_s / self.files if self.files else 0.0


def _encode_all(tables: list[tuple[str, pa.Table]], gold: bool) -> Floor:
    started = time.process_time()
    for interval, table in tables:
        if gold:
            gold_files.serialize(table, interval)
        else:
            silver.serialize(table)
    cpu = time.process_time() - started
    return Floor(len(tables), sum(t.num_rows for _, t in tables), cpu)


def encode_floor(lake: Lake, *, gold: bool) -> Floor:
    """Re-encode every gold (or Fibonacci silver) month file of ``lake``; the files are read
    first, untimed."""
    if gold:
        roots = [(i, layout.gold_dir(i)) for i in GOLD_INTERVALS]
    else:
        roots = [(f"{n}d", layout.silver_dir(n)) for n in FIB_INTERVALS]
    tables = [
        (interval, lake.read_table(e.key))
        for interval, root in roots
        for e in lake.list(root, suffix=".parquet")
    ]
    return _encode_all(tables, gold)


def versions(lake: Lake) -> dict[str, tuple[int, object]]:
    """(size, mtime) of every gold and Fibonacci silver month file: what a job rewrote is what
    changed between two calls."""
    out: dict[str, tuple[int, object]] = {}
    for root in [layout.gold_dir(i) for i in GOLD_INTERVALS] + [
        layout.silver_dir(n) for n in FIB_INTERVALS
    ]:
        out.update({e.key: (e.size, e.mtime) for e in lake.list(root, suffix=".parquet")})
    return out


def rewrite_floor(lake: Lake, keys: list[str]) -> Floor:
    """Read and re-encode exactly ``keys`` (gold or silver month files), timed: the least any
    rewrite of them costs, since a month file is re-encoded whole."""
    started = time.process_time()
    for key in keys:
        table = lake.read_table(key)
        if key.startswith("gold/"):
            gold_files.serialize(table, key.split("/")[1].removeprefix("indicators_"))
        else:
            silver.serialize(table)
    cpu = time.process_time() - started
    return Floor(len(keys), 0, cpu)
