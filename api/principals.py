"""API keys and who they belong to: hashed keys in Postgres, plus ``API_KEYS`` as a bootstrap.

A key is shown once, when ``python -m api.keys create`` makes it; Postgres keeps its SHA-256
(keys are 256 random bits, so a plain digest is as good as a slow hash and costs nothing per
request), its name, scopes and rate limit. Keys from ``API_KEYS`` are principals too, with
every scope and the default rate limit, so a fresh deployment works before any key is made.

Each request's key becomes a :class:`Principal`; routes that need to know who is calling (the
owner of an alert rule, say) take its stable ``id``. Lookups are cached for
``API_KEY_CACHE_S`` seconds, both ways, so a revoked key stops working within that time and a
flood of wrong keys does not reach the database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import psycopg
from psycopg.rows import dict_row

Scope = Literal["read", "stream", "alerts"]
SCOPES: Final[tuple[Scope, ...]] = ("read", "stream", "alerts")
KEY_PREFIX: Final = "cv_"
DDL: Final = (
    """
    CREATE TABLE IF NOT EXISTS api_keys (
        id text PRIMARY KEY,
        name text NOT NULL,
        key_hash bytea NOT NULL UNIQUE,
        prefix text NOT NULL,
        scopes text[] NOT NULL,
        rate_limit integer NOT NULL CHECK (rate_limit >= 0),
        created_at timestamptz NOT NULL DEFAULT now(),
        revoked_at timestamptz
    )
    """,
    "CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name)"
    " WHERE revoked_at IS NULL",
)


@dataclass(frozen=True)
class Principal:
    """The holder of a key: a stable id (``key_...`` or ``env_...``), a name, scopes, a limit."""

    id: str
    name: str
    scopes: frozenset[str]
    rate_limit: int
    """Requests per minute; 0 means unlimited."""
    source: Literal["database", "env"]


@dataclass(frozen=True)
class KeyRecord:
    """A stored key as ``list`` shows it (never the key itself)."""

    id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    rate_limit: int
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def digest(key: str) -> bytes:
    """What is stored and looked up for ``key``."""
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    """A new key: ``cv_`` and 43 random URL-safe characters."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_scopes(text: str) -> tuple[str, ...]:
    """``read,stream`` as a sorted tuple; ValueError naming an unknown scope."""
    scopes = {s.strip() for s in text.split(",") if s.strip()}
    unknown = scopes - set(SCOPES)
    if unknown:
        msg = f"unknown scope {sorted(unknown)[0]!r}: choose from {', '.join(SCOPES)}"
        raise ValueError(msg)
    if not scopes:
        msg = "name at least one scope"
        raise ValueError(msg)
    return tuple(s for s in SCOPES if s in scopes)


def env_principals(keys: Iterable[str], rate_limit: int) -> dict[bytes, Principal]:
    """The bootstrap keys of ``API_KEYS``, by digest, each with every scope."""
    out = {}
    for key in keys:
        d = digest(key)
        out[d] = Principal(
            id="env_" + d.hex()[:12],
            name="API_KEYS",
            scopes=frozenset(SCOPES),
            rate_limit=rate_limit,
            source="env",
        )
    return out


# -- the database -----------------------------------------------------------------------------
def migrate(conn: psycopg.Connection[Any]) -> None:
    """Create the key table (idempotent)."""
    with conn.transaction():
        for stmt in DDL:
            conn.execute(stmt)


def create(
    conn: psycopg.Connection[Any], name: str, scopes: Sequence[str], rate_limit: int
) -> tuple[str, str]:
    """Store a new key; returns (id, key). ValueError when an active key has that name."""
    key = new_key()
    key_id = "key_" + secrets.token_hex(6)
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO api_keys (id, name, key_hash, prefix, scopes, rate_limit)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (key_id, name, digest(key), key[:7], list(scopes), rate_limit),
            )
    except psycopg.errors.UniqueViolation:
        msg = f"an active key is already named {name!r}: revoke it or choose another name"
        raise ValueError(msg) from None
    return key_id, key


def records(conn: psycopg.Connection[Any], *, include_revoked: bool) -> list[KeyRecord]:
    """Stored keys, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, name, prefix, scopes, rate_limit, created_at, revoked_at FROM api_keys"
            " WHERE %s OR revoked_at IS NULL ORDER BY created_at, id",
            (include_revoked,),
        )
        return [KeyRecord(**{**row, "scopes": tuple(row["scopes"])}) for row in cur.fetchall()]


def revoke(conn: psycopg.Connection[Any], id_or_name: str) -> list[str]:
    """Revoke the active key with this id or name; returns the ids revoked (empty: none)."""
    with conn.transaction():
        rows = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE revoked_at IS NULL"
            " AND (id = %s OR name = %s) RETURNING id",
            (id_or_name, id_or_name),
        ).fetchall()
    return [r[0] for r in rows]


def lookup(conn: psycopg.Connection[Any], key_digest: bytes) -> Principal | None:
    """The active key with this digest, or None (also when the table does not exist yet)."""
    try:
        row = conn.execute(
            "SELECT id, name, scopes, rate_limit FROM api_keys"
            " WHERE key_hash = %s AND revoked_at IS NULL",
            (key_digest,),
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    if row is None:
        return None
    return Principal(
        id=row[0], name=row[1], scopes=frozenset(row[2]), rate_limit=row[3], source="database"
    )


class KeyCache:
    """Lookups by digest, kept ``ttl`` seconds (found or not), at most ``size`` of them."""

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[bytes, tuple[float, Principal | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_digest: bytes) -> tuple[bool, Principal | None]:
        """(known, principal): known is False when the digest must be looked up."""
        now = time.monotonic()
        with self._lock:
            item = self._items.get(key_digest)
            if item is None or item[0] <= now:
                return False, None
            return True, item[1]

    def put(self, key_digest: bytes, principal: Principal | None) -> None:
        """Remember a lookup's result."""
        with self._lock:
            self._items[key_digest] = (time.monotonic() + self.ttl, principal)
            self._items.move_to_end(key_digest)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
