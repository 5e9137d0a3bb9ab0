"""The contract's row rules, applied again where hand-written fragments enter consolidation.

Ingestion validates what it writes, but bronze is an open folder: a user's own files, an old
export or a bug upstream can put a row dated on a closure, a NaN price or an unknown source
there. Such a row would reach silver as a bar with ``days > N``. The rules are ingestion's own
(:func:`core.validation.judge`), cheap enough to run on every fragment; refused rows go to
quarantine with their reasons.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final

import numpy as np
import pyarrow as pa

from core import quarantine as core_quarantine
from core.lake import Lake
from core.validation import judge, quarantine_table

QUARANTINE_SOURCE: Final = "consolidate"


def split(table: pa.Table) -> tuple[pa.Table, list[str], pa.Table]:
    """(accepted rows, reasons of the refused ones, refused rows); fast when all pass."""
    bad, reasons = judge(table)
    if not reasons:
        return table, [], table.slice(0, 0)
    return table.filter(pa.array(~bad)), reasons, table.take(pa.array(np.flatnonzero(bad)))


def split_many(tables: Sequence[pa.Table]) -> list[tuple[pa.Table, list[str], pa.Table]]:
    """:func:`split` of each table, judged together.

    One pass of the rules over a chunk of one-row fragments costs what one fragment did (about
    0.35 ms).
    """
    if len(tables) < 2:
        return [split(t) for t in tables]
    bad, reasons = judge(pa.concat_tables(tables))
    out: list[tuple[pa.Table, list[str], pa.Table]] = []
    at, said = 0, 0
    for t in tables:
        mask = bad[at : at + t.num_rows]
        count = int(mask.sum())
        if count == 0:
            out.append((t, [], t.slice(0, 0)))
        else:
            mine = reasons[said : said + count]
            out.append((t.filter(pa.array(~mask)), mine, t.take(pa.array(np.flatnonzero(mask)))))
        at, said = at + t.num_rows, said + count
    return out


def _quarantined(
    symbol: str, rows: pa.Table, reasons: list[str], now: dt.datetime
) -> tuple[dt.date, pa.Table]:
    """Refused rows as a quarantine table, and the day they are filed under."""
    table = quarantine_table(rows, reasons, QUARANTINE_SOURCE, now)
    return core_quarantine.day_of(table, now), table


def quarantine(
    lake: Lake, symbol: str, rows: pa.Table, reasons: list[str], now: dt.datetime
) -> str:
    """Write refused rows under their earliest date."""
    day, table = _quarantined(symbol, rows, reasons, now)
    return core_quarantine.write(lake, QUARANTINE_SOURCE, day, symbol, table)


def in_quarantine(lake: Lake, symbol: str, rows: pa.Table, reasons: list[str]) -> bool:
    """True when :func:`quarantine` has stored these refused rows.

    The key hangs on the rows' payloads only, so it can be found again.
    """
    if rows.num_rows == 0:
        return True
    day, table = _quarantined(symbol, rows, reasons, dt.datetime.now(dt.UTC))
    return lake.exists(core_quarantine.key_of(QUARANTINE_SOURCE, day, symbol, table))
