"""Per-key rate limits in Redis, shared by every worker and task: a window per minute.

The shared count is ``{REDIS_PREFIX}rl:{key id}:{minute}``, raised with one pipelined
``INCRBY`` and ``EXPIRE``. A worker does not make that trip on every request: far from the
limit it counts locally and adds its count in batches (:mod:`api.ratecounts` says when, and
by how much a key can pass its limit between two workers' batches). Every answer carries ``RateLimit-Limit``,
``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds to the next window) and
``RateLimit-Policy``; past the limit the answer is a 429 with ``Retry-After``.

When Redis cannot be reached the request is let through (and counted in the log): the limit
protects the service, and refusing every caller would make a Redis outage an API outage.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Final

import redis
from starlette.requests import HTTPConnection

from api import metrics
from api.middleware import add_response_header
from api.principals import Principal
from api.problems import Problem
from api.ratecounts import LocalCounts
from api.resources import Resources
from api.responses import REFRESH

log = logging.getLogger(__name__)
WINDOW_S: Final = 60


@dataclass(frozen=True)
class Verdict:
    """The state of a key's window after counting this request."""

    limit: int
    count: int
    reset_s: int

    @property
    def allowed(self) -> bool:
        """True while the window's count is within the limit."""
        return self.count <= self.limit

    @property
    def remaining(self) -> int:
        """Requests left in this window."""
        return max(0, self.limit - self.count)

    def headers(self) -> dict[str, str]:
        """The RateLimit headers of this verdict."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
            "RateLimit-Policy": f"{self.limit};w={WINDOW_S}",
        }


def window(now: float) -> tuple[int, int]:
    """(window number, seconds until it ends) at ``now``."""
    index = int(now // WINDOW_S)
    return index, max(1, math.ceil((index + 1) * WINDOW_S - now))


async def count(res: Resources, key: Principal, now: float | None = None) -> Verdict | None:
    """Count one request of ``key``; None when it has no limit or Redis is unreachable."""
    if key.rate_limit <= 0:
        return None
    index, reset_s = window(time.time() if now is None else now)
    w = res.rate_counts.window(key.id, index)
    tick = time.monotonic()
    if (n := LocalCounts.count_here(w, key.rate_limit, tick)) is not None:
        return Verdict(limit=key.rate_limit, count=n, reset_s=reset_s)
    add = LocalCounts.take_pending(w)
    name = f"{res.settings.redis_prefix}rl:{key.id}:{index}"
    try:
        client = await res.async_redis()
        pipe = client.pipeline(transaction=False)
        pipe.incrby(name, add)
        pipe.expire(name, WINDOW_S * 2)
        total, _ = await pipe.execute()
    except (redis.RedisError, OSError) as exc:
        LocalCounts.failed(w, add)
        log.warning("rate limit not checked: redis %s", type(exc).__name__)
        return None
    LocalCounts.synced(w, int(total), tick)
    return Verdict(limit=key.rate_limit, count=int(total), reset_s=reset_s)


async def enforce(conn: HTTPConnection, res: Resources, key: Principal) -> None:
    """Count the request; 429 past the limit, RateLimit headers on the answer either way.

    A renewal the API makes itself (:data:`api.responses.REFRESH`) is not the caller's request.
    """
    if conn.scope.get(REFRESH):
        return
    verdict = await count(res, key)
    if verdict is None:
        return
    headers = verdict.headers()
    if not verdict.allowed:
        metrics.RATE_LIMITED.inc()
        raise Problem(
            429,
            f"rate limit of {verdict.limit} requests per minute exceeded; retry in "
            f"{verdict.reset_s} s",
            kind="rate-limited",
            headers={**headers, "Retry-After": str(verdict.reset_s)},
        )
    for name, value in headers.items():
        add_response_header(conn, name, value)
