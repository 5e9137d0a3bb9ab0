"""Resample consolidated daily bars into Fibonacci bars (silver).

``python -m batch.resample`` writes ``silver/silver_{N}d/year=/month=/data_{N}d_{YYYYMM}.parquet``
for N in 3, 5, 8, 13, 21, 34 with the exact semantics of ARCHITECTURE.md
(:mod:`batch.engine.fib`), ``--anchor calendar`` (default) or ``--anchor symbol``.

Incremental by default. Per interval a checkpoint (:mod:`batch.engine.checkpoint`) holds, per
symbol, the consolidation version it was built from; the manifest's change history gives the earliest
date changed since, and the symbol's bars are recomputed from the first group touching that date
(``--full`` rebuilds everything). Month files are rewritten through patches
(:mod:`batch.engine.silver`) that replace only the recomputed bars, and with the lake's last date
moving, the month files whose bars can flip to ``complete`` are rewritten too. Month files are
deterministic bytes, so an incremental run equals a full rebuild byte for byte.

Prices are split-adjusted (:func:`batch.engine.fib.split_adjusted`, S(d) of :mod:`core.adjustments`
from ``reference/splits/splits.parquet``): bronze stays raw. Each checkpoint mark holds the split
version the symbol was built with, and those splits; when the symbol's splits change (new,
corrected, withdrawn) its rows are read whole, and only its own. When nothing else changed, only
the bars starting before the first day whose adjusted prices stay (:func:`split_bound`) are
replaced, so only their month files are rewritten (the symbol's run spliced in, no re-sort), on
forked workers when they are many. The version all six intervals agree on is recorded in
``processing_metadata/adjustments.parquet``.

Anchors: silver has one path per interval, so the anchor is recorded in the checkpoint and an
incremental run with the other anchor is refused; switching anchors takes ``--full``.

Shards (``--shard I/N``): month files hold every symbol, so shards do not write silver. Each
stages its patch under ``processing_metadata/resample_staging/silver_{N}d/gen={G}/`` and the
shard that completes the set (all N staged for the checkpoint's generation G) applies them
together, exactly as one run would. Rerunning a shard restages it, so a crash is mended by
running the shard again.

Crash safety: month files are written atomically and the checkpoint after them; a rerun
recomputes the same patches from the old checkpoint and rewrites the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from batch.engine import checkpoint as ckpt
from batch.engine import (
    common,
    daily_rows,
    fib,
    forking,
    planning,
    pool,
    silver,
    staging,
)
from batch.engine import manifest as mf
from batch.engine.checkpoint import Checkpoint, SymbolMark
from batch.engine.fib import Anchor
from batch.engine.months import month_of_day
from batch.engine.planning import ShardResult
from batch.engine.silver import Patch
from core import adjustments, arrays, layout
from core.lake import Lake
from core.schemas import FIB_INTERVALS, SILVER
from core.sharding import Shard, shard_of

log = logging.getLogger("batch.resample")

WHOLE_MARKET = Shard()
"""The default shard: every symbol."""
STAGING: Final = staging.ROOT


class AnchorMismatch(ValueError):
    """An incremental run asked for another anchor than the silver was built with."""


@dataclass
class IntervalReport:
    """What happened to one interval."""

    interval: int
    full: bool = False
    symbols_changed: int = 0
    bars: int = 0
    files_written: int = 0
    files_deleted: int = 0
    files_unchanged: int = 0
    staged: bool = False
    merged: bool = True
    checkpoint: Checkpoint | None = None
    """The checkpoint this run wrote for the interval (None when it wrote none)."""


@dataclass
class ResampleReport:
    """What one resample run did, per interval."""

    intervals: tuple[int, ...] = ()
    symbols: int = 0
    bars: int = 0
    files_written: int = 0
    files_deleted: int = 0
    full: bool = False
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False
    anchor: str = "calendar"
    last_date: dt.date | None = None
    per_interval: list[IntervalReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed

    def summary(self) -> str:
        """One line for logs and the console."""
        parts = []
        for r in self.per_interval:
            state = "staged, waiting for other shards" if r.staged and not r.merged else ""
            parts.append(
                f"{r.interval}d{' full' if r.full else ''}: {r.symbols_changed} symbols, "
                f"{r.bars} bars, {r.files_written} files written, {r.files_deleted} deleted"
                + (f" ({state})" if state else "")
            )
        return (
            f"{'[dry run] ' if self.dry_run else ''}resample ({self.anchor} anchor, lake last "
            f"date {self.last_date or '-'}): {self.symbols} symbols; "
            + "; ".join(parts)
            + f"; {len(self.failed)} failed, {self.seconds:.2f}s"
        )


def _date(days: int | None) -> dt.date | None:
    return None if days is None else dt.date(1970, 1, 1) + dt.timedelta(days=days)


# -- committing -------------------------------------------------------------------------------
@dataclass
class CommitStats:
    """What applying patches to month files did, and the checkpoint written after them."""

    written: int = 0
    deleted: int = 0
    unchanged: int = 0
    checkpoint: Checkpoint | None = None


def commit(
    lake: Lake,
    interval: int,
    results: Sequence[ShardResult],
    base: Checkpoint | None,
    workers: int,
    *,
    dry_run: bool = False,
    threads: int | None = None,
) -> CommitStats:
    """Apply the results of all shards to the month files, then write the checkpoint.

    ``threads`` writing month files: by default two per worker on S3 (latency-bound), one per
    worker locally, where more threads only contend for the GIL.
    """
    anchor = results[0].anchor
    if any(r.anchor != anchor for r in results):
        msg = f"shards of {interval}d disagree on the anchor; rerun them with one --anchor"
        raise AnchorMismatch(msg)
    last_values = [r.last_day for r in results if r.last_day is not None]
    last_day = max(last_values) if last_values else None
    patch = Patch.combine(r.patch for r in results)
    listed = silver.listed_months(lake, interval)
    slices = silver.month_slices(patch.rows)
    by_month = silver.month_groups(patch.rows) if slices is None else {}
    months = set(patch.months) | set(by_month if slices is None else slices)
    if patch.replace_shards:
        months |= set(listed)
    if anchor == "calendar" and base is not None and base.anchor == anchor:
        months |= planning.flip_months(interval, base.last_day, last_day) & set(listed)
    fresh = patch.replaces_everything()
    # the files were written against this last day already: their complete flags stand
    current = base is not None and base.anchor == anchor and base.last_day == last_day
    # one unsharded rebuild: rows come sorted and stamped with this last_day, use them as is
    as_is = fresh and len(results) == 1
    stats = CommitStats()

    def one(month: int) -> str:
        key = silver.month_file(interval, month)
        old: bytes | None = None
        existing = None
        if month in listed and not fresh:
            old = lake.read_bytes(key)
            existing = pq.ParquetFile(pa.BufferReader(old)).read(use_threads=False)
        if slices is not None and month in slices:
            lo, hi = slices[month]
            rows = patch.rows.slice(lo, hi - lo)
        elif (idx := by_month.get(month)) is not None:
            rows = patch.rows.take(arrays.from_numpy(idx))
        else:
            rows = arrays.empty_table(SILVER)
        table = (
            rows
            if as_is
            else silver.apply(
                existing, rows, patch, interval, anchor, last_day, complete_current=current
            )
        )
        if table.num_rows == 0:
            if month in listed:
                if not dry_run:
                    lake.delete(key)
                return "deleted"
            return "unchanged"
        data = silver.serialize(table)
        if old is not None and data.equals(pa.py_buffer(old)):
            return "unchanged"
        if not dry_run:
            lake.write_bytes(key, data)
        return "written"

    if threads is None:
        threads = pool.worker_count(workers) * (1 if lake.is_local else 2)
    with ThreadPoolExecutor(max(1, threads)) as ex:
        outcomes = map(one, sorted(months)) if threads <= 1 else ex.map(one, sorted(months))
        for outcome in outcomes:
            if outcome == "written":
                stats.written += 1
            elif outcome == "deleted":
                stats.deleted += 1
            else:
                stats.unchanged += 1
    if not dry_run:
        stats.checkpoint = next_checkpoint(interval, anchor, last_day, base, results)
        ckpt.write(lake, stats.checkpoint)
    return stats


def next_checkpoint(
    interval: int,
    anchor: str,
    last_day: int | None,
    base: Checkpoint | None,
    results: Iterable[ShardResult],
) -> Checkpoint:
    """The checkpoint after applying ``results`` on top of ``base``."""
    symbols = dict(base.symbols) if base is not None and base.anchor == anchor else {}
    generation = base.generation + 1 if base is not None else 1
    for r in results:
        if r.patch.replace_shards:
            symbols = {
                s: m
                for s, m in symbols.items()
                if not any(
                    sh.count == 1 or shard_of(s, sh.count) == sh.index
                    for sh in r.patch.replace_shards
                )
            }
        for s in r.removed:
            symbols.pop(s, None)
        symbols.update(r.marks)
    return Checkpoint(interval, anchor, last_day, generation, symbols)


# -- the job ----------------------------------------------------------------------------------
def run(
    lake: Lake,
    intervals: Sequence[int] = FIB_INTERVALS,
    anchor: Anchor = "calendar",
    full: bool = False,
    symbols: Sequence[str] | None = None,
    shard: Shard = WHOLE_MARKET,
    workers: int = 0,
    *,
    dry_run: bool = False,
    progress: bool = False,
    processes: bool | None = None,
) -> ResampleReport:
    """Bring silver up to date with the consolidated bronze; see the module docstring.

    ``processes``: read and resample on forked workers (Linux, local lake) instead of threads;
    by default when the rows to read reach :data:`batch.engine.daily_rows.PROCESS_MIN_ROWS`.
    """
    started = time.perf_counter()
    pool.tune_memory()
    if anchor not in fib.ANCHORS:
        msg = f"unknown anchor {anchor!r}; choose calendar or symbol"
        raise ValueError(msg)
    bad = [i for i in intervals if i not in FIB_INTERVALS]
    if bad:
        msg = f"unsupported intervals {bad}; choose from {FIB_INTERVALS}"
        raise ValueError(msg)
    intervals = tuple(sorted(set(intervals)))
    entries = daily_rows.data_entries(lake)
    states = mf.read(lake)
    wanted = set(symbols) if symbols is not None else None
    chosen = [s for s in shard.select(sorted(entries)) if wanted is None or s in wanted]
    subset = wanted is not None
    bases = {n: _unless_silver_lost(lake, n, ckpt.read(lake, n), subset) for n in intervals}
    fulls = {n: full or bases[n] is None for n in intervals}
    _check_anchor(bases, anchor, full, subset)
    book = adjustments.split_book(lake)
    if not book.present:
        log.warning(
            "no %s in the lake: bars are built as if no symbol had split; run "
            "`python -m dataflows.corporate_actions` to fetch the splits",
            layout.reference_splits(),
        )
    versions = book.versions(chosen)
    redo: dict[int, dict[str, int | None]] = {}
    bounds: dict[int, dict[str, int]] = {n: {} for n in intervals}
    for n in intervals:
        base = bases[n]
        todo: dict[str, int | None] = {}
        for s in chosen:
            mark = base.symbols.get(s) if base is not None else None
            change = (
                planning.WHOLE
                if fulls[n] or base is None
                else planning.change_of(entries[s], states.get(s), mark)
            )
            if mark is not None and mark.split_version != versions[s]:
                # a new, changed or withdrawn split: its rows are read whole, and when nothing
                # else changed only the bars before the split's day are replaced
                bound = split_bound(mark, book.of(s)) if change is False else None
                if bound is not None:
                    bounds[n][s] = bound
                change = planning.WHOLE
            if change is not False:
                todo[s] = None if change is None else int(change)
        redo[n] = todo
    needed = sorted({s for todo in redo.values() for s in todo})
    sources = daily_rows.tail_sources(lake, needed, redo, entries, states)
    # the rows read whole decide: a daily run takes tails (a few rows a symbol) and stays light
    counts = daily_rows.row_counts([s for s in needed if s not in sources], entries, states)
    forked = daily_rows.use_processes(lake, processes, workers, counts)
    # numba's import and cache load (about 2 s) overlap the forked reads, started once the
    # readers exist (a fork during an import could leave a child waiting on its lock); the
    # interval workers then inherit the compiled loops instead of loading them each
    warming = None
    if forked and sum(counts.values()) >= fib.COMPILED_MIN_ROWS:
        warming = threading.Thread(target=fib.warm_compiled, daemon=True)
    daily, marks = daily_rows.load(
        lake, needed, redo, entries, states, anchor, workers, progress,
        counts=counts if forked else None,
        after_fork=warming.start if warming is not None else None, sources=sources,
    )  # fmt: skip
    if warming is not None:
        if warming.ident is None:  # the reads did not fork: not started yet
            warming.start()
        warming.join()
    daily = fib.split_adjusted(daily, book)
    marks = {
        s: dataclasses.replace(m, split_version=versions[s], splits=ckpt.split_steps(book.of(s)))
        for s, m in marks.items()
    }
    loaded = {
        s: int(daily.date[daily.offsets[i + 1] - 1])
        for i, s in enumerate(daily.symbols)
        if daily.offsets[i + 1] > daily.offsets[i]
    }
    last_day = daily_rows.lake_last_day(lake, entries, states, loaded, workers)
    report = ResampleReport(
        intervals=intervals,
        symbols=len(chosen),
        full=all(fulls.values()),
        dry_run=dry_run,
        anchor=anchor,
        last_date=_date(last_day),
    )

    def one(n: int) -> IntervalReport:
        base = bases[n]
        deleted = []
        if base is not None and base.anchor == anchor:
            deleted = [
                s
                for s in shard.select(sorted(base.symbols))
                if s not in entries and (wanted is None or s in wanted)
            ]
        result = planning.plan_interval(
            n, anchor, daily, redo[n], base, marks, last_day,
            shard=shard, full=fulls[n], subset=subset, deleted=deleted, upto=bounds[n],
        )  # fmt: skip
        rep = IntervalReport(n, full=fulls[n], symbols_changed=result.changed)
        rep.bars = result.patch.rows.num_rows
        if shard.count == 1:
            stats = commit(
                lake,
                n,
                [result],
                base,
                workers,
                dry_run=dry_run,
                threads=1 if fork_intervals else None,
            )
            rep.files_written, rep.files_deleted = stats.written, stats.deleted
            rep.files_unchanged, rep.checkpoint = stats.unchanged, stats.checkpoint
        elif not dry_run:
            generation = base.generation if base is not None else 0
            staging.stage(lake, n, generation, result)
            rep.staged = True
            results = staging.complete_set(lake, n, generation, shard.count)
            rep.merged = results is not None
            if results is not None:
                stats = commit(lake, n, results, base, workers)
                staging.clear(lake, n, generation + 1)
                rep.files_written, rep.files_deleted = stats.written, stats.deleted
                rep.files_unchanged, rep.checkpoint = stats.unchanged, stats.checkpoint
        return rep

    # a new split rewrites the month files of a long history in every interval: on processes,
    # as a full run's are (Parquet decoding and encoding of many files contend for the GIL)
    fork_intervals = forked or (
        processes is not False
        and daily_rows.use_processes(lake, True, workers, {})
        and pool.worker_count(workers) > 1
        and _bounded_months(bounds, bases) >= FORK_MIN_MONTHS
    )
    if fork_intervals:  # intervals on forked workers, costliest (shortest) first
        reports = forking.map_forked(one, intervals, pool.worker_count(workers))
    else:  # intervals side by side: numpy and Parquet release the GIL
        with ThreadPoolExecutor(max(1, min(len(intervals), pool.worker_count(workers)))) as ex:
            reports = list(ex.map(one, intervals))
    for rep in reports:
        report.per_interval.append(rep)
        report.bars += rep.bars
        report.files_written += rep.files_written
        report.files_deleted += rep.files_deleted
    if not dry_run:
        record_adjustments(lake, {r.interval: r.checkpoint for r in reports if r.checkpoint})
    report.seconds = time.perf_counter() - started
    return report


def split_bound(mark: SymbolMark, splits: Sequence[adjustments.Split]) -> int | None:
    """The day before which a symbol's bars move when its splits change from the mark's.

    Rows from that day on keep their adjusted prices (:func:`core.adjustments.unchanged_from`),
    so bars starting on or after it stay as they are. ``silver.MIN_DAY`` when no price moves;
    None when the mark does not say which splits it was built with (rebuild it all).
    """
    old = mark.split_objects()
    if old is None:
        return None
    day = adjustments.unchanged_from(old, splits)
    return silver.MIN_DAY if day is None else day


def record_adjustments(lake: Lake, written: Mapping[int, Checkpoint] | None = None) -> None:
    """Write ``processing_metadata/adjustments.parquet`` from the checkpoints.

    A symbol's row names the split version every interval's silver of it was built with; while
    the intervals disagree (one was rebuilt, another not yet) the previous row stays. Unchanged
    rows keep their ``applied_at``, and an unchanged file is not rewritten. ``written``: the
    checkpoints this run just wrote (the others are read).
    """
    known = written or {}
    checkpoints = [known[n] if n in known else ckpt.read(lake, n) for n in FIB_INTERVALS]
    previous = adjustments.read_recorded(lake)
    marks = [c.symbols if c is not None else {} for c in checkpoints]
    held = set().union(*marks)
    versions: dict[str, str] = {}
    for s in held:
        seen = {m[s].split_version for m in marks if s in m}
        if len(seen) == 1 and all(s in m for m in marks):
            versions[s] = seen.pop()
        elif s in previous:
            versions[s] = previous[s][0]
    now = dt.datetime.now(dt.UTC)
    if adjustments.recorded_rows(versions, previous, now) != previous:
        adjustments.write_recorded(lake, adjustments.record_table(versions, previous, now))


class SilverLost(RuntimeError):
    """An interval's checkpoint is there but its silver folder is gone."""


def _unless_silver_lost(
    lake: Lake, n: int, base: Checkpoint | None, subset: bool
) -> Checkpoint | None:
    """``base``, or None (a full rebuild) when silver_{n}d was deleted after it was written.

    An incremental run would otherwise trust the checkpoint and write nothing.
    """
    if base is None or not base.symbols or lake.list_dirs(layout.silver_dir(n)):
        return base
    if subset:
        msg = f"{layout.silver_dir(n)} is gone; rebuild it with --full for every symbol"
        raise SilverLost(msg)
    log.warning("%s is gone although its checkpoint is not: rebuilding it", layout.silver_dir(n))
    return None


def _check_anchor(
    bases: dict[int, Checkpoint | None], anchor: Anchor, full: bool, subset: bool
) -> None:
    for n, base in bases.items():
        if base is None or base.anchor == anchor:
            continue
        if not full:
            msg = (
                f"silver_{n}d was built with --anchor {base.anchor}; an incremental run with "
                f"--anchor {anchor} would mix the two. Rebuild with --full --anchor {anchor}."
            )
            raise AnchorMismatch(msg)
        if subset:
            msg = f"switching silver_{n}d to --anchor {anchor} needs --full for every symbol"
            raise AnchorMismatch(msg)


FORK_MIN_MONTHS: Final = 96
"""Month files (all intervals) a split's rebuild rewrites from which intervals are forked."""


def _bounded_months(
    bounds: Mapping[int, Mapping[str, int]], bases: Mapping[int, Checkpoint | None]
) -> int:
    """Month files the bounded (split-only) rebuilds of all intervals rewrite, at most."""
    total = 0
    for n, bound in bounds.items():
        base = bases.get(n)
        months: set[int] = set()
        for s, day in bound.items():
            mark = base.symbols.get(s) if base is not None else None
            if mark is not None and day > mark.first_day:
                hi = min(mark.last_day, day - 1)
                months.update(range(month_of_day(mark.first_day), month_of_day(hi) + 1))
        total += len(months)
    return total


def _anchor(text: str) -> Anchor:
    if text == "calendar":
        return "calendar"
    if text == "symbol":
        return "symbol"
    msg = f"invalid anchor {text!r}: choose calendar or symbol"
    raise argparse.ArgumentTypeError(msg)


def _warn_unconsolidated(lake: Lake) -> None:
    """Silver is built from data.parquet only: say so when bronze holds nothing else yet."""
    from batch.consolidate import listing

    waiting = sorted(sym for sym, (data, frags) in listing(lake).items() if data is None and frags)
    if waiting:
        print(
            f"warning: {len(waiting)} symbols have bronze fragments but no consolidated "
            f"data.parquet (e.g. {', '.join(waiting[:3])}); run `python -m batch.consolidate` "
            "first: resample reads consolidated rows only",
            file=sys.stderr,
        )


@common.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m batch.resample``."""
    p = common.parser(
        "resample",
        "Resample consolidated daily bars into Fibonacci bars under silver/silver_{N}d/, "
        "incrementally from per-interval checkpoints and the consolidation manifest.",
        intervals=True,
    )
    p.add_argument(
        "--anchor",
        type=_anchor,
        default="calendar",
        help="calendar: groups of N XNYS sessions since 1962-01-02 (default); symbol: groups "
        "of N rows of each symbol's history",
    )
    p.add_argument("--full", action="store_true", help="rebuild the intervals from scratch")
    p.add_argument(
        "--processes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read and resample on forked workers (Linux, local lake); default: when at least "
        f"{daily_rows.PROCESS_MIN_ROWS:,} rows are read, or a split's rebuild rewrites at least "
        f"{FORK_MIN_MONTHS} month files",
    )
    args = common.parse(p, argv, reads_lake=True)
    with common.recorded("resample") as counts:
        report = run(
            args.lake,
            intervals=args.intervals,
            anchor=args.extra.anchor,
            full=args.extra.full,
            symbols=args.symbols,
            shard=args.shard,
            workers=args.workers,
            dry_run=args.dry_run,
            progress=args.progress,
            processes=args.extra.processes,
        )
        counts.update(
            symbols=report.symbols,
            bars=report.bars,
            files_written=report.files_written,
            files_deleted=report.files_deleted,
            full=report.full,
        )
        print(report.summary())
        if report.symbols == 0:
            _warn_unconsolidated(args.lake)
        if not report.ok:
            msg = json.dumps(report.failed)
            raise RuntimeError(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main(None))
