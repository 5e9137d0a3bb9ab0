"""What every batch job shares: its command line, symbol selection, and job-run recording.

Jobs need nothing but the lake; when ``DATABASE_URL`` is set each run is also recorded in
``batch_jobs``. A job exits non-zero when anything failed, so a scheduler never sees success
for a partial run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from core import counts as job_counts
from core import layout
from core.lake import Lake, LakeError
from core.schemas import FIB_INTERVALS
from core.settings import BatchSettings
from core.sharding import Shard

log = logging.getLogger("batch")


@dataclass
class JobArgs:
    """Parsed common options."""

    lake: Lake
    symbols: list[str] | None
    intervals: tuple[int, ...]
    dry_run: bool
    shard: Shard
    workers: int
    progress: bool
    extra: argparse.Namespace = field(default_factory=argparse.Namespace)


def non_negative(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"{text!r} is not a whole number >= 0"
        raise argparse.ArgumentTypeError(msg)
    return value


def parser(prog: str, description: str, *, intervals: bool = False) -> argparse.ArgumentParser:
    """An argument parser with the options every job takes."""
    p = argparse.ArgumentParser(prog=f"python -m batch.{prog}", description=description)
    p.add_argument("--lake", metavar="URL", help="lake root (default: $LAKE_URL or ./data/lake)")
    p.add_argument("--symbols", metavar="A,B", help="only these symbols (comma-separated)")
    if intervals:
        p.add_argument(
            "--intervals",
            metavar="3,5",
            default=",".join(map(str, FIB_INTERVALS)),
            help="Fibonacci intervals (default: all six)",
        )
    p.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    p.add_argument("--shard", metavar="I/N", default="0/1", help="only symbols of shard I of N")
    p.add_argument(
        "--workers", type=non_negative, default=0, help="parallel workers (default: cores)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def parse(
    p: argparse.ArgumentParser, argv: Sequence[str] | None = None, *, reads_lake: bool = False
) -> JobArgs:
    """Parse argv into :class:`JobArgs`, exiting with a clear message on bad input.

    ``reads_lake``: the job only reads an existing lake, so a local lake that does not exist or
    a ``--symbols`` name with no folder in it is a usage error (likely a typo), not an empty run.
    """
    ns = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = BatchSettings()
    try:
        shard = Shard.parse(ns.shard)
        symbols = None
        if ns.symbols:
            symbols = [layout.normalise_symbol(s) for s in ns.symbols.split(",") if s.strip()]
        ivals: tuple[int, ...] = FIB_INTERVALS
        if getattr(ns, "intervals", None):
            ivals = tuple(sorted({int(x) for x in ns.intervals.split(",") if x.strip()}))
            bad = [i for i in ivals if i not in FIB_INTERVALS]
            if bad:
                msg = f"unsupported intervals {bad}; choose from {FIB_INTERVALS}"
                raise ValueError(msg)
    except ValueError as exc:
        p.error(str(exc))
    try:
        lake = Lake(
            ns.lake or settings.lake_url,
            endpoint_url=settings.aws_endpoint_url,
            region=settings.aws_default_region,
        )
    except LakeError as exc:
        p.error(str(exc))
    if reads_lake:
        _check_lake(p, lake, symbols)
    workers = ns.workers or settings.batch_workers or (os.cpu_count() or 1)
    return JobArgs(
        lake=lake,
        symbols=symbols,
        intervals=ivals,
        dry_run=ns.dry_run,
        shard=shard,
        workers=workers,
        progress=not ns.no_progress and sys.stderr.isatty(),
        extra=ns,
    )


def _check_lake(p: argparse.ArgumentParser, lake: Lake, symbols: Sequence[str] | None) -> None:
    if lake.is_local and not os.path.isdir(lake.root):
        p.error(f"no lake at {lake.url}: the directory does not exist")
    if symbols:
        known = set(lake_symbols(lake))
        unknown = [s for s in symbols if s not in known]
        if unknown:
            p.error(
                f"unknown symbols {', '.join(unknown)}: no {layout.DAILY}/symbol=NAME/ "
                f"folder in {lake.url}"
            )


def fail_on_symbols(failed: Mapping[str, str], what: str = "symbols failed") -> None:
    """Print each failed symbol's error, then raise so the job exits non-zero."""
    for symbol, error in sorted(failed.items()):
        print(f"FAILED {symbol}: {error}", file=sys.stderr)
    if failed:
        msg = f"{len(failed)} {what}"
        raise RuntimeError(msg)


def lake_symbols(lake: Lake) -> list[str]:
    """Every symbol with a folder under bronze daily."""
    return [
        d.removeprefix("symbol=") for d in lake.list_dirs(layout.DAILY) if d.startswith("symbol=")
    ]


def select_symbols(args: JobArgs, available: Sequence[str]) -> list[str]:
    """The symbols this run touches: ``--symbols`` (or all available) within ``--shard``."""
    chosen = args.symbols if args.symbols is not None else list(available)
    return args.shard.select(sorted(chosen))


@contextmanager
def recorded(job: str, run_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Record the job in Postgres ``batch_jobs`` when DATABASE_URL is set; else only log.

    The counts also go to ``$BATCH_COUNTS_FILE`` when set, even when the job fails.
    """
    settings = BatchSettings()
    run = run_id or os.environ.get("BATCH_RUN_ID") or uuid.uuid4().hex
    counts: dict[str, Any] = {}
    try:
        if settings.database_url is None:
            yield counts
            log.info("%s finished: %s", job, counts)
            return
        from core.stores import postgres

        with postgres.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            postgres.migrate(conn)
            with postgres.job_run(conn, run, job) as held:
                counts = held
                yield held
            log.info("%s finished: %s", job, counts)
    finally:
        job_counts.hand(counts, job)


def main_wrapper(
    fn: Callable[[Sequence[str] | None], int],
) -> Callable[[Sequence[str] | None], int]:
    """Turn an uncaught error into a clear message and exit code 1 (never a silent 0)."""

    def run(argv: Sequence[str] | None = None) -> int:
        try:
            return fn(argv)
        except KeyboardInterrupt:
            log.error("interrupted")
            return 130
        except Exception as exc:
            log.error(
                "failed: %s: %s", type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG)
            )
            return 1

    return run
