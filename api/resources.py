"""What the API talks to, opened lazily on first use, reused, and closed when the app stops.

Nothing is touched when the app is built, so ``create_app()`` is cheap and tests can build one
without a lifespan. With ``DATABASE_URL`` / ``REDIS_URL`` unset the embedded servers start on
first use, as the core stores do.

Reuse is the point: Postgres connections come from a pool (``API_PG_POOL_SIZE`` per worker),
DuckDB connections from a small pool of single-threaded in-memory databases whose Parquet
metadata cache stays warm between requests, and Redis through one pooled client per kind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import duckdb
import psycopg
import pyarrow.fs as pafs
import redis
import redis.asyncio as aioredis
from psycopg_pool import ConnectionPool, PoolTimeout

from api import metrics, shared
from api.principals import KeyCache, Principal, digest, env_principals, lookup
from api.ratecounts import LocalCounts
from api.responses import ResponseCache, Stored
from core.lake import Lake
from core.settings import ApiSettings
from core.stores import postgres
from core.stores import redis as redis_store
from core.stores.redis import LiveStore

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 5
REDIS_CONNECTIONS = 64
"""Connections of each asyncio Redis client; a burst past it waits for one (up to the timeout)
rather than failing, as the default pool (100, then an error) would make a burst a 503."""
GENERATION_TTL_S = 2.0
MEMO_SIZE = 20_000
T = TypeVar("T")


def tag_of(tokens: Sequence[str | None]) -> str | None:
    """One tag for the generations of several files (None when none of them exists)."""
    return None if not any(tokens) else "|".join(t or "-" for t in tokens)


class PostgresUnavailable(psycopg.OperationalError):
    """No pooled connection could be had in time."""


class DuckPool:
    """At most ``size`` DuckDB connections (``threads=1``), made on demand and reused."""

    def __init__(self, lake: Lake, size: int) -> None:
        self.lake = lake
        self.size = size
        self._idle: queue.LifoQueue[duckdb.DuckDBPyConnection] = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()

    def _make(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:", config={"threads": 1})
        con.execute("SET enable_object_cache = true")
        if not self.lake.is_local:
            import s3fs

            kwargs: dict[str, object] = {}
            if self.lake.endpoint_url:
                kwargs["endpoint_url"] = self.lake.endpoint_url
            if key := os.environ.get("AWS_ACCESS_KEY_ID"):
                kwargs["key"] = key
                kwargs["secret"] = os.environ.get("AWS_SECRET_ACCESS_KEY")
            con.register_filesystem(s3fs.S3FileSystem(**kwargs))
        return con

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for this thread until the block ends."""
        try:
            con = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                make = self._made < self.size
                if make:
                    self._made += 1
            con = self._make() if make else self._idle.get()
        try:
            yield con
        except duckdb.Error:
            con.close()  # its state is unknown: make a fresh one next time
            with self._lock:
                self._made -= 1
            raise
        self._idle.put(con)

    def close(self) -> None:
        """Close the idle connections."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class Resources:
    """Lake, pools and caches of one app; safe to share across threads."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._lake: Lake | None = None
        self._db_url: str | None = None
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._duck: DuckPool | None = None
        self._redis_url: str | None = None
        self._redis: redis.Redis | None = None
        self._aredis: tuple[asyncio.AbstractEventLoop, aioredis.Redis] | None = None
        self._redis_bytes: redis.Redis | None = None
        self._aredis_bytes: tuple[asyncio.AbstractEventLoop, aioredis.Redis] | None = None
        self.env_keys = env_principals(settings.keys(), settings.api_rate_limit)
        self.key_cache = KeyCache(settings.api_key_cache_s)
        self.rate_counts = LocalCounts()
        share = self.share_answer if settings.api_shared_answers else None
        self.responses = ResponseCache(settings.api_response_cache_mb << 20, share)
        self._generations: dict[str, tuple[float, str | None]] = {}
        self._memo: OrderedDict[tuple[Any, ...], tuple[float, Any]] = OrderedDict()
        self.hub: Any = None
        """The process's live hub (api.hub.LiveHub), made by the first WebSocket."""

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

    def _postgres_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        url = self.database_url()
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    url,
                    min_size=self.settings.api_pg_pool_size,  # opened in the background
                    max_size=self.settings.api_pg_pool_size,
                    kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
                    timeout=self.settings.api_pg_timeout_s,
                    open=True,
                    name="api",
                )
            return self._pool

    @contextmanager
    def postgres(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled read connection (autocommit), returned to the pool on exit."""
        try:
            with self._postgres_pool().connection() as conn:
                yield conn
        except PoolTimeout as exc:
            msg = "no Postgres connection in time"
            raise PostgresUnavailable(msg) from exc

    @contextmanager
    def duck(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A pooled single-threaded DuckDB connection that can read the lake."""
        lake = self.lake()
        with self._lock:
            if self._duck is None:
                self._duck = DuckPool(lake, self.settings.api_duckdb_connections)
            pool = self._duck
        with pool.connection() as con:
            yield con

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

    async def async_redis(self, *, binary: bool = False) -> aioredis.Redis:
        """The shared asyncio client of the running event loop (it pools its connections).

        ``binary`` gives the one that returns bytes (for packed answers), else ``str``.
        """
        loop = asyncio.get_running_loop()
        current = self._aredis_bytes if binary else self._aredis
        if current is not None and current[0] is loop:
            return current[1]
        url = await asyncio.to_thread(self.redis_url)  # may start the embedded server
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=REDIS_CONNECTIONS,
            timeout=CONNECT_TIMEOUT_S,
            decode_responses=not binary,
            socket_timeout=CONNECT_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
        )
        client = aioredis.Redis.from_pool(pool)  # closing the client closes its pool
        if binary:
            self._aredis_bytes = (loop, client)
        else:
            self._aredis = (loop, client)
        return client

    def share_answer(self, key: tuple[Any, ...], stored: Stored, ttl: float) -> None:
        """Store an answer for every worker (see :mod:`api.shared`); a Redis error only logs.

        Called from the thread that rendered the answer.
        """
        if ttl <= 0:
            return
        url = self.redis_url()
        with self._lock:
            if self._redis_bytes is None:
                self._redis_bytes = redis.Redis.from_url(
                    url, socket_timeout=CONNECT_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S
                )
            client = self._redis_bytes
        name = shared.redis_key(self.settings.redis_prefix, key)
        try:
            client.set(name, shared.pack(stored, ttl), px=max(1, int(ttl * 1000)))
        except (redis.RedisError, OSError) as exc:
            log.warning("answer not shared: redis %s", type(exc).__name__)

    async def answer(self, key: tuple[Any, ...]) -> Stored | None:
        """The cached answer under ``key``: this worker's, else the one shared in Redis."""
        stored = self.responses.get(key)
        return stored if stored is not None else await self.shared_answer(key)

    async def shared_answer(self, key: tuple[Any, ...]) -> Stored | None:
        """The answer another worker stored under ``key``, kept here too; None when none."""
        if not self.settings.api_shared_answers:
            return None
        name = shared.redis_key(self.settings.redis_prefix, key)
        try:
            client = await self.async_redis(binary=True)
            raw = await client.get(name)
        except (redis.RedisError, OSError) as exc:
            log.warning("shared answers not read: redis %s", type(exc).__name__)
            return None
        stored = shared.unpack(raw) if isinstance(raw, bytes) else None
        metrics.cache_lookup("shared", hit=stored is not None)
        if stored is not None:
            self.responses.put(key, stored, share=False)
        return stored

    def known_generation(self, key: str) -> tuple[bool, str | None]:
        """(True, token) when :meth:`generation` of ``key`` is fresh in memory (no I/O)."""
        hit = self._generations.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def known_tag(self, keys: Sequence[str]) -> tuple[bool, str | None]:
        """(True, :func:`tag_of` their generations) when all of ``keys`` are known (no I/O)."""
        tokens = []
        for key in keys:
            known, token = self.known_generation(key)
            if not known:
                return False, None
            tokens.append(token)
        return True, tag_of(tokens)

    def generation(self, key: str) -> str | None:
        """A token that changes whenever the lake file ``key`` is rewritten (None: no file).

        Silver's checkpoint is written after the month files it describes, so its token names
        a state of silver: answers cached under it stay right until it changes. Looked up at
        most every :data:`GENERATION_TTL_S` seconds.
        """
        now = time.monotonic()
        hit = self._generations.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        lake = self.lake()
        info = lake.fs.get_file_info(lake.path(key))
        token = None
        if info.type == pafs.FileType.File:
            token = f"{info.mtime_ns}-{info.size}"
        self._generations[key] = (now + GENERATION_TTL_S, token)
        return token

    def remember(self, key: tuple[Any, ...], make: Callable[[], T], ttl: float) -> T:
        """``make()``, kept ``ttl`` seconds under ``key`` (put the data's generation in the key)."""
        now = time.monotonic()
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None and hit[0] > now:
                self._memo.move_to_end(key)
                metrics.cache_lookup("memo", hit=True)
                return cast(T, hit[1])
        metrics.cache_lookup("memo", hit=False)
        value = make()
        with self._lock:
            self._memo[key] = (now + ttl, value)
            self._memo.move_to_end(key)
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        return value

    def live_store(self) -> LiveStore:
        """The live flow's Redis view under ``REDIS_PREFIX``."""
        return LiveStore(self.redis(), self.settings.redis_prefix)

    def principal(self, key: str | None) -> Principal | None:
        """Who holds ``key`` (API_KEYS first, then Postgres, cached), or None. May block."""
        if not key or len(key) > 256:
            return None
        d = digest(key)
        if (p := self.env_keys.get(d)) is not None:
            return p
        known, p = self.key_cache.get(d)
        if known:
            return p
        with self.postgres() as conn:
            p = lookup(conn, d)
        self.key_cache.put(d, p)
        return p

    async def warm(self, timeout: float = 2.0) -> None:
        """Open the Redis clients before traffic arrives; a failure only logs (a lazy retry).

        A worker's first requests otherwise pay for its connections under load, which shows
        as a burst of slow answers each time a worker starts.
        """
        try:
            async with asyncio.timeout(timeout):
                for binary in (False, True):
                    await (await self.async_redis(binary=binary)).ping()
        except (redis.RedisError, OSError, TimeoutError) as exc:
            log.warning("redis not reached at start: %s", type(exc).__name__)

    async def aclose(self) -> None:
        """Close the asyncio side (the hub, the async client) on the serving loop."""
        if self.hub is not None:
            await self.hub.stop()
            self.hub = None
        for current in (self._aredis, self._aredis_bytes):
            if current is not None and current[0] is asyncio.get_running_loop():
                await current[1].aclose()
        self._aredis = self._aredis_bytes = None

    def close(self) -> None:
        """Close what was opened."""
        with self._lock:
            for client in (self._redis, self._redis_bytes):
                if client is not None:
                    client.close()
            self._redis = self._redis_bytes = None
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            if self._duck is not None:
                self._duck.close()
                self._duck = None
