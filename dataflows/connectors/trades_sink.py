"""The trades archive: every trade the live flow accepted, ``bronze/trades/date=D/part-{id}.parquet``.

Kinesis forgets trades after its retention (a day in dev), so without an archive no bar or alert
could be audited or recomputed. The flow's decoded trade batches are buffered and written
market-wide, one file per session per flush, zstd, sorted by (symbol, sip_timestamp), named by
when its last trade was received and a digest of its rows (so keys sort in arrival order and
the same rows land on the same key). Like the minute sink, writes run on a background thread, a flush
happens when the oldest buffered trade has waited ``flush_after`` or the buffer holds
``max_trades``, at every recovery snapshot (which waits for the writes: a snapshot commits only
once its trades are in the lake) and at the end.

The archive is what was received, at least once: duplicates the feed resent, and the trades a
recovery replays, may appear twice; readers (``dataflows.replay_trades``) count a trade once
by (symbol, exchange, id), as the live fold does.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from core import calendar
from core.lake import Lake
from core.layout import trades_part
from core.schemas import TRADES
from dataflows.minute_fold import session_date
from dataflows.trades import TradeBatch

ARCHIVE_KEY: Final = "trades"
"""Key of the archive's items: one market-wide partition."""


def archive_key(_: TradeBatch) -> str:
    """Every batch goes to the one archive partition."""
    return ARCHIVE_KEY


def _optional(values: npt.NDArray[np.int64], kind: pa.DataType) -> pa.Array:
    """-1 (absent) as null."""
    return pa.array(values, kind, mask=values < 0)


def trades_table(batches: Sequence[TradeBatch]) -> pa.Table:
    """TRADES rows of ``batches`` (every trade as received), sorted by (symbol, sip_timestamp)."""
    batches = [b for b in batches if len(b)]
    if not batches:
        return TRADES.empty_table()
    sym = np.concatenate([b.symbol for b in batches])
    t = np.concatenate([b.t for b in batches])
    received = np.concatenate([np.full(len(b), b.read_at, np.int64) for b in batches])
    lists = [c for b in batches for c in b.conditions.tolist()]
    lengths = np.fromiter(map(len, lists), np.int32, len(lists))
    offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int32)))
    values = np.fromiter(chain.from_iterable(lists), np.int32, int(offsets[-1]))
    conds = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32()))
    table = pa.table(
        {
            "symbol": pa.array(sym.tolist(), pa.string()),
            "sip_timestamp": pa.array(t * 1_000_000, pa.int64()).cast(
                TRADES.field("sip_timestamp").type
            ),
            "price": pa.array(np.concatenate([b.price for b in batches])),
            "size": pa.array(np.concatenate([b.size for b in batches])),
            "exchange": _optional(np.concatenate([b.exchange for b in batches]), pa.int32()),
            "conditions": conds,
            "id": pa.array(np.concatenate([b.id for b in batches]).tolist(), pa.string()),
            "sequence": _optional(np.concatenate([b.sequence for b in batches]), pa.int64()),
            "tape": _optional(np.concatenate([b.tape for b in batches]), pa.int32()),
            "received_at": pa.array(received * 1000, pa.int64()).cast(
                TRADES.field("received_at").type
            ),
        },
        schema=TRADES,
    )
    return table.sort_by([("symbol", "ascending"), ("sip_timestamp", "ascending")])


def session_days(table: pa.Table) -> npt.NDArray[np.int32]:
    """The New York date (date32) of each trade, as the live fold dates its minutes."""
    hours = pc.cast(table["sip_timestamp"], pa.int64()).to_numpy() // 3_600_000_000_000
    uniq, inverse = np.unique(hours, return_inverse=True)
    days = [calendar.to_days(session_date(int(h) * 3_600_000)) for h in uniq]
    return np.asarray(days, np.int32)[inverse]


def part_id(table: pa.Table) -> str:
    """When the flush's last trade was received, and a digest of its rows.

    Keys sort in the order the flow received the trades (the wall clock of each read), which
    is the order a replay reads them in.
    """
    h = hashlib.blake2b(digest_size=8)
    for batch in table.to_batches():
        for col in batch.columns:
            for buf in col.buffers():
                if buf is not None:
                    h.update(buf)
    newest = pc.max(table["received_at"]).as_py()
    return f"{newest:%Y%m%dT%H%M%S%f}-{h.hexdigest()}"


def write_archive(lake: Lake, batches: Sequence[TradeBatch]) -> list[str]:
    """Write ``batches`` as one file per session; their keys."""
    table = trades_table(batches)
    if table.num_rows == 0:
        return []
    days = session_days(table)
    keys = []
    for d in np.unique(days):
        part = table.filter(pa.array(days == d))
        key = trades_part(calendar.from_days(int(d)), part_id(part))
        lake.write_parquet(key, part, compression="zstd")
        keys.append(key)
    return keys


class _ArchivePartition(StatefulSinkPartition[TradeBatch, None]):
    def __init__(self, lake: Lake, flush_after: float, max_trades: int) -> None:
        self._lake = lake
        self._flush_after = flush_after
        self._max = max_trades
        self._buffer: list[TradeBatch] = []
        self._held = 0
        self._since = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trades-archive")
        self._pending: list[Future[list[str]]] = []

    def write_batch(self, values: list[TradeBatch]) -> None:
        for b in values:
            if not len(b):
                continue
            if not self._buffer:
                self._since = time.monotonic()
            self._buffer.append(b)
            self._held += len(b)
        self._reap()
        if self._buffer and (
            self._held >= self._max or time.monotonic() - self._since >= self._flush_after
        ):
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            batches, self._buffer, self._held = self._buffer, [], 0
            self._pending.append(self._pool.submit(write_archive, self._lake, batches))

    def _reap(self) -> None:
        """Raise a failed write here: the flow stops rather than lose trades."""
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


class TradesArchiveSink(FixedPartitionedSink[TradeBatch, None]):
    """Archive the live flow's trade batches (items ``("trades", TradeBatch)``) in bronze."""

    def __init__(
        self, lake: Lake, *, flush_after: float = 60.0, max_trades: int = 2_000_000
    ) -> None:
        self.lake = lake
        self.flush_after = flush_after
        self.max_trades = max_trades

    def list_parts(self) -> list[str]:
        """One partition: files are market-wide."""
        return [ARCHIVE_KEY]

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSinkPartition[TradeBatch, None]:
        """A buffering writer."""
        return _ArchivePartition(self.lake, self.flush_after, self.max_trades)
