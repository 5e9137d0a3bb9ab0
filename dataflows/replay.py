"""The daily replay flow: Polygon grouped daily -> validation -> bronze, Postgres, ledger.

    sessions to fetch (ledger vs calendar) --> partitions of sessions (FixedPartitionedSource)
        --> one grouped-daily request per session (thread pool, rate limited), emitted in order
        --> validate: rejected rows -> quarantine/rest/{date}/part-grouped-daily.parquet
        --> store: raw_ohlcv upserts in the background as sessions arrive (cache window);
            at each chunk's end one bronze file per symbol, then the ledger

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
import queue
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, cast

import bytewax.operators as op
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core import calendar
from core import counts as job_counts
from core.bronze import BronzeWriter
from core.cli import iso_date
from core.lake import Lake
from core.layout import quarantine_part
from core.schemas import BRONZE_DAILY, QUARANTINE
from core.secrets import install_redaction
from core.settings import ReplaySettings
from core.stores import ledger
from core.stores.ledger import SessionOutcome
from core.stores.postgres import database_url, migrate, upsert_daily
from core.validation import check_daily, quarantine_payloads, quarantine_table
from dataflows.connectors.polygon import (
    PolygonConfigError,
    PolygonError,
    PolygonGateway,
    grouped_table,
)

log = logging.getLogger(__name__)
SOURCE: Final = "rest"
QUARANTINE_PART: Final = "grouped-daily"
"""Part id of a session's rejected rows: one file per session, rewritten by a refetch."""


# -- what travels through the flow ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Fetch:
    """One session's grouped-daily answer, or why there is none."""

    session: dt.date
    table: pa.Table
    """The answer's rows as columns (:func:`grouped_table`), converted in the fetch thread."""
    junk: list[dict[str, Any]]
    """Entries that were not JSON objects at all."""
    attempts: int
    fetched_at: dt.datetime
    error: str | None = None
    part: str = ""

    @property
    def rows(self) -> int:
        """Entries in the answer."""
        return int(self.table.num_rows) + len(self.junk)

    @classmethod
    def of(
        cls,
        session: dt.date,
        results: list[Any],
        attempts: int,
        fetched_at: dt.datetime,
        error: str | None = None,
        *,
        part: str = "",
    ) -> Fetch:
        """A Fetch of raw result entries."""
        table, junk = grouped_table(results)
        return cls(session, table, junk, attempts, fetched_at, error, part)


@dataclass(frozen=True, slots=True)
class ChunkEnd:
    """Every session of a chunk has been emitted: the store writes the chunk's files now."""

    part: str
    sessions: tuple[dt.date, ...]


@dataclass(frozen=True, slots=True)
class Checked:
    """One validated session: valid rows (BRONZE_DAILY), rejects (QUARANTINE), outcome."""

    part: str
    valid: pa.Table
    rejected: pa.Table
    outcome: SessionOutcome


@dataclass
class ReplayReport:
    """What a run did; ``ok`` is False when any session failed."""

    requested: int = 0
    complete: list[dt.date] = field(default_factory=list)
    empty: list[dt.date] = field(default_factory=list)
    failed: dict[dt.date, str] = field(default_factory=dict)
    rows: int = 0
    quarantined: int = 0
    files: int = 0
    db_rows: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """No session failed (empty sessions are reported, retried next run, not failures)."""
        return not self.failed

    def add(self, outcomes: Sequence[SessionOutcome], rows: int, files: int, db_rows: int) -> None:
        """Count a stored chunk (thread-safe: workers share one report)."""
        with self._lock:
            for o in outcomes:
                if o.status == "complete":
                    self.complete.append(o.session)
                elif o.status == "empty":
                    self.empty.append(o.session)
                else:
                    self.failed[o.session] = o.error or "failed"
                self.quarantined += o.quarantined
            self.rows += rows
            self.files += files
            self.db_rows += db_rows

    def counts(self) -> dict[str, int | float]:
        """What the pipeline records for the replay step."""
        return {
            "sessions_requested": self.requested,
            "sessions_complete": len(self.complete),
            "sessions_empty": len(self.empty),
            "sessions_failed": len(self.failed),
            "rows": self.rows,
            "quarantined": self.quarantined,
            "files": self.files,
            "db_rows": self.db_rows,
        }

    def summary(self) -> str:
        """One line for stderr and logs."""
        fetched = len(self.complete) + len(self.empty) + len(self.failed)
        line = (
            f"replay: {fetched}/{self.requested} sessions fetched, {len(self.complete)} complete,"
            f" {len(self.empty)} empty, {len(self.failed)} failed; {self.rows} rows,"
            f" {self.quarantined} quarantined, {self.files} files, {self.db_rows} rows to Postgres"
        )
        if self.seconds:
            line += f" in {self.seconds:.1f}s"
        if self.empty:
            line += "; empty (retried next run): " + ", ".join(d.isoformat() for d in self.empty)
        if self.failed:
            worst = sorted(self.failed.items())[:5]
            line += "; failed: " + "; ".join(f"{d}: {e}" for d, e in worst)
            if len(self.failed) > len(worst):
                line += f" (+{len(self.failed) - len(worst)} more)"
        return line


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


def split_sessions(sessions: Sequence[dt.date], partitions: int) -> dict[str, list[dt.date]]:
    """Contiguous slices of ``sessions`` by stable partition name (``sessions-0`` ...)."""
    ordered = sorted(sessions)
    bounds = np.linspace(0, len(ordered), partitions + 1).round().astype(int)
    return {
        f"sessions-{i}": ordered[int(bounds[i]) : int(bounds[i + 1])] for i in range(partitions)
    }


# -- source -------------------------------------------------------------------------------------
def fetch_session(gateway: PolygonGateway, session: dt.date, part: str = "") -> Fetch:
    """One grouped-daily request; a final Polygon failure becomes a failed Fetch, not a crash."""
    try:
        table, junk, attempts = gateway.grouped_daily_table(session)
    except PolygonError as exc:
        now = dt.datetime.now(dt.UTC)
        return Fetch.of(session, [], exc.attempts, now, str(exc), part=part)
    return Fetch(session, table, junk, attempts, dt.datetime.now(dt.UTC), part=part)


Emitted = Fetch | ChunkEnd


class _SessionPartition(StatefulSourcePartition[Emitted, list[str]]):
    """A chunk's sessions, fetched in a thread pool, emitted in order as they arrive.

    A ChunkEnd follows the last one. Downstream work overlaps the remaining requests.
    """

    def __init__(
        self,
        part: str,
        todo: list[dt.date],
        done: set[str],
        gateway: Callable[[], PolygonGateway],
        chunk: int,
        concurrency: int,
    ) -> None:
        self._part = part
        self._done = done
        self._todo = [d for d in todo if d.isoformat() not in done]
        self._gateway = gateway
        self._chunk = chunk or max(1, len(self._todo))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="replay-get")
        self._inflight: deque[Future[Fetch]] = deque()
        self._sessions: tuple[dt.date, ...] = ()
        self._ok: list[str] = []
        self._started = time.monotonic()
        if len(self._todo) < len(todo):
            log.warning(
                "replay %s: %d sessions skipped, done per the recovery state",
                part,
                len(todo) - len(self._todo),
            )

    def _start_chunk(self) -> None:
        sessions, self._todo = self._todo[: self._chunk], self._todo[self._chunk :]
        gateway = self._gateway()
        self._sessions, self._ok = tuple(sessions), []
        self._started = time.monotonic()
        self._inflight.extend(
            self._pool.submit(fetch_session, gateway, d, self._part) for d in sessions
        )

    def next_batch(self) -> list[Emitted]:
        if not self._inflight:
            if not self._todo:
                raise StopIteration
            self._start_chunk()
        try:
            self._inflight[0].result(timeout=0.2)
        except TimeoutError:
            return []
        out: list[Emitted] = []
        while self._inflight and self._inflight[0].done():
            f = self._inflight.popleft().result()
            out.append(f)
            if f.error is None and f.rows:
                self._ok.append(f.session.isoformat())
            n = len(self._sessions) - len(self._inflight)
            if n % 50 == 0 or not self._inflight:
                print(
                    f"replay {self._part}: fetched {n}/{len(self._sessions)} sessions"
                    f" ({time.monotonic() - self._started:.1f}s)",
                    file=sys.stderr,
                    flush=True,
                )
        if not self._inflight:
            # Done from now on, but this state is only committed after the epoch (and so the
            # store's write of this chunk) has finished; failed and empty ones stay to refetch.
            self._done.update(self._ok)
            out.append(ChunkEnd(self._part, self._sessions))
        return out

    def snapshot(self) -> list[str]:
        return sorted(self._done)

    def close(self) -> None:
        for f in self._inflight:
            f.cancel()
        self._pool.shutdown(wait=True)


class SessionSource(FixedPartitionedSource[Emitted, list[str]]):
    """Sessions to fetch, split in stable partitions; state = sessions done (for recovery)."""

    def __init__(
        self,
        sessions: Sequence[dt.date],
        gateway: PolygonGateway | Callable[[], PolygonGateway],
        *,
        partitions: int = 1,
        chunk_sessions: int = 0,
        concurrency: int = 4,
    ) -> None:
        self.parts = split_sessions(sessions, partitions)
        self.chunk_sessions = chunk_sessions
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._gateway: PolygonGateway | None = None
        self._factory: Callable[[], PolygonGateway] | None = None
        if hasattr(gateway, "grouped_daily_table"):
            self._gateway = cast(PolygonGateway, gateway)
        else:
            self._factory = gateway

    def gateway(self) -> PolygonGateway:
        """The one gateway (and so one rate limiter) of this process, made on first use."""
        with self._lock:
            if self._gateway is None:
                assert self._factory is not None
                self._gateway = self._factory()
            return self._gateway

    def list_parts(self) -> list[str]:
        """Stable names, so a recovered run finds its partitions' state."""
        return list(self.parts)

    def build_part(
        self, step_id: str, for_part: str, resume_state: list[str] | None
    ) -> StatefulSourcePartition[Emitted, list[str]]:
        """A partition resuming after the sessions its state says are done."""
        return _SessionPartition(
            for_part,
            self.parts.get(for_part, []),
            set(resume_state or ()),
            self.gateway,
            self.chunk_sessions,
            self.concurrency,
        )


# -- validation (pure) --------------------------------------------------------------------------
def _reject_extra(valid: pa.Table, session: dt.date) -> tuple[pa.Table, pa.Table | None, list[str]]:
    """Rows that pass row-level checks but not the session's: another date, a repeated symbol.

    Vectorised (a session has thousands of rows); the first row of a repeated symbol is kept.
    """
    n = valid.num_rows
    if n == 0:
        return valid, None, []
    wrong_day = pc.not_equal(valid["date"], pa.scalar(session, pa.date32()))
    wrong = np.asarray(wrong_day.to_numpy(zero_copy_only=False), dtype=bool)
    codes = pc.dictionary_encode(valid["symbol"].combine_chunks()).indices
    _, first = np.unique(codes.to_numpy(zero_copy_only=False), return_index=True)
    repeated = np.ones(n, dtype=bool)
    repeated[first] = False
    bad = wrong | repeated
    if not bad.any():
        return valid, None, []
    idx = np.flatnonzero(bad)
    day_reason = f"date is not the requested session {session.isoformat()}"
    reasons = [
        "; ".join(
            r
            for r, hit in ((day_reason, wrong[i]), ("duplicate symbol in the session", repeated[i]))
            if hit
        )
        for i in idx.tolist()
    ]
    return valid.filter(pa.array(~bad)), valid.take(pa.array(idx)), reasons


def _outcome(
    f: Fetch,
    status: ledger.Status,
    *,
    rows: int = 0,
    quarantined: int = 0,
    error: str | None = None,
) -> SessionOutcome:
    return SessionOutcome(
        session=f.session,
        status=status,
        rows=rows,
        quarantined=quarantined,
        attempts=f.attempts,
        source=SOURCE,
        fetched_at=f.fetched_at,
        error=error,
    )


def check_fetch(fetch: Fetch) -> tuple[pa.Table, pa.Table, SessionOutcome]:
    """Valid rows, rejected rows (QUARANTINE) and the ledger outcome of one session."""
    empty_valid, no_rejects = BRONZE_DAILY.empty_table(), QUARANTINE.empty_table()
    if fetch.error is not None:
        return empty_valid, no_rejects, _outcome(fetch, "failed", error=fetch.error)
    if not fetch.rows:
        error = "no rows returned (data not ready?)"
        return empty_valid, no_rejects, _outcome(fetch, "empty", error=error)
    raw, junk = fetch.table, fetch.junk
    checked = check_daily(raw, source=SOURCE, received_at=fetch.fetched_at)
    valid, extra, reasons = _reject_extra(checked.valid, fetch.session)
    parts = [checked.rejected]
    if extra is not None:
        parts.append(quarantine_table(extra, reasons, SOURCE, fetch.fetched_at))
    if junk:
        reason = "result entry is not a JSON object"
        parts.append(quarantine_payloads(junk, [reason] * len(junk), SOURCE, fetch.fetched_at))
    rejected = pa.concat_tables(parts)
    if valid.num_rows == 0:
        error = f"all {rejected.num_rows} rows rejected"
        return valid, rejected, _outcome(fetch, "empty", quarantined=rejected.num_rows, error=error)
    outcome = _outcome(fetch, "complete", rows=valid.num_rows, quarantined=rejected.num_rows)
    return valid, rejected, outcome


def check_item(item: Emitted) -> Checked | ChunkEnd:
    """Validate one fetched session; chunk ends pass through."""
    if isinstance(item, ChunkEnd):
        return item
    valid, rejected, outcome = check_fetch(item)
    return Checked(item.part, valid, rejected, outcome)


# -- sink ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the store step writes."""

    lake: Lake
    db_url: str
    cache_window_days: int
    concurrency: int = 16
    db_connections: int = 2
    """Upserts in flight at once, each on its own connection (and so its own server process):
    the COPY is the slowest stage, and a replay's batches hold disjoint sessions."""


def cache_cutoff(today: dt.date, days: int) -> dt.date:
    """First date kept in Postgres raw_ohlcv."""
    return today - dt.timedelta(days=days)


class _StorePartition(StatelessSinkPartition[Checked | ChunkEnd]):
    def __init__(self, cfg: StoreConfig, report: ReplayReport) -> None:
        self._cfg = cfg
        self._report = report
        self._writer = BronzeWriter(cfg.lake, concurrency=cfg.concurrency)
        self._conn = psycopg.connect(cfg.db_url, autocommit=True)
        migrate(self._conn)
        self._db_conns: queue.SimpleQueue[psycopg.Connection[Any]] = queue.SimpleQueue()
        self._all_db_conns = [
            psycopg.connect(cfg.db_url, autocommit=True) for _ in range(max(1, cfg.db_connections))
        ]
        for conn in self._all_db_conns:
            self._db_conns.put(conn)
        self._db = ThreadPoolExecutor(
            max_workers=len(self._all_db_conns), thread_name_prefix="replay-db"
        )
        self._held: dict[str, list[Checked]] = defaultdict(list)
        self._upserts: dict[str, list[Future[int]]] = defaultdict(list)

    def _take(self, part: str, checked: list[Checked]) -> None:
        """Quarantine now; Postgres in the background now; bronze at the chunk's end."""
        for c in checked:
            if c.rejected.num_rows:
                key = quarantine_part(SOURCE, c.outcome.session, QUARANTINE_PART)
                self._cfg.lake.write_table(key, c.rejected)
        cutoff = cache_cutoff(dt.datetime.now(dt.UTC).date(), self._cfg.cache_window_days)
        valid = pa.concat_tables([c.valid for c in checked])
        recent = valid.filter(pc.greater_equal(valid["date"], pa.scalar(cutoff, pa.date32())))
        if recent.num_rows:
            self._upserts[part].append(self._db.submit(self._upsert, recent))
        self._held[part].extend(checked)

    def _upsert(self, bars: pa.Table) -> int:
        """One upsert on a free connection of the pool (runs on a ``replay-db`` thread)."""
        conn = self._db_conns.get()
        try:
            return upsert_daily(conn, bars)
        finally:
            self._db_conns.put(conn)

    def _finish(self, end: ChunkEnd) -> None:
        """Write the chunk's bronze, wait for its Postgres rows, then move the ledger."""
        checked = self._held.pop(end.part, [])
        upserts = self._upserts.pop(end.part, [])
        valid = (
            pa.concat_tables([c.valid for c in checked]) if checked else BRONZE_DAILY.empty_table()
        )
        started = time.monotonic()
        try:
            written = self._writer.write(valid)
        finally:
            bronze_s = time.monotonic() - started
            db_rows = sum(f.result() for f in upserts)  # durable (or raising) before the ledger
            db_wait_s = time.monotonic() - started - bronze_s
        outcomes = [c.outcome for c in checked]
        ledger.record_symbols(self._conn, valid)
        ledger.record_sessions(self._conn, outcomes)
        self._report.add(outcomes, valid.num_rows, written.files, db_rows)
        done = sum(o.status == "complete" for o in outcomes)
        print(
            f"replay {end.part}: stored {done}/{len(end.sessions)} sessions,"
            f" {valid.num_rows} rows, {written.files} files (bronze {bronze_s:.1f}s, then"
            f" {db_wait_s:.1f}s waiting for Postgres)",
            file=sys.stderr,
            flush=True,
        )

    def write_batch(self, items: list[Checked | ChunkEnd]) -> None:
        run: dict[str, list[Checked]] = defaultdict(list)
        for item in items:
            if isinstance(item, ChunkEnd):
                if run.get(item.part):
                    self._take(item.part, run.pop(item.part))
                self._finish(item)
            else:
                run[item.part].append(item)
        for part, checked in run.items():
            if checked:
                self._take(part, checked)

    def close(self) -> None:
        self._writer.close()
        self._db.shutdown(wait=True)
        for conn in self._all_db_conns:
            conn.close()
        self._conn.close()


class ReplayStore(DynamicSink[Checked | ChunkEnd]):
    """Quarantine, bronze, Postgres, then the ledger, in that order, per chunk."""

    def __init__(self, cfg: StoreConfig, report: ReplayReport) -> None:
        self.cfg = cfg
        self.report = report

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Checked | ChunkEnd]:
        """One lake writer and one Postgres connection per worker."""
        return _StorePartition(self.cfg, self.report)


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
