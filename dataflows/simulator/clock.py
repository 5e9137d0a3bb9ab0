"""The simulated wall clock that drives the WebSocket feed and the market status.

Replay runs through regular trading hours only: it starts at a session's open plus an offset,
advances ``speed`` simulated seconds per real second, and jumps from one session's close to the
next session's open, so a fast replay never streams hours of closed market. Past the last
session of the market the clock reports the market closed.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dataflows.simulator.market import Market


@dataclass(frozen=True, slots=True)
class Position:
    """Where the replay is: local session index and Unix ms, or closed after the last session."""

    session: int | None
    now_ms: int


class ReplayClock:
    """Thread-safe mapping from real (monotonic) time to simulated market time."""

    def __init__(
        self,
        market: Market,
        day: dt.date | None = None,
        offset: float = 0.0,
        speed: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.market = market
        self._now = now
        self._lock = threading.Lock()
        self._first = 0
        self._offset = 0.0
        self._speed = 1.0
        self._t0 = now()
        self.set(day=day or market.session_dates()[-1], offset=offset, speed=speed)

    def set(
        self, day: dt.date | None = None, offset: float | None = None, speed: float | None = None
    ) -> None:
        """Restart at ``day``'s open plus ``offset`` seconds (unchanged parts keep their value)."""
        with self._lock:
            if day is not None:
                i = self.market.session_of(day)
                if i is None:
                    msg = f"{day} is not a session of the simulated market"
                    raise ValueError(msg)
                self._first = i
            if offset is not None:
                self._offset = offset
            if speed is not None:
                if speed <= 0:
                    msg = "speed must be positive"
                    raise ValueError(msg)
                self._speed = speed
            self._t0 = self._now()

    def elapsed(self) -> float:
        """Simulated trading seconds since the replay's first open."""
        with self._lock:
            return self._offset + (self._now() - self._t0) * self._speed

    def position(self) -> Position:
        """The current session and simulated time."""
        left = self.elapsed()
        hours = self.market.intraday.hours
        i = self._first
        while i < self.market.n_sessions:
            open_ms, minutes = hours(i)
            if left < minutes * 60:
                return Position(i, open_ms + int(left * 1000))
            left -= minutes * 60
            i += 1
        open_ms, minutes = hours(self.market.n_sessions - 1)
        return Position(None, open_ms + minutes * 60_000 + int(left * 1000))

    def describe(self) -> dict[str, object]:
        """JSON-able state for the control API."""
        pos = self.position()
        return {
            "day": self.market.session_dates()[self._first].isoformat(),
            "offset": self._offset,
            "speed": self._speed,
            "session": None
            if pos.session is None
            else self.market.session_dates()[pos.session].isoformat(),
            "now": dt.datetime.fromtimestamp(pos.now_ms / 1000, dt.UTC).isoformat(),
        }
