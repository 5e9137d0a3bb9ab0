"""Live view to Redis: latest trade and current minute bar per symbol, announced on ``bars``.

Each batch collapses to the newest state per symbol and goes out in one pipeline, so Redis
sees one round trip per batch however many ticks it held. Writes are plain SETs of the full
state, so a replay after recovery rewrites the same values (idempotent).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.stores.redis import LiveStore, connect
from dataflows.operators import LiveUpdate


def latest_payload(u: LiveUpdate) -> dict[str, Any]:
    """The latest-trade document (price, size, ts ISO, exchange, conditions, sequence)."""
    t = u.latest
    return {
        "symbol": t.symbol,
        "price": t.price,
        "size": t.size,
        "ts": t.ts.isoformat(),
        "exchange": t.exchange,
        "conditions": list(t.conditions),
        "sequence": t.sequence,
    }


def bar_payload(u: LiveUpdate, now: dt.datetime) -> dict[str, Any]:
    """The live-bar document; ``updated_at`` says how fresh it is."""
    return {
        "start": u.start.isoformat(),
        "open": u.open,
        "high": u.high,
        "low": u.low,
        "close": u.close,
        "volume": u.volume,
        "vwap": u.vwap,
        "trades": u.trades,
        "updated_at": now.isoformat(),
    }


class _RedisPartition(StatelessSinkPartition[LiveUpdate]):
    def __init__(self, store: LiveStore, publish: bool) -> None:
        self._store = store
        self._publish = publish

    def write_batch(self, items: list[LiveUpdate]) -> None:
        newest: dict[str, LiveUpdate] = {}
        for u in items:  # arrival order per symbol is the state's own order: last one wins
            newest[u.latest.symbol] = u
        if not newest:
            return
        now = dt.datetime.now(dt.UTC)
        self._store.set_live(
            {s: latest_payload(u) for s, u in newest.items()},
            {s: bar_payload(u, now) for s, u in newest.items()},
            publish=self._publish,
        )

    def close(self) -> None:
        self._store.r.close()


class RedisLiveSink(DynamicSink[LiveUpdate]):
    """Write :class:`LiveUpdate` items through :class:`core.stores.redis.LiveStore`."""

    def __init__(self, url: str, prefix: str = "condvest:", *, publish: bool = True) -> None:
        self.url = url
        self.prefix = prefix
        self.publish = publish

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[LiveUpdate]:
        """One client per worker."""
        return _RedisPartition(LiveStore(connect(self.url), self.prefix), self.publish)
