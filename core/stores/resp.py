"""Redis commands packed by hand: for the live flow's publications of thousands of commands.

redis-py encodes and frames every argument in Python (about 1.7 us each); a publication of
the live flow carries thousands of documents already encoded as bytes, so the frames are built
by joining bytes instead and sent on a connection of the client's pool, with the client's retry
policy (a connection error reconnects and sends again, as redis-py does for its own commands).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis


def pack(args: Sequence[bytes]) -> bytes:
    """``args`` as one RESP command (an array of bulk strings)."""
    head = b"*%d\r\n" % len(args)
    return head + b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args])


def call(client: redis.Redis, packed: bytes) -> Any:
    """Send a command :func:`pack` built; its reply (an error reply is raised, as by redis-py)."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        return conn.retry.call_with_retry(
            lambda: _round_trip(conn, packed),
            lambda _error: conn.disconnect(),  # type: ignore[no-untyped-call]
        )
    except BaseException:
        conn.disconnect()  # type: ignore[no-untyped-call]  # never back to the pool mid-command
        raise
    finally:
        pool.release(conn)


def _round_trip(conn: Any, packed: bytes) -> Any:
    conn.send_packed_command([packed])  # a list: bytes alone would be sent int by int
    return conn.read_response()
