"""Live intraday bars to Redis, beside the minute bars: the same keys with the interval, the same channel.

Per batch, in one pipelined round trip through :meth:`core.stores.redis.LiveStore.write_live`:
``{prefix}bar:{I}:{SYMBOL}`` (the forming bar), ``{prefix}final:{I}:{SYMBOL}`` (the last final
bar, latest revision) and every event published on ``{prefix}bars:{SYMBOL}`` (so the API's WebSocket
relays it), each document carrying its ``interval``, ``final`` and ``revision``. Keys expire
after ``ttl_s``.

Writes run on a thread of their own, in order: a second's forming bars for the market (six
intervals for every symbol that traded) take tens of milliseconds to encode and send, and
the minute bars behind them on the worker must not wait for that
(:class:`dataflows.connectors.background.OrderedWriter`). A batch carrying a final bar returns
only once Redis holds it, so recovery never commits an epoch whose final bars Redis lacks (a
wait at window closes only). A failed write stops the flow at the next batch.
"""

from __future__ import annotations

import datetime as dt

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.stores.redis import LiveStore, connect, encode_at
from dataflows.connectors.background import OrderedWriter
from dataflows.rollups import RollupBar


class _RollupPartition(StatelessSinkPartition[list[RollupBar]]):
    def __init__(self, store: LiveStore, ttl_s: int) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._writer = OrderedWriter("rollup-sink")

    def write_batch(self, items: list[list[RollupBar]]) -> None:
        if any(items):
            self._writer.submit(self._write, items)
            if any(b.final for bars in items for b in bars):
                self._writer.drain()

    def _write(self, items: list[list[RollupBar]]) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        newest: dict[str, tuple[int, bytes]] = {}  # per key, the latest window's document
        events: list[tuple[str, bytes]] = []
        key = self._store.key
        for bars in items:
            for b in bars:
                data = encode_at(b, now)
                events.append((b.symbol, data))
                k = key("final" if b.final else "bar", f"{b.interval}:{b.symbol}")
                cur = newest.get(k)
                if cur is None or b.start >= cur[0]:
                    newest[k] = (b.start, data)
        if events:
            docs = [(k, data) for k, (_, data) in newest.items()]
            self._store.write_encoded(docs=docs, events=events, metrics={}, ttl_s=self._ttl_s)

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._store.r.close()


class RollupRedisSink(DynamicSink[list[RollupBar]]):
    """Write live intraday bar events to Redis."""

    def __init__(self, url: str, prefix: str = "condvest:", *, ttl_s: int = 86_400) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_s = ttl_s

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[list[RollupBar]]:
        """One client per worker."""
        return _RollupPartition(LiveStore(connect(self.url), self.prefix), self.ttl_s)
