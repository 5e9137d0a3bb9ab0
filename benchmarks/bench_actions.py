"""Corporate-action benchmarks, each against a baseline in the same run.

``python -m benchmarks.bench_actions [--symbols N] [--rows N] [--requests N]``

1. a new split for one symbol of the synthetic full market (5,350 symbols, 22.6M rows): the
   incremental resample that detects it (split versions) and rebuilds that symbol's silver in
   all six intervals, for a symbol of median history and for the longest one; baseline: the
   full resample it replaces (what rebuilding without per-symbol versions would cost);
2. a 5-year ``/v1/bars`` 1d request from Postgres with ``adjusted=total`` (two splits, twenty
   dividends), against the same request with ``adjusted=none`` (raw), medians of interleaved
   requests through the real app in-process.

Results go to the ``actions`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import SecretStr

from batch import consolidate, resample
from benchmarks import report
from benchmarks import synthetic as syn
from benchmarks.bench_batch import timed
from benchmarks.bench_ingest import fresh_schema
from core import calendar, layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY, SPLITS
from core.stores import actions as store
from core.stores import postgres

NOW = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)


def _split_table(symbol: str, day: dt.date) -> pa.Table:
    return pa.table(
        {
            "symbol": [symbol], "execution_date": [day], "split_from": [1.0], "split_to": [2.0],
            "adjustment_type": ["forward_split"], "vendor_factor": [0.5], "id": ["bench"],
            "ingested_at": [NOW],
        },
        schema=SPLITS,
    )  # fmt: skip


def new_split(lake: Lake, symbol: str, workers: int) -> tuple[float, int]:
    """Seconds of the incremental resample after a split of ``symbol`` arrives; symbols redone."""
    table = lake.read_table(layout.consolidated(symbol), columns=["date"])
    dates = sorted(table["date"].to_pylist())
    table = _split_table(symbol, dates[len(dates) // 2])
    if lake.exists(layout.reference_splits()):  # the splits already there stay as they are
        table = pa.concat_tables([lake.read_table(layout.reference_splits()), table])
    lake.write_table(layout.reference_splits(), table)
    seconds, out = timed(lambda: resample.run(lake, workers=workers), f"split {symbol}")
    assert out.ok
    changed = {r.symbols_changed for r in out.per_interval}
    return seconds, max(changed)


def split_benchmark(spec: syn.Spec, workers: int) -> dict[str, Any]:
    """Part 1: the new split against the full rebuild."""
    lake = syn.working_copy(spec, "actions")
    consolidate.run(lake, workers=workers)
    t_full, full = timed(lambda: resample.run(lake, workers=workers, full=True), "full")
    assert full.ok
    lengths = {}
    for e in lake.list(layout.DAILY, suffix="/data.parquet"):
        symbol = e.key.rsplit("/", 2)[-2].removeprefix("symbol=")
        lengths[symbol] = e.size
    by_size = sorted(lengths, key=lambda s: (lengths[s], s))
    median, longest = by_size[len(by_size) // 2], by_size[-1]
    rows = {s: lake.read_table(layout.consolidated(s), columns=["date"]).num_rows
            for s in (median, longest)}  # fmt: skip
    t_median, n_median = new_split(lake, median, workers)
    t_longest, n_longest = new_split(lake, longest, workers)
    return {
        "full": t_full, "median": (median, rows[median], t_median, n_median),
        "longest": (longest, rows[longest], t_longest, n_longest),
    }  # fmt: skip


def _history(symbol: str, days: list[dt.date]) -> pa.Table:
    rows = []
    price = 100.0
    for i, d in enumerate(days):
        price *= 1.0003 if i % 3 else 0.9996
        rows.append(
            {"symbol": symbol, "date": d, "open": price, "high": price * 1.01,
             "low": price * 0.99, "close": price, "volume": 1e6 + i, "vwap": price,
             "transactions": 1000, "source": "rest", "ingested_at": NOW}
        )  # fmt: skip
    return pa.Table.from_pylist(rows, schema=BRONZE_DAILY)


def request_benchmark(db_url: str, lake: Lake, requests: int) -> dict[str, float]:
    """Part 2: medians of a 5-year daily request, raw and adjusted=total, in milliseconds."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.settings import ApiSettings

    last = calendar.previous_session(dt.datetime.now(dt.UTC).date())
    first = calendar.session_at(calendar.session_index(last) - 1259)
    days = calendar.sessions_between(first, last)
    symbol = "BENCH"
    splits = [
        {"symbol": symbol, "execution_date": days[d], "split_from": 1.0, "split_to": r,
         "adjustment_type": "forward_split", "vendor_factor": None, "id": None,
         "ingested_at": NOW}
        for d, r in ((400, 2.0), (900, 3.0))
    ]  # fmt: skip
    dividends = [
        {"symbol": symbol, "ex_dividend_date": days[d], "cash_amount": 0.25, "currency": "USD",
         "distribution_type": "recurring", "pay_date": None, "record_date": None,
         "declaration_date": None, "frequency": 4, "vendor_factor": None, "id": None,
         "ingested_at": NOW}
        for d in range(30, 1260, 63)
    ]  # fmt: skip
    with postgres.connect(db_url, autocommit=True) as conn:
        postgres.upsert_daily(conn, _history(symbol, days))
        store.sync(conn, store.SPLITS_TABLE, splits, symbols=None, since=None)
        store.sync(conn, store.DIVIDENDS_TABLE, dividends, symbols=None, since=None)
    settings = ApiSettings(
        lake_url=lake.url, database_url=SecretStr(db_url), api_keys=SecretStr("bench-key")
    )
    times: dict[str, list[float]] = {"none": [], "split": [], "total": []}
    with TestClient(create_app(settings)) as client:
        for i in range(requests + 5):
            for mode in times:
                started = time.perf_counter()
                r = client.get(
                    f"/v1/bars/{symbol}",
                    params={"start": first.isoformat(), "adjusted": mode},
                    headers={"X-API-Key": "bench-key"},
                )
                elapsed = time.perf_counter() - started
                assert r.status_code == 200 and len(r.json()["bars"]) == len(days), r.text
                if i >= 5:  # warm-up left out
                    times[mode].append(elapsed)
    return {m: statistics.median(t) * 1000 for m, t in times.items()}


def section(spec: syn.Spec, rows: int, split: dict[str, Any], req: dict[str, float]) -> str:
    """The BENCHMARKS.md section."""
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    m_sym, m_rows, m_t, m_n = split["median"]
    l_sym, l_rows, l_t, _ = split["longest"]
    return f"""## Corporate actions ({dt.date.today()}, {cores} cores, load {load:.1f})

Synthetic market: {spec.symbols:,} symbols, {rows:,} daily rows (`benchmarks/synthetic.py`).
`python -m benchmarks.bench_actions`.

| what | this design | baseline (same run) |
| --- | --- | --- |
| a new split for one symbol of median history ({m_sym}, {m_rows:,} rows): detected and its silver rebuilt in six intervals ({m_n} symbol redone per interval) | {m_t:.2f} s | full resample {split["full"]:.1f} s |
| the same for the longest history ({l_sym}, {l_rows:,} rows) | {l_t:.2f} s | full resample {split["full"]:.1f} s |
| 5-year 1d request from Postgres, `adjusted=total` (2 splits, 20 dividends) | {req["total"]:.1f} ms ({req["total"] / req["none"]:.2f}x raw) | `adjusted=none` {req["none"]:.1f} ms |
| the same, `adjusted=split` | {req["split"]:.1f} ms ({req["split"] / req["none"]:.2f}x raw) | |

A split rewrites every month file holding the symbol's bars before it, so its cost grows with
the symbol's history (months x six intervals), not with the market. Gold indicators are not on
this branch: their rebuild for the symbol is not in these figures.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--symbols", type=int, default=syn.Spec.symbols)
    p.add_argument("--rows", type=int, default=syn.Spec.target_rows)
    p.add_argument("--workers", type=int, default=0, help="default: one per core")
    p.add_argument("--requests", type=int, default=100, help="requests timed per mode")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    ns = p.parse_args(argv)
    spec = syn.Spec(symbols=ns.symbols, target_rows=ns.rows)
    syn.cached(spec)
    rows = syn.rows_of(spec)
    split = split_benchmark(spec, ns.workers)
    print(f"split: {split}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-actions-") as tmp:
        server_url = os.environ.get("DATABASE_URL")
        if not server_url:
            from core.embedded import postgres_url

            server_url = postgres_url(Path(tmp) / "pg", stop_at_exit=True)
        db_url = fresh_schema(server_url, "bench_actions")
        req = request_benchmark(db_url, Lake(str(Path(tmp) / "lake")), ns.requests)
    print(f"requests (ms): {req}", flush=True)
    body = section(spec, rows, split, req)
    print(body)
    if not ns.no_write:
        report.write_section("actions", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
