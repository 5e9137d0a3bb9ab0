"""The full-market paths of batch.resample: compiled bar loops and forked workers.

Both are chosen by size in production (a million rows, two million), so the small lakes here
force them and check them against the numpy path, the threaded run and the reference.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import consolidate, resample
from batch.engine import daily_rows, fib, forking, kernels, shared_load, silver
from core import calendar, jit, layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY, FIB_INTERVALS
from tests.batch_support import (
    Row,
    read_silver,
    reference_bars,
    reference_merge,
    sessions,
    simple_rows,
    snapshot,
    write_fragment,
)

pytestmark = pytest.mark.unit
needs_fork = pytest.mark.skipif(not forking.available(), reason="forked workers need Linux")


def _random_daily(seed: int, symbols: int = 40) -> fib.Daily:
    """Segments with gaps, halts, empty symbols, tails (first_row > 0) and fractional volumes."""
    rng = random.Random(seed)
    days = calendar.session_days()
    names, tables_rows, firsts = [], [], []
    for s in range(symbols):
        names.append(f"S{s:03d}")
        if rng.random() < 0.1:
            tables_rows.append(np.zeros(0, dtype=np.int32))
            firsts.append(0)
            continue
        lo = rng.randrange(0, len(days) - 400)
        picked = [d for d in days[lo : lo + rng.randint(1, 400)] if rng.random() > 0.2]
        tables_rows.append(np.asarray(picked or [days[lo]], dtype=np.int32))
        firsts.append(rng.choice([0, 0, rng.randint(1, 50)]))
    lengths = [len(d) for d in tables_rows]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    n = int(offsets[-1])
    gen = np.random.default_rng(seed)
    low = gen.uniform(1, 100, n)
    high = low + gen.uniform(0, 5, n)
    return fib.Daily(
        symbols=names,
        offsets=offsets,
        first_row=np.asarray(firsts, dtype=np.int64),
        date=np.concatenate(tables_rows).astype(np.int32),
        open=low + (high - low) * gen.random(n),
        high=high,
        low=low,
        close=low + (high - low) * gen.random(n),
        volume=gen.uniform(0, 1e6, n) if seed % 2 else gen.integers(0, 10**7, n).astype(float),
    )


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("anchor", ["calendar", "symbol"])
def test_compiled_bars_equal_the_numpy_bars(seed: int, anchor: fib.Anchor) -> None:
    daily = _random_daily(seed)
    last_day = int(daily.date.max())
    for n in FIB_INTERVALS:
        compiled = fib.bars(daily, n, anchor, last_day, compiled=True)
        plain = fib.bars(daily, n, anchor, last_day, compiled=False)
        assert compiled.equals(plain), f"{n}d {anchor}"
        assert silver.serialize(compiled).equals(silver.serialize(plain)), f"{n}d {anchor} bytes"
        reference = fib.bars_numpy(daily, n, anchor, last_day)
        assert compiled.num_rows == reference.num_rows
        order = fib.month_order(reference)
        assert compiled.equals(reference.take(order)), f"{n}d {anchor}: not in month order"


def test_volumes_are_summed_left_to_right_whatever_their_fractions() -> None:
    daily = _random_daily(7, symbols=5)
    daily = dataclasses.replace(daily, volume=np.full(daily.rows, 0.1))
    bars = fib.bars(daily, 34, "symbol", None, compiled=True)
    pairs = zip(bars["volume"].to_pylist(), bars["days"].to_pylist(), strict=True)
    full = [v for v, d in pairs if d == 34]
    expected = 0.0
    for _ in range(34):
        expected += 0.1
    assert full and all(v == expected for v in full)  # sum() order, not pairwise


def _lake_with_history(tmp: Lake) -> list[Row]:
    days = sessions()
    window = days[15_400:15_560]
    rows = [
        *simple_rows("AAA", window),
        *simple_rows("BB.B", window[10:40] + window[47:120]),
        *simple_rows("CCC", window[150:]),
        *simple_rows("DDD", window[::3]),
    ]
    for r in rows:
        write_fragment(tmp, [r])
    assert consolidate.run(tmp, workers=1).ok
    return rows


@needs_fork
@pytest.mark.parametrize("anchor", ["calendar", "symbol"])
def test_forked_full_rebuild_equals_the_threaded_one_and_the_reference(
    tmp_path: object, anchor: fib.Anchor, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = str(tmp_path)
    forked, threaded = Lake(f"{base}/forked"), Lake(f"{base}/threaded")
    rows = _lake_with_history(forked)
    _lake_with_history(threaded)
    # the full market's path on a small lake: compiled loops from one row, and spies that count
    # the forked reads and the compiled calls across the fork: a line appended per call (one
    # O_APPEND write is atomic; a shared counter's += is not, and two workers lost a count)
    monkeypatch.setattr(fib, "COMPILED_MIN_ROWS", 1)
    spied = Path(base) / "calls"

    def count(what: bytes) -> None:
        fd = os.open(spied, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, what + b"\n")
        finally:
            os.close(fd)

    def calls(what: str) -> int:
        return spied.read_text().split().count(what) if spied.exists() else 0

    real_load, real_kernel = shared_load.load, kernels.bars_by_month

    def load_spy(*args: Any, **kwargs: Any) -> fib.Daily | None:
        count(b"load")
        return real_load(*args, **kwargs)

    def kernel_spy(*args: Any, **kwargs: Any) -> Any:
        count(b"kernel")
        return real_kernel(*args, **kwargs)

    monkeypatch.setattr(shared_load, "load", load_spy)
    monkeypatch.setattr(kernels, "bars_by_month", kernel_spy)
    assert resample.run(forked, anchor=anchor, full=True, workers=2, processes=True).ok
    assert calls("load") == 1, "the forked reader did not run"
    # once to warm it up in the parent, then once per interval in the workers
    assert calls("kernel") == 1 + len(FIB_INTERVALS), (
        "the compiled loop did not run for every interval"
    )
    monkeypatch.setattr(fib, "COMPILED_MIN_ROWS", 10**9)
    monkeypatch.delitem(sys.modules, "batch.engine.kernels")  # the numpy path for the threaded run
    assert resample.run(threaded, anchor=anchor, full=True, workers=2, processes=False).ok
    assert calls("kernel") == 1 + len(FIB_INTERVALS)
    assert snapshot(forked) == snapshot(threaded)
    history = reference_merge(rows)
    for n in FIB_INTERVALS:
        assert read_silver(forked, n) == reference_bars(history, n, anchor)
    # an incremental run after the forked rebuild: a new session, then equal to a rebuild
    day = calendar.next_session(max(r.date for r in rows))
    new = [Row(s, day, 10.0, 11.0, 9.0, 10.5, 1000.0, ingested=99) for s in ("AAA", "CCC")]
    for lake in (forked, threaded):
        for r in new:
            write_fragment(lake, [r])
        assert consolidate.run(lake, workers=1).ok
    assert resample.run(forked, anchor=anchor, workers=2, processes=True).ok
    assert resample.run(threaded, anchor=anchor, full=True, workers=1).ok
    assert snapshot(forked) == snapshot(threaded)


@needs_fork
def test_forked_reads_fall_back_when_the_manifest_does_not_describe_the_files(
    local_lake: Lake,
) -> None:
    rows = _lake_with_history(local_lake)
    # rewrite one data.parquet behind the manifest's back: its row count no longer matches
    key = layout.consolidated("AAA")
    table = pq.read_table(local_lake.path(key)).cast(BRONZE_DAILY)
    local_lake.write_table(key, table.slice(0, table.num_rows - 5))
    kept = [r for r in rows if r.symbol != "AAA"] + sorted(
        (r for r in rows if r.symbol == "AAA"), key=lambda r: r.date
    )[:-5]
    assert resample.run(local_lake, full=True, workers=2, processes=True).ok
    history = reference_merge(kept)
    for n in FIB_INTERVALS:
        assert read_silver(local_lake, n) == reference_bars(history, n, "calendar")


@needs_fork
def test_a_row_count_other_than_the_manifests_makes_the_forked_read_give_way(
    local_lake: Lake,
) -> None:
    _lake_with_history(local_lake)
    symbols = ["AAA", "DDD"]
    counts = [pq.read_metadata(local_lake.path(layout.consolidated(s))).num_rows for s in symbols]

    def read(symbol: str) -> pa.Table:
        return daily_rows.read_daily(local_lake, symbol)

    daily = shared_load.load(symbols, counts, read, 2)
    assert daily is not None and daily.rows == sum(counts)
    assert shared_load.load(symbols, [counts[0], counts[1] + 1], read, 2) is None


@needs_fork
def test_map_forked_keeps_order_shares_arrays_and_raises_the_workers_error() -> None:
    shared = forking.shared_array(8, np.int64)
    offset = 100  # reaches the children by inheritance, not pickling

    def square(i: int) -> int:
        shared[i] = i + offset
        return i * i

    assert forking.map_forked(square, list(range(8)), 2) == [i * i for i in range(8)]
    assert shared.tolist() == [i + offset for i in range(8)]

    def fail(i: int) -> int:
        if i == 3:
            msg = "symbol ZZZ: more than one row for a date"
            raise ValueError(msg)
        return i

    with pytest.raises(ValueError, match="ZZZ: more than one row"):
        forking.map_forked(fail, list(range(6)), 2)
    assert forking.map_forked(square, [1], 2) == [1]  # usable again after a failure


@needs_fork
def test_workers_run_under_their_recorded_parent_and_stop_when_it_is_gone() -> None:
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=forking.die_with_parent,
                             initargs=(os.getpid(),)) as ex:  # fmt: skip
        assert ex.submit(os.getppid).result() == os.getpid()
    # a worker whose recorded parent is not its parent (it was re-parented) exits at once
    stranger = os.getpid() + 10**6
    with (
        ProcessPoolExecutor(
            1, mp_context=ctx, initializer=forking.die_with_parent, initargs=(stranger,)
        ) as ex,
        pytest.raises(BrokenProcessPool),
    ):
        ex.submit(os.getpid).result(timeout=60)


def test_processes_are_never_used_on_s3_or_a_single_worker() -> None:
    s3 = Lake("s3://bucket/prefix", endpoint_url="http://127.0.0.1:1")
    assert not daily_rows.use_processes(s3, True, 2, {"A": 10**9})
    local = Lake("/tmp/condvest-never-written")
    assert not daily_rows.use_processes(local, None, 1, {"A": 10**9})
    assert not daily_rows.use_processes(local, None, 2, {"A": 10})
    assert daily_rows.use_processes(local, None, 2, {"A": 10**9}) == forking.available()
    assert not daily_rows.use_processes(local, False, 2, {"A": 10**9})


@needs_fork
def test_a_daily_run_from_tails_stays_on_threads_whatever_the_histories_weigh(
    local_lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _lake_with_history(local_lake)
    monkeypatch.setattr(daily_rows, "PROCESS_MIN_ROWS", 1)  # any whole read forks
    forks = []
    real = forking.map_forked

    def spy(*args: Any, **kwargs: Any) -> Any:
        forks.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(forking, "map_forked", spy)
    assert resample.run(local_lake, workers=2).ok  # first run: whole histories, forked
    assert forks
    forks.clear()
    day = calendar.next_session(max(r.date for r in rows))
    for s in ("AAA", "BB.B", "CCC", "DDD"):
        write_fragment(local_lake, [Row(s, day, 10.0, 11.0, 9.0, 10.5, 1000.0, ingested=99)])
    assert consolidate.run(local_lake, workers=1).ok
    assert resample.run(local_lake, workers=2).ok  # the daily run: tails only
    assert forks == [], "a run from the consolidator's tails forked"


def test_numba_caches_where_the_process_may_write(tmp_path: Path) -> None:
    here = tmp_path / "site-packages" / "batch"
    here.mkdir(parents=True)
    allowed: set[Path] = set()

    def writable(p: Path) -> bool:
        return p in allowed

    # set by the user: numba's own handling
    assert jit.cache_dir({"NUMBA_CACHE_DIR": "/x"}, here, writable) is None
    allowed.add(here)  # an install the process owns: numba's default, beside the module
    assert jit.cache_dir({}, here, writable) is None
    allowed.clear()  # a root-owned install run as another user: the pipeline's cache
    ours = tmp_path / "cache"
    allowed.add(ours / "numba")
    assert jit.cache_dir({"CONDVEST_CACHE_DIR": str(ours)}, here, writable) == str(ours / "numba")
    allowed.clear()  # nothing writable but the temporary directory
    per_user = Path(tempfile.gettempdir()) / f"condvest-numba-{os.getuid()}"
    allowed.add(per_user)
    assert jit.cache_dir({"CONDVEST_CACHE_DIR": str(ours)}, here, writable) == str(per_user)
