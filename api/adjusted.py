"""Adjusted bars on read: raw rows stay raw in Postgres and the lake; the API adjusts them.

``adjusted=split`` (default) multiplies prices by S(d) and divides volume by it; ``total`` takes
T(d) for prices; ``none`` serves the rows as stored. The factors are those of
:mod:`core.adjustments`, the one implementation silver and gold use too. Every response says
what it served: the mode, the splits in its range, the dividends applied and those that could
not be (with the reason), and warnings (no corporate actions fetched yet, silver built with
other splits than the current ones).

Fibonacci bars: ``split`` is silver as built; ``none`` and ``total`` are computed from the
symbol's consolidated rows (silver's own source) with the same grouping (:mod:`core.fibonacci`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from api import daily
from api.resources import Resources
from core import adjustments as adj
from core import arrays, calendar, fibonacci, layout
from core.lake import Lake

NO_ACTIONS: Final = (
    "no corporate actions fetched yet (run python -m dataflows.corporate_actions): "
    "bars are as if the symbol had never split or paid a dividend"
)


ACTIONS_TTL_S: Final = 60.0
"""How long a symbol's actions are reused (the lake's are also keyed by their files' state)."""


def _reference_state(res: Resources) -> tuple[str | None, str | None]:
    return res.generation(layout.reference_splits()), res.generation(layout.reference_dividends())


def _lake_actions(res: Resources) -> dict[str, adj.Actions] | None:
    """Every symbol's actions from the lake's reference files, read once per state of them."""
    state = _reference_state(res)
    if state == (None, None):
        return None
    return res.remember(("actions", state), lambda: adj.load_actions(res.lake()), ACTIONS_TTL_S)


def load_all_splits(res: Resources) -> adj.SplitBook:
    """Every symbol's splits (for cross-sections), read once per state of the files."""
    every = _lake_actions(res) or {}
    return adj.SplitBook({s: a.splits for s, a in every.items() if a.splits})


def load_actions(res: Resources, symbol: str, source: str = "lake") -> adj.Actions | None:
    """The symbol's actions from where its rows came from.

    Rows from Postgres take its ``splits`` and ``dividends`` (the lake's files when the tables
    were never created); rows from the lake take its reference files only, so a lake read never
    needs Postgres. None when no actions were ever fetched there. Both are kept a while
    (:data:`ACTIONS_TTL_S`): the lake's whole files are read once per change, not per request.
    """
    if source == "postgres":

        def from_postgres() -> adj.Actions | None:
            with res.postgres() as conn:
                return adj.pg_actions(conn, symbol)

        key = ("pg-actions", symbol, _reference_state(res))
        found = res.remember(key, from_postgres, ACTIONS_TTL_S)
        if found is not None:
            return found
    every = _lake_actions(res)
    return None if every is None else every.get(symbol, adj.Actions(symbol))


def _lake_closes(lake: Lake, symbol: str) -> adj.CloseBefore:
    table = daily.lake_history(lake, symbol).select(["date", "close"])
    return adj.close_before_from(arrays.date_days(table), arrays.to_numpy(table["close"]))


def close_before(
    res: Resources, symbol: str, source: str, ex_days: Sequence[dt.date]
) -> adj.CloseBefore:
    """C of each ex-date: the close of the symbol's last row before it, wherever that row is.

    Postgres answers when its row is the session just before the ex-date (no later row can
    exist). Otherwise the lake is asked too and the later of the two rows wins: Postgres keeps
    only recent years, and the lake may hold a row Postgres lacks (a backfill or a flat file),
    which the served rows include, so C must come from it as well.
    """
    lake_lookup: list[adj.CloseBefore] = []

    def lake_closes(day: dt.date) -> tuple[dt.date, float] | None:
        if not lake_lookup:
            lake_lookup.append(_lake_closes(res.lake(), symbol))
        return lake_lookup[0](day)

    if source != "postgres":
        return lake_closes
    with res.postgres() as conn:
        found = daily.pg_closes_before(conn, symbol, ex_days)

    def lookup(day: dt.date) -> tuple[dt.date, float] | None:
        hit = found.get(day)
        if hit is not None and hit[0] == _session_before(day):
            return hit
        other = lake_closes(day)
        if hit is None or (other is not None and other[0] > hit[0]):
            return other
        return hit

    return lookup


def _session_before(day: dt.date) -> dt.date | None:
    """The last XNYS session strictly before ``day`` (None outside the calendar)."""
    try:
        return calendar.last_session_on_or_before(day - dt.timedelta(days=1))
    except calendar.CalendarError:
        return None


def describe(
    mode: adj.Mode, actions: adj.Actions | None, first: dt.date | None, f: adj.Factors | None
) -> dict[str, Any]:
    """The ``adjustment`` object of a response."""
    if actions is None:
        return {"mode": mode, "split_version": None, "splits": [], "dividends_applied": 0,
                "dividends_skipped": [], "warnings": [NO_ACTIONS]}  # fmt: skip
    splits = [s for s in actions.splits if first is None or s.execution_date > first]
    return {
        "mode": mode,
        "split_version": actions.split_version,
        "splits": [
            {
                "execution_date": s.execution_date,
                "split_from": s.split_from,
                "split_to": s.split_to,
                "adjustment_type": s.adjustment_type,
            }
            for s in splits
        ],
        "dividends_applied": len(f.applied) if f is not None else 0,
        "dividends_skipped": [
            {
                "ex_dividend_date": s.ex_dividend_date,
                "distribution_type": s.distribution_type,
                "cash_amount": s.cash_amount,
                "currency": s.currency,
                "reason": s.reason,
            }
            for s in (f.skipped if f is not None else ())
        ],
        "warnings": list(f.warnings) if f is not None else [],
    }


def adjust_daily(
    res: Resources,
    symbol: str,
    rows: pa.Table,
    source: str,
    mode: adj.Mode,
    *,
    whole: bool = False,
) -> tuple[pa.Table, dict[str, Any]]:
    """Daily ``rows`` (from ``source``, ascending) adjusted; and the response's ``adjustment``.

    Column by column on Arrow (no Python row objects). ``whole``: the rows are the symbol's
    whole history, so a dividend on or before its first row is reported as not applicable (in
    a window, it moves none of the rows).
    """
    actions = load_actions(res, symbol, source)
    if actions is None or not rows.num_rows:
        return rows, describe(mode, actions, None, None)
    first: dt.date = rows["date"][0].as_py()
    lookup = None
    if mode == "total":
        ex = [d.ex_dividend_date for d in actions.dividends if whole or d.ex_dividend_date > first]
        lookup = close_before(res, symbol, source, ex)
    adjusted, f = adj.adjust_table(rows, actions, mode, lookup, only_after=None if whole else first)
    return adjusted, describe(mode, actions, first, f)


def _checkpoint(lake: Lake, interval: int) -> tuple[fibonacci.Anchor, int | None]:
    raw = lake.read_json(layout.silver_checkpoint(interval)) or {}
    anchor: fibonacci.Anchor = "symbol" if raw.get("anchor") == "symbol" else "calendar"
    last = raw.get("last_date")
    return anchor, calendar.to_days(dt.date.fromisoformat(last)) if last else None


def fib_from_rows(
    res: Resources,
    symbol: str,
    interval: int,
    mode: adj.Mode,
    actions: adj.Actions | None,
    start: dt.date | None,
    end: dt.date | None,
    limit: int | None,
) -> tuple[list[dict[str, Any]], adj.Factors | None]:
    """Fibonacci bars of ``mode`` (none or total) from the consolidated rows, filtered."""
    lake = res.lake()
    key = layout.consolidated(symbol)
    if not lake.exists(key):
        return [], None
    table = lake.read_table(key, columns=["date", "open", "high", "low", "close", "volume"])
    table = table.sort_by("date")
    days = arrays.date_days(table)
    prices = {c: np.asarray(arrays.to_numpy(pc.cast(table[c], "float64")), dtype=np.float64)
              for c in ("open", "high", "low", "close", "volume")}  # fmt: skip
    f = None
    if mode == "total" and actions is not None:
        f = adj.factors(days, actions, "total", adj.close_before_from(days, prices["close"]))
        adjusted, volume = adj.adjust_arrays(
            f, {k: prices[k] for k in ("open", "high", "low", "close")}, prices["volume"]
        )
        prices = {**adjusted, "volume": volume if volume is not None else prices["volume"]}
    anchor, last_day = _checkpoint(lake, interval)
    if last_day is None and len(days):
        last_day = int(days[-1])
    cols = fibonacci.bars(days, prices, interval, anchor, last_day)
    keep = np.ones(len(cols["start_date"]), dtype=bool)
    if start is not None:
        keep &= cols["start_date"] >= calendar.to_days(start)
    if end is not None:
        keep &= cols["start_date"] <= calendar.to_days(end)
    idx = np.flatnonzero(keep)
    if limit is not None:
        idx = idx[-limit:]
    out = []
    for i in idx.tolist():
        out.append(
            {
                "start_date": calendar.from_days(int(cols["start_date"][i])),
                "end_date": calendar.from_days(int(cols["end_date"][i])),
                **{c: float(cols[c][i]) for c in ("open", "high", "low", "close", "volume")},
                "days": int(cols["days"][i]),
                "complete": bool(cols["complete"][i]),
            }
        )
    return out, f


def stale_silver(lake: Lake, symbol: str, actions: adj.Actions | None) -> list[str]:
    """A warning when the symbol's silver was built with other splits than the current ones."""
    if actions is None:
        return []
    recorded = adj.read_recorded(lake).get(symbol)
    if recorded is None or recorded[0] == actions.split_version:
        return []
    return [
        f"silver of {symbol} was built with other splits than the current ones; the next "
        "python -m batch.resample rebuilds it (use adjusted=none or total meanwhile)"
    ]
