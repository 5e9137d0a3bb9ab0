"""Consolidate bronze fragments into one ``symbol=X/data.parquet`` per symbol.

``python -m batch.consolidate`` merges every ``date=`` and ``range=`` fragment not yet merged
(by the manifest: key, size and mtime) into the symbol's data.parquet, under the precedence rule
of :mod:`core.precedence` (newer ``ingested_at`` wins, ``live`` never replaces ``rest``,
deterministic tie-break). Old dates are merged like new ones and the manifest records the
earliest date each write changed, so resampling restarts there.

Order of effects, so a kill at any point and a rerun give the same lake:
1. data.parquet of each symbol is written atomically, carrying its manifest row in its Parquet
   metadata;
2. the tails of the changed symbols (:mod:`batch.engine.tails`, a cache for resampling), then the
   manifest are written (a rerun that finds a data.parquet ahead of the manifest adopts the
   file's row, so nothing is merged twice or forgotten);
3. cleanup: fragments merged, older than the retention and verified row by row against the
   merged table are recorded in the cleanup manifest and then deleted.

Per symbol the work is one small read, a vectorised merge and one write, run in chunks on a
process pool; symbols with nothing new cost no I/O beyond the one listing of bronze.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch.engine import cleanup as cleaner
from batch.engine import common, minutes, minutes_by_symbol, parts, pool, screen, tails
from batch.engine import manifest as mf
from batch.engine.manifest import FragmentId, SymbolState
from core import arrays, layout, precedence
from core.lake import Entry, Lake, reading
from core.schemas import BRONZE_DAILY, conform
from core.settings import BatchSettings
from core.sharding import Shard

log = logging.getLogger("batch.consolidate")

WHOLE_MARKET = Shard()
"""The default shard: every symbol."""
_COMPARED: Final = (*precedence.VALUE_COLUMNS, "source", "ingested_at")
_DICTIONARY: Final = ("symbol", "source")
WORK_SCHEMA: Final = pa.schema(
    [
        f.with_type(pa.dictionary(pa.int32(), pa.string())) if f.name in _DICTIONARY else f
        for f in BRONZE_DAILY
    ]
)
"""How data.parquet is held in memory: the two constant-ish string columns stay dictionary
encoded, which halves their cost to read and write."""


@dataclass
class ConsolidateReport:
    """What one consolidation run did."""

    symbols: int = 0
    changed: int = 0
    fragments_merged: int = 0
    quarantined: int = 0
    rows: int = 0
    earliest_changed: dt.date | None = None
    fragments_deleted: int = 0
    bytes_deleted: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """True when no symbol failed."""
        return not self.failed

    def summary(self) -> str:
        """One line for logs and the console."""
        rate = self.symbols / self.seconds if self.seconds else 0.0
        return (
            f"{'[dry run] ' if self.dry_run else ''}{self.symbols} symbols examined, "
            f"{self.changed} changed, {self.fragments_merged} fragments merged, "
            f"{self.quarantined} rows quarantined, "
            f"earliest change {self.earliest_changed or '-'}, {self.fragments_deleted} fragments "
            f"({self.bytes_deleted} bytes) cleaned up, {len(self.failed)} failed, "
            f"{self.seconds:.2f}s ({rate:.0f} symbols/s)"
        )


@dataclass(frozen=True, slots=True)
class Task:
    """One symbol's input: its listed files and manifest row."""

    symbol: str
    data: Entry | None
    fragments: tuple[FragmentId, ...]
    state: SymbolState | None


@dataclass(slots=True)
class Outcome:
    """One symbol's result."""

    symbol: str
    state: SymbolState | None = None
    merged: int = 0
    earliest: dt.date | None = None
    removals: list[cleaner.Removal] = field(default_factory=list)
    tail: tails.Tail | None = None
    quarantined: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Options:
    """Settings every worker needs."""

    now: dt.datetime
    retention_days: int
    cleanup: bool
    dry_run: bool
    rebuild_missing: bool = False


# -- pure steps ------------------------------------------------------------------------------
def _days(table: pa.Table) -> npt.NDArray[np.int32]:
    return arrays.date_days(table)


def _as(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return table if table.schema.equals(schema) else table.cast(schema)


def merge(data: pa.Table | None, fragments: Sequence[pa.Table]) -> tuple[pa.Table, dt.date | None]:
    """Consolidate ``fragments`` into ``data`` (either may be empty): one row per date.

    Returns the merged table (as :data:`WORK_SCHEMA`) and the earliest date whose row differs
    from ``data``'s (None when nothing changed). New sessions after the history, the daily
    case, skip the full merge.
    """
    frags = [_as(f, BRONZE_DAILY) for f in fragments if f.num_rows]
    old = _as(data, WORK_SCHEMA) if data is not None else arrays.empty_table(WORK_SCHEMA)
    if not frags:
        return old, None
    new = pa.concat_tables(frags) if len(frags) > 1 else frags[0]
    new_days = _days(new)
    if len(new_days) > 1:
        order = np.argsort(new_days, kind="stable")
        sorted_days = new_days[order]
        if bool(np.any(sorted_days[1:] == sorted_days[:-1])):
            new = precedence.merge(new)
            new_days = _days(new)
        elif not bool(np.all(order[1:] > order[:-1])):
            new, new_days = new.take(pa.array(order)), sorted_days
    new = new.cast(WORK_SCHEMA)
    if old.num_rows == 0:
        return new, layout_date(int(new_days[0]))
    if int(new_days[0]) > int(_days(old.slice(old.num_rows - 1))[0]):  # appended sessions
        return pa.concat_tables([old, new]), layout_date(int(new_days[0]))
    plain = old.cast(BRONZE_DAILY)
    merged = precedence.merge(pa.concat_tables([plain, new.cast(BRONZE_DAILY)]))
    return merged.cast(WORK_SCHEMA), earliest_change(plain, merged, new_days)


def earliest_change(
    old: pa.Table, new: pa.Table, candidates: npt.NDArray[np.int32]
) -> dt.date | None:
    """The first of ``candidates`` (date32) whose row in ``new`` differs from ``old``'s."""
    days = np.unique(candidates)
    at_new = np.searchsorted(_days(new), days)
    old_days = _days(old)
    at_old = np.clip(np.searchsorted(old_days, days), 0, len(old_days) - 1)
    changed = old_days[at_old] != days
    a, b = new.take(pa.array(at_new)), old.take(pa.array(at_old))
    for name in _COMPARED:
        eq = pc.fill_null(pc.equal(a[name], b[name]), False)
        both_null = pc.and_(pc.is_null(a[name]), pc.is_null(b[name]))
        changed |= ~np.asarray(arrays.to_numpy(pc.or_(eq, both_null)), bool)
    if not changed.any():
        return None
    return layout_date(int(days[np.flatnonzero(changed)[0]]))


def _first(table: pa.Table) -> dt.date | None:
    return table["date"][0].as_py() if table.num_rows else None


def layout_date(days: int) -> dt.date:
    """A date32 value as a date."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=days)


# -- per-symbol I/O (runs in workers) ----------------------------------------------------------
_LAKE: Lake | None = None


def _init_worker(url: str, endpoint: str | None, region: str | None) -> None:
    global _LAKE
    _LAKE = Lake(url, endpoint_url=endpoint, region=region)
    pool.single_threaded_arrow()


def read_data(lake: Lake, key: str, *, dictionary: Sequence[str] = ()) -> pa.Table:
    """Read one Parquet file whole (faster than a dataset read for one small file)."""
    with reading(key):
        source = pa.BufferReader(lake.read_bytes(key))  # one read: cheaper than ranged reads
        f = pq.ParquetFile(source, read_dictionary=list(dictionary) or None)
        return f.read(use_threads=False)


def read_consolidated(lake: Lake, key: str, *, decoded: bool = False) -> pa.Table:
    """A data.parquet as :data:`WORK_SCHEMA` (or BRONZE_DAILY with ``decoded``).

    Its Parquet metadata (the manifest row it carries) is kept on the table's schema.
    """
    raw = read_data(lake, key, dictionary=_DICTIONARY)
    meta = raw.schema.metadata
    table = raw if raw.schema.equals(WORK_SCHEMA) else conform(raw, BRONZE_DAILY)
    table = _as(table, BRONZE_DAILY if decoded else WORK_SCHEMA)  # a cast copies every column
    return table.replace_schema_metadata(meta)


def read_fragment(lake: Lake, symbol: str, key: str) -> pa.Table:
    """Read a fragment, conformed to the contract; it must hold only ``symbol``."""
    table = read_data(lake, key)
    if not table.schema.equals(BRONZE_DAILY):
        with reading(key):
            table = conform(table, BRONZE_DAILY)
    if table.num_rows and (
        table["symbol"][0].as_py() != symbol or pc.count_distinct(table["symbol"]).as_py() != 1
    ):
        msg = f"{key} holds rows of another symbol"
        raise ValueError(msg)
    return table


def data_bytes(table: pa.Table, state: SymbolState) -> pa.Buffer:
    """The bytes of a data.parquet.

    Floats byte-stream-split then LZ4: a third of zstd's CPU time to write and faster to read,
    for files a third larger; statistics where readers filter (symbol, date); the manifest row
    in the metadata; no stored Arrow schema, so every reader sees the contract's plain types.
    """
    table = table.replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(
        sink,
        table.schema,
        compression="lz4",
        use_dictionary=list(_DICTIONARY),
        use_byte_stream_split=["open", "high", "low", "close", "volume", "vwap"],
        write_statistics=["symbol", "date"],
        store_schema=False,
        sorting_columns=[pq.SortingColumn(1)],
    ) as writer:
        writer.write_table(table, row_group_size=max(1, table.num_rows))
        writer.add_key_value_metadata({mf.DATA_META_KEY: state.to_data_meta()})
    return sink.getvalue()  # the Arrow buffer itself: written as is, no copy to bytes


def write_data(lake: Lake, symbol: str, table: pa.Table, state: SymbolState) -> int:
    """Write data.parquet atomically with ``state`` in its metadata; returns its size."""
    buf = data_bytes(table, state)
    lake.write_bytes(layout.consolidated(symbol), buf)
    return int(buf.size)


def unmerged(listed: Iterable[FragmentId], merged: Iterable[FragmentId]) -> list[FragmentId]:
    """The listed fragments the manifest has not merged, in key order."""
    known = set(merged)
    return sorted(f for f in listed if f not in known)


Screened = tuple[pa.Table, list[str], pa.Table]
"""A fragment after the screen: (accepted rows, reasons of the refused, refused rows)."""


class MissingDataError(RuntimeError):
    """A data.parquet the manifest records is gone; merging into nothing would lose history."""


def _missing(task: Task, state: SymbolState, opts: Options) -> SymbolState:
    """The state to rebuild a lost data.parquet from the fragments still in bronze, if asked."""
    if not opts.rebuild_missing:
        msg = (
            f"{layout.consolidated(task.symbol)} is missing, but the manifest records "
            f"{state.rows} rows from {state.first_date} to {state.last_date}; restore the file, "
            f"or rerun with --rebuild-missing to rebuild it from the fragments still in bronze "
            f"(dates whose fragments were cleaned up are then lost)"
        )
        raise MissingDataError(msg)
    log.warning("%s: rebuilding the missing data.parquet from its fragments", task.symbol)
    rebuilt = state.with_change(state.first_date or dt.date(1962, 1, 2), opts.now)
    return dataclasses.replace(
        rebuilt, fragments=[], rows=0, first_date=None, last_date=None, data_size=0
    )


def consolidate_symbol(
    task: Task, opts: Options, lake: Lake, screened: Mapping[FragmentId, Screened] | None = None
) -> Outcome:
    """Merge one symbol's new fragments and pick its fragments safe to clean up.

    ``screened``: fragments already read and screened (:func:`screen_chunk`); others are read.
    """
    listed = set(task.fragments)
    state = dataclasses.replace(task.state) if task.state else SymbolState(task.symbol)
    data: pa.Table | None = None
    if task.data is not None:
        data = read_consolidated(lake, task.data.key)
        meta = (data.schema.metadata or {}).get(mf.DATA_META_KEY)
        carried = SymbolState.from_data_meta(meta) if meta is not None else None
        if carried is not None and carried.version > state.version:
            carried.revision = state.revision  # killed after the data write: adopt its state
            state = carried
        elif task.state is not None and task.data.size != task.state.data_size:
            # rewritten outside this job: record a change from its first date, so resampling
            # redoes the whole symbol
            firsts = [d for d in (state.first_date, _first(data)) if d is not None]
            state = state.with_change(min(firsts, default=dt.date(1962, 1, 2)), opts.now)
        state.data_size = task.data.size
        state.rows = data.num_rows
        state.first_date = data["date"][0].as_py() if data.num_rows else None
        state.last_date = data["date"][-1].as_py() if data.num_rows else None
    elif state.rows > 0:  # the manifest records a data.parquet that is gone
        state = _missing(task, state, opts)
    state.fragments = sorted(f for f in state.fragments if f in listed)
    new_ids = unmerged(listed, state.fragments)
    out = Outcome(task.symbol, merged=len(new_ids))
    new_tables = {}
    checked: dict[FragmentId, Screened] = {}
    for f in new_ids:
        if screened is not None and f in screened:
            checked[f] = screened[f]
        else:
            checked[f] = screen.split(read_fragment(lake, task.symbol, f.key))
        new_tables[f], reasons, refused = checked[f]
        if reasons:  # kept out of data.parquet, and the fragment stays until they are filed
            out.quarantined += refused.num_rows
            if not opts.dry_run:
                screen.quarantine(lake, task.symbol, refused, reasons, opts.now)
    if new_tables:
        merged, earliest = merge(data, list(new_tables.values()))
        state.fragments = sorted([*state.fragments, *new_ids])
        if earliest is not None:
            state = state.with_change(earliest, opts.now)
            state.rows = merged.num_rows
            state.first_date = _first(merged)
            state.last_date = merged["date"][-1].as_py()
            if not opts.dry_run:
                state.data_size = write_data(lake, task.symbol, merged, state)
            out.earliest = earliest
        data = merged
    if opts.cleanup and data is not None:
        for f in state.fragments:
            if cleaner.is_due(f, opts.now, opts.retention_days):
                result = checked.get(f) or (screened or {}).get(f)
                if result is None:
                    result = screen.split(read_fragment(lake, task.symbol, f.key))
                if cleaner.verified(lake, task.symbol, data, result):
                    whole = pa.concat_tables([result[0], result[2]])
                    out.removals.append(cleaner.removal(task.symbol, f, whole))
    if task.state is None or state != task.state:
        state.revision = (task.state.revision if task.state else 0) + 1
        out.state = state
    old_version = task.state.version if task.state else 0
    if data is not None and data.num_rows and state.version > old_version:
        reaches, since = state.earliest_since(old_version)
        start = mf.to_days(since) if reaches and since is not None else -(2**31)
        out.tail = tails.tail_of(data, state.version, start)
    return out


def screen_chunk(
    tasks: Sequence[Task], lake: Lake, opts: Options | None = None
) -> dict[FragmentId, Screened]:
    """Read the fragments the manifest has not merged yet and screen them in one pass.

    With ``opts`` asking for cleanup, merged fragments due for it are screened along, since
    verifying one needs its refused rows. A fragment that cannot be read is left out: its
    symbol reads it again and reports the error.
    """
    ids, tables = [], []
    for task in tasks:
        merged = task.state.fragments if task.state else []
        listed = set(task.fragments)
        due = [
            f
            for f in merged
            if opts is not None
            and opts.cleanup
            and f in listed
            and cleaner.is_due(f, opts.now, opts.retention_days)
        ]
        for f in [*unmerged(task.fragments, merged), *due]:
            try:
                tables.append(read_fragment(lake, task.symbol, f.key))
            except Exception:  # consolidate_symbol reads it again and reports it
                log.debug("%s: cannot read %s yet", task.symbol, f.key, exc_info=True)
                continue
            ids.append(f)
    try:
        results = screen.split_many(tables)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # schemas that do not concatenate
        results = [screen.split(t) for t in tables]
    return dict(zip(ids, results, strict=True))


def _work_chunk(items: Sequence[tuple[Task, Options]]) -> list[Outcome]:
    assert _LAKE is not None, "worker not initialised"
    try:
        screened = screen_chunk([task for task, _ in items], _LAKE, items[0][1] if items else None)
    except Exception:  # each symbol then reads and screens its own fragments
        log.debug("screening a chunk failed; screening per symbol", exc_info=True)
        screened = {}
    out = []
    for task, opts in items:
        try:
            out.append(consolidate_symbol(task, opts, _LAKE, screened))
        except Exception as exc:  # reported per symbol; the run exits non-zero
            log.debug("consolidating %s failed", task.symbol, exc_info=True)
            out.append(Outcome(task.symbol, error=f"{type(exc).__name__}: {exc}"))
    return out


# -- planning --------------------------------------------------------------------------------
def listing(lake: Lake) -> dict[str, tuple[Entry | None, list[FragmentId]]]:
    """Per symbol: its data.parquet entry and its fragments, from one listing of bronze."""
    out: dict[str, tuple[Entry | None, list[FragmentId]]] = defaultdict(lambda: (None, []))
    data: dict[str, Entry] = {}
    frags: dict[str, list[FragmentId]] = defaultdict(list)
    strays = []
    for e in lake.list(layout.DAILY, suffix=".parquet"):
        parsed = layout.parse_fragment(e.key)
        if parsed is not None:
            frags[parsed[0]].append(FragmentId.of(e))
        elif e.key.endswith("/data.parquet"):
            symbol = e.key.rsplit("/", 2)[-2].removeprefix("symbol=")
            data[symbol] = e
        else:
            strays.append(e.key)
    if strays:
        log.warning(
            "ignoring %d files in bronze named neither date=YYYY-MM-DD.parquet, "
            "range=FIRST_LAST.parquet nor data.parquet, e.g. %s",
            len(strays),
            ", ".join(strays[:3]),
        )
    for symbol in sorted({*data, *frags}):
        out[symbol] = (data.get(symbol), sorted(frags.get(symbol, [])))
    return dict(out)


def needs_work(task: Task, opts: Options) -> bool:
    """False when the symbol has nothing to merge, adopt or clean up."""
    state = task.state
    if state is None:
        return True
    if task.data is not None and task.data.size != state.data_size:
        return True  # data.parquet ahead of the manifest, or rewritten by someone else
    if task.data is None and state.rows > 0:
        return True  # data.parquet lost: an error, or a rebuild with --rebuild-missing
    known = set(state.fragments)
    if any(f not in known for f in task.fragments):
        return True
    return opts.cleanup and any(
        cleaner.is_due(f, opts.now, opts.retention_days) for f in task.fragments
    )


def run(
    lake: Lake,
    symbols: Sequence[str] | None = None,
    shard: Shard = WHOLE_MARKET,
    workers: int = 0,
    dry_run: bool = False,
    *,
    cleanup: bool = True,
    rebuild_missing: bool = False,
    retention_days: int | None = None,
    progress: bool = False,
    now: dt.datetime | None = None,
) -> ConsolidateReport:
    """Merge every fragment not yet merged; see the module docstring."""
    started = time.perf_counter()
    pool.tune_memory()
    opts = Options(
        now=now or dt.datetime.now(dt.UTC),
        retention_days=(
            retention_days
            if retention_days is not None
            else BatchSettings().fragment_retention_days
        ),
        cleanup=cleanup,
        dry_run=dry_run,
        rebuild_missing=rebuild_missing,
    )
    files = listing(lake)
    states = mf.read(lake)
    chosen = sorted(symbols) if symbols is not None else sorted(files)
    chosen = [s for s in shard.select(chosen) if s in files]
    tasks = [Task(s, files[s][0], tuple(files[s][1]), states.get(s)) for s in chosen]
    todo = [t for t in tasks if needs_work(t, opts)]
    report = ConsolidateReport(symbols=len(chosen), dry_run=dry_run)
    outcomes = pool.map_chunks(
        _work_chunk,
        [(t, opts) for t in todo],
        workers=workers,
        progress=progress,
        desc="consolidate",
        initializer=_init_worker,
        initargs=(lake.url, lake.endpoint_url, lake.region),
        fork=lake.is_local,
    )
    removals: list[cleaner.Removal] = []
    for o in outcomes:
        if o.error is not None:
            report.failed[o.symbol] = o.error
            continue
        report.fragments_merged += o.merged
        report.quarantined += o.quarantined
        if o.state is not None:
            states[o.symbol] = o.state
        if o.earliest is not None:
            report.changed += 1
            report.rows += o.state.rows if o.state else 0
            if report.earliest_changed is None or o.earliest < report.earliest_changed:
                report.earliest_changed = o.earliest
        removals.extend(o.removals)
    if not dry_run:
        tails.write(lake, {o.symbol: o.tail for o in outcomes if o.tail is not None}, shard)
        folding = shard.count == 1 and parts.part_keys(lake, layout.consolidation_manifest())
        if any(o.state is not None for o in outcomes) or folding:
            mf.write(lake, states, shard)
        cleaner.remove(lake, removals, shard, at=opts.now, by="consolidate")
    report.fragments_deleted = len(removals)
    report.bytes_deleted = sum(r.fragment.size for r in removals)
    report.seconds = time.perf_counter() - started
    return report


@common.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m batch.consolidate``."""
    p = common.parser(
        "consolidate",
        "Merge bronze fragments (date= and range=) into symbol=X/data.parquet, incrementally "
        "through processing_metadata/consolidation_manifest.parquet, then clean up merged "
        "fragments older than the retention.",
    )
    p.add_argument(
        "--retention-days",
        type=common.non_negative,
        default=None,
        help="keep merged fragments this many days (default: $FRAGMENT_RETENTION_DAYS or 7)",
    )
    p.add_argument("--no-cleanup", action="store_true", help="merge only; delete nothing")
    p.add_argument(
        "--rebuild-missing",
        action="store_true",
        help="rebuild a data.parquet the manifest records but that is gone, from the fragments "
        "still in bronze (without it, such a symbol fails)",
    )
    p.add_argument(
        "--minutes",
        action="store_true",
        help="merge minute fragments instead: bronze/raw_ohlcv_1m/date=D/part-*.parquet into "
        "date=D/data.parquet per session (rest beats live, higher revision, partial never wins), "
        "then rebuild the per-symbol month files of the months that changed "
        "(bronze/raw_ohlcv_1m_by_symbol/month=YYYY-MM/symbol=S.parquet)",
    )
    p.add_argument(
        "--sessions",
        metavar="D1,D2",
        help="with --minutes: only these sessions (YYYY-MM-DD; default: every session)",
    )
    args = common.parse(p, argv, reads_lake=True)
    if args.extra.minutes:
        return _minutes(p, args)
    with common.recorded("consolidate") as counts:
        report = run(
            args.lake,
            symbols=args.symbols,
            shard=args.shard,
            workers=args.workers,
            dry_run=args.dry_run,
            cleanup=not args.extra.no_cleanup,
            rebuild_missing=args.extra.rebuild_missing,
            retention_days=args.extra.retention_days,
            progress=args.progress,
        )
        counts.update(
            symbols=report.symbols,
            changed=report.changed,
            fragments_merged=report.fragments_merged,
            quarantined=report.quarantined,
            fragments_deleted=report.fragments_deleted,
            failed=len(report.failed),
        )
        print(report.summary())
        common.fail_on_symbols(report.failed)
    return 0


def _minutes(p: argparse.ArgumentParser, args: common.JobArgs) -> int:
    days = None
    if args.extra.sessions:
        try:
            days = sorted(
                {dt.date.fromisoformat(d.strip()) for d in args.extra.sessions.split(",")}
            )
        except ValueError as exc:
            p.error(f"--sessions: {exc}")
    with common.recorded("consolidate_minutes") as counts:
        report = minutes.run(args.lake, days, dry_run=args.dry_run)
        by_symbol = minutes_by_symbol.run(args.lake, days, dry_run=args.dry_run)
        counts.update(
            sessions=report.sessions, merged=report.merged, fragments=report.fragments,
            rows=report.rows, failed=len(report.failed) + len(by_symbol.failed),
            months_rebuilt=by_symbol.built, month_files=by_symbol.files,
        )  # fmt: skip
        print(report.summary())
        print(by_symbol.summary())
        common.fail_on_symbols(
            {**report.failed, **{f"month {m}": e for m, e in by_symbol.failed.items()}},
            "sessions or months failed",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(None))
