"""Gaps the live flow knows it has, to Postgres ``live_gaps`` for the healer.

Connects, reconnects and trades beyond the revision horizon are recorded; the healer
(``python -m dataflows.heal``) fills them from REST minute aggregates.
"""

from __future__ import annotations

import datetime as dt
import logging

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.stores import gaps as gap_store
from core.stores import postgres
from dataflows.minute_fold import Gap

log = logging.getLogger(__name__)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _utc(ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=ms)


class _GapPartition(StatelessSinkPartition[Gap]):
    def __init__(self, url: str) -> None:
        self._conn = postgres.connect(url, autocommit=True)
        postgres.migrate(self._conn)

    def write_batch(self, items: list[Gap]) -> None:
        rows = [(g.symbol, _utc(g.start), _utc(g.end), g.reason) for g in items]
        added = gap_store.record(self._conn, rows)
        if added:
            log.warning("live gaps recorded: %s", ", ".join(f"{r[3]} {r[1]}..{r[2]}" for r in rows))

    def close(self) -> None:
        self._conn.close()


class GapSink(DynamicSink[Gap]):
    """Record gaps in ``live_gaps`` (idempotent)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _GapPartition:
        """One connection per worker."""
        return _GapPartition(self.database_url)
