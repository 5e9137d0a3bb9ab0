"""Retry a unit of batch work on transient errors, with capped exponential backoff and jitter.

Jobs that talk to Postgres or S3 for minutes meet dropped connections and throttling; a bounded
retry of the one unit that failed (a symbol, a page) turns those into delays instead of failed
runs. Anything still failing after the last attempt is raised to the caller, never swallowed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("batch.retry")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Attempts and delays: attempt ``i`` (0-based) waits up to ``base * 2**i``, at most ``cap``."""

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            msg = f"attempts must be at least 1, got {self.attempts}"
            raise ValueError(msg)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        ceiling = min(self.cap_s, self.base_s * (2**attempt))
        return (rng or random).uniform(0, ceiling)


def call(
    fn: Callable[[], T],
    *,
    transient: tuple[type[BaseException], ...],
    backoff: Backoff = Backoff(),  # frozen, so one shared default is safe
    what: str = "operation",
    on_retry: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()``; on a ``transient`` error wait and try again, up to ``backoff.attempts`` times.

    ``on_retry`` runs before each new attempt (e.g. to drop a broken connection).
    """
    for attempt in range(backoff.attempts):
        try:
            return fn()
        except transient as exc:
            if attempt + 1 >= backoff.attempts:
                raise
            wait = backoff.delay(attempt)
            log.warning(
                "%s failed (%s: %s); retry %d/%d in %.2fs",
                what, type(exc).__name__, exc, attempt + 1, backoff.attempts - 1, wait,
            )  # fmt: skip
            if on_retry is not None:
                on_retry(exc)
            sleep(wait)
    msg = "unreachable: the loop returns or raises"
    raise AssertionError(msg)
