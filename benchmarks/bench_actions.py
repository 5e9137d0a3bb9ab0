"""Corporate-action benchmarks, each against a baseline in the same run.

``python -m benchmarks.bench_actions [--symbols N] [--rows N] [--requests N]``

1. a new split for one symbol of the synthetic full market (5,350 symbols, 22.6M rows),
   detected and applied as the daily run applies it: the six resamples find the symbol's new
   split version and rebuild its silver, then gold recomputes its seven intervals. Timed for
   symbols spread over history lengths (tenth percentile to the longest), each way:
   - through the pipeline's own steps (``batch.pipeline``'s resample phase, six
     ``python -m batch.resample --intervals N`` side by side, then ``python -m batch.gold``),
     process start-up included: what the daily run spends;
   - in this process (``resample.run`` then ``gold.run``): the jobs' own work.
   Baseline: the full resample and the full gold a rebuild without per-symbol split versions
   would run;
2. a 5-year ``/v1/bars`` 1d request from Postgres with ``adjusted=total`` (two splits, twenty
   dividends), against the same request with ``adjusted=none`` (raw), medians of interleaved
   requests through the real app in-process.

Results go to the ``actions`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
from pydantic import SecretStr

from batch import consolidate, gold, pipeline, resample
from benchmarks import floors, report
from benchmarks import synthetic as syn
from benchmarks.bench_batch import timed
from benchmarks.bench_ingest import fresh_schema
from core import calendar, layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY, SPLITS
from core.stores import actions as store
from core.stores import postgres

NOW = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)
TARGET_S: Final = 2.0
"""Issue 13's target for one new split, detected and applied."""
QUANTILES: Final = (0.1, 0.25, 0.5, 0.75, 0.9)
"""History lengths (by data.parquet size) of the symbols split, besides the longest."""


def _split_table(symbol: str, day: dt.date) -> pa.Table:
    return pa.table(
        {
            "symbol": [symbol], "execution_date": [day], "split_from": [1.0], "split_to": [2.0],
            "adjustment_type": ["forward_split"], "vendor_factor": [0.5], "id": ["bench"],
            "ingested_at": [NOW],
        },
        schema=SPLITS,
    )  # fmt: skip


def add_split(lake: Lake, symbol: str) -> int:
    """A 2-for-1 split of ``symbol`` in the middle of its history, written beside the splits
    already there as ``dataflows.corporate_actions`` writes them; returns its row count."""
    dates = sorted(
        lake.read_table(layout.consolidated(symbol), columns=["date"])["date"].to_pylist()
    )
    table = _split_table(symbol, dates[len(dates) // 2])
    if lake.exists(layout.reference_splits()):
        table = pa.concat_tables([lake.read_table(layout.reference_splits()), table])
    lake.write_table(layout.reference_splits(), table)
    return len(dates)


@dataclass(frozen=True)
class Applied:
    """One split applied: total seconds, its resample and gold parts, month files written."""

    symbol: str
    rows: int
    seconds: float
    resample: float
    gold: float
    silver_files: int
    gold_files: int
    floor: float = 0.0
    """CPU seconds to read and re-encode the month files it rewrote (:mod:`benchmarks.floors`)."""


def with_floor(lake: Lake, apply: Callable[[], Applied]) -> Applied:
    """``apply``'s result with the floor of the month files it rewrote."""
    before = floors.versions(lake)
    applied = apply()
    after = floors.versions(lake)
    changed = sorted(k for k, v in after.items() if before.get(k) != v)
    return dataclasses.replace(applied, floor=floors.rewrite_floor(lake, changed).cpu_s)


def in_process(lake: Lake, symbol: str, workers: int) -> Applied:
    """The split applied by ``resample.run`` and ``gold.run`` in this process."""
    rows = add_split(lake, symbol)
    t_silver, silver = timed(lambda: resample.run(lake, workers=workers))
    t_gold, golden = timed(lambda: gold.run(lake, workers=workers))
    assert silver.ok and golden.ok, (silver.failed, golden.failed)
    changed = {r.symbols_changed for r in silver.per_interval}
    changed |= {r.symbols_changed for r in golden.per_interval}
    assert changed == {1}, f"{symbol}: {changed} symbols recomputed per interval, not 1"
    return Applied(
        symbol, rows, t_silver + t_gold, t_silver, t_gold, silver.files_written,
        golden.files_written,
    )  # fmt: skip


def split_steps(lake: Lake) -> pipeline.Plan:
    """The daily run's resample phase (its six resamples; the intraday step beside them has
    nothing to do with a split) and its gold phase, exactly as ``batch.pipeline`` plans them."""
    full = pipeline.plan(lake.url, skip_ingest=True, retention="not part of a split")
    phases = []
    for name, steps in full.phases:
        if name == "resample":
            phases.append((name, [s for s in steps if s.module == "batch.resample"]))
        elif name == "gold":
            phases.append((name, steps))
    assert [name for name, _ in phases] == ["resample", "gold"], full.describe()
    return pipeline.Plan(phases=phases)


def as_pipeline(lake: Lake, symbol: str, steps: pipeline.Plan) -> Applied:
    """The split applied by the pipeline's own subprocesses, start-up included."""
    rows = add_split(lake, symbol)
    env = {**os.environ, "LAKE_URL": lake.url}
    env.pop("DATABASE_URL", None)  # the jobs need only the lake
    out = pipeline.execute(
        steps, run_id=uuid.uuid4().hex, env=env, database_url=None,
        parallel=sum(len(s) for _, s in steps.phases),
    )  # fmt: skip
    assert out.ok, out.summary()
    resamples = [r for r in out.results if r.step.startswith("resample")]
    # the phase lasts as long as its slowest step
    t_silver = max(r.seconds for r in resamples)
    t_gold = sum(r.seconds for r in out.results if r.step == "gold")
    return Applied(
        symbol, rows, out.seconds, t_silver, t_gold,
        sum(int(r.counts.get("files_written", 0)) for r in resamples),
        sum(int(r.counts.get("files_written", 0)) for r in out.results if r.step == "gold"),
    )  # fmt: skip


def picked(lake: Lake) -> list[tuple[str, str]]:
    """Pairs of symbols of about equal history (one per way of applying), at each of
    :data:`QUANTILES` of the history lengths and at the longest."""
    lengths = {}
    for e in lake.list(layout.DAILY, suffix="/data.parquet"):
        lengths[e.key.rsplit("/", 2)[-2].removeprefix("symbol=")] = e.size
    by_size = sorted(lengths, key=lambda s: (lengths[s], s))
    last = len(by_size) - 1
    spots = [min(int(q * last), last - 3) for q in QUANTILES] + [last - 1]
    return [(by_size[i], by_size[i + 1]) for i in spots]


def split_benchmark(spec: syn.Spec, workers: int) -> dict[str, Any]:
    """Part 1: new splits, each way, against the full rebuild."""
    lake = syn.working_copy(spec, "actions")
    consolidate.run(lake, workers=workers)
    t_resample, full = timed(lambda: resample.run(lake, workers=workers, full=True), "full")
    assert full.ok
    t_gold, full_gold = timed(lambda: gold.run(lake, workers=workers, full=True), "full gold")
    assert full_gold.ok
    steps = split_steps(lake)
    piped, local = [], []
    for a, b in picked(lake):
        piped.append(with_floor(lake, partial(as_pipeline, lake, a, steps)))
        print(f"pipeline: {piped[-1]}", flush=True)
        local.append(with_floor(lake, partial(in_process, lake, b, workers)))
        print(f"in process: {local[-1]}", flush=True)
    return {"full": (t_resample, t_gold), "pipeline": piped, "in_process": local}


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


def _row(a: Applied) -> str:
    return (
        f"| {a.symbol} | {a.rows:,} | {a.seconds:.2f} s | {a.resample:.2f} s | {a.gold:.2f} s "
        f"| {a.silver_files:,} | {a.gold_files:,} | {a.floor:.2f} s |"
    )


def section(spec: syn.Spec, rows: int, split: dict[str, Any], req: dict[str, float]) -> str:
    """The BENCHMARKS.md section."""
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    t_resample, t_gold = split["full"]
    full = f"full resample {t_resample:.1f} s + full gold {t_gold:.1f} s"
    piped: list[Applied] = split["pipeline"]
    local: list[Applied] = split["in_process"]

    def met(seconds: float) -> str:
        return "yes" if seconds < TARGET_S else "**no**"

    lines = []
    for way, runs in (("through the pipeline's steps", piped), ("in process", local)):
        median = statistics.median(a.seconds for a in runs)
        longest = runs[-1]
        lines += [
            f"| a new split for one symbol, detected and applied (six silver intervals, seven "
            f"gold), {way}: median of {len(runs)} symbols | {median:.2f} s | {full} | < 2 s "
            f"| {met(median)} |",
            f"| the same, {way}, the longest history ({longest.symbol}, {longest.rows:,} rows) "
            f"| {longest.seconds:.2f} s | | < 2 s | {met(longest.seconds)} |",
        ]
    detail = [
        "| symbol | daily rows | total | resample | gold | silver files | gold files "
        "| floor: read + encode (CPU) |"
    ]
    detail.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    detail += [_row(a) for a in piped] + ["| in process: | | | | | | | |"]
    detail += [_row(a) for a in local]
    nl = "\n"
    return f"""## Corporate actions ({dt.date.today()}, {cores} cores, load {load:.1f})

Synthetic market: {spec.symbols:,} symbols, {rows:,} daily rows (`benchmarks/synthetic.py`).
`python -m benchmarks.bench_actions`.

| what | this design | baseline (same run) | target | met |
| --- | --- | --- | --- | --- |
{nl.join(lines)}
| 5-year 1d request from Postgres, `adjusted=total` (2 splits, 20 dividends) | {req["total"]:.1f} ms ({req["total"] / req["none"]:.2f}x raw) | `adjusted=none` {req["none"]:.1f} ms | < 1.5x raw | {"yes" if req["total"] < 1.5 * req["none"] else "**no**"} |
| the same, `adjusted=split` | {req["split"]:.1f} ms ({req["split"] / req["none"]:.2f}x raw) | | | |

Each split is 2-for-1 in the middle of the symbol's history. Through the pipeline's steps: the
six `python -m batch.resample --intervals N` side by side, then `python -m batch.gold`, each a
new process as the daily run starts them (resample: the slowest of the six). In process:
`resample.run` then `gold.run`, no start-up. Per symbol (the first {len(piped)} through the
pipeline's steps, the others in process; each pair of symbols has about the same history):

{nl.join(detail)}

A split changes the symbol's adjusted prices before it, so silver rewrites every month file
holding its bars before the split, in six intervals; the indicators of every later bar depend
on those prices, so gold rewrites every month file of its history, in seven intervals. Month
files hold every symbol: the cost grows with the symbol's history and the market's size.

The floor is what this layout allows: the month files the split rewrote (those whose size or
mtime changed), read and encoded again with the jobs' own writer options and nothing else (no
adjusting, no bars, no indicators, no writing to disk), in one process
(`benchmarks/floors.py`). Where it passes 4 CPU seconds (2 s on each of two cores), no
implementation that keeps every symbol of a month in one file per interval meets the target.
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
