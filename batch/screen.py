"""The contract's row rules, applied again where hand-written fragments enter consolidation.

Ingestion validates what it writes, but bronze is an open folder: a user's own files, an old
export or a bug upstream can put a row dated on a closure, a NaN price or an unknown source
there. Such a row would reach silver as a bar with ``days > N``. The rules are ingestion's own
(:func:`core.validation.judge`), cheap enough to run on every fragment; refused rows go to
quarantine with their reasons.
"""

from __future__ import annotations

import datetime as dt
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


def quarantine(
    lake: Lake, symbol: str, rows: pa.Table, reasons: list[str], now: dt.datetime
) -> str:
    """Write refused rows under their earliest date."""
    first = min(rows["date"].to_pylist())
    table = quarantine_table(rows, reasons, QUARANTINE_SOURCE, now)
    return core_quarantine.write(lake, QUARANTINE_SOURCE, first, symbol, table)
