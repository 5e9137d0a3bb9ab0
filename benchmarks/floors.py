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


def _roots(*, gold: bool) -> list[str]:
    """Roots of the gold (or Fibonacci silver) month files."""
    if gold:
        return [layout.gold_dir(i) for i in GOLD_INTERVALS]
    return [layout.silver_dir(n) for n in FIB_INTERVALS]


def _month_keys(lake: Lake, *, gold: bool) -> list[str]:
    return [e.key for root in _roots(gold=gold) for e in lake.list(root, suffix=".parquet")]


def _encode(key: str, table: pa.Table) -> None:
    """``table`` encoded as its month file ``key`` is, by gold's or silver's writer."""
    if key.startswith("gold/"):
        gold_files.serialize(table, key.split("/")[1].removeprefix("indicators_"))
    else:
        silver.serialize(table)


def encode_floor(lake: Lake, *, gold: bool) -> Floor:
    """Re-encode every gold (or Fibonacci silver) month file of ``lake``; the files are read
    first, untimed."""
    tables = [(key, lake.read_table(key)) for key in _month_keys(lake, gold=gold)]
    started = time.process_time()
    for key, table in tables:
        _encode(key, table)
    cpu = time.process_time() - started
    return Floor(len(tables), sum(t.num_rows for _, t in tables), cpu)


def versions(lake: Lake) -> dict[str, tuple[int, object]]:
    """(size, mtime) of every gold and Fibonacci silver month file: what a job rewrote is what
    changed between two calls."""
    out: dict[str, tuple[int, object]] = {}
    for root in _roots(gold=True) + _roots(gold=False):
        out.update({e.key: (e.size, e.mtime) for e in lake.list(root, suffix=".parquet")})
    return out


def rewrite_floor(lake: Lake, keys: list[str]) -> Floor:
    """Read and re-encode exactly ``keys`` (gold or silver month files), timed: the least any
    rewrite of them costs, since a month file is re-encoded whole."""
    started = time.process_time()
    for key in keys:
        _encode(key, lake.read_table(key))
    cpu = time.process_time() - started
    return Floor(len(keys), 0, cpu)
