"""Alert events to Postgres, then to Redis and SNS (:class:`core.alert_delivery.Delivery`).

Stored first, delivered after: a crash between the two leaves events pending, delivered at the
next start (and by any later batch that brings them again). A batch returns once its events
are stored, so recovery never commits an epoch whose events are not; they are sent (and
recorded as delivered, on a connection of its own) on an ordered thread
(:class:`dataflows.connectors.background.OrderedWriter`), so the worker folds the next trades
while Redis and SNS take them: a send waits behind the live sinks' writes on a busy Redis. The
rate limit's due summaries go the same way, at most once a second. A failed send stops the
flow at the next batch.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.alert_delivery import Delivery
from core.alerts import AlertEvent
from core.stores.postgres import migrate
from core.stores.redis import connect
from dataflows.connectors.background import OrderedWriter


class _AlertPartition(StatelessSinkPartition[list[AlertEvent]]):
    def __init__(
        self, conn: psycopg.Connection[Any], sends: psycopg.Connection[Any], delivery: Delivery
    ) -> None:
        self._conn = conn
        self._sends = sends
        self._delivery = delivery
        self._summarised = 0.0
        self._writer = OrderedWriter("alert-sink")
        migrate(conn)
        delivery.deliver_pending(conn)

    def write_batch(self, items: list[list[AlertEvent]]) -> None:
        events = [e for batch in items for e in batch]
        if events and (todo := self._delivery.store(self._conn, events)):
            self._writer.submit(self._complete, todo)
        now = time.monotonic()
        if now - self._summarised >= 1.0:
            self._summarised = now
            self._writer.submit(self._summarise, None)

    def _complete(self, todo: list[AlertEvent]) -> None:
        self._delivery.complete(self._sends, todo, summarise=False)  # _summarise: every second

    def _summarise(self, _: None) -> None:
        self._delivery.summarise()

    def close(self) -> None:
        try:
            self._writer.close()
            self._delivery.summarise()
        finally:
            self._conn.close()
            self._sends.close()
            self._delivery.redis.close()


class AlertSink(DynamicSink[list[AlertEvent]]):
    """Store and deliver alert events."""

    def __init__(
        self,
        database_url: str,
        redis_url: str,
        prefix: str = "condvest:",
        *,
        max_per_minute: int = 30,
        sns_topic_arn: str | None = None,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.prefix = prefix
        self.max_per_minute = max_per_minute
        self.sns_topic_arn = sns_topic_arn
        self.endpoint_url = endpoint_url
        self.region = region

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AlertPartition:
        """Two connections (stores, sends) and a Redis client per worker."""
        delivery = Delivery(
            connect(self.redis_url),
            self.prefix,
            max_per_minute=self.max_per_minute,
            sns_topic_arn=self.sns_topic_arn,
            endpoint_url=self.endpoint_url,
            region=self.region,
        )
        return _AlertPartition(
            psycopg.connect(self.database_url, autocommit=True),
            psycopg.connect(self.database_url, autocommit=True),
            delivery,
        )
