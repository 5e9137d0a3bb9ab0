"""The replay's store: quarantine, bronze, Postgres, then the ledger, in that order, per chunk.

Rejected rows go to quarantine as each session arrives; rows inside the cache window are upserted
into raw_ohlcv in the background; at the chunk's end its bronze files are written, the upserts
awaited, and only then the ledger marks the sessions, so a session is complete only once all of
its writes are durable. Every write is keyed by content: a refetch overwrites, never duplicates.
"""

from __future__ import annotations

import datetime as dt
import queue
import sys
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.bronze import BronzeWriter
from core.lake import Lake
from core.layout import quarantine_part
from core.schemas import BRONZE_DAILY
from core.stores import ledger
from core.stores.postgres import migrate, upsert_daily
from dataflows.replay_report import ReplayReport
from dataflows.session_checks import SOURCE, Checked, ChunkEnd

QUARANTINE_PART: Final = "grouped-daily"
"""Part id of a session's rejected rows: one file per session, rewritten by a refetch."""


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
