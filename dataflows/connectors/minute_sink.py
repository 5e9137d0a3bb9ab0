"""Final minute bars to the lake: ``bronze/raw_ohlcv_1m/date=D/part-{id}.parquet``.

Bars are buffered and written market-wide, one fragment per session date per flush, sorted by
(symbol, start), named by a digest of their content: a rerun that flushes the same bars
overwrites the same file, and a replay that flushes them differently only adds fragments
holding identical rows, which consolidation reduces to one. Writes run on a background thread,
so the flow never waits for the lake (on S3 a PUT takes tens of milliseconds). A flush happens
when the oldest buffered bar has waited ``flush_after``, at every recovery snapshot (which
waits for the writes: a snapshot only commits once its bars are in the lake) and at the end.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from core.lake import Lake
from core.layout import minute_fragment
from core.schemas import BRONZE_MINUTE
from dataflows.minute_fold import MinuteBar, session_date
from dataflows.operators import BARS_KEY

_US = 1000


def bars_table(bars: Sequence[MinuteBar], source: str = "live") -> pa.Table:
    """BRONZE_MINUTE rows of ``bars``, sorted by (symbol, start, revision)."""
    rows = sorted(bars, key=lambda b: (b.symbol, b.start, b.revision, b.partial))
    stamps = {
        "start": [b.start * _US for b in rows],
        "ingested_at": [b.ingested_at * _US for b in rows],
    }
    values = {
        "symbol": [b.symbol for b in rows],
        "date": [session_date(b.start) for b in rows],
        "open": [b.open for b in rows],
        "high": [b.high for b in rows],
        "low": [b.low for b in rows],
        "close": [b.close for b in rows],
        "volume": [b.volume for b in rows],
        "vwap": [b.vwap for b in rows],
        "trades": [b.trades for b in rows],
        "source": [source] * len(rows),
        "revision": [b.revision for b in rows],
        "partial": [b.partial for b in rows],
    }
    arrays = [
        pa.array(stamps[f.name], pa.int64()).cast(f.type)
        if f.name in stamps
        else pa.array(values[f.name], f.type)
        for f in BRONZE_MINUTE
    ]
    return pa.Table.from_arrays(arrays, schema=BRONZE_MINUTE)


def fragment_id(table: pa.Table) -> str:
    """Deterministic id of a fragment: its first and last minute and a digest of its rows."""
    h = hashlib.blake2b(digest_size=8)
    for batch in table.to_batches():
        for col in batch.columns:
            for buf in col.buffers():
                if buf is not None:
                    h.update(buf)
    starts = table["start"].to_pylist()
    first, last = min(starts), max(starts)
    return f"{first:%H%M}-{last:%H%M}-{h.hexdigest()}"


def write_fragments(lake: Lake, bars: Iterable[MinuteBar], source: str = "live") -> list[str]:
    """Write ``bars`` as one fragment per session date; their keys."""
    by_day: dict[dt.date, list[MinuteBar]] = defaultdict(list)
    for b in bars:
        by_day[session_date(b.start)].append(b)
    keys = []
    for day, rows in sorted(by_day.items()):
        table = bars_table(rows, source)
        key = minute_fragment(day, fragment_id(table))
        lake.write_table(key, table)
        keys.append(key)
    return keys


class _MinutePartition(StatefulSinkPartition[list[MinuteBar], None]):
    def __init__(self, lake: Lake, flush_after: float) -> None:
        self._lake = lake
        self._flush_after = flush_after
        self._buffer: list[MinuteBar] = []
        self._since = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minute-sink")
        self._pending: list[Future[list[str]]] = []

    def write_batch(self, values: list[list[MinuteBar]]) -> None:
        for bars in values:
            if bars and not self._buffer:
                self._since = time.monotonic()
            self._buffer.extend(bars)
        self._reap()
        if self._buffer and time.monotonic() - self._since >= self._flush_after:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            bars, self._buffer = self._buffer, []
            self._pending.append(self._pool.submit(write_fragments, self._lake, bars))

    def _reap(self) -> None:
        """Raise a failed write here: the flow stops rather than lose bars."""
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for f in done:
            f.result()

    def snapshot(self) -> None:
        self._flush()
        for f in self._pending:
            f.result()
        self._pending = []

    def close(self) -> None:
        self.snapshot()
        self._pool.shutdown(wait=True)


class MinuteBarSink(FixedPartitionedSink[list[MinuteBar], None]):
    """Write final minute bars (items ``("minutes", [MinuteBar, ...])``) to bronze."""

    def __init__(self, lake: Lake, *, flush_after: float = 1.0) -> None:
        self.lake = lake
        self.flush_after = flush_after

    def list_parts(self) -> list[str]:
        """One partition: fragments are market-wide."""
        return [BARS_KEY]

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSinkPartition[list[MinuteBar], None]:
        """A buffering writer."""
        return _MinutePartition(self.lake, self.flush_after)
