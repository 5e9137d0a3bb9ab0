"""Closed minute bars to the lake: ``bronze/raw_ohlcv_1m/symbol=S/date=D/part-{id}.parquet``.

A part holds one symbol's bars of one time bucket (default 30 minutes) and is named by the
bucket's UTC start (``part-20250102T1430Z``), so the name says what it holds and does not
depend on the worker, the batch or the run. Each write rewrites the whole part with every bar
known for that bucket (the earlier ones read back from the lake the first time a bucket is
seen in this process), keyed by bar start. A recovery replay therefore overwrites parts with
the same or more rows, never duplicates them, and the lake is current as soon as a minute
closes. Parts are written in parallel because on S3 every part is one PUT.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import pyarrow as pa
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.lake import Lake
from core.layout import minute_part
from core.records import Bar
from core.schemas import BRONZE_MINUTE
from dataflows.operators import ALIGN

Row = dict[str, Any]
PartKey = tuple[str, dt.date, dt.datetime]
"""(symbol, session date, bucket start)."""
DEFAULT_BUCKET: Final = dt.timedelta(minutes=30)


def bucket_start(start: dt.datetime, bucket: dt.timedelta) -> dt.datetime:
    """Start of the bucket holding a bar that starts at ``start``."""
    return start - (start - ALIGN) % bucket


def part_id(bucket: dt.datetime) -> str:
    """Deterministic part id of a bucket: its UTC start, e.g. ``20250102T1430Z``."""
    return bucket.astimezone(dt.UTC).strftime("%Y%m%dT%H%MZ")


def part_key(key: PartKey) -> str:
    """Lake key of a part."""
    symbol, day, bucket = key
    return minute_part(symbol, day, part_id(bucket))


def bars_table(rows: Iterable[Row]) -> pa.Table:
    """Rows as a BRONZE_MINUTE table sorted by start."""
    return pa.Table.from_pylist(sorted(rows, key=lambda r: r["start"]), schema=BRONZE_MINUTE)


class _MinutePartition(StatelessSinkPartition[Bar]):
    def __init__(self, lake: Lake, bucket: dt.timedelta, concurrency: int) -> None:
        self._lake = lake
        self._bucket = bucket
        self._cache: dict[PartKey, dict[dt.datetime, Row]] = {}
        self._newest: dict[str, dt.datetime] = {}
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="minute-sink")

    def _load(self, key: PartKey) -> dict[dt.datetime, Row]:
        path = part_key(key)
        if not self._lake.exists(path):
            return {}
        return {r["start"]: r for r in self._lake.read_table(path).to_pylist()}

    def _write(self, key: PartKey, bars: list[Bar]) -> tuple[PartKey, dict[dt.datetime, Row]]:
        known = self._cache.get(key)
        rows = dict(known) if known is not None else self._load(key)
        for b in bars:
            rows[b.start] = b.model_dump()  # type: ignore[index]  # minute bars have a start
        self._lake.write_table(part_key(key), bars_table(rows.values()))
        return key, rows

    def _evict(self, symbol: str, bucket: dt.datetime) -> None:
        """Forget a symbol's older buckets: its windows close in order, so they are done."""
        newest = self._newest.get(symbol)
        if newest is not None and bucket <= newest:
            return
        self._newest[symbol] = bucket
        for key in [k for k in self._cache if k[0] == symbol and k[2] < bucket]:
            del self._cache[key]

    def write_batch(self, items: list[Bar]) -> None:
        groups: dict[PartKey, list[Bar]] = defaultdict(list)
        for b in items:
            if b.start is None:
                msg = f"minute bar of {b.symbol} on {b.date} has no start"
                raise ValueError(msg)
            groups[(b.symbol, b.date, bucket_start(b.start, self._bucket))].append(b)
        for symbol, _, bucket in groups:
            self._evict(symbol, bucket)
        futures = [self._pool.submit(self._write, key, bars) for key, bars in groups.items()]
        for f in futures:  # a failed write raises here: the flow stops rather than lose bars
            key, rows = f.result()
            if key[2] >= self._newest.get(key[0], key[2]):
                self._cache[key] = rows

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class MinuteBarSink(DynamicSink[Bar]):
    """Write closed minute bars (``Bar`` with ``start``) to the lake's bronze minute layout."""

    def __init__(
        self, lake: Lake, *, bucket: dt.timedelta = DEFAULT_BUCKET, concurrency: int = 8
    ) -> None:
        if bucket < dt.timedelta(minutes=1) or bucket % dt.timedelta(minutes=1):
            msg = f"bucket must be a whole number of minutes, not {bucket}"
            raise ValueError(msg)
        self.lake = lake
        self.bucket = bucket
        self.concurrency = concurrency

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Bar]:
        """One partition per worker; a symbol's bars always come from the worker owning it."""
        return _MinutePartition(self.lake, self.bucket, self.concurrency)
