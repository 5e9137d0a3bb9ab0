"""Live intraday bars to Redis, beside the minute bars: the same keys with the interval, the same channel.

Per batch, in one round trip through :meth:`core.stores.redis.LiveStore.write_encoded`:
``{prefix}final:{I}:{SYMBOL}`` (the last final bar, latest revision) and
``{prefix}sums:{SYMBOL}`` (the summaries of the symbol's open windows, :mod:`core.forming`), and
every final bar and summary published on ``{prefix}bars:{SYMBOL}`` (so the API's WebSocket
relays the bars and forms the forming ones). Bars carry their ``interval``, ``final`` and
``revision``; a summary carries ``windows``. Keys expire after ``ttl_s``.

Writes run on a thread of their own, in order, so the minute bars behind them on the worker
never wait for Redis (:class:`dataflows.connectors.background.OrderedWriter`). A batch carrying
a final bar returns only once Redis holds it, so recovery never commits an epoch whose final
bars Redis lacks (a wait at window closes only). A failed write stops the flow at the next
batch.
"""

from __future__ import annotations

import datetime as dt
from typing import TypeVar

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.stores.redis import SUMS, LiveStore, connect, encode_many
from dataflows.connectors.background import OrderedWriter
from dataflows.rollups import Rolled, RollupBar

R = TypeVar("R", bound=Rolled)


class _RollupPartition(StatelessSinkPartition[list[R]]):
    def __init__(self, store: LiveStore, ttl_s: int) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._writer = OrderedWriter("rollup-sink")

    def write_batch(self, items: list[list[R]]) -> None:
        if any(items):
            self._writer.submit(self._write, items)
            if any(isinstance(b, RollupBar) and b.final for bars in items for b in bars):
                self._writer.drain()

    def _write(self, items: list[list[R]]) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        newest: dict[str, tuple[int, bytes]] = {}  # per key, the latest window's document
        events: list[tuple[str, bytes]] = []
        key = self._store.key
        rolled = [b for bars in items for b in bars]
        for b, data in zip(rolled, encode_many(rolled, now), strict=True):
            events.append((b.symbol, data))
            if isinstance(b, RollupBar):
                k, start = key("final", f"{b.interval}:{b.symbol}"), b.start
            else:
                k, start = key(SUMS, b.symbol), 0  # the newest summary is the last
            cur = newest.get(k)
            if cur is None or start >= cur[0]:
                newest[k] = (start, data)
        if events:
            docs = [(k, data) for k, (_, data) in newest.items()]
            self._store.write_encoded(docs=docs, events=events, metrics={}, ttl_s=self._ttl_s)

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._store.r.close()


class RollupRedisSink(DynamicSink[list[R]]):
    """Write live intraday bar events, or window summaries, to Redis.

    ``RollupRedisSink[RollupBar](...)`` for the flow's final bars, ``[WindowSums]`` for its
    summaries (one writer thread each).
    """

    def __init__(self, url: str, prefix: str = "condvest:", *, ttl_s: int = 86_400) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_s = ttl_s

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[list[R]]:
        """One client per worker."""
        return _RollupPartition(LiveStore(connect(self.url), self.prefix), self.ttl_s)
