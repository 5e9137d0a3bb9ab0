"""Per-key request counts kept in the worker between trips to Redis (pure: no I/O here).

The shared count of a key's window lives in Redis (:mod:`api.ratelimit`); asking it on every
request costs a round trip each. Far from the limit the answer is not in doubt, so a worker
counts locally and adds its count to Redis in one ``INCRBY`` at least every :data:`SYNC_S`
seconds and every :data:`SYNC_EVERY` requests of the key. Near the limit (within a tenth of it)
and for small limits (under :data:`LOCAL_MIN` a minute) every request goes to Redis, so the
429 falls where it should. A key can pass its limit only by what the other workers counted and
had not yet added: at most ``SYNC_EVERY`` requests each, in one window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SYNC_S: Final = 0.25
SYNC_EVERY: Final = 50
LOCAL_MIN: Final = 100
"""Limits (per minute) under this are always counted in Redis."""
MAX_KEYS: Final = 10_000


@dataclass
class Window:
    """One key's count in one window as this worker knows it."""

    index: int
    synced: int = 0
    """The shared count as Redis last gave it."""
    pending: int = 0
    """Requests counted here and not yet added to Redis."""
    synced_at: float | None = None


class LocalCounts:
    """The windows of the keys this worker serves."""

    def __init__(self) -> None:
        self._windows: dict[str, Window] = {}

    def window(self, key_id: str, index: int) -> Window:
        """The key's window ``index`` (a new one when the window turned)."""
        w = self._windows.get(key_id)
        if w is None or w.index != index:
            if len(self._windows) >= MAX_KEYS:
                self._windows = {k: v for k, v in self._windows.items() if v.index >= index}
            w = self._windows[key_id] = Window(index)
        return w

    @staticmethod
    def count_here(w: Window, limit: int, now: float) -> int | None:
        """Count one request locally and return the estimated count; None: ask Redis."""
        if w.synced_at is None or limit < LOCAL_MIN:
            return None
        estimate = w.synced + w.pending + 1
        if estimate > limit - limit // 10 or w.pending >= SYNC_EVERY or now - w.synced_at > SYNC_S:
            return None
        w.pending += 1
        return estimate

    @staticmethod
    def take_pending(w: Window) -> int:
        """What to add to Redis with this request (this one included); pending is cleared."""
        add, w.pending = w.pending + 1, 0
        return add

    @staticmethod
    def synced(w: Window, count: int, now: float) -> None:
        """Redis answered ``count`` for the window."""
        w.synced, w.synced_at = count, now

    @staticmethod
    def failed(w: Window, add: int) -> None:
        """The trip to Redis failed: keep what was to be added for the next one."""
        w.pending += add
