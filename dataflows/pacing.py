"""A wall-clock pace for stateful steps that publish what changed at a bounded rate.

Bytewax calls a stateful logic per item and again at the time its ``notify_at`` names; a step
that coalesces updates asks :class:`Pace` whether to publish now and when to be woken if
updates wait, so a quiet spell never strands them.
"""

from __future__ import annotations

import datetime as dt
import time


class Pace:
    """At most one publication per ``every_s`` seconds (0: every time)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.due = 0.0
        """Monotonic time of the next allowed publication."""

    def ready(self) -> bool:
        """Whether a publication may happen now; if so, the next one is due after the pace."""
        now = time.monotonic()
        if now < self.due:
            return False
        self.due = now + self.every_s
        return True

    def wake_at(self, waiting: bool) -> dt.datetime | None:
        """When to be called back: at the next allowed publication if anything waits."""
        if not waiting:
            return None
        wait = max(0.0, self.due - time.monotonic())
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait)
