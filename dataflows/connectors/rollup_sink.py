"""Live intraday bars to Redis, beside the minute bars: the same keys with the interval, the same channel.

Per batch, in one pipelined round trip through :meth:`core.stores.redis.LiveStore.write_live`:
``{prefix}bar:{I}:{SYMBOL}`` (the forming bar), ``{prefix}final:{I}:{SYMBOL}`` (the last final
bar, latest revision) and every event published on ``{prefix}bars:{SYMBOL}`` (so the API's WebSocket
relays it), each document carrying its ``interval``, ``final`` and ``revision``. Keys expire
after ``ttl_s``.

Writes run on a thread of their own, in order: a second's forming bars for the market (six
intervals for every symbol that traded) take tens of milliseconds to encode and send, and
the minute bars behind them on the worker must not wait for that
(:class:`dataflows.connectors.background.OrderedWriter`). A failed write stops the flow at the
next batch.
"""

from __future__ import annotations

import datetime as dt

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.stores.redis import LiveStore, connect
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

    def _write(self, items: list[list[RollupBar]]) -> None:
        forming: dict[str, RollupBar] = {}
        final: dict[str, RollupBar] = {}
        events: list[RollupBar] = []
        for bars in items:
            for b in bars:
                slot = f"{b.interval}:{b.symbol}"
                chosen = final if b.final else forming
                cur = chosen.get(slot)
                if cur is None or b.start >= cur.start:
                    chosen[slot] = b
                events.append(b)
        if not events:
            return
        now = dt.datetime.now(dt.UTC).isoformat()
        docs = {id(b): _doc(b, now) for b in events}
        self._store.write_live(
            latest={},
            forming={k: docs[id(b)] for k, b in forming.items()},
            final={k: docs[id(b)] for k, b in final.items()},
            events=list(docs.values()),
            metrics={},
            ttl_s=self._ttl_s,
        )

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._store.r.close()


def _doc(b: RollupBar, now: str) -> dict[str, object]:
    doc = b.to_json()
    doc["updated_at"] = now
    return doc


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
