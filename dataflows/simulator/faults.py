"""Fault knobs and request statistics, shared by the HTTP handlers and the control API.

Faults reproduce what the real service does under load (429 with Retry-After, 5xx, slow
responses, dropped WebSockets) on demand, and deterministically: "the next N" counters are
exact and probabilistic faults draw from a generator seeded by ``seed``. Statistics count every
request, faulted or not, so tests can assert how many calls a client really made.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from dataflows.simulator import badrows


@dataclass(frozen=True, slots=True)
class Faults:
    """What to break. Counters ("next N") are consumed by matching REST requests."""

    rate_limit_next: int = 0
    """Answer the next N matching requests with 429."""
    rate_limit_p: float = 0.0
    """Probability of a 429 for each matching request."""
    retry_after: int = 1
    """Seconds in the Retry-After header of a 429 (whole seconds, as HTTP requires)."""
    error_next: int = 0
    """Answer the next N matching requests with ``error_status``."""
    error_p: float = 0.0
    error_status: int = 500
    delay: float = 0.0
    """Seconds to wait before answering each matching request."""
    delay_next: int = 0
    """When > 0, only the next N matching requests are delayed."""
    path_prefix: str = ""
    """Only requests whose path starts with this are affected ("" = every REST request)."""
    ws_disconnect_after: int = 0
    """Drop each WebSocket (close code 1011) after it was sent N data messages (0 = never)."""
    bad_rows: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """ISO date -> malformation kinds, added to the market's own ``bad_rows``."""
    empty_days: tuple[str, ...] = ()
    """ISO dates whose grouped daily answers "OK" with no results, as Polygon does for a
    session whose data is not ready yet; the ingestion must retry them, not mark them done."""
    seed: int = 0

    def updated(self, changes: dict[str, Any]) -> Faults:
        """A copy with ``changes`` applied; unknown names raise ValueError."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            msg = f"unknown fault settings {sorted(unknown)}; known: {sorted(known)}"
            raise ValueError(msg)
        clean = dict(changes)
        if "bad_rows" in clean:
            spec = {dt.date.fromisoformat(k): v for k, v in dict(clean["bad_rows"]).items()}
            clean["bad_rows"] = {k.isoformat(): v for k, v in badrows.normalise(spec).items()}
        if "empty_days" in clean:
            clean["empty_days"] = tuple(
                dt.date.fromisoformat(str(d)).isoformat() for d in clean["empty_days"]
            )
        return replace(self, **clean)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        out = asdict(self)
        out["bad_rows"] = {k: list(v) for k, v in self.bad_rows.items()}
        out["empty_days"] = list(self.empty_days)
        return out


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one request."""

    delay: float = 0.0
    status: int = 200
    retry_after: int | None = None


class FaultState:
    """Thread-safe holder of the current :class:`Faults` and their counters."""

    def __init__(self, faults: Faults | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = faults or Faults()
        self._rng = random.Random(self._faults.seed)

    @property
    def faults(self) -> Faults:
        """The current settings."""
        with self._lock:
            return self._faults

    def set(self, faults: Faults) -> Faults:
        """Replace the settings (reseeding the generator)."""
        with self._lock:
            self._faults = faults
            self._rng = random.Random(faults.seed)
            return faults

    def update(self, **changes: Any) -> Faults:
        """Change some settings, keeping the others."""
        with self._lock:
            self._faults = self._faults.updated(changes)
            if "seed" in changes:
                self._rng = random.Random(self._faults.seed)
            return self._faults

    def bad_rows(self) -> dict[dt.date, tuple[str, ...]]:
        """Extra malformed rows by date."""
        return {dt.date.fromisoformat(k): v for k, v in self.faults.bad_rows.items()}

    def verdict(self, path: str) -> Verdict:
        """Decide (and consume counters) for one REST request to ``path``."""
        with self._lock:
            f = self._faults
            if not path.startswith(f.path_prefix):
                return Verdict()
            delay = 0.0
            changes: dict[str, Any] = {}
            if f.delay > 0:
                delay = f.delay
                if f.delay_next > 0:
                    changes["delay_next"] = f.delay_next - 1
                    if f.delay_next == 1:
                        changes["delay"] = 0.0
            status, retry = 200, None
            if f.rate_limit_next > 0:
                changes["rate_limit_next"] = f.rate_limit_next - 1
                status, retry = 429, f.retry_after
            elif f.rate_limit_p > 0 and self._rng.random() < f.rate_limit_p:
                status, retry = 429, f.retry_after
            elif f.error_next > 0:
                changes["error_next"] = f.error_next - 1
                status = f.error_status
            elif f.error_p > 0 and self._rng.random() < f.error_p:
                status = f.error_status
            if changes:
                self._faults = replace(f, **changes)
            return Verdict(delay=delay, status=status, retry_after=retry)


class Stats:
    """Request and WebSocket counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._routes: Counter[str] = Counter()
            self._paths: Counter[str] = Counter()
            self._status: Counter[str] = Counter()
            self._ws: Counter[str] = Counter()

    def request(self, route: str, path: str, status: int) -> None:
        """Count one REST request."""
        with self._lock:
            self._routes[route] += 1
            self._paths[path] += 1
            self._status[str(status)] += 1

    def ws(self, what: str, n: int = 1) -> None:
        """Count a WebSocket event (connections, messages, events, disconnects, ...)."""
        with self._lock:
            self._ws[what] += n

    def snapshot(self) -> dict[str, Any]:
        """Counters as plain JSON-able dicts."""
        with self._lock:
            return {
                "requests": sum(self._routes.values()),
                "by_route": dict(self._routes),
                "by_path": dict(self._paths),
                "by_status": dict(self._status),
                "ws": dict(self._ws),
            }
