"""The daily replay flow: Polygon grouped daily -> validation -> bronze, Postgres, ledger.

    sessions to fetch (ledger vs calendar) --> partitions of sessions (FixedPartitionedSource)
        --> one grouped-daily request per session (thread pool, rate limited), emitted in order
        --> validate: rejected rows -> quarantine/rest/{date}/part-grouped-daily.parquet
        --> store: raw_ohlcv upserts in the background as sessions arrive (cache window);
            at each chunk's end one bronze file per symbol, then the ledger

This module chooses the sessions and builds the flow; its parts live apart: the source in
:mod:`dataflows.connectors.grouped_daily`, the checks in :mod:`dataflows.session_checks`, the
store in :mod:`dataflows.connectors.replay_store`, the report in :mod:`dataflows.replay_report`.

Run it with ``python -m bytewax.run dataflows.replay:flow`` (add ``-r DIR -s S -b B`` for
recovery), or ``python -m dataflows.replay`` (flags; the same flow, in-process). ``flow`` is
built on first access from :class:`core.settings.ReplaySettings`: ``REPLAY_START`` and
``REPLAY_END`` bound the range (default: ``REPLAY_HISTORY_START`` .. the last settled session),
``REPLAY_SESSIONS`` names sessions to fetch whatever the ledger says. By default every session
in the range that the ledger does not hold as complete is fetched; holidays never are.

Chunks: ``REPLAY_CHUNK_SESSIONS`` sessions are written together, one ``range=`` (or ``date=``)
file per symbol; 0 (the default) makes a partition one chunk, so a replay writes at most one
file per symbol, holding its validated rows as Arrow (about 100 MB a year of the whole market)
until then. Smaller chunks make progress durable sooner.

Durability: a session is marked complete in the ledger only after its quarantine file, its
bronze file and its Postgres rows are durable, and the source's recovery state (sessions done)
is committed by Bytewax only after the store has finished that epoch. A crash refetches at most
the chunk in flight; every write is keyed by content, so the refetch overwrites, never
duplicates.

At the end a summary goes to stderr; with ``python -m bytewax.run`` the process exits 1 when a
session failed (Bytewax has no hook for an exit status, so an ``atexit`` hook sets it after
Bytewax has shut down cleanly). Empty sessions (no rows yet) are reported, stay incomplete and
are fetched again by the next run; they do not fail it.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
import psycopg
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink

from core import calendar
from core import counts as job_counts
from core.cli import iso_date
from core.lake import Lake
from core.secrets import install_redaction
from core.settings import ReplaySettings
from core.stores import ledger
from core.stores.postgres import database_url, migrate
from dataflows.connectors.grouped_daily import SessionSource
from dataflows.connectors.polygon import PolygonConfigError, PolygonGateway
from dataflows.connectors.replay_store import ReplayStore, StoreConfig
from dataflows.replay_report import ReplayReport
from dataflows.session_checks import Checked, ChunkEnd, check_item

log = logging.getLogger(__name__)


# -- which sessions -----------------------------------------------------------------------------
def parse_sessions(text: str | None) -> list[dt.date]:
    """``REPLAY_SESSIONS`` (comma or space separated ISO dates) as sorted unique dates."""
    if not text:
        return []
    out: set[dt.date] = set()
    for token in text.replace(",", " ").split():
        try:
            out.add(dt.date.fromisoformat(token))
        except ValueError:
            msg = f"REPLAY_SESSIONS: {token!r} is not a date (expected YYYY-MM-DD)"
            raise ValueError(msg) from None
    return sorted(out)


def missing_sessions(
    conn: psycopg.Connection[Any],
    start: dt.date,
    end: dt.date,
    now: dt.datetime,
    *,
    settle: dt.timedelta = dt.timedelta(minutes=60),
) -> list[dt.date]:
    """Sessions in [start, end] settled by ``now`` and not complete in the ledger."""
    return ledger.missing_sessions(conn, start, end, now, settle)


def sessions_to_fetch(
    settings: ReplaySettings, conn: psycopg.Connection[Any], now: dt.datetime
) -> list[dt.date]:
    """``REPLAY_SESSIONS`` when given (only real, settled sessions), else the missing ones."""
    settle = dt.timedelta(minutes=settings.settle_minutes)
    explicit = parse_sessions(settings.replay_sessions)
    if explicit:
        settled = set(calendar.settled_sessions(explicit[0], explicit[-1], now, settle))
        skipped = [d for d in explicit if d not in settled]
        if skipped:
            log.warning(
                "replay: not requesting %s: not XNYS sessions or not settled yet",
                ", ".join(d.isoformat() for d in skipped),
            )
        return [d for d in explicit if d in settled]
    start = settings.replay_start or settings.replay_history_start
    end = settings.replay_end or now.astimezone(calendar.NEW_YORK).date()
    if end < start:
        msg = f"REPLAY_END {end} is before REPLAY_START {start}"
        raise ValueError(msg)
    return missing_sessions(conn, start, end, now, settle=settle)


# -- the flow -----------------------------------------------------------------------------------
def build_flow(source: SessionSource, store: DynamicSink[Checked | ChunkEnd]) -> Dataflow:
    """The replay dataflow from a session source to a store sink (tests inject their own)."""
    flow = Dataflow("replay")
    chunks = op.input("sessions", flow, source)
    checked = op.map("validate", chunks, check_item)
    op.output("store", checked, store)
    return flow


@dataclass
class Replay:
    """A built flow and the report its store fills."""

    flow: Dataflow
    report: ReplayReport
    sessions: list[dt.date]
    gateway: PolygonGateway


def prepare(
    settings: ReplaySettings | None = None,
    *,
    sessions: Sequence[dt.date] | None = None,
    now: dt.datetime | None = None,
    gateway: PolygonGateway | None = None,
) -> Replay:
    """Resolve the sessions (ledger or explicit) and build the flow with its report."""
    install_redaction()  # before any key is read: every path to the flow comes through here
    s = settings or ReplaySettings()
    gw = gateway or PolygonGateway.from_settings(s)  # fail fast on a missing key/URL
    db_url = database_url(s)
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn)
        if sessions is None:
            todo = sessions_to_fetch(s, conn, now or dt.datetime.now(dt.UTC))
        else:
            todo = sorted(set(d for d in sessions if calendar.is_session(d)))
    lake = Lake(s.lake_url, endpoint_url=s.aws_endpoint_url, region=s.aws_default_region)
    report = ReplayReport(requested=len(todo))
    source = SessionSource(
        todo,
        gw,
        partitions=s.replay_partitions,
        chunk_sessions=s.replay_chunk_sessions,
        concurrency=s.replay_fetch_concurrency,
    )
    store = ReplayStore(StoreConfig(lake, db_url, s.cache_window_days), report)
    if todo:
        print(
            f"replay: {len(todo)} sessions to fetch, {todo[0]} .. {todo[-1]}",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(
            "replay: nothing to fetch (no incomplete, settled XNYS session asked for)",
            file=sys.stderr,
            flush=True,
        )
    return Replay(build_flow(source, store), report, todo, gw)


def build_replay_flow(
    settings: ReplaySettings | None = None, *, sessions: Sequence[dt.date] | None = None
) -> Dataflow:
    """The replay flow of the settings (or of explicit ``sessions``)."""
    return prepare(settings, sessions=sessions).flow


def run(
    settings: ReplaySettings | None = None,
    sessions: Sequence[dt.date] | None = None,
    *,
    now: dt.datetime | None = None,
    gateway: PolygonGateway | None = None,
) -> ReplayReport:
    """Run the flow in this process (one worker) and return its report."""
    from bytewax.testing import run_main

    started = time.monotonic()
    replay = prepare(settings, sessions=sessions, now=now, gateway=gateway)
    try:
        run_main(replay.flow)  # type: ignore[no-untyped-call]
    finally:
        if gateway is None:
            replay.gateway.close()
    replay.report.seconds = time.monotonic() - started
    print(replay.report.summary(), file=sys.stderr, flush=True)
    return replay.report


_EXIT_REPORTS: list[ReplayReport] = []


def _exit_status() -> None:
    """At interpreter exit (after Bytewax finished): summary, and status 1 on failures."""
    for report in _EXIT_REPORTS:
        print(report.summary(), file=sys.stderr, flush=True)
        job_counts.hand(report.counts())
    if any(not r.ok for r in _EXIT_REPORTS):
        sys.stdout.flush()
        os._exit(1)


def _module_flow() -> Dataflow:
    from dataflows.simulator.embedded import with_embedded_source

    try:
        replay = prepare(with_embedded_source(ReplaySettings()))
    except PolygonConfigError as exc:
        print(f"replay: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    if not _EXIT_REPORTS:
        atexit.register(_exit_status)
    _EXIT_REPORTS.append(replay.report)
    return replay.flow


def __getattr__(name: str) -> Any:
    """Build ``flow`` lazily, so importing this module reads no settings and opens nothing."""
    if name == "flow":
        built = _module_flow()
        globals()["flow"] = built
        return built
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


# -- CLI ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dataflows.replay``: the replay flow in-process; exit 1 if a session failed."""
    p = argparse.ArgumentParser(
        prog="python -m dataflows.replay",
        description="Replay Polygon grouped-daily bars into the lake and Postgres. Settings come "
        "from the environment (LAKE_URL, DATABASE_URL, POLYGON_REST_URL or POLYGON_API_KEY, ...); "
        "flags override the range.",
    )
    p.add_argument("--start", type=iso_date, help="first session (REPLAY_START)")
    p.add_argument("--end", type=iso_date, help="last session (REPLAY_END)")
    p.add_argument("--sessions", help="comma-separated sessions to fetch regardless of the ledger")
    p.add_argument("--chunk", type=int, help="sessions per durable write (0: all)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = p.parse_args(argv)
    install_redaction()  # before the first log line: the Polygon key must never reach a log
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    over: dict[str, Any] = {}
    if args.start:
        over["replay_start"] = args.start
    if args.end:
        over["replay_end"] = args.end
    if args.sessions:
        over["replay_sessions"] = args.sessions
    if args.chunk is not None:
        over["replay_chunk_sessions"] = args.chunk
    try:
        from dataflows.simulator.embedded import with_embedded_source

        report = run(with_embedded_source(ReplaySettings(**over)))
    except PolygonConfigError as exc:
        print(f"replay: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
