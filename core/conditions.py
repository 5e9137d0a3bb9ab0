"""The consolidated tape's update rules per trade condition: which trades may move a bar.

A trade updates a bar field only if every one of its conditions allows it (a trade without
conditions is a regular sale), so odd lots, average-price and Form T prints add volume but
never set open, high, low or close. The rules come from Polygon's ``/v3/reference/conditions``
(``update_rules.consolidated``); :data:`FALLBACK` holds the published rules of the stock trade
conditions, for when that table cannot be fetched. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

Flags = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Rule:
    """What one condition lets a trade update on the consolidated tape."""

    high_low: bool
    open_close: bool
    volume: bool


REGULAR: Final = Rule(high_low=True, open_close=True, volume=True)

_NAMES: Final[dict[int, tuple[str, str]]] = {
    # id: (name, flags high_low/open_close/volume as "HOV" with "-" for false)
    1: ("Acquisition", "HOV"),
    2: ("Average Price Trade", "--V"),
    3: ("Automatic Execution", "HOV"),
    4: ("Bunched Trade", "HOV"),
    5: ("Bunched Sold Trade", "H-V"),
    6: ("CAP Election", "HOV"),
    7: ("Cash Sale", "--V"),
    8: ("Closing Prints", "HOV"),
    9: ("Cross Trade", "HOV"),
    10: ("Derivatively Priced", "H-V"),
    11: ("Distribution", "HOV"),
    12: ("Form T/Extended Hours", "--V"),
    13: ("Extended Trading Hours (Sold Out Of Sequence)", "--V"),
    14: ("Intermarket Sweep", "HOV"),
    15: ("Market Center Official Close", "---"),
    16: ("Market Center Official Open", "---"),
    17: ("Market Center Opening Trade", "HOV"),
    18: ("Market Center Reopening Trade", "HOV"),
    19: ("Market Center Closing Trade", "HOV"),
    20: ("Next Day", "--V"),
    21: ("Price Variation Trade", "--V"),
    22: ("Prior Reference Price", "H-V"),
    23: ("Rule 155 Trade (AMEX)", "HOV"),
    24: ("Rule 127 NYSE", "HOV"),
    25: ("Opening Prints", "HOV"),
    27: ("Stopped Stock (Regular Trade)", "HOV"),
    28: ("Re-Opening Prints", "HOV"),
    29: ("Seller", "--V"),
    30: ("Sold Last", "HOV"),
    33: ("Sold (Out of Sequence)", "H-V"),
    34: ("Split Trade", "HOV"),
    35: ("Stock Option", "HOV"),
    36: ("Yellow Flag Regular Trade", "HOV"),
    37: ("Odd Lot Trade", "--V"),
    41: ("Trade Thru Exempt", "HOV"),
    52: ("Contingent Trade", "--V"),
    53: ("Qualified Contingent Trade", "--V"),
}

ODD_LOT: Final = 37
AVERAGE_PRICE: Final = 2
FORM_T: Final = 12
OUT_OF_SEQUENCE: Final = 33
INTERMARKET_SWEEP: Final = 14


def _rule(flags: str) -> Rule:
    return Rule(high_low=flags[0] == "H", open_close=flags[1] == "O", volume=flags[2] == "V")


@dataclass(frozen=True)
class ConditionRules:
    """Rules by condition id; unknown ids count as regular (and are listed in ``unknown``)."""

    rules: Mapping[int, Rule]
    source: str = "fallback"
    """Where the table came from: ``polygon`` (fetched), ``cache`` or ``fallback``."""
    _memo: dict[tuple[int, ...], Rule] = field(default_factory=dict, compare=False, repr=False)
    unknown: set[int] = field(default_factory=set, compare=False, repr=False)
    _arrays: dict[str, npt.NDArray[np.bool_]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def combined(self, conditions: Sequence[int] | None) -> Rule:
        """The rule of a trade: each field allowed only if every condition allows it."""
        if not conditions:
            return REGULAR
        key = tuple(conditions)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        hl = oc = vol = True
        for c in key:
            r = self.rules.get(c)
            if r is None:
                self.unknown.add(c)
                continue
            hl, oc, vol = hl and r.high_low, oc and r.open_close, vol and r.volume
        hit = Rule(hl, oc, vol)
        self._memo[key] = hit
        return hit

    def flags(
        self, lengths: npt.NDArray[np.int64], ids: npt.NDArray[np.int64]
    ) -> tuple[Flags, Flags, Flags]:
        """Vectorised :meth:`combined`: (high_low, open_close, volume) per trade.

        ``lengths`` holds each trade's number of conditions, ``ids`` all of them in trade order.
        """
        table = self._table()
        n = len(lengths)
        out = np.ones((n, 3), dtype=np.bool_)
        if not len(ids):
            return out[:, 0], out[:, 1], out[:, 2]
        inside = (ids >= 0) & (ids < len(table))
        per_id = table[np.where(inside, ids, 0)]
        known = inside & per_id[:, 3]
        if not known.all():
            self.unknown.update(int(c) for c in np.unique(ids[~known]))
        per_id[~known] = True
        has = lengths > 0
        starts = (np.cumsum(lengths) - lengths)[has]
        out[has] = np.logical_and.reduceat(per_id[:, :3], starts, axis=0)
        return out[:, 0], out[:, 1], out[:, 2]

    def _table(self) -> npt.NDArray[np.bool_]:
        """Rules by id: (high_low, open_close, volume, defined) rows for ids 0..max."""
        hit = self._arrays.get("table")
        if hit is None:
            size = max(self.rules, default=-1) + 1
            hit = np.zeros((size, 4), dtype=np.bool_)
            for cid, r in self.rules.items():
                if cid >= 0:
                    hit[cid] = (r.high_low, r.open_close, r.volume, True)
            self._arrays["table"] = hit
        return hit

    def to_polygon(self) -> list[dict[str, Any]]:
        """The table in the shape of Polygon's ``/v3/reference/conditions`` results."""
        out = []
        for cid in sorted(self.rules):
            r = self.rules[cid]
            name = _NAMES.get(cid, (f"Condition {cid}", ""))[0]
            rules = {
                "updates_high_low": r.high_low,
                "updates_open_close": r.open_close,
                "updates_volume": r.volume,
            }
            out.append(
                {
                    "id": cid,
                    "type": "sale_condition",
                    "name": name,
                    "asset_class": "stocks",
                    "data_types": ["trade"],
                    "update_rules": {"consolidated": rules, "market_center": dict(rules)},
                }
            )
        return out


def fallback() -> ConditionRules:
    """The built-in table of stock trade conditions."""
    return ConditionRules({cid: _rule(flags) for cid, (_, flags) in _NAMES.items()})


class ConditionTableError(ValueError):
    """A conditions payload that does not hold usable consolidated rules."""


def from_polygon(results: Iterable[Mapping[str, Any]], source: str = "polygon") -> ConditionRules:
    """Rules from ``/v3/reference/conditions`` results (stock trade conditions only)."""
    rules: dict[int, Rule] = {}
    for row in results:
        if row.get("asset_class", "stocks") != "stocks":
            continue
        if "trade" not in (row.get("data_types") or ["trade"]):
            continue
        cid = row.get("id")
        cons = (row.get("update_rules") or {}).get("consolidated")
        if not isinstance(cid, int) or not isinstance(cons, Mapping):
            continue
        rules[cid] = Rule(
            bool(cons.get("updates_high_low", True)),
            bool(cons.get("updates_open_close", True)),
            bool(cons.get("updates_volume", True)),
        )
    if not rules:
        msg = "the conditions table holds no stock trade condition with consolidated rules"
        raise ConditionTableError(msg)
    return ConditionRules(rules, source)
