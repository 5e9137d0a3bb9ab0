"""Delete bronze fragments whose rows are verified present in data.parquet.

``python -m batch.vacuum`` removes a fragment only when the consolidation manifest records it
as merged (same key, size and mtime), it is older than the retention (``--retention-days``,
default ``FRAGMENT_RETENTION_DAYS`` or 7) and every one of its rows is in data.parquet or
superseded there (see :mod:`batch.engine.cleanup`). ``--dry-run`` lists the files and bytes it would
remove. Removals are recorded in ``processing_metadata/cleanup_manifest.parquet`` before the
files go, so a killed run is simply run again.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from batch.consolidate import listing, read_data, read_fragment
from batch.engine import cleanup as cleaner
from batch.engine import common, pool, screen
from batch.engine import manifest as mf
from batch.engine.manifest import FragmentId
from core import arrays, layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY, conform
from core.settings import BatchSettings
from core.sharding import Shard

log = logging.getLogger("batch.vacuum")

WHOLE_MARKET = Shard()
"""The default shard: every symbol."""


@dataclass
class VacuumReport:
    """What one vacuum run removed (or would remove, with ``dry_run``)."""

    symbols: int = 0
    fragments: int = 0
    bytes: int = 0
    kept_unverified: int = 0
    kept_unmerged: int = 0
    removed: list[tuple[str, int]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no symbol failed."""
        return not self.failed

    def summary(self) -> str:
        """One line for logs and the console."""
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"{'[dry run] ' if self.dry_run else ''}{self.symbols} symbols examined, {verb} "
            f"{self.fragments} fragments ({self.bytes} bytes); kept {self.kept_unverified} not "
            f"verified in data.parquet and {self.kept_unmerged} not recorded as merged; "
            f"{len(self.failed)} failed, {self.seconds:.2f}s"
        )


@dataclass(frozen=True, slots=True)
class _Task:
    symbol: str
    candidates: tuple[FragmentId, ...]


@dataclass(slots=True)
class _Outcome:
    symbol: str
    removals: list[cleaner.Removal] = field(default_factory=list)
    unverified: int = 0
    error: str | None = None


_LAKE: Lake | None = None


def _init_worker(url: str, endpoint: str | None, region: str | None) -> None:
    global _LAKE
    _LAKE = Lake(url, endpoint_url=endpoint, region=region)


def verify_symbol(lake: Lake, task: _Task) -> _Outcome:
    """Check each candidate of one symbol against its data.parquet."""
    out = _Outcome(task.symbol)
    try:
        key: str | None = layout.consolidated(task.symbol)
    except layout.LayoutError:  # a name never merged: its rows can only be in the quarantine
        key = None
    if key is not None and lake.exists(key):
        data = conform(read_data(lake, key), BRONZE_DAILY)
    else:
        data = arrays.empty_table(BRONZE_DAILY)
    for f in task.candidates:
        accepted, reasons, refused = screen.split(read_fragment(lake, task.symbol, f.key))
        if cleaner.verified(lake, task.symbol, data, (accepted, reasons, refused)):
            whole = pa.concat_tables([accepted, refused])
            out.removals.append(cleaner.removal(task.symbol, f, whole))
        else:
            out.unverified += 1
            log.warning("keeping %s: not all its rows are in data.parquet or the quarantine", f.key)
    return out


def _work(task: _Task) -> _Outcome:
    assert _LAKE is not None, "worker not initialised"
    try:
        return verify_symbol(_LAKE, task)
    except Exception as exc:  # reported per symbol; the run exits non-zero
        log.debug("vacuum of %s failed", task.symbol, exc_info=True)
        return _Outcome(task.symbol, error=f"{type(exc).__name__}: {exc}")


def run(
    lake: Lake,
    symbols: Sequence[str] | None = None,
    shard: Shard = WHOLE_MARKET,
    workers: int = 0,
    dry_run: bool = False,
    *,
    retention_days: int | None = None,
    progress: bool = False,
    now: dt.datetime | None = None,
) -> VacuumReport:
    """Remove merged, verified fragments older than the retention."""
    started = time.perf_counter()
    now = now or dt.datetime.now(dt.UTC)
    days = retention_days if retention_days is not None else BatchSettings().fragment_retention_days
    files = listing(lake)
    states = mf.read(lake)
    chosen = sorted(symbols) if symbols is not None else sorted(files)
    chosen = [s for s in shard.select(chosen) if s in files]
    report = VacuumReport(symbols=len(chosen), dry_run=dry_run)
    tasks = []
    for s in chosen:
        merged = set(states[s].fragments) if s in states else set()
        due = [f for f in files[s][1] if cleaner.is_due(f, now, days)]
        report.kept_unmerged += sum(f not in merged for f in due)
        if candidates := tuple(f for f in due if f in merged):
            tasks.append(_Task(s, candidates))
    outcomes = pool.map_items(
        _work,
        tasks,
        workers=workers,
        progress=progress,
        desc="vacuum",
        initializer=_init_worker,
        initargs=(lake.url, lake.endpoint_url, lake.region),
    )
    removals: list[cleaner.Removal] = []
    for o in outcomes:
        if o.error is not None:
            report.failed[o.symbol] = o.error
            continue
        removals.extend(o.removals)
        report.kept_unverified += o.unverified
    if not dry_run:
        cleaner.remove(lake, removals, shard, at=now, by="vacuum")
    report.removed = [(r.fragment.key, r.fragment.size) for r in removals]
    report.fragments = len(removals)
    report.bytes = sum(r.fragment.size for r in removals)
    report.seconds = time.perf_counter() - started
    return report


@common.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m batch.vacuum``."""
    p = common.parser(
        "vacuum",
        "Delete bronze fragments that are merged, older than the retention and verified row by "
        "row in data.parquet; record them in processing_metadata/cleanup_manifest.parquet.",
    )
    p.add_argument(
        "--retention-days",
        type=common.non_negative,
        default=None,
        help="only fragments older than this (default: $FRAGMENT_RETENTION_DAYS or 7)",
    )
    args = common.parse(p, argv, reads_lake=True)
    with common.recorded("vacuum") as counts:
        report = run(
            args.lake,
            symbols=args.symbols,
            shard=args.shard,
            workers=args.workers,
            dry_run=args.dry_run,
            retention_days=args.extra.retention_days,
            progress=args.progress,
        )
        counts.update(
            symbols=report.symbols,
            fragments=report.fragments,
            bytes=report.bytes,
            kept_unverified=report.kept_unverified,
            failed=len(report.failed),
        )
        if report.dry_run:
            for key, size in report.removed:
                print(f"{size:>12}  {key}")
        print(report.summary())
        common.fail_on_symbols(report.failed)
    return 0


if __name__ == "__main__":
    sys.exit(main(None))
