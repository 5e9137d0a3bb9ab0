"""Ground truth for minute bars, computed the slow and obvious way from the trades sent.

Independent of the flow's vectorised fold: one Python loop over trades in (time, sequence)
order, the consolidated rules of :mod:`core.conditions`, duplicates dropped by (symbol,
exchange, id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from core.conditions import ConditionRules, fallback

Key = tuple[str, int]
"""(symbol, minute start in Unix ms)."""


def truth_bars(
    events: Iterable[Mapping[str, Any]], rules: ConditionRules | None = None
) -> dict[Key, dict[str, Any]]:
    """Polygon ``T`` events to minute bars under the tape's rules."""
    rules = rules or fallback()
    seen: set[tuple[str, Any, Any]] = set()
    trades: dict[Key, list[Mapping[str, Any]]] = {}
    for ev in events:
        ident = (ev["sym"], ev.get("x"), ev.get("i"))
        if ev.get("i") is not None and ident in seen:
            continue
        seen.add(ident)
        trades.setdefault((ev["sym"], ev["t"] - ev["t"] % 60_000), []).append(ev)
    out: dict[Key, dict[str, Any]] = {}
    for key, evs in trades.items():
        evs.sort(key=lambda e: (e["t"], e.get("q", -1)))
        rule = [rules.combined(e.get("c")) for e in evs]
        hl = [e["p"] for e, r in zip(evs, rule, strict=True) if r.high_low]
        oc = [e["p"] for e, r in zip(evs, rule, strict=True) if r.open_close]
        vol = [(e["p"], e["s"]) for e, r in zip(evs, rule, strict=True) if r.volume]
        if not hl and not oc:
            continue
        o, c = (oc[0], oc[-1]) if oc else (hl[0], hl[-1])
        prices = hl or oc
        v = float(sum(s for _, s in vol))
        out[key] = {
            "open": o,
            "high": max(*prices, o, c),
            "low": min(*prices, o, c),
            "close": c,
            "volume": v,
            "vwap": sum(p * s for p, s in vol) / v if v > 0 else None,
            "trades": len(vol),
        }
    return out
