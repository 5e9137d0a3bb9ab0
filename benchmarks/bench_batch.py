"""Batch benchmarks on a synthetic full market, each against the old design in the same run.

``python -m benchmarks.bench_batch [--symbols N] [--rows N] [--baseline-sample N]``

1. full resample of the six intervals (calendar anchor), read + compute + write, against the old
   method (:mod:`benchmarks.baseline`: a ROW_NUMBER query per interval, pandas writes per month);
2. one new session for every symbol: consolidate, then resample incrementally; against a full
   rebuild, of the old design (its consolidation of every symbol plus its full resample) and of
   this one (consolidation plus ``resample --full``);
3. consolidation of that session in symbols per second, against the old per-symbol DuckDB
   consolidation (timed on a sample of symbols, in a copy of the same lake, and scaled);
4. one symbol's whole history read from the lake (median and p95 over random symbols).

Results go to the ``batch`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from batch import consolidate, resample
from benchmarks import baseline, report
from benchmarks import synthetic as syn
from core import calendar, layout
from core.lake import Lake
from core.schemas import FIB_INTERVALS

T = TypeVar("T")


CPU: dict[str, float] = {}
"""CPU seconds (this process and its finished children) of each timed step, by label."""
LOADS: list[float] = []
"""One-minute load averages seen at each timed step: the cores may be shared."""


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], T], label: str = "") -> tuple[float, T]:
    """(wall seconds, result); CPU seconds go to ``CPU[label]``."""
    LOADS.append(os.getloadavg()[0])
    cpu = _cpu()
    started = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - started
    if label:
        CPU[label] = _cpu() - cpu
    LOADS.append(os.getloadavg()[0])
    return wall, out


def read_latency(lake: Lake, symbols: list[str], samples: int = 300) -> tuple[float, float]:
    """(median, p95) seconds to read one symbol's whole history by its path."""
    rng = random.Random(3)
    times = []
    for s in rng.choices(symbols, k=samples):
        started = time.perf_counter()
        lake.read_table(layout.consolidated(s))
        times.append(time.perf_counter() - started)
    times.sort()
    return statistics.median(times), times[int(0.95 * len(times)) - 1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--symbols", type=int, default=syn.Spec.symbols)
    p.add_argument("--rows", type=int, default=syn.Spec.target_rows)
    p.add_argument("--workers", type=int, default=0, help="default: one per core")
    p.add_argument(
        "--baseline-sample", type=int, default=300, help="symbols timed for the old consolidation"
    )
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    p.add_argument(
        "--symbol-anchor", action="store_true", help="also time a full resample, symbol anchor"
    )
    ns = p.parse_args(argv)
    spec = syn.Spec(symbols=ns.symbols, target_rows=ns.rows)
    syn.cached(spec)
    rows = syn.rows_of(spec)
    cores = os.cpu_count() or 1
    print(f"market: {spec.symbols} symbols, {rows:,} rows; {cores} cores", flush=True)

    lake = syn.working_copy(spec, "batch")
    symbols = sorted(consolidate.listing(lake))
    # the baseline's copy is made first: its deletions and links then age while the full
    # resample runs, instead of landing on the file system just before a measured job
    day = calendar.next_session(spec.last)
    sample = random.Random(5).sample(symbols, min(ns.baseline_sample, len(symbols)))
    old = syn.working_copy(spec, "baseline-consolidate")
    syn.add_session(old, sample, day)
    t_manifest, _ = timed(lambda: consolidate.run(lake, workers=ns.workers))
    print(f"initial manifest over existing histories: {t_manifest:.1f}s", flush=True)

    # 1. full resample
    t_full, full = timed(lambda: resample.run(lake, workers=ns.workers, full=True), "full")
    assert full.ok
    print(f"full resample (calendar): {t_full:.1f}s, {full.bars:,} bars", flush=True)
    sym_note = "not run (`--symbol-anchor` runs it)"
    if ns.symbol_anchor:
        t_full_sym, _ = timed(
            lambda: resample.run(lake, workers=ns.workers, full=True, anchor="symbol")
        )
        sym_note = f"{t_full_sym:.1f} s"
        print(f"full resample (symbol anchor): {t_full_sym:.1f}s", flush=True)
        resample.run(lake, workers=ns.workers, full=True)  # back to the calendar anchor
    out = syn.WORK / "runs" / "baseline-silver"
    shutil.rmtree(out, ignore_errors=True)
    t_base_resample, base_files = timed(
        lambda: baseline.resample(lake, out, FIB_INTERVALS), "baseline"
    )
    print(f"baseline full resample: {t_base_resample:.1f}s ({base_files} files)", flush=True)

    # 4. one symbol's history
    median, p95 = read_latency(lake, symbols)
    print(f"one symbol's history: median {median * 1e3:.2f} ms, p95 {p95 * 1e3:.2f} ms", flush=True)

    # 2 + 3. one new session for every symbol
    syn.add_session(lake, symbols, day)
    t_cons, cons = timed(lambda: consolidate.run(lake, workers=ns.workers), "cons")
    assert cons.ok and cons.changed == len(symbols)
    t_inc, inc = timed(lambda: resample.run(lake, workers=ns.workers), "inc")
    assert inc.ok
    rate = len(symbols) / t_cons
    print(f"consolidate one session: {t_cons:.1f}s ({rate:.0f} symbols/s)", flush=True)
    print(f"incremental resample: {t_inc:.1f}s", flush=True)
    _, base_rate = timed(lambda: baseline.consolidate_rate(old, sample), "base_cons")
    t_base_cons = len(symbols) / base_rate
    print(f"baseline consolidation: {base_rate:.1f} symbols/s", flush=True)
    t_rebuild, _ = timed(lambda: resample.run(lake, workers=ns.workers, full=True), "rebuild")
    t_daily = t_cons + t_inc
    ours_full = t_cons + t_rebuild
    old_full = t_base_cons + t_base_resample
    cpu_daily = CPU["cons"] + CPU["inc"]
    cpu_old_full = CPU["base_cons"] * len(symbols) / len(sample) + CPU["baseline"]

    def ok(flag: bool) -> str:
        return "yes" if flag else "**no**"

    body = f"""## Batch: consolidate and resample (`python -m benchmarks.bench_batch`)

Synthetic market (`benchmarks/synthetic.py`): {spec.symbols:,} symbols, {rows:,} daily rows
1962-01-02 .. {spec.last}, listings and delistings spread over the years, trading halts; local
lake on this machine ({cores} cores), `--workers` {ns.workers or "default (one per core)"}.
Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. One-minute load average during the run:
{min(LOADS):.1f} .. {max(LOADS):.1f} on {cores} cores (other jobs shared the machine), so wall
times are inflated; CPU seconds (this process and its workers) are given beside them.

| benchmark | this design: wall (CPU) | baseline, same run: wall (CPU) | ratio wall (CPU) | target | met (wall) |
| --- | --- | --- | --- | --- | --- |
| full resample, six intervals, read + compute + write | {t_full:.1f} s ({CPU["full"]:.1f} s) | {t_base_resample:.1f} s ({CPU["baseline"]:.1f} s) | {t_base_resample / t_full:.1f}x ({CPU["baseline"] / CPU["full"]:.1f}x) | < 20 s and >= 10x | {ok(t_full < 20 and t_base_resample / t_full >= 10)} |
| one new session for every symbol: consolidate + resample | {t_daily:.1f} s ({cpu_daily:.1f} s) | full rebuild {old_full:.0f} s ({cpu_old_full:.0f} s) | {old_full / t_daily:.0f}x ({cpu_old_full / cpu_daily:.0f}x) | < 10 s and >= 50x | {ok(t_daily < 10 and old_full / t_daily >= 50)} |
| consolidation of one session, {len(symbols):,} symbols | {rate:.0f} symbols/s ({t_cons:.1f} s; {len(symbols) / CPU["cons"]:.0f} symbols per CPU s) | {base_rate:.1f} symbols/s ({len(sample) / CPU["base_cons"]:.1f} per CPU s) | {rate / base_rate:.0f}x | >= 500 symbols/s | {ok(rate >= 500)} |
| one symbol's whole history read from the lake | median {median * 1e3:.2f} ms, p95 {p95 * 1e3:.2f} ms | | | < 5 ms | {ok(median < 0.005)} |

Details:
- full resample: {full.bars:,} bars in {full.files_written:,} month files (calendar anchor);
  with `--anchor symbol`: {sym_note}.
- the daily run splits into consolidate {t_cons:.1f} s ({CPU["cons"]:.1f} CPU s) and incremental
  resample {t_inc:.1f} s ({CPU["inc"]:.1f} CPU s).
- "full rebuild" of the old design = its consolidation of every symbol
  ({t_base_cons:.0f} s at the rate timed on {len(sample)} random symbols in a copy of the same
  lake with the same session added) + its full resample ({t_base_resample:.1f} s). This
  design's own full rebuild (consolidate + `resample --full`) takes {ours_full:.1f} s, so the
  incremental path is {ours_full / t_daily:.1f}x faster than that.
- building the consolidation manifest over the existing histories (first run): {t_manifest:.1f} s.
- where the time goes (profiled on this machine, 2026-11-30). Full resample: on a local lake
  from two million rows, forked workers read the 5,350 data.parquet straight into shared
  arrays (about 2.3 s on 2 cores; the row counts come from the manifest) while the parent
  loads numba's compiled bar loop (about 2 s of CPU: import and cache), then the six
  intervals run on forked workers: the compiled loop writes each bar into its month file's
  position (0.2-0.6 s per interval), and the month files are slices, serialised (LZ4,
  statistics on the key columns only) and written (1.0-2.2 s per interval, about 1.3 ms per
  file). Threads had spent a third of their CPU on GIL and futex hand-offs. Consolidation
  costs about 4 ms of CPU per symbol: data.parquet read about 0.5 ms and encoded about 1 ms
  (LZ4; snappy or no codec were no faster), its atomic write 0.5-0.7 ms, the one-row snappy
  fragment read 0.3 ms (zstd took 1.2 ms), the screen 0.35 ms, the tail for resampling
  0.3 ms, the merge 0.25 ms; its workers now fork instead of spawning (0.8 s of imports each).
- start-up per process, which every CLI run and pool worker pays: exchange_calendars is no
  longer imported (the XNYS table is cached in a file, `core.calendar`: 5.6 s to 0.8 s for a
  CLI start under load) and pandas is no longer loaded by these jobs (pyarrow's `to_numpy`,
  `pa.array`, `empty_table` and `pq.read_table` each import it, about 1.3 CPU s per process;
  `core.arrays` converts through buffers instead). In this harness the parent process has
  already loaded both (the baseline uses pandas), so only the workers gain here.
"""
    print(body)
    if not ns.no_write:
        report.write_section("batch", body)
        print(f"wrote the batch section of {report.PATH}")
    shutil.rmtree(syn.WORK / "runs" / "baseline-consolidate", ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
