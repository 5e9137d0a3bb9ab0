"""Whole answers shared by every worker and task through Redis, behind each one's own cache.

A worker's response cache (:class:`api.responses.ResponseCache`) only helps the requests that
worker serves: with several workers, and several tasks behind a load balancer, each would read
and encode the same history itself, and a burst of requests over many symbols lands on a cold
worker as a burst of 20-100 ms reads. So an answer kept locally is also stored in Redis under
the same key (path, query, format, state of the data read) for the same time, and a local miss
asks Redis before reading the data: one GET of the encoded bytes instead of a read.

The stored value is a small JSON header (ETag, media type, headers, expiry as wall-clock time)
and the body; an entry past its expiry is ignored even if Redis still holds it. This module
only packs and names values: :class:`api.resources.Resources` does the I/O.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Final

import orjson

from api.responses import Stored

KIND: Final = "answer:"
_HEAD: Final = 4
"""Bytes of the header's length at the start of a value."""


def redis_key(prefix: str, key: tuple[Any, ...]) -> str:
    """The Redis key of a response-cache key (its ``repr`` is the same in every process)."""
    return prefix + KIND + hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()


def pack(stored: Stored, ttl: float, now: float | None = None) -> bytes:
    """``stored`` as one value that stays true ``ttl`` seconds from ``now`` (wall clock)."""
    head = orjson.dumps(
        {
            "etag": stored.etag,
            "media_type": stored.media_type,
            "headers": stored.headers,
            "expires_at": (time.time() if now is None else now) + ttl,
            "ttl": stored.ttl,
        }
    )
    return len(head).to_bytes(_HEAD, "big") + head + stored.body


def unpack(raw: bytes, now: float | None = None) -> Stored | None:
    """The answer in ``raw``, or None when it has expired or is not a packed answer."""
    try:
        size = int.from_bytes(raw[:_HEAD], "big")
        head = orjson.loads(raw[_HEAD : _HEAD + size])
        left = float(head["expires_at"]) - (time.time() if now is None else now)
        if left <= 0:
            return None
        return Stored(
            body=raw[_HEAD + size :],
            etag=str(head["etag"]),
            media_type=str(head["media_type"]),
            headers={str(k): str(v) for k, v in dict(head["headers"]).items()},
            expires=time.monotonic() + left,
            ttl=float(head.get("ttl", 0.0)),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
