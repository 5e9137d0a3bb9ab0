"""Vendor corporate-action payloads to typed rows: pure, no I/O.

``/stocks/v1/splits`` and ``/stocks/v1/dividends`` result objects become SPLITS and DIVIDENDS
rows (dicts, ``core.schemas`` column names); anything that breaks the contract is rejected with
a reason instead of being guessed at: an unknown ``adjustment_type`` or ``distribution_type``, a
non-positive ratio or amount, a missing currency, an unparseable date, a ticker the lake cannot
hold, and two objects for one key that disagree (neither is kept: which one is right is not
ours to guess).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import pyarrow as pa

from core import layout
from core.schemas import DISTRIBUTION_TYPES, QUARANTINE, SPLIT_TYPES

Row = dict[str, Any]
Rejected = tuple[Any, str]
"""(the vendor's object, why it was rejected)."""
SPLIT_KEY: Final = ("symbol", "execution_date")
DIVIDEND_KEY: Final = ("symbol", "ex_dividend_date", "distribution_type")


class Invalid(ValueError):
    """One field breaks the contract."""


def _day(obj: Mapping[str, Any], name: str, *, required: bool) -> dt.date | None:
    value = obj.get(name)
    if value is None or value == "":
        if required:
            msg = f"{name} is missing"
            raise Invalid(msg)
        return None
    if not isinstance(value, str):
        msg = f"{name} {value!r} is not a YYYY-MM-DD date"
        raise Invalid(msg)
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        msg = f"{name} {value!r} is not a YYYY-MM-DD date"
        raise Invalid(msg) from None


def _positive(obj: Mapping[str, Any], name: str) -> float:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} {value!r} is not a number"
        raise Invalid(msg)
    if not math.isfinite(value) or value <= 0:
        msg = f"{name} {value!r} is not a positive number"
        raise Invalid(msg)
    return float(value)


def _optional_number(obj: Mapping[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        msg = f"{name} {value!r} is not a number"
        raise Invalid(msg)
    return float(value)


def _symbol(obj: Mapping[str, Any]) -> str:
    ticker = obj.get("ticker")
    if not isinstance(ticker, str) or not layout.SYMBOL_RE.match(ticker):
        msg = f"ticker {ticker!r} is not a symbol the lake can hold"
        raise Invalid(msg)
    return ticker


def _text(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    return value if isinstance(value, str) and value else None


def split_row(obj: Mapping[str, Any], now: dt.datetime) -> Row:
    """One SPLITS row from a ``/stocks/v1/splits`` object; :class:`Invalid` when it is not one."""
    kind = obj.get("adjustment_type")
    if kind not in SPLIT_TYPES:
        msg = f"adjustment_type {kind!r} is not one of {', '.join(SPLIT_TYPES)}"
        raise Invalid(msg)
    return {
        "symbol": _symbol(obj),
        "execution_date": _day(obj, "execution_date", required=True),
        "split_from": _positive(obj, "split_from"),
        "split_to": _positive(obj, "split_to"),
        "adjustment_type": kind,
        "vendor_factor": _optional_number(obj, "historical_adjustment_factor"),
        "id": _text(obj, "id"),
        "ingested_at": now,
    }


def dividend_row(obj: Mapping[str, Any], now: dt.datetime) -> Row:
    """One DIVIDENDS row from a ``/stocks/v1/dividends`` object; :class:`Invalid` otherwise."""
    kind = obj.get("distribution_type")
    if kind not in DISTRIBUTION_TYPES:
        msg = f"distribution_type {kind!r} is not one of {', '.join(DISTRIBUTION_TYPES)}"
        raise Invalid(msg)
    currency = _text(obj, "currency")
    if currency is None:
        msg = "currency is missing: the amount cannot be compared with a USD close"
        raise Invalid(msg)
    frequency = obj.get("frequency")
    if frequency is not None and (isinstance(frequency, bool) or not isinstance(frequency, int)):
        msg = f"frequency {frequency!r} is not a whole number"
        raise Invalid(msg)
    return {
        "symbol": _symbol(obj),
        "ex_dividend_date": _day(obj, "ex_dividend_date", required=True),
        "cash_amount": _positive(obj, "cash_amount"),
        "currency": currency.upper(),
        "distribution_type": kind,
        "pay_date": _day(obj, "pay_date", required=False),
        "record_date": _day(obj, "record_date", required=False),
        "declaration_date": _day(obj, "declaration_date", required=False),
        "frequency": frequency,
        "vendor_factor": _optional_number(obj, "historical_adjustment_factor"),
        "id": _text(obj, "id"),
        "ingested_at": now,
    }


def convert(
    results: Iterable[Any],
    make: Callable[[Mapping[str, Any], dt.datetime], Row],
    key: Sequence[str],
    now: dt.datetime,
) -> tuple[list[Row], list[Rejected]]:
    """Valid rows (one per key, sorted by it) and the rejected objects with their reasons."""
    rejected: list[Rejected] = []
    by_key: dict[tuple[Any, ...], list[tuple[Any, Row]]] = {}
    for obj in results:
        if not isinstance(obj, dict):
            rejected.append((obj, "not a JSON object"))
            continue
        try:
            row = make(obj, now)
        except Invalid as exc:
            rejected.append((obj, str(exc)))
            continue
        by_key.setdefault(tuple(row[k] for k in key), []).append((obj, row))
    rows: list[Row] = []
    for k in sorted(by_key):
        copies = by_key[k]
        values = {json.dumps(_comparable(r), sort_keys=True, default=str) for _, r in copies}
        if len(values) > 1:
            why = f"{len(copies)} different objects for {', '.join(map(str, k))}"
            rejected += [(obj, why) for obj, _ in copies]
            continue
        rows.append(copies[0][1])
    return rows, rejected


def rejected_marks(rejected: Sequence[Rejected], key: Sequence[str]) -> list[Row]:
    """What identifies each rejected object: its key (where every part reads) and its id.

    A rejected object is not a withdrawal: the action held under its key or id is kept as it
    was (:func:`core.stores.actions.sync`) until the vendor sends a valid one again.
    """
    out = []
    for obj, _ in rejected:
        if not isinstance(obj, dict):
            continue
        mark: Row = {}
        for name in key:
            if name == "symbol":
                ticker = obj.get("ticker")
                mark[name] = ticker if isinstance(ticker, str) and ticker else None
            elif name.endswith("_date"):
                day = None
                with contextlib.suppress(Invalid):
                    day = _day(obj, name, required=False)
                mark[name] = day
            else:
                mark[name] = _text(obj, name)
        mark["id"] = _text(obj, "id")
        if mark["id"] is not None or all(mark[name] is not None for name in key):
            out.append(mark)
    return out


def _comparable(row: Row) -> Row:
    return {k: v for k, v in row.items() if k not in ("id", "ingested_at")}


def quarantine_table(rejected: Sequence[Rejected], source: str, now: dt.datetime) -> pa.Table:
    """The rejected objects as QUARANTINE rows (their JSON kept whole)."""
    rows = []
    for obj, reason in rejected:
        symbol = obj.get("ticker") if isinstance(obj, dict) else None
        day = None
        if isinstance(obj, dict):  # filed under the action's date, so a rerun rewrites the file
            for name in ("execution_date", "ex_dividend_date"):
                with contextlib.suppress(Invalid):
                    day = _day(obj, name, required=False) or day
        rows.append(
            {
                "source": source,
                "symbol": symbol if isinstance(symbol, str) else None,
                "date": day,
                "reason": reason,
                "payload": json.dumps(obj, sort_keys=True, default=str),
                "received_at": now,
            }
        )
    return pa.Table.from_pylist(rows, schema=QUARANTINE)
