"""Which gaps deserve an alert: a gap report sorted into explained and unexplained kinds.

Not every missing session is a fault. A symbol that alone lacks a session the market has did not
trade that day (a halt or suspension); a symbol whose rows stop early and that the ticker
metadata lists as delisted has no more sessions to have. Those are counted, never alerted. What
is left is unexplained and published:

- ``market``: no symbol has the session (the replay never stored it);
- ``partial``: so many symbols lack the session (at least ``PARTIAL_MIN`` and ``PARTIAL_SHARE``
  of those listed across it) that it is a lost write, not a wave of halts;
- ``quarantined``: the symbol's row for the session arrived and was refused;
- ``stale``: an active listing (per the metadata) with no row for its last ``STALE_SESSIONS`` or
  more sessions before the lake's last.

Pure logic over plain values, apart from :func:`quarantined_keys` and :func:`listings`, which
read the lake.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pyarrow.compute as pc

from core import calendar, layout
from core.lake import Lake

UNEXPLAINED: Final = ("market", "partial", "quarantined", "stale")
EXPLAINED: Final = ("halt", "delisted")
PARTIAL_MIN: Final = 10
PARTIAL_SHARE: Final = 0.05
STALE_SESSIONS: Final = 5
LISTED: Final = 50
"""Unexplained gaps listed by name in an alert (the counts cover them all)."""


@dataclass(frozen=True, slots=True)
class Gap:
    """One unexplained gap: a session (or, for ``stale``, the first missing one) and its kind."""

    kind: str
    date: dt.date
    symbol: str | None = None
    sessions: int = 1


@dataclass
class Sorted:
    """A gap report sorted by kind."""

    counts: dict[str, int] = field(default_factory=dict)
    unexplained: list[Gap] = field(default_factory=list)

    @property
    def total_unexplained(self) -> int:
        """Missing (symbol, session) pairs and market sessions nobody explains."""
        return sum(self.counts.get(k, 0) for k in UNEXPLAINED)

    def message(self, lake_url: str, run_id: str | None) -> dict[str, Any]:
        """The JSON body of an alert."""
        return {
            "kind": "unexplained_gaps",
            "run_id": run_id,
            "lake": lake_url,
            "counts": self.counts,
            "unexplained": [
                {
                    "kind": g.kind,
                    "symbol": g.symbol,
                    "date": g.date.isoformat(),
                    "sessions": g.sessions,
                }
                for g in self.unexplained[:LISTED]
            ],
            "listed": min(len(self.unexplained), LISTED),
            "heal": "python -m batch.gaps --fix (see docs/operations.md, Healing gaps)",
        }


def _spanning(spans: Mapping[str, tuple[dt.date, dt.date]], days: Sequence[dt.date]) -> np.ndarray:
    """How many symbols' spans hold each of ``days``."""
    firsts = np.sort(np.array([f for f, _ in spans.values()], dtype="datetime64[D]"))
    lasts = np.sort(np.array([last for _, last in spans.values()], dtype="datetime64[D]"))
    d = np.array(days, dtype="datetime64[D]")
    started = np.searchsorted(firsts, d, side="right")
    ended = np.searchsorted(lasts, d, side="left")
    return np.asarray(started - ended)


def sort_gaps(
    symbol_gaps: Sequence[tuple[str, dt.date, bool]],
    market_gaps: Sequence[dt.date],
    spans: Mapping[str, tuple[dt.date, dt.date]],
    *,
    lake_last: dt.date | None,
    quarantined: Collection[tuple[str, dt.date]] = (),
    active: Mapping[str, bool] | None = None,
) -> Sorted:
    """Sort a gap report by kind.

    ``symbol_gaps`` are (symbol, session, market_wide); ``spans`` each reported symbol's first
    and last date; ``active`` the metadata's view of each listing (None: no metadata, so no
    trailing gap is judged).
    """
    out = Sorted(counts=dict.fromkeys(UNEXPLAINED + EXPLAINED, 0))
    out.counts["market"] = len(market_gaps)
    out.unexplained += [Gap("market", d) for d in market_gaps]
    own = [(s, d) for s, d, market in symbol_gaps if not market]
    per_day = Counter(d for _, d in own)
    days = sorted(per_day)
    partial: set[dt.date] = set()
    if days and spans:
        held = _spanning(spans, days)
        partial = {
            d for d, n in zip(days, held, strict=True)
            if per_day[d] >= PARTIAL_MIN and per_day[d] >= PARTIAL_SHARE * n
        }  # fmt: skip
    held_q = set(quarantined)
    for symbol, day in own:
        if day in partial:
            kind = "partial"
        elif (symbol, day) in held_q:
            kind = "quarantined"
        else:
            out.counts["halt"] += 1
            continue
        out.counts[kind] += 1
        out.unexplained.append(Gap(kind, day, symbol))
    if active is not None and lake_last is not None:
        for symbol, (_, last) in sorted(spans.items()):
            if last >= lake_last:
                continue
            missing = len(calendar.sessions_between(last + dt.timedelta(days=1), lake_last))
            if not active.get(symbol, False):
                out.counts["delisted"] += 1 if symbol in active else 0
                continue
            if missing >= STALE_SESSIONS:
                out.counts["stale"] += missing
                first = calendar.sessions_between(last + dt.timedelta(days=1), lake_last)[0]
                out.unexplained.append(Gap("stale", first, symbol, missing))
    out.unexplained.sort(key=lambda g: (UNEXPLAINED.index(g.kind), g.date, g.symbol or ""))
    return out


# -- reading ----------------------------------------------------------------------------------
def quarantined_keys(lake: Lake, days: Collection[dt.date]) -> set[tuple[str, dt.date]]:
    """(symbol, date) of rows refused on ``days``, from every source's quarantine."""
    wanted = {d.isoformat() for d in days}
    keys = [
        e.key
        for e in lake.list("quarantine/", suffix=".parquet")
        if e.key.rsplit("/", 2)[-2] in wanted
    ]
    out: set[tuple[str, dt.date]] = set()
    for key in keys:
        t = lake.read_table(key, columns=["symbol", "date"])
        t = t.filter(pc.and_(pc.is_valid(t["symbol"]), pc.is_valid(t["date"])))
        out.update(zip(t["symbol"].to_pylist(), t["date"].to_pylist(), strict=True))
    return out


def listings(lake: Lake) -> dict[str, bool] | None:
    """Each ticker's ``active`` flag (false once a delist date is set); None without metadata."""
    key = layout.reference_tickers()
    if not lake.exists(key):
        return None
    t = lake.read_table(key, columns=["symbol", "active", "delist_date"])
    active = pc.and_(pc.fill_null(t["active"], False), pc.is_null(t["delist_date"]))
    return dict(zip(t["symbol"].to_pylist(), active.to_pylist(), strict=True))
