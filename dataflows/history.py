"""The whole market's history since 1962, one symbol at a time, resumable: ``backfill --all``.

Which symbols: every ticker the metadata holds (``symbol_metadata``, active and delisted), every
ticker Polygon lists as delisted (``/v3/reference/tickers?active=false``, so the history is free
of survivorship bias), and every symbol already in the lake's bronze.

Resuming: each symbol whose range file is written is recorded in
``processing_metadata/backfill/history_{START}.json`` (written every ``FLUSH_SECONDS`` and at
the end), so a run that is killed and started again fetches only the symbols not done yet; a
symbol that failed is not recorded and is fetched again. ``--restart`` forgets the record. The
lake writes are idempotent either way: a symbol fetched twice lands on the same key.

Progress: a bar with an ETA on a terminal, else a log line every ``LOG_EVERY`` symbols with the
rate and the ETA. Before it starts, the run says how long the request budget of the Polygon
plan alone allows (:func:`request_bound`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from core import layout
from core.lake import Lake
from dataflows.backfill import Fetch, pages

log = logging.getLogger("dataflows.history")

PROGRESS_DIR: Final = f"{layout.META}/backfill"
FLUSH_SECONDS: Final = 30.0
LOG_EVERY: Final = 100
TICKERS_PATH: Final = "/v3/reference/tickers"
TICKERS_PAGE: Final = 1000


def progress_key(start: dt.date) -> str:
    """Where the symbols done since ``start`` are recorded (one record per start date)."""
    return f"{PROGRESS_DIR}/history_{start.isoformat()}.json"


def delisted_tickers(fetch: Fetch) -> list[str]:
    """Every US stock ticker Polygon lists as no longer active (all pages)."""
    params = {"market": "stocks", "active": "false", "limit": str(TICKERS_PAGE)}
    out: set[str] = set()
    for body in pages(fetch, TICKERS_PATH, params):
        results = body.get("results") or []
        if not isinstance(results, list):
            msg = f"delisted tickers: 'results' is {type(results).__name__}, not a list"
            raise TypeError(msg)
        out.update(r["ticker"] for r in results if isinstance(r, dict) and "ticker" in r)
    return sorted(s for s in out if isinstance(s, str) and layout.SYMBOL_RE.match(s))


def universe(*sources: Iterable[str]) -> list[str]:
    """The union of ``sources``, valid tickers only, sorted."""
    return sorted({s for src in sources for s in src if layout.SYMBOL_RE.match(s)})


def request_bound(symbols: int, requests_per_second: float) -> float:
    """Seconds the plan's request rate alone needs: one range request per symbol.

    A symbol's whole daily history since 1962 (at most about 16,000 sessions) fits in one page
    of 50,000 rows, so requests = symbols. Response time and ``--workers`` may make a run slower
    than this bound on fast plans; on the free plan (5 a minute) the bound is the run.
    """
    return symbols / requests_per_second


def duration(seconds: float) -> str:
    """``1d 02:03:04``-style, for people."""
    s = max(0, round(seconds))
    days, rest = divmod(s, 86_400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


@dataclass
class Progress:
    """Symbols done since ``start``, kept in the lake so a rerun resumes."""

    lake: Lake
    start: dt.date
    done: set[str] = field(default_factory=set)
    total: int = 0
    begun: float = field(default_factory=time.monotonic)
    fetched: int = 0
    _written: float = field(default_factory=time.monotonic)

    @classmethod
    def load(cls, lake: Lake, start: dt.date, *, restart: bool = False) -> Progress:
        """The record of an earlier run from ``start`` (empty with ``restart``)."""
        held: dict[str, Any] = {} if restart else lake.read_json(progress_key(start), {}) or {}
        return cls(lake, start, set(held.get("done", [])))

    def remaining(self, symbols: Iterable[str]) -> list[str]:
        """``symbols`` not done yet, in order; sets the total this run fetches."""
        todo = [s for s in symbols if s not in self.done]
        self.total = len(todo)
        return todo

    def mark(self, symbol: str) -> None:
        """Record one symbol as done; write the record now and then."""
        self.done.add(symbol)
        self.fetched += 1
        if time.monotonic() - self._written >= FLUSH_SECONDS:
            self.flush()
        if self.fetched % LOG_EVERY == 0 or self.fetched == self.total:
            log.info("%s", self.line())

    def flush(self) -> None:
        """Write the record (idempotent: the same set lands on the same key)."""
        self.lake.write_json(
            progress_key(self.start),
            {
                "start": self.start.isoformat(),
                "done": sorted(self.done),
                "updated_at": dt.datetime.now(dt.UTC).isoformat(),
            },
        )
        self._written = time.monotonic()

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the rate so far; None before the first symbol."""
        elapsed = (now if now is not None else time.monotonic()) - self.begun
        if not self.fetched or elapsed <= 0:
            return None
        return (self.total - self.fetched) / (self.fetched / elapsed)

    def line(self) -> str:
        """One progress line: done, rate, ETA."""
        elapsed = time.monotonic() - self.begun
        rate = self.fetched / elapsed if elapsed > 0 else 0.0
        eta = self.eta()
        left = duration(eta) if eta is not None else "?"
        return (
            f"history: {self.fetched}/{self.total} symbols ({len(self.done)} done in all),"
            f" {rate:.2f} symbols/s, ETA {left}"
        )
