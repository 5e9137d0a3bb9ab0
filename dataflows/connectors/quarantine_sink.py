"""The live flow's dead-letter place: ``quarantine/{source}/{YYYY-MM-DD}/part-{id}.parquet``.

Rows keep the raw payload and the reason (QUARANTINE schema), so a fix can replay them. The
date is the UTC day the item was rejected. A part id is the worker and a digest of the batch's
content, so rewriting the same batch after a recovery lands on the same file; a replay that
batches differently can repeat rows in another part, which is acceptable for a dead letter
(rows carry their payload, so duplicates are recognisable).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict

import pyarrow as pa
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.lake import Lake
from core.layout import quarantine_part
from core.schemas import QUARANTINE
from core.validation import quarantine_payloads
from dataflows.trades import Reject


def _utc(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)


def quarantine_rows(items: list[Reject], source: str) -> pa.Table:
    """QUARANTINE rows of ``items``, each with its own ``received_at``."""
    table = quarantine_payloads(
        [r.payload for r in items], [r.reason for r in items], source, _utc(items[0].received_at)
    )
    i = table.schema.get_field_index("received_at")
    stamps = pa.array([r.received_at * 1000 for r in items], pa.int64()).cast(
        QUARANTINE.field("received_at").type
    )
    return table.set_column(i, QUARANTINE.field(i), stamps)


def content_id(items: list[Reject]) -> str:
    """A digest of reasons and payloads (not of receive times, which a replay changes)."""
    h = hashlib.blake2b(digest_size=8)
    for r in items:
        h.update(r.reason.encode())
        h.update(json.dumps(r.payload, sort_keys=True, default=str).encode())
    return h.hexdigest()


class _QuarantinePartition(StatelessSinkPartition[Reject]):
    def __init__(self, lake: Lake, source: str, worker: int) -> None:
        self._lake = lake
        self._source = source
        self._worker = worker

    def write_batch(self, items: list[Reject]) -> None:
        by_day: dict[dt.date, list[Reject]] = defaultdict(list)
        for r in items:
            by_day[_utc(r.received_at).date()].append(r)
        for day, rows in sorted(by_day.items()):
            key = quarantine_part(self._source, day, f"w{self._worker}-{content_id(rows)}")
            self._lake.write_table(key, quarantine_rows(rows, self._source))


class QuarantineSink(DynamicSink[Reject]):
    """Write rejected payloads under ``quarantine/{source}/``."""

    def __init__(self, lake: Lake, source: str = "live") -> None:
        self.lake = lake
        self.source = source

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Reject]:
        """One partition per worker."""
        return _QuarantinePartition(self.lake, self.source, worker_index)
