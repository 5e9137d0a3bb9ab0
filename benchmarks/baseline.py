"""The design we replace, re-implemented as the benchmarks' baseline.

- consolidation: per symbol, a fresh DuckDB connection reads data.parquet and the symbol's
  fragments, keeps the newest row per date (``ROW_NUMBER``) and writes data.parquet again;
- resampling: per interval, one ``ROW_NUMBER`` query over every data.parquet numbers each
  symbol's rows (the symbol anchor), aggregates the groups into a pandas frame, then writes one
  Parquet file per start month with pandas.

Paths reach SQL only as bound parameters.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb
import pandas as pd

from core import layout
from core.lake import Lake

_CONSOLIDATE = """
COPY (
    SELECT * EXCLUDE (rn) FROM (
        SELECT *, ROW_NUMBER() OVER (PARTITION BY date ORDER BY ingested_at DESC) AS rn
        FROM read_parquet($files, union_by_name = true)
    ) WHERE rn = 1 ORDER BY date
) TO '{target}' (FORMAT parquet, COMPRESSION zstd)
"""

_RESAMPLE = """
WITH numbered AS (
    SELECT symbol, date, open, high, low, close, volume,
           (ROW_NUMBER() OVER (PARTITION BY symbol ORDER BY date) - 1) // $n AS g
    FROM read_parquet($glob)
)
SELECT symbol,
       min(date) AS start_date, max(date) AS end_date,
       arg_min(open, date) AS open, max(high) AS high, min(low) AS low,
       arg_max(close, date) AS close, sum(volume) AS volume,
       count(*)::INTEGER AS days, count(*) = $n AS complete
FROM numbered GROUP BY symbol, g
"""


def _quoted_path(path: str) -> str:
    """A local path allowed into COPY ... TO (which takes no parameter): no quotes in it."""
    if "'" in path or "\n" in path:
        msg = f"refusing a path with a quote or newline: {path!r}"
        raise ValueError(msg)
    return path


def consolidate_symbol(lake: Lake, symbol: str) -> None:
    """The old per-symbol consolidation: one DuckDB start-up, one query, one write."""
    folder = Path(lake.path(layout.symbol_dir(symbol)))
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    target = folder / "_tmp-baseline.parquet"
    con = duckdb.connect()
    try:
        con.execute(_CONSOLIDATE.format(target=_quoted_path(str(target))), {"files": files})
    finally:
        con.close()
    os.replace(target, folder / "data.parquet")


def consolidate_rate(lake: Lake, symbols: list[str]) -> float:
    """Symbols per second of the old consolidation over ``symbols``."""
    started = time.perf_counter()
    for s in symbols:
        consolidate_symbol(lake, s)
    return len(symbols) / (time.perf_counter() - started)


def resample(lake: Lake, out: Path, intervals: tuple[int, ...]) -> int:
    """The old full resample into ``out``; returns the number of files written."""
    glob = lake.path(f"{layout.DAILY}/*/data.parquet")
    written = 0
    con = duckdb.connect()
    try:
        for n in intervals:
            frame: pd.DataFrame = con.execute(_RESAMPLE, {"n": n, "glob": glob}).df()
            months = pd.to_datetime(frame["start_date"]).dt.to_period("M")
            for month, part in frame.groupby(months):
                target = out / f"silver_{n}d" / f"data_{n}d_{month.strftime('%Y%m')}.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                part.to_parquet(target, index=False)
                written += 1
    finally:
        con.close()
    return written
