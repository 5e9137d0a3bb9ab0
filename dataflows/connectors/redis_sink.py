"""Bar events and latest trades to Redis: the live view the API and alerts read.

Per batch of fold results, in one round trip (:meth:`core.stores.redis.LiveStore.write_encoded`):
the latest trade of each symbol that traded, its forming bar, the last final bar of each
symbol, bar events published on ``{prefix}bars:{SYMBOL}`` (``final`` false while forming, true
at close, with its ``revision``): every final bar and revision in order, then each symbol's
newest forming bar (a subscriber wants the newest forming state; one that a final bar of the
batch supersedes is not published), and the partition's counters and watermark under
``{prefix}metrics:live:{part}``. Keys expire after ``ttl_s`` so a symbol that stopped trading
does not look live forever. Writes are plain SETs of whole documents, so a replay after
recovery rewrites the same values. The fold bounds how often forming bars come
(``LIVE_PUBLISH_MS``); a result with only counters writes them at most once a second.

Writes run in order on a thread of their own (:class:`dataflows.connectors.background.OrderedWriter`):
at thousands of symbols a publication carries thousands of documents, and the worker folds the
next trades while Redis stores them. A batch carrying final bars returns only once they are in
Redis, so recovery never commits an epoch whose final bars Redis lacks (forming bars and latest
trades are overwritten by the next publication, and a replay after recovery rewrites them).
"""

from __future__ import annotations

import datetime as dt
import time

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.isotime import ms_iso
from core.stores.redis import Document, LiveStore, connect, encode_many
from dataflows.connectors.background import OrderedWriter
from dataflows.minute_fold import FoldOut, LastTrade, MinuteBar


class _RedisPartition(StatelessSinkPartition[FoldOut]):
    def __init__(self, store: LiveStore, publish: bool, ttl_s: int) -> None:
        self._store = store
        self._publish = publish
        self._ttl_s = ttl_s
        self._final_start: dict[str, int] = {}
        self._metrics_at: dict[str, float] = {}
        self._writer = OrderedWriter("redis-live-sink")

    def write_batch(self, items: list[FoldOut]) -> None:
        self._writer.submit(self._write, items)
        if any(out.final for out in items):
            self._writer.drain()

    def _write(self, items: list[FoldOut]) -> None:
        latest: dict[str, LastTrade] = {}
        forming: dict[str, MinuteBar] = {}
        final: dict[str, MinuteBar] = {}
        events: list[MinuteBar] = []  # every final bar and revision, in order
        closed: dict[str, int] = {}  # per symbol, the newest minute this batch closed
        metrics: dict[str, dict[str, object]] = {}
        for out in items:
            for t in out.latest:
                latest[t.symbol] = t
            for b in out.forming:
                cur = forming.get(b.symbol)
                if cur is None or b.start >= cur.start:
                    forming[b.symbol] = b
            for b in out.final:
                if b.start >= self._final_start.get(b.symbol, b.start):
                    self._final_start[b.symbol] = b.start
                    final[b.symbol] = b
                if b.start > closed.get(b.symbol, b.start - 1):
                    closed[b.symbol] = b.start
            events.extend(out.final)
            if out.part:
                metrics[out.part] = {
                    **out.counters,
                    "watermark": ms_iso(out.watermark) if out.watermark > 0 else "",
                }
        # forming bars coalesced per symbol, the newest only, and none its final supersedes
        events += [b for s, b in forming.items() if b.start > closed.get(s, b.start - 1)]
        clock = time.monotonic()
        if not (latest or forming or final or events):
            # counters alone: at most once a second per partition
            metrics = {
                p: m for p, m in metrics.items() if clock - self._metrics_at.get(p, -1e9) >= 1
            }
            if not metrics:
                return
        for part in metrics:
            self._metrics_at[part] = clock
        now = dt.datetime.now(dt.UTC).isoformat()
        key = self._store.key
        published = {id(b) for b in events}
        records: list[Document] = [*events]
        records += [b for b in forming.values() if id(b) not in published]
        records += latest.values()
        encoded = dict(zip(map(id, records), encode_many(records, now), strict=True))  # each once
        docs = [(key("latest", s), encoded[id(t)]) for s, t in latest.items()]
        docs += [(key("bar", s), encoded[id(b)]) for s, b in forming.items()]
        docs += [(key("final", s), encoded[id(b)]) for s, b in final.items()]
        self._store.write_encoded(
            docs=docs,
            events=[(b.symbol, encoded[id(b)]) for b in events] if self._publish else [],
            metrics={p: {**m, "updated_at": now} for p, m in metrics.items()},
            ttl_s=self._ttl_s,
        )

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._store.r.close()


class RedisLiveSink(DynamicSink[FoldOut]):
    """Write fold results through :class:`core.stores.redis.LiveStore`."""

    def __init__(
        self, url: str, prefix: str = "condvest:", *, publish: bool = True, ttl_s: int = 86_400
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.publish = publish
        self.ttl_s = ttl_s

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[FoldOut]:
        """One client per worker."""
        return _RedisPartition(LiveStore(connect(self.url), self.prefix), self.publish, self.ttl_s)
