"""Polygon grouped daily as a Bytewax source: one request per session, in stable partitions.

Sessions are split into contiguous partitions by stable name; each partition fetches a chunk of
sessions on a thread pool (one rate-limited gateway per process), emits them in order as they
arrive and a :class:`ChunkEnd` after the last. Its recovery state is the sessions done, committed
by Bytewax only after the store has finished the epoch, so a crash refetches at most the chunk
in flight.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows.connectors.polygon import PolygonError, PolygonGateway, grouped_table
from dataflows.session_checks import ChunkEnd, Emitted, Fetch

log = logging.getLogger(__name__)


def split_sessions(sessions: Sequence[dt.date], partitions: int) -> dict[str, list[dt.date]]:
    """Contiguous slices of ``sessions`` by stable partition name (``sessions-0`` ...)."""
    ordered = sorted(sessions)
    bounds = np.linspace(0, len(ordered), partitions + 1).round().astype(int)
    return {
        f"sessions-{i}": ordered[int(bounds[i]) : int(bounds[i + 1])] for i in range(partitions)
    }


def fetch_of(
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
    return Fetch(session, table, junk, attempts, fetched_at, error, part)


def fetch_session(gateway: PolygonGateway, session: dt.date, part: str = "") -> Fetch:
    """One grouped-daily request; a final Polygon failure becomes a failed Fetch, not a crash."""
    try:
        table, junk, attempts = gateway.grouped_daily_table(session)
    except PolygonError as exc:
        now = dt.datetime.now(dt.UTC)
        return fetch_of(session, [], exc.attempts, now, str(exc), part=part)
    return Fetch(session, table, junk, attempts, dt.datetime.now(dt.UTC), part=part)


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
