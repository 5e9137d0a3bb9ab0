"""Gold: technical indicators of every symbol's daily and Fibonacci bars.

``python -m batch.gold`` writes ``gold/indicators_{I}/year=/month=/data_{I}_{YYYYMM}.parquet``
for I in 1d, 3d, 5d, 8d, 13d, 21d, 34d: one row per bar (the last, incomplete one included) with
the indicators of :mod:`core.indicators`, on split-adjusted prices
(:mod:`batch.engine.gold_inputs`). 1d bars are the consolidated daily rows; Fibonacci bars are
silver's, from the same function and the anchor silver was built with.

Incremental by default. Per interval a checkpoint (:mod:`batch.engine.gold_state`) holds, per
symbol, what it was built from and the indicator state where the next run resumes (before the last bar
while that bar may change). A daily run reads the consolidator's tails and recomputes only each
symbol's last bars from its state; a change older than the resume point (a backfill) or a new
split recomputes the symbol from its first bar. Month files are rewritten through patches that
replace only the recomputed rows, with fixed writer options, so an incremental run gives the
same bytes as a full rebuild (``--full``).

Shards (``--shard I/N``): month files hold every symbol, so each shard stages its patch under
``processing_metadata/gold_staging/indicators_{I}/gen={G}/`` and the shard completing the set
applies them together, as one run would. Crash safety: month files are written atomically and
the checkpoint after them, so a rerun recomputes the same patches and rewrites the same bytes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from batch.engine import checkpoint as ckpt
from batch.engine import (
    common,
    daily_rows,
    fib,
    forking,
    gold_files,
    gold_inputs,
    gold_state,
    planning,
    pool,
    silver,
)
from batch.engine import manifest as mf
from batch.engine.checkpoint import SymbolMark
from batch.engine.fib import Anchor, Daily
from batch.engine.gold_state import GoldState
from batch.engine.months import month_index
from batch.engine.silver import MIN_DAY, Patch
from core import arrays, calendar, indicators, layout
from core.lake import Entry, Lake
from core.schemas import GOLD_INTERVALS, gold_schema
from core.sharding import Shard

log = logging.getLogger("batch.gold")
STAGING: Final = f"{layout.META}/gold_staging"
WHOLE_MARKET: Final = Shard()
I64 = npt.NDArray[np.int64]


class AnchorMismatch(ValueError):
    """Silver's anchor changed and only some symbols were asked to follow it."""


@dataclass
class IntervalReport:
    """What happened to one interval."""

    interval: str
    full: bool = False
    symbols_changed: int = 0
    bars: int = 0
    files_written: int = 0
    files_deleted: int = 0
    files_unchanged: int = 0
    staged: bool = False
    merged: bool = True


@dataclass
class GoldReport:
    """What one gold run did, per interval."""

    intervals: tuple[str, ...] = ()
    symbols: int = 0
    bars: int = 0
    files_written: int = 0
    files_deleted: int = 0
    full: bool = False
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False
    last_date: str | None = None
    per_interval: list[IntervalReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed

    def summary(self) -> str:
        """One line for logs and the console."""
        parts = []
        for r in self.per_interval:
            waiting = " (staged, waiting for other shards)" if r.staged and not r.merged else ""
            parts.append(
                f"{r.interval}{' full' if r.full else ''}: {r.symbols_changed} symbols, "
                f"{r.bars} rows, {r.files_written} files written, {r.files_deleted} deleted"
                + waiting
            )
        return (
            f"{'[dry run] ' if self.dry_run else ''}gold (lake last date {self.last_date or '-'}):"
            f" {self.symbols} symbols; "
            + "; ".join(parts)
            + f"; {len(self.failed)} failed, {self.seconds:.2f}s"
        )


# -- planning (pure) ---------------------------------------------------------------------------
def interval_length(interval: str) -> int:
    """Sessions per bar: 1 for ``1d``, N for ``Nd``."""
    return int(interval.removesuffix("d"))


@dataclass
class Plan:
    """One interval's symbols to recompute.

    ``resume[s]``: the date to resume from, or None for the whole history. ``changed[s]``, for
    resumed symbols: the earliest changed date. Bars before it are recomputed from the same
    state and rows, so they come out with the same bits: they advance the state but need not
    be rewritten (a daily run would otherwise rewrite the month of every delisted symbol's
    last row).
    """

    resume: dict[str, int | None] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)


def resume_points(
    chosen: Sequence[str],
    base: GoldState | None,
    full: bool,
    entries: dict[str, Entry],
    states: dict[str, mf.SymbolState],
    versions: dict[str, str],
    seen: dict[tuple[str, SymbolMark], int | bool | None] | None = None,
) -> Plan:
    """Per symbol to recompute, where to resume (see :class:`Plan`).

    Unchanged symbols are left out. A change on or after the checkpoint's resume date resumes
    from its state; an older change, an unknown history or a new split version starts over.
    ``seen``: changes already worked out (by mark), shared by the intervals of one run.
    """
    plan = Plan()
    seen = {} if seen is None else seen
    for s in chosen:
        if full or base is None or s not in base.resume:
            plan.resume[s] = None
            continue
        mark = base.marks[s]
        change = seen.get((s, mark), True)  # True: not worked out yet (never a change)
        if change is True:
            change = seen[s, mark] = planning.change_of(entries[s], states.get(s), mark)
        if base.splits.get(s) != versions[s]:
            change = planning.WHOLE
        if change is False:
            continue
        if change is planning.WHOLE or int(change) < base.resume[s]:
            plan.resume[s] = None
        else:
            plan.resume[s] = base.resume[s]
            plan.changed[s] = int(change)
    return plan


def next_resumes(
    interval: str, anchor: Anchor, start: I64, end: I64, complete: npt.NDArray[np.bool_]
) -> tuple[I64, npt.NDArray[np.bool_]]:
    """(resume date, after the bar) of symbols whose last bars span [start, end].

    A bar that can still change (every last daily row, an incomplete Fibonacci bar) is
    recomputed next time: resume at its start, from the state before it. After a complete
    Fibonacci bar nothing can change it but a backfill, so resume at the first day the next
    bar can hold, from the state after it.
    """
    start = np.asarray(start, dtype=np.int64)
    if interval == "1d":
        return start, np.zeros(len(start), dtype=bool)
    past = np.asarray(complete, dtype=bool).copy()
    if anchor == "symbol":
        return np.where(past, np.asarray(end, np.int64) + 1, start), past
    n = interval_length(interval)
    sessions = calendar.session_days()
    g = np.asarray(fib.calendar_group(start.astype(np.int32), n), dtype=np.int64)
    last = (g + 1) * n - 1
    past &= last < len(sessions)
    after = sessions[np.clip(last, 0, len(sessions) - 1)].astype(np.int64) + 1
    return np.where(past, after, start), past


# -- computing one interval ---------------------------------------------------------------------
@dataclass
class Result:
    """One interval's patch and the checkpoint rows of the symbols it recomputed."""

    interval: str
    shard: Shard
    full: bool
    anchor: Anchor
    last_day: int | None
    patch: Patch
    state: GoldState
    removed: list[str] = field(default_factory=list)
    changed: int = 0


def compute_interval(
    interval: str,
    anchor: Anchor,
    daily: Daily,
    plan: Plan,
    base: GoldState | None,
    marks: dict[str, SymbolMark],
    versions: dict[str, str],
    last_day: int | None,
    *,
    shard: Shard,
    full: bool,
    subset: bool,
    deleted: Sequence[str] = (),
) -> Result:
    """The patch of one interval: the rows of every symbol in ``plan`` from its resume date."""
    todo = plan.resume
    names = sorted(todo)
    index = {s: i for i, s in enumerate(daily.symbols)}
    segments = np.array([index[s] for s in names], dtype=np.int64)
    resume = np.array([MIN_DAY if todo[s] is None else todo[s] for s in names], dtype=np.int64)
    if len(names) and bool(np.any((resume == MIN_DAY) & (daily.first_row[segments] > 0))):
        msg = "rows read for a whole recomputation do not start at the first row"
        raise ValueError(msg)
    whole = resume == MIN_DAY
    starts = np.zeros(len(names), dtype=np.int64)
    if not whole.all():  # a full rebuild searches nothing
        starts[~whole] = daily.search(segments[~whole], resume[~whole])
    if len(names) == len(daily.symbols) and not starts.any():
        rows = daily
    else:
        rows = daily.take(segments, starts.astype(np.int64))
    init = indicators.fresh(len(names))
    for i, s in enumerate(names):
        if todo[s] is not None and base is not None:
            init[i] = base.states[s]
    # 1d: the rows before the earliest change come out as they are stored (see Plan)
    cut_days = resume.copy()
    if interval == "1d" and plan.changed:
        later = np.array([plan.changed.get(s, MIN_DAY) for s in names], dtype=np.int64)
        cut_days = np.maximum(cut_days, later)
    emit_from = cut_days if bool(np.any(cut_days > resume)) else None
    table, last = _indicator_table(interval, anchor, rows, init, last_day, emit_from)
    early = last.present & (last.first_key < resume)
    if early.any():  # rows before the resume point were read
        i = int(np.flatnonzero(early)[0])
        msg = (
            f"{names[i]}: recomputed {interval} bars start at {int(last.first_key[i])}, "
            "before the resume date"
        )
        raise ValueError(msg)
    day, past = next_resumes(interval, anchor, last.key, last.end, last.complete)
    resumed = np.where(past[:, None], last.after, last.before)
    state = GoldState(interval, anchor, last_day)
    present = np.flatnonzero(last.present)  # a symbol without rows has nothing to resume from
    kept = [names[i] for i in present.tolist()]
    state.marks = {s: marks[s] for s in kept}
    state.splits = {s: versions[s] for s in kept}
    state.resume = dict(zip(kept, day[present].tolist(), strict=True))
    state.states = dict(zip(kept, map(tuple, resumed[present].tolist()), strict=True))
    cuts = dict(zip(names, cut_days.tolist(), strict=True))
    cuts.update(dict.fromkeys(deleted, MIN_DAY))
    months: set[int] = set()
    if base is not None and not full:
        # the months where replaced rows may sit: each held symbol's [cut, last day]
        held = [(base.marks[s], cuts[s]) for s in (*names, *deleted) if s in base.marks]
        lo = np.array([max(m.first_day, c) for m, c in held], dtype=np.int64)
        hi = np.array([m.last_day for m, _ in held], dtype=np.int64)
        months = planning.month_ranges(lo[lo <= hi], hi[lo <= hi])
    patch = Patch(cuts=cuts, rows=table, months=months)
    if full and not subset:
        patch.cuts = {}
        patch.replace_shards = [shard]
    return Result(
        interval, shard, full, anchor, last_day, patch, state, list(deleted), changed=len(names)
    )


@dataclass(frozen=True)
class LastBars:
    """What an interval's run leaves per segment, where the next one resumes.

    Its first bar's key, its last bar's key, end and ``complete``, and the indicator states
    before and after that last bar; ``present`` is False for a segment without bars.
    """

    present: npt.NDArray[np.bool_]
    first_key: I64
    key: I64
    end: I64
    complete: npt.NDArray[np.bool_]
    before: npt.NDArray[np.float64]
    after: npt.NDArray[np.float64]


def _indicator_table(
    interval: str,
    anchor: Anchor,
    rows: Daily,
    init: npt.NDArray[np.float64],
    last_day: int | None,
    emit_from: I64 | None = None,
) -> tuple[pa.Table, LastBars]:
    """Gold rows of ``rows`` in month-file order, and per segment its last bar's facts.

    The bars are computed in month-file order, every symbol's state carried along
    (:func:`core.indicators.compute_interleaved`), so each output column is written once,
    front to back. ``emit_from`` (1d only): per segment, the first date whose rows go into the
    table; the rows before it only advance the state.
    """
    n_seg = len(rows.symbols)
    names = arrays.strings(rows.symbols)
    if interval == "1d":
        seg: npt.NDArray[np.integer[Any]] = rows.segment_ids()
        if emit_from is not None:
            return _daily_from(rows, init, emit_from, names)
        perm = np.argsort(month_index(rows.date), kind="stable").astype(np.int64)
        order = seg[perm]
        series = indicators.compute_interleaved(
            rows.high, rows.low, rows.close, order, init, take=perm
        )
        keys = rows.date[perm]
        table = pa.table(
            [
                _symbols(order, names),
                arrays.from_numpy(keys, pa.date32()),
                arrays.from_numpy(rows.close[perm]),
                *gold_files.indicator_columns(series.values),
            ],
            schema=gold_schema(interval),
        )
        ends, complete = keys, np.zeros(len(keys), dtype=bool)
    else:
        bars, bar_seg = fib.bars_and_segments(rows, interval_length(interval), anchor, last_day)

        def column(name: str) -> npt.NDArray[np.float64]:
            return np.asarray(arrays.to_numpy(bars[name]), dtype=np.float64)

        # bars come in month-file order, each symbol's in time order: computed as they lie
        series = indicators.compute_interleaved(
            column("high"), column("low"), column("close"), bar_seg, init
        )
        keys = np.asarray(arrays.to_numpy(bars["start_date"].cast(pa.int32())), np.int32)
        ends = np.asarray(arrays.to_numpy(bars["end_date"].cast(pa.int32())), np.int32)
        complete = np.asarray(arrays.to_numpy(bars["complete"]), dtype=bool)
        table = pa.table(
            [
                bars["symbol"],
                bars["start_date"],
                bars["end_date"],
                bars["complete"],
                bars["close"],
                *gold_files.indicator_columns(series.values),
            ],
            schema=gold_schema(interval),
        )
    return table, _last_bars(series, keys, ends, complete, n_seg)


def _last_bars(
    series: indicators.Interleaved,
    keys: npt.NDArray[np.integer[Any]],
    ends: npt.NDArray[np.integer[Any]],
    complete: npt.NDArray[np.bool_],
    n_seg: int,
) -> LastBars:
    """Each segment's first and last bar's facts, from where its bars lie in the output."""
    present = series.last_at >= 0
    first = np.where(present, series.first_at, 0)
    final = np.where(present, series.last_at, 0)

    def at(values: npt.NDArray[Any], where: I64) -> I64:
        if not len(values):
            return np.zeros(n_seg, np.int64)
        return np.where(present, np.asarray(values[where], dtype=np.int64), 0)

    return LastBars(
        present=present,
        first_key=at(keys, first),
        key=at(keys, final),
        end=at(ends, final),
        complete=np.asarray(complete[final] if len(complete) else present & False) & present,
        before=series.before_last,
        after=series.last,
    )


def _daily_from(
    rows: Daily, init: npt.NDArray[np.float64], emit_from: I64, names: pa.Array
) -> tuple[pa.Table, LastBars]:
    """1d rows of a resumed run, in month-file order.

    Every row advances the state; those from ``emit_from`` on (per segment) go into the table.
    """
    seg = rows.segment_ids()
    kept = rows.date >= emit_from[seg]
    emitted = np.flatnonzero(kept)
    perm = np.concatenate(  # the rows left out go last, past the table's end
        [
            emitted[np.argsort(month_index(rows.date[emitted]), kind="stable")],
            np.flatnonzero(~kept),
        ]
    )
    dest = np.empty_like(perm)
    dest[perm] = np.arange(len(perm))
    series = indicators.compute(rows.high, rows.low, rows.close, rows.offsets, init, dest=dest)
    shown = perm[: len(emitted)]
    values = {k: v[: len(shown)] for k, v in series.values.items()}
    table = pa.table(
        [
            _symbols(seg[shown], names),
            arrays.from_numpy(np.ascontiguousarray(rows.date[shown]), pa.date32()),
            arrays.from_numpy(np.ascontiguousarray(rows.close[shown])),
            *gold_files.indicator_columns(values),
        ],
        schema=gold_schema("1d"),
    )
    lo, hi = rows.offsets[:-1], rows.offsets[1:]
    present = hi > lo
    # positions in the processing order (symbol order), where first and last bars lie
    where = indicators.Interleaved(
        series.values,
        series.before_last,
        series.last,
        np.where(present, lo, -1),
        np.where(present, hi - 1, -1),
    )
    return table, _last_bars(where, rows.date, rows.date, np.zeros(rows.rows, bool), len(names))


def _symbols(codes: npt.NDArray[np.integer[Any]], names: pa.Array) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        arrays.from_numpy(np.ascontiguousarray(codes, dtype=np.int32)), names
    ).cast(pa.string())


# -- committing --------------------------------------------------------------------------------
@dataclass
class CommitStats:
    """What applying patches to month files did."""

    written: int = 0
    deleted: int = 0
    unchanged: int = 0


def commit(
    lake: Lake,
    interval: str,
    results: Sequence[Result],
    base: GoldState | None,
    workers: int,
    *,
    dry_run: bool = False,
    threads: int | None = None,
) -> CommitStats:
    """Apply the results of all shards to the month files, then write the checkpoint."""
    anchor = results[0].anchor
    if any(r.anchor != anchor for r in results):
        msg = f"shards of {interval} disagree on the anchor; rerun them"
        raise AnchorMismatch(msg)
    last_values = [r.last_day for r in results if r.last_day is not None]
    last_day = max(last_values) if last_values else None
    patch = Patch.combine(r.patch for r in results)
    key = gold_files.key_column(interval)
    listed = _listed(lake, interval)
    ranges = silver.month_slices(patch.rows, key)
    slices = _slices(patch.rows, key) if ranges is None else {}
    months = set(patch.months) | set(slices) | set(ranges or {})
    if patch.replace_shards:
        months |= set(listed)
    if interval != "1d" and anchor == "calendar" and base is not None and base.anchor == anchor:
        flips = planning.flip_months(interval_length(interval), base.last_day, last_day)
        months |= flips & set(listed)
    fresh = patch.replaces_everything()
    as_is = fresh and len(results) == 1
    # the files were written against this last day already: their complete flags stand
    current = base is not None and base.anchor == anchor and base.last_day == last_day
    stats = CommitStats()

    def one(month: int) -> str:
        target = gold_files.month_file(interval, month)
        old: bytes | None = None
        existing = None
        if month in listed and not fresh:
            old = lake.read_bytes(target)
            existing = pq.ParquetFile(pa.BufferReader(old)).read(use_threads=False)
        if ranges is not None and month in ranges:  # rows in month order: a zero-copy slice
            lo, hi = ranges[month]
            rows = patch.rows.slice(lo, hi - lo)
        elif month in slices:
            rows = patch.rows.take(arrays.from_numpy(slices[month]))
        else:
            rows = arrays.empty_table(gold_schema(interval))
        table = (
            rows
            if as_is
            else gold_files.apply(
                existing, rows, patch, interval, anchor, last_day, complete_current=current
            )
        )
        if table.num_rows == 0:
            if month in listed:
                if not dry_run:
                    lake.delete(target)
                return "deleted"
            return "unchanged"
        data = gold_files.serialize(table, interval)
        if old is not None and data.equals(pa.py_buffer(old)):
            return "unchanged"
        if not dry_run:
            lake.write_bytes(target, data)
        return "written"

    if threads is None:
        threads = pool.worker_count(workers) * (1 if lake.is_local else 2)
    with ThreadPoolExecutor(max(1, threads)) as ex:
        outcomes = map(one, sorted(months)) if threads <= 1 else ex.map(one, sorted(months))
        for outcome in outcomes:
            setattr(stats, outcome, getattr(stats, outcome) + 1)
    if not dry_run:
        gold_state.write(lake, next_state(interval, anchor, last_day, base, results))
    return stats


def _listed(lake: Lake, interval: str) -> set[int]:
    from batch.engine.silver import listed_months_in

    return set(listed_months_in(lake, layout.gold_dir(interval)))


def _slices(rows: pa.Table, key: str) -> dict[int, I64]:
    """Row indices of ``rows`` per month file, in their order (month order already)."""
    if rows.num_rows == 0:
        return {}
    months = np.asarray(
        month_index(np.asarray(arrays.to_numpy(rows[key].cast(pa.int32())), np.int32)), np.int64
    )
    order = np.argsort(months, kind="stable")
    sorted_months = months[order]
    edges = np.flatnonzero(np.diff(sorted_months)) + 1
    bounds = [0, *edges.tolist(), len(order)]
    return {int(sorted_months[lo]): order[lo:hi] for lo, hi in itertools.pairwise(bounds)}


def next_state(
    interval: str,
    anchor: Anchor,
    last_day: int | None,
    base: GoldState | None,
    results: Sequence[Result],
) -> GoldState:
    """The checkpoint after applying ``results`` on top of ``base``."""
    out = GoldState(interval, anchor, last_day, (base.generation + 1) if base is not None else 1)
    if base is not None and base.anchor == anchor:
        out.marks, out.splits = dict(base.marks), dict(base.splits)
        out.resume, out.states = dict(base.resume), dict(base.states)
    for r in results:
        for sh in r.patch.replace_shards:
            for s in [s for s in out.resume if sh.owns(s)]:
                out.drop(s)
        for s in r.removed:
            out.drop(s)
        for s in r.patch.cuts:  # recomputed: dropped, then set again below when it has rows
            out.drop(s)
        out.marks.update(r.state.marks)
        out.splits.update(r.state.splits)
        out.resume.update(r.state.resume)
        out.states.update(r.state.states)
    return out


# -- shards ------------------------------------------------------------------------------------
def _stage_folder(interval: str, generation: int, shard: Shard) -> str:
    return (
        f"{STAGING}/indicators_{interval}/gen={int(generation)}"
        f"/shard={shard.index}-of-{shard.count}"
    )


def stage(lake: Lake, generation: int, result: Result) -> None:
    """Write one shard's result (rows and states first, the plan last: it marks it done)."""
    where = _stage_folder(result.interval, generation, result.shard)
    lake.write_table(f"{where}/rows.parquet", result.patch.rows)
    gold_state.write_to(lake, f"{where}/state.parquet", result.state)
    plan = {
        "shard": [result.shard.index, result.shard.count],
        "full": result.full,
        "anchor": result.anchor,
        "last_day": result.last_day,
        "cuts": result.patch.cuts,
        "months": sorted(result.patch.months),
        "replace": [[s.index, s.count] for s in result.patch.replace_shards],
        "removed": result.removed,
        "changed": result.changed,
    }
    lake.write_json(f"{where}/plan.json", plan)


def complete_set(lake: Lake, interval: str, generation: int, count: int) -> list[Result] | None:
    """All ``count`` staged results of a generation, or None while some are missing."""
    plans = []
    for i in range(count):
        plan = lake.read_json(f"{_stage_folder(interval, generation, Shard(i, count))}/plan.json")
        if plan is None:
            return None
        plans.append((i, plan))
    out = []
    for i, plan in plans:
        where = _stage_folder(interval, generation, Shard(i, count))
        state = gold_state.read_from(lake, f"{where}/state.parquet")
        patch = Patch(
            cuts={s: int(c) for s, c in plan["cuts"].items()},
            rows=lake.read_table(f"{where}/rows.parquet").cast(gold_schema(interval)),
            months=set(plan["months"]),
            replace_shards=[Shard(a, b) for a, b in plan["replace"]],
        )
        out.append(
            Result(
                interval,
                Shard(*plan["shard"]),
                bool(plan["full"]),
                _anchor(plan["anchor"]),
                plan["last_day"],
                patch,
                state,
                list(plan["removed"]),
                int(plan["changed"]),
            )
        )
    return out


def clear(lake: Lake, interval: str, below: int) -> None:
    """Remove staged results of generations before ``below`` (applied or abandoned)."""
    folder = f"{STAGING}/indicators_{interval}"
    for name in lake.list_dirs(folder):
        if name.startswith("gen=") and int(name.removeprefix("gen=")) < below:
            lake.delete_prefix(f"{folder}/{name}")


def _anchor(text: str) -> Anchor:
    if text in fib.ANCHORS:
        return "symbol" if text == "symbol" else "calendar"
    msg = f"unknown anchor {text!r}"
    raise ValueError(msg)


# -- the job -----------------------------------------------------------------------------------
def silver_anchor(lake: Lake, interval: str) -> Anchor:
    """The anchor silver of ``interval`` was built with (calendar before any resample)."""
    if interval == "1d":
        return "calendar"
    # the anchor only: parsing the checkpoint's thousands of marks costs more than the read
    held = lake.read_json(layout.silver_checkpoint(interval_length(interval)))
    if held is None or not isinstance(held.get("format"), int) or held["format"] < ckpt.FORMAT:
        return "calendar"  # none yet, or silver of an older release (resample rebuilds it)
    if held["format"] != ckpt.FORMAT:
        msg = f"unsupported checkpoint format {held['format']!r} of silver_{interval}"
        raise ValueError(msg)
    return _anchor(str(held["anchor"]))


def run(
    lake: Lake,
    intervals: Sequence[str] = GOLD_INTERVALS,
    full: bool = False,
    symbols: Sequence[str] | None = None,
    shard: Shard = WHOLE_MARKET,
    workers: int = 0,
    *,
    dry_run: bool = False,
    progress: bool = False,
    processes: bool | None = None,
    splits: gold_inputs.Splits | None = None,
) -> GoldReport:
    """Bring gold up to date with the consolidated bronze; see the module docstring.

    ``splits``: the split factors to adjust with (default: the lake's,
    :mod:`batch.engine.gold_inputs`).
    """
    started = time.perf_counter()
    pool.tune_memory()
    bad = [i for i in intervals if i not in GOLD_INTERVALS]
    if bad:
        msg = f"unsupported intervals {bad}; choose from {', '.join(GOLD_INTERVALS)}"
        raise ValueError(msg)
    labels = tuple(i for i in GOLD_INTERVALS if i in set(intervals))
    entries = daily_rows.data_entries(lake)
    states = mf.read(lake)
    wanted = set(symbols) if symbols is not None else None
    chosen = [s for s in shard.select(sorted(entries)) if wanted is None or s in wanted]
    subset = wanted is not None
    book = splits if splits is not None else gold_inputs.splits(lake)
    versions = book.versions(chosen)
    bases = {i: gold_state.read(lake, i) for i in labels}
    anchors = {i: silver_anchor(lake, i) for i in labels}
    fulls: dict[str, bool] = {}
    for i in labels:
        base = bases[i]
        moved = base is not None and base.anchor != anchors[i]
        if moved and subset:
            msg = f"silver_{i} is now built with --anchor {anchors[i]}: rebuild gold without --symbols"
            raise AnchorMismatch(msg)
        fulls[i] = full or base is None or moved or not lake.list_dirs(layout.gold_dir(i))
    seen: dict[tuple[str, SymbolMark], int | bool | None] = {}
    todo = {
        i: resume_points(chosen, bases[i], fulls[i], entries, states, versions, seen)
        for i in labels
    }
    needed: dict[str, int | None] = {}
    for plan in todo.values():
        for s, day in plan.resume.items():
            held = needed.get(s, day) if s in needed else day
            needed[s] = None if held is None or day is None else min(held, day)
    failed: dict[str, str] = {}
    try:
        inputs = gold_inputs.read(
            lake, book, needed, entries, states, workers, progress=progress, processes=processes
        )
    except (OSError, ValueError, pa.ArrowException) as exc:
        # one bad file fails its symbol, not the run: name the culprits, go on without them
        failed = culprits(lake, sorted(needed))
        if not failed:
            raise
        log.warning("%d symbols cannot be read (%s); computing the others", len(failed), exc)
        for s in failed:
            needed.pop(s, None)
            for plan in todo.values():
                plan.resume.pop(s, None)
                plan.changed.pop(s, None)
        inputs = gold_inputs.read(
            lake, book, needed, entries, states, workers, progress=progress, processes=processes
        )
    daily = inputs.daily
    loaded = {
        s: int(daily.date[daily.offsets[k + 1] - 1])
        for k, s in enumerate(daily.symbols)
        if daily.offsets[k + 1] > daily.offsets[k]
    }
    readable = {s: e for s, e in entries.items() if s not in failed}
    last_day = daily_rows.lake_last_day(lake, readable, states, loaded, workers)
    report = GoldReport(
        intervals=labels,
        symbols=len(chosen),
        full=all(fulls.values()) if fulls else False,
        dry_run=dry_run,
        last_date=str(gold_state.date_of(last_day)) if last_day is not None else None,
        failed=failed,
    )

    # a daily run's intervals are small but seven: side by side on the cores too (a fork costs
    # milliseconds; the workers write their own month files and checkpoint)
    fork_intervals = len(labels) > 1 and (
        inputs.forked
        or (
            processes is not False
            and daily_rows.use_processes(lake, True, workers, {})
            and pool.worker_count(workers) > 1
        )
    )

    def one(interval: str) -> IntervalReport:
        base = bases[interval]
        deleted = []
        if base is not None and not fulls[interval]:
            deleted = [
                s
                for s in shard.select(sorted(base.resume))
                if s not in entries and (wanted is None or s in wanted)
            ]
        result = compute_interval(
            interval, anchors[interval], daily, todo[interval], base, inputs.marks, versions,
            last_day, shard=shard, full=fulls[interval], subset=subset, deleted=deleted,
        )  # fmt: skip
        rep = IntervalReport(interval, full=fulls[interval], symbols_changed=result.changed)
        rep.bars = result.patch.rows.num_rows
        if shard.count == 1:
            threads = 1 if fork_intervals else None
            stats = commit(
                lake, interval, [result], base, workers, dry_run=dry_run, threads=threads
            )
            rep.files_written, rep.files_deleted = stats.written, stats.deleted
            rep.files_unchanged = stats.unchanged
        elif not dry_run:
            generation = base.generation if base is not None else 0
            stage(lake, generation, result)
            rep.staged = True
            results = complete_set(lake, interval, generation, shard.count)
            rep.merged = results is not None
            if results is not None:
                stats = commit(lake, interval, results, base, workers)
                clear(lake, interval, generation + 1)
                rep.files_written, rep.files_deleted = stats.written, stats.deleted
                rep.files_unchanged = stats.unchanged
        return rep

    with tqdm(
        total=len(labels), desc="gold", unit="interval", disable=not progress, leave=False
    ) as bar:

        def done(_: IntervalReport) -> None:
            bar.update(1)

        if fork_intervals:  # intervals on forked workers, as resample does
            reports = forking.map_forked(one, labels, pool.worker_count(workers), done)
        else:
            reports = []
            for i in labels:
                reports.append(one(i))
                done(reports[-1])
    for rep in reports:
        report.per_interval.append(rep)
        report.bars += rep.bars
        report.files_written += rep.files_written
        report.files_deleted += rep.files_deleted
    report.seconds = time.perf_counter() - started
    return report


def culprits(lake: Lake, symbols: Sequence[str]) -> dict[str, str]:
    """The symbols whose data.parquet cannot be read alone, with the reason."""
    failed = {}
    for s in symbols:
        try:
            daily_rows.read_daily(lake, s)
        except (OSError, ValueError, pa.ArrowException) as exc:
            failed[s] = f"{type(exc).__name__}: {exc}"
    return failed


def _intervals(text: str) -> tuple[str, ...]:
    out = []
    for part in text.split(","):
        label = part.strip().lower()
        if not label:
            continue
        if label.isdigit():
            label += "d"
        if label not in GOLD_INTERVALS:
            msg = f"unsupported interval {part.strip()!r}; choose from {', '.join(GOLD_INTERVALS)}"
            raise argparse.ArgumentTypeError(msg)
        out.append(label)
    if not out:
        msg = "no interval given"
        raise argparse.ArgumentTypeError(msg)
    return tuple(i for i in GOLD_INTERVALS if i in out)


@common.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m batch.gold``."""
    p = common.parser(
        "gold",
        "Compute technical indicators (EMA 8..169, MACD, Wilder RSI and ATR, Vegas) of every "
        "symbol's daily and Fibonacci bars into gold/indicators_{I}/, incrementally from "
        "per-symbol states in processing_metadata/.",
    )
    p.add_argument(
        "--intervals",
        dest="gold_intervals",  # not common's Fibonacci-only --intervals
        type=_intervals,
        default=GOLD_INTERVALS,
        metavar="1d,3d",
        help=f"intervals (default: all seven: {','.join(GOLD_INTERVALS)})",
    )
    p.add_argument("--full", action="store_true", help="rebuild the intervals from scratch")
    p.add_argument(
        "--processes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read and compute on forked workers (Linux, local lake); default: when at least "
        f"{daily_rows.PROCESS_MIN_ROWS:,} rows are read",
    )
    args = common.parse(p, argv, reads_lake=True)
    with common.recorded("gold") as counts:
        report = run(
            args.lake,
            intervals=args.extra.gold_intervals,
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
            rows=report.bars,
            files_written=report.files_written,
            files_deleted=report.files_deleted,
            full=report.full,
        )
        print(report.summary())
        if report.failed:
            counts["failed"] = json.dumps(report.failed)
        common.fail_on_symbols(report.failed)
    return 0


if __name__ == "__main__":
    sys.exit(main(None))
