"""The trades archive: every trade the live flow accepted, ``bronze/trades/date=D/part-{id}.parquet``.

Kinesis forgets trades after its retention (a day in dev), so without an archive no bar or alert
could be audited or recomputed. The flow's decoded trade batches are buffered and written
market-wide, one file per session per flush, zstd, sorted by (symbol, sip_timestamp), named by
when its last trade was received and a digest of its rows (so keys sort in arrival order and
the same rows land on the same key). Like the minute sink, writes run on a background thread, a flush
happens when the oldest buffered trade has waited ``flush_after`` or the buffer holds
``max_trades``, at every recovery snapshot and at the end. A snapshot does not wait for the lake:
it carries the rows of the writes still under way, and a resume writes them again (same rows,
same key), so a committed snapshot never leaves a trade out of the archive.

The archive is what was received, at least once: duplicates the feed resent, and the trades a
recovery replays, may appear twice; readers (``dataflows.replay_trades``) count a trade once
by (symbol, exchange, id), as the live fold does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from core import calendar
from core.lake import Lake
from core.layout import trades_part
from core.schemas import TRADES
from dataflows.minute_fold import session_date
from dataflows.trades import TradeBatch

_DICTIONARY: Final = ["symbol", "exchange", "conditions", "tape"]

ARCHIVE_KEY: Final = "trades"
"""Key of the archive's items: one market-wide partition."""


def archive_key(_: TradeBatch) -> str:
    """Every batch goes to the one archive partition."""
    return ARCHIVE_KEY


def _optional(values: npt.NDArray[np.int64], kind: pa.DataType) -> pa.Array:
    """-1 (absent) as null."""
    return pa.array(values, kind, mask=values < 0)


def trades_table(batches: Sequence[TradeBatch]) -> pa.Table:
    """TRADES rows of ``batches`` (every trade as received), in arrival order."""
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
    return pa.table(
        {
            "symbol": pa.array(sym, pa.string()),
            "sip_timestamp": pa.array(t * 1_000_000, pa.int64()).cast(
                TRADES.field("sip_timestamp").type
            ),
            "price": pa.array(np.concatenate([b.price for b in batches])),
            "size": pa.array(np.concatenate([b.size for b in batches])),
            "exchange": _optional(np.concatenate([b.exchange for b in batches]), pa.int32()),
            "conditions": conds,
            "id": pa.array(np.concatenate([b.id for b in batches]), pa.string()),
            "sequence": _optional(np.concatenate([b.sequence for b in batches]), pa.int64()),
            "tape": _optional(np.concatenate([b.tape for b in batches]), pa.int32()),
            "received_at": pa.array(received * 1000, pa.int64()).cast(
                TRADES.field("received_at").type
            ),
        },
        schema=TRADES,
    )


def sorted_trades(tables: Sequence[pa.Table]) -> pa.Table:
    """One table of ``tables``' rows sorted by (symbol, sip_timestamp), ties in arrival order."""
    table = pa.concat_tables([TRADES.empty_table(), *tables]).combine_chunks()
    return table.sort_by([("symbol", "ascending"), ("sip_timestamp", "ascending")])


def session_days(table: pa.Table) -> npt.NDArray[np.int32]:
    """The New York date (date32) of each trade, as the live fold dates its minutes."""
    hours = pc.cast(table["sip_timestamp"], pa.int64()).to_numpy() // 3_600_000_000_000
    uniq, inverse = np.unique(hours, return_inverse=True)
    days = [calendar.to_days(session_date(int(h) * 3_600_000)) for h in uniq]
    return np.asarray(days, np.int32)[inverse]


def encode(table: pa.Table) -> pa.Buffer:
    """A sorted archive table as Parquet: zstd, dictionaries only where values repeat.

    Ids and timestamps are nearly all distinct: trying a dictionary on them costs time at the
    snapshot, which the flow waits for, and saves nothing.
    """
    out = pa.BufferOutputStream()
    pq.write_table(table, out, compression="zstd", use_dictionary=_DICTIONARY)
    return out.getvalue()


def part_id(data: pa.Buffer, newest: dt.datetime) -> str:
    """When the flush's last trade was received, and a digest of the file.

    Keys sort in the order the flow received the trades (the wall clock of each read), which
    is the order a replay reads them in; the same rows written by the same version land on
    the same key.
    """
    return f"{newest:%Y%m%dT%H%M%S%f}-{hashlib.blake2b(data, digest_size=8).hexdigest()}"


def write_tables(lake: Lake, tables: Sequence[pa.Table]) -> list[str]:
    """Write ``tables``' rows as one sorted file per session; their keys."""
    table = sorted_trades(tables)
    if table.num_rows == 0:
        return []
    days = session_days(table)
    keys = []
    for d in np.unique(days):
        part = table.filter(pa.array(days == d)) if days[0] != days[-1] else table
        data = encode(part)
        key = trades_part(
            calendar.from_days(int(d)), part_id(data, pc.max(part["received_at"]).as_py())
        )
        lake.write_bytes(key, data)
        keys.append(key)
    return keys


def write_archive(lake: Lake, batches: Sequence[TradeBatch]) -> list[str]:
    """Write ``batches`` as one file per session; their keys."""
    return write_tables(lake, [trades_table(batches)])


def freeze(tables: Sequence[pa.Table]) -> bytes:
    """Tables as one compressed Arrow IPC stream: what a snapshot carries."""
    table = pa.concat_tables([TRADES.empty_table(), *tables])
    out = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(out, TRADES, options=options) as writer:
        writer.write_table(table)
    return bytes(out.getvalue())


def thaw(data: bytes) -> pa.Table:
    """The table a snapshot carried."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


@dataclass(frozen=True)
class _Write:
    """A flush on its way to the lake, and the rows it carries (converted on their thread)."""

    done: Future[list[str]]
    tables: list[Future[pa.Table]]


class _ArchivePartition(StatefulSinkPartition[TradeBatch, list[bytes] | None]):
    """Buffers the archive, converting batches to Arrow as they come.

    A snapshot flushes without waiting for the lake: the rows of every write still under way
    go into the snapshot itself (compressed Arrow), and a resume from it writes them again
    under the same keys (one flush, one file, as before). So the flow never stalls on a sort, an encode or an S3 PUT, and a
    snapshot still commits only trades that are in the lake or in the snapshot.
    """

    def __init__(
        self, lake: Lake, flush_after: float, max_trades: int, resume: list[bytes] | None
    ) -> None:
        self._lake = lake
        self._flush_after = flush_after
        self._max = max_trades
        self._tables: list[Future[pa.Table]] = []
        self._held = 0
        self._since = 0.0
        self._convert = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trades-arrow")
        self._write = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trades-archive")
        self._pending: list[_Write] = []
        for data in resume or []:
            self._tables.append(self._convert.submit(thaw, data))
            self._flush()

    def write_batch(self, values: list[TradeBatch]) -> None:
        batches = [b for b in values if len(b)]
        if batches:
            if not self._tables:
                self._since = time.monotonic()
            self._tables.append(self._convert.submit(trades_table, batches))
            self._held += sum(map(len, batches))
        self._reap()
        if self._tables and (
            self._held >= self._max or time.monotonic() - self._since >= self._flush_after
        ):
            self._flush()

    def _flush(self) -> None:
        if self._tables:
            tables, self._tables, self._held = self._tables, [], 0
            done = self._write.submit(_write_converted, self._lake, tables)
            self._pending.append(_Write(done, tables))

    def _reap(self) -> None:
        """Raise a failed write here: the flow stops rather than lose trades."""
        done = [w for w in self._pending if w.done.done()]
        self._pending = [w for w in self._pending if not w.done.done()]
        for w in done:
            w.done.result()

    def snapshot(self) -> list[bytes] | None:
        self._flush()
        self._reap()
        if not self._pending:
            return None
        return [freeze([t.result() for t in w.tables]) for w in self._pending]

    def close(self) -> None:
        self._flush()
        for w in self._pending:
            w.done.result()
        self._pending = []
        self._convert.shutdown(wait=True)
        self._write.shutdown(wait=True)


def _write_converted(lake: Lake, tables: Sequence[Future[pa.Table]]) -> list[str]:
    """On the writer thread, once the flush's conversions are done."""
    return write_tables(lake, [f.result() for f in tables])


class TradesArchiveSink(FixedPartitionedSink[TradeBatch, list[bytes] | None]):
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
        self, step_id: str, for_part: str, resume_state: list[bytes] | None
    ) -> StatefulSinkPartition[TradeBatch, list[bytes] | None]:
        """A buffering writer; on resume, it first writes the rows the snapshot carried."""
        return _ArchivePartition(self.lake, self.flush_after, self.max_trades, resume_state)
