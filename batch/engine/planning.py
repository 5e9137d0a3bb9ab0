"""What an incremental resample must redo, as patches: pure, vectorised over symbols.

For each symbol the checkpoint mark and the consolidation manifest say what changed since the
last resample (:func:`change_of`): nothing, everything (the history is unknown), or the rows
from an earliest date. The bars to replace are exactly those of the groups from the one holding
that date on; they start on or after a cut date (:func:`tail_cuts`), and the rows from the cut
on are exactly their rows, so a tail of the history recomputes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from batch.engine import fib
from batch.engine import manifest as mf
from batch.engine.checkpoint import Checkpoint, SymbolMark, mtime_seconds
from batch.engine.fib import Anchor, Daily
from batch.engine.months import month_index, month_of_day
from batch.engine.silver import MAX_DAY, MIN_DAY, Patch
from core import arrays, calendar
from core.lake import Entry
from core.sharding import Shard

WHOLE: Final = None
"""The change of a symbol whose whole history must be redone."""
I64 = npt.NDArray[np.int64]


def change_of(
    entry: Entry, state: mf.SymbolState | None, mark: SymbolMark | None
) -> int | bool | None:
    """What changed since ``mark``: False for nothing, :data:`WHOLE`, or the earliest date32.

    The manifest's history is trusted when it describes the listed data.parquet (same size);
    otherwise only the file's size and mtime tell, and a changed file is redone whole.
    """
    if mark is None:
        return WHOLE
    if state is not None and state.data_size == entry.size and mark.version is not None:
        known, earliest = state.earliest_since(mark.version)
        if not known:
            return WHOLE
        return False if earliest is None else mf.to_days(earliest)
    if mark.size == entry.size and mark.mtime_s == mtime_seconds(entry):
        return False
    return WHOLE


def mark_of(
    entry: Entry, state: mf.SymbolState | None, first_day: int, last_day: int
) -> SymbolMark:
    """The checkpoint mark of a symbol resampled from the listed ``entry``."""
    version = state.version if state is not None and state.data_size == entry.size else None
    return SymbolMark(version, entry.size, mtime_seconds(entry), first_day, last_day)


def tail_cuts(
    daily: Daily, segments: I64, earliest: I64, whole: npt.NDArray[np.bool_], n: int, anchor: Anchor
) -> tuple[I64, I64, npt.NDArray[np.bool_]]:
    """Per segment: (first row to recompute, cut date, whether the rows read reach back).

    calendar: the cut is the day after group g - 1's last session, g the group of the
    earliest change; symbol: the date of the group's first row, g * n.
    """
    first = daily.first_row[segments]
    start = np.zeros(len(segments), dtype=np.int64)
    cut = np.full(len(segments), MIN_DAY, dtype=np.int64)
    reaches = first == 0
    act = ~whole
    if act.any():
        e = earliest[act]
        if anchor == "calendar":
            g = fib.session_k(e.astype(np.int32)) // n
            sessions = calendar.session_days()
            after = sessions[np.clip(g * n - 1, 0, len(sessions) - 1)].astype(np.int64) + 1
            c = np.where(g > 0, after, MIN_DAY)
            cut[act] = c
            start[act] = daily.search(segments[act], c)
            # rows before a tail are dated before its first row, so (rows being sessions) they
            # belong to groups before the first row's: the tail reaches back when g * n does
            head = daily.date[np.clip(daily.offsets[segments[act]], 0, max(daily.rows - 1, 0))]
            reaches[act] |= g * n >= fib.session_k(head.astype(np.int32))
        else:
            pos = first[act] + daily.search(segments[act], e)
            begin = (pos // n) * n
            rel = begin - first[act]
            start[act] = rel
            at = np.clip(daily.offsets[segments[act]] + rel, 0, max(daily.rows - 1, 0))
            cut[act] = np.where(begin > 0, daily.date[at] if daily.rows else MIN_DAY, MIN_DAY)
            reaches[act] |= rel >= 0
    return np.maximum(start, 0), cut, np.asarray(reaches, dtype=bool)


def month_ranges(lo_days: I64, hi_days: I64) -> set[int]:
    """The months of every [lo, hi] date range (date32), as one set."""
    if len(lo_days) == 0:
        return set()
    lo = month_index(lo_days.astype(np.int32)).astype(np.int64)
    hi = month_index(hi_days.astype(np.int32)).astype(np.int64)
    out: set[int] = set()
    for a, b in set(zip(lo.tolist(), hi.tolist(), strict=True)):
        out.update(range(a, b + 1))
    return out


def flip_months(interval: int, old_last: int | None, new_last: int | None) -> set[int]:
    """Months holding calendar bars whose ``complete`` differs between two last dates."""
    if old_last == new_last:
        return set()
    n = int(interval)
    t_old, t_new = fib.sessions_through(old_last), fib.sessions_through(new_last)
    lo, hi = min(t_old, t_new), max(t_old, t_new)
    sessions = calendar.session_days()
    months: set[int] = set()
    # complete flips for the groups whose last session index (g + 1) * n - 1 lies in [lo, hi)
    for g in range(max(0, (lo + 1) // n - 1), hi // n + 1):
        end = (g + 1) * n - 1
        if not lo <= end < hi:
            continue
        # a bar of group g starts after group g - 1's last session (group 0: any early date)
        first = month_of_day(int(sessions[g * n - 1]) + 1) if g > 0 else 0
        last = month_of_day(int(sessions[min(end, len(sessions) - 1)]))
        months.update(range(first, last + 1))
    return months


def _before_bounds(rows: pa.Table, bound: Mapping[str, int]) -> pa.Array:
    """Mask of the bars that start before their symbol's bound (all bars of other symbols)."""
    names = list(bound)
    limits = np.array([*(bound[s] for s in names), MAX_DAY], dtype=np.int64)
    limit = limits[arrays.index_in(rows["symbol"], names)]
    starts = np.asarray(arrays.to_numpy(pc.cast(rows["start_date"], pa.int32())), np.int64)
    return arrays.from_numpy(starts < limit)


@dataclass
class ShardResult:
    """One shard's (or one run's) contribution to an interval: a patch and checkpoint marks."""

    shard: Shard
    full: bool
    anchor: Anchor
    last_day: int | None
    patch: Patch
    marks: dict[str, SymbolMark] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    changed: int = 0


def plan_interval(
    interval: int,
    anchor: Anchor,
    daily: Daily,
    redo: Mapping[str, int | None],
    base: Checkpoint | None,
    marks: Mapping[str, SymbolMark],
    last_day: int | None,
    *,
    shard: Shard,
    full: bool,
    subset: bool,
    deleted: Sequence[str] = (),
    upto: Mapping[str, int] | None = None,
) -> ShardResult:
    """The patch of one interval: bars of ``redo`` (symbol -> earliest change or WHOLE).

    ``daily`` holds rows (whole histories, or tails reaching back far enough) of every symbol
    in ``redo``, and maybe of others. ``upto``: symbols (redone whole) of which only the bars
    starting before that day change (a new split); the others are left in their files.
    """
    n = int(interval)
    index = {s: i for i, s in enumerate(daily.symbols)}
    names = sorted(redo)
    segments = np.array([index[s] for s in names], dtype=np.int64)
    whole = np.array([redo[s] is WHOLE for s in names], dtype=bool)
    earliest = np.array([MIN_DAY if redo[s] is None else redo[s] for s in names], dtype=np.int64)
    start, cut, reaches = tail_cuts(daily, segments, earliest, whole, n, anchor)
    if not bool(reaches.all()):
        missing = [s for s, ok in zip(names, reaches.tolist(), strict=True) if not ok]
        msg = f"rows read for {missing[:5]} do not reach back to their cut"
        raise ValueError(msg)
    if len(names) == len(daily.symbols) and not start.any():
        rows_of = daily  # a full rebuild: every segment whole
    else:
        rows_of = daily.take(segments, start)
    rows = fib.bars(rows_of, n, anchor, last_day)
    bound = {s: d for s, d in (upto or {}).items() if s in redo} if not full else {}
    if bound:
        rows = rows.filter(_before_bounds(rows, bound))
    months: set[int] = set()
    if base is not None and not full:
        held = [base.symbols.get(s) for s in names]
        has = np.array([m is not None for m in held], dtype=bool)
        first = np.array([m.first_day if m else 0 for m in held], dtype=np.int64)
        last = np.array([m.last_day if m else 0 for m in held], dtype=np.int64)
        lo = np.maximum(cut, first)
        hi = np.minimum(last, np.array([bound.get(s, MAX_DAY) for s in names], np.int64) - 1)
        keep = has & (hi >= lo)
        months = month_ranges(lo[keep], hi[keep])
        for s in deleted:
            mark = base.symbols.get(s)
            if mark is not None:
                months.update(range(month_of_day(mark.first_day), month_of_day(mark.last_day) + 1))
    patch = Patch(
        cuts=dict(zip(names, cut.tolist(), strict=True)), rows=rows, months=months, upto=bound
    )
    for s in deleted:
        patch.cuts[s] = MIN_DAY
    if full and not subset:
        patch.cuts = {}
        patch.replace_shards = [shard]
    return ShardResult(
        shard=shard,
        full=full,
        anchor=anchor,
        last_day=last_day,
        patch=patch,
        marks={s: marks[s] for s in names},
        removed=list(deleted),
        changed=len(names),
    )
