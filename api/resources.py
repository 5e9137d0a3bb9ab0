"""What the API talks to, opened lazily on first use and closed when the app stops.

Nothing is touched when the app is built, so ``create_app()`` is cheap and tests can build one
without a lifespan. With ``DATABASE_URL`` / ``REDIS_URL`` unset the embedded servers start on
first use, as the core stores do.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import redis
import redis.asyncio as aioredis

from core.lake import Lake
from core.settings import ApiSettings
from core.stores import postgres
from core.stores import redis as redis_store
from core.stores.redis import LiveStore

CONNECT_TIMEOUT_S = 5


class Resources:
    """Lake, Postgres URL and Redis client of one app; safe to share across threads."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._lake: Lake | None = None
        self._db_url: str | None = None
        self._redis_url: str | None = None
        self._redis: redis.Redis | None = None

    def lake(self) -> Lake:
        """The lake of ``LAKE_URL``."""
        with self._lock:
            if self._lake is None:
                s = self.settings
                self._lake = Lake(
                    s.lake_url, endpoint_url=s.aws_endpoint_url, region=s.aws_default_region
                )
            return self._lake

    def database_url(self) -> str:
        """``DATABASE_URL``, or the embedded server's (started on first call)."""
        with self._lock:
            if self._db_url is None:
                self._db_url = postgres.database_url(self.settings)
            return self._db_url

    @contextmanager
    def postgres(self) -> Iterator[psycopg.Connection[Any]]:
        """A short-lived read connection (autocommit), closed on exit."""
        with psycopg.connect(
            self.database_url(), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        ) as conn:
            yield conn

    def redis_url(self) -> str:
        """``REDIS_URL``, or the embedded server's (started on first call)."""
        with self._lock:
            if self._redis_url is None:
                self._redis_url = redis_store.redis_url(self.settings)
            return self._redis_url

    def redis(self) -> redis.Redis:
        """A shared client (it pools its own connections)."""
        url = self.redis_url()
        with self._lock:
            if self._redis is None:
                self._redis = redis.Redis.from_url(
                    url,
                    decode_responses=True,
                    socket_timeout=CONNECT_TIMEOUT_S,
                    socket_connect_timeout=CONNECT_TIMEOUT_S,
                )
            return self._redis

    def live_store(self) -> LiveStore:
        """The live flow's Redis view under ``REDIS_PREFIX``."""
        return LiveStore(self.redis(), self.settings.redis_prefix)

    def async_redis(self) -> aioredis.Redis:
        """A new asyncio client for one WebSocket (the caller closes it)."""
        return aioredis.Redis.from_url(
            self.redis_url(), decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT_S
        )

    def close(self) -> None:
        """Close what was opened."""
        with self._lock:
            if self._redis is not None:
                self._redis.close()
                self._redis = None
