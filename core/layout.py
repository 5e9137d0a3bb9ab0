"""Lake paths: pure functions, no I/O.

File names encode what they hold (symbol, date or range, interval, month) so writes are
deterministic and idempotent: rewriting the same input lands on the same key.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

SYMBOL_RE: Final = re.compile(r"^[A-Z][A-Za-z0-9.\-]{0,14}$")
"""Polygon spells preferred shares with a lower-case class letter (``BCpC``), so case is kept."""
DAILY: Final = "bronze/raw_ohlcv"
MINUTE: Final = "bronze/raw_ohlcv_1m"
META: Final = "processing_metadata"


class LayoutError(ValueError):
    """A name that cannot be placed in the lake."""


def check_symbol(symbol: str) -> str:
    """Return ``symbol`` when it is a safe ticker; path segments come from it."""
    if not SYMBOL_RE.match(symbol):
        msg = (
            f"invalid symbol {symbol!r}: expected 1-15 of A-Z a-z 0-9 . - "
            "starting with a capital letter"
        )
        raise LayoutError(msg)
    return symbol


def normalise_symbol(text: str) -> str:
    """A user's ticker as the lake spells it: all lower-case input is upper-cased, mixed case kept.

    ``aapl`` means ``AAPL``, but ``BCpC`` (a preferred share) is not ``BCPC`` (another issuer).
    """
    text = text.strip()
    return check_symbol(text.upper() if text == text.lower() else text)


def symbol_dir(symbol: str) -> str:
    """Folder of one symbol's daily bronze."""
    return f"{DAILY}/symbol={check_symbol(symbol)}"


def daily_fragment(symbol: str, day: dt.date) -> str:
    """One session's fragment for one symbol."""
    return f"{symbol_dir(symbol)}/date={day.isoformat()}.parquet"


def range_fragment(symbol: str, first: dt.date, last: dt.date) -> str:
    """A multi-session write for one symbol."""
    if last < first:
        msg = f"range {first}..{last} is reversed"
        raise LayoutError(msg)
    return f"{symbol_dir(symbol)}/range={first.isoformat()}_{last.isoformat()}.parquet"


def consolidated(symbol: str) -> str:
    """The consolidated history of one symbol."""
    return f"{symbol_dir(symbol)}/data.parquet"


def minute_dir(day: dt.date) -> str:
    """Folder of one session's minute bars (every symbol)."""
    return f"{MINUTE}/date={day.isoformat()}"


def _part_id(part_id: str, what: str) -> str:
    """``part_id`` when it is safe as a file name segment."""
    if not re.match(r"^[A-Za-z0-9._\-]+$", part_id) or ".." in part_id:
        msg = f"invalid {what} id {part_id!r}"
        raise LayoutError(msg)
    return part_id


def minute_fragment(day: dt.date, part_id: str) -> str:
    """A fragment of one session's minute bars: any number of symbols, one writer's flush."""
    return f"{minute_dir(day)}/part-{_part_id(part_id, 'minute fragment')}.parquet"


def minute_consolidated(day: dt.date) -> str:
    """One session's minute bars after consolidation: one row per (symbol, start)."""
    return f"{minute_dir(day)}/data.parquet"


def minute_session(path: str) -> dt.date | None:
    """The session of a minute folder or file path (``.../date=YYYY-MM-DD/...``)."""
    m = re.search(r"date=(\d{4}-\d{2}-\d{2})", path)
    return dt.date.fromisoformat(m[1]) if m else None


MINUTE_BY_SYMBOL: Final = "bronze/raw_ohlcv_1m_by_symbol"
"""A derived copy of the consolidated minute sessions, one file per symbol and month, so one
symbol's year is twelve reads; the session files stay the truth."""


def minute_month_dir(year: int, month: int) -> str:
    """Folder of one month of the per-symbol minute files."""
    return f"{MINUTE_BY_SYMBOL}/month={int(year):04d}-{int(month):02d}"


def minute_month_file(symbol: str, year: int, month: int) -> str:
    """One symbol's consolidated minute bars of one month."""
    return f"{minute_month_dir(year, month)}/symbol={check_symbol(symbol)}.parquet"


def minute_month_record(year: int, month: int) -> str:
    """What a month of per-symbol files was built from, and the symbols it holds."""
    return f"{minute_month_dir(year, month)}/_built.json"


def minute_month(path: str) -> tuple[int, int] | None:
    """(year, month) of a per-symbol minute folder or file path (``.../month=YYYY-MM/...``)."""
    m = re.search(r"month=(\d{4})-(\d{2})", path)
    return (int(m[1]), int(m[2])) if m else None


TRADES: Final = "bronze/trades"


def trades_dir(day: dt.date) -> str:
    """Folder of one session's archived trades (every symbol)."""
    return f"{TRADES}/date={day.isoformat()}"


def trades_part(day: dt.date, part_id: str) -> str:
    """One flush of the trades archive: market-wide, one session."""
    return f"{trades_dir(day)}/part-{_part_id(part_id, 'trades part')}.parquet"


INTRADAY_RE: Final = re.compile(r"^(5m|15m|30m|1h|2h|4h)$")


def intraday_dir(interval: str) -> str:
    """Root of one intraday interval's silver (``5m`` .. ``4h``)."""
    if not INTRADAY_RE.match(interval):
        msg = f"invalid intraday interval {interval!r}"
        raise LayoutError(msg)
    return f"silver/silver_{interval}"


def intraday_file(interval: str, day: dt.date) -> str:
    """One session's bars of one intraday interval (every symbol)."""
    return f"{intraday_dir(interval)}/date={day.isoformat()}/data.parquet"


def silver_file(interval: int, year: int, month: int) -> str:
    """The month file of Fibonacci bars starting in (year, month)."""
    n = int(interval)
    return f"silver/silver_{n}d/year={year:04d}/month={month:02d}/data_{n}d_{year:04d}{month:02d}.parquet"


def silver_dir(interval: int) -> str:
    """Root of one interval's silver."""
    return f"silver/silver_{int(interval)}d"


def _gold_label(interval: str) -> str:
    if not re.match(r"^[0-9]{1,2}d$", interval):
        msg = f"invalid gold interval {interval!r}: expected e.g. 1d or 8d"
        raise LayoutError(msg)
    return interval


def gold_dir(interval: str) -> str:
    """Root of one interval's indicators (``1d``, ``3d``, ...)."""
    return f"gold/indicators_{_gold_label(interval)}"


def gold_file(interval: str, year: int, month: int) -> str:
    """The month file of indicators whose bar's date (1d) or start_date is in (year, month)."""
    label = _gold_label(interval)
    return f"{gold_dir(label)}/year={year:04d}/month={month:02d}/data_{label}_{year:04d}{month:02d}.parquet"


def gold_state(interval: str) -> str:
    """Per-symbol indicator states of one interval: where an incremental run resumes."""
    return f"{META}/gold_{_gold_label(interval)}_state.parquet"


def consolidation_manifest() -> str:
    """Per-symbol record of merged fragments."""
    return f"{META}/consolidation_manifest.parquet"


def silver_checkpoint(interval: int) -> str:
    """Per-symbol resample checkpoint of one interval."""
    return f"{META}/silver_{int(interval)}d_checkpoint.json"


def quarantine_part(source: str, day: dt.date, part_id: str) -> str:
    """Rejected records of one source and day."""
    if not re.match(r"^[a-z0-9_\-]+$", source):
        msg = f"invalid quarantine source {source!r}"
        raise LayoutError(msg)
    if not re.match(r"^[A-Za-z0-9._\-]+$", part_id) or ".." in part_id:
        msg = f"invalid quarantine part id {part_id!r}"
        raise LayoutError(msg)
    return f"quarantine/{source}/{day.isoformat()}/part-{part_id}.parquet"


def reference_conditions() -> str:
    """The last trade-condition table fetched from Polygon (JSON rows)."""
    return "reference/conditions/conditions.json"


def reference_tickers() -> str:
    """Symbol metadata snapshot."""
    return "reference/tickers/tickers.parquet"


def reference_splits() -> str:
    """Every symbol's stock splits (and stock dividends)."""
    return "reference/splits/splits.parquet"


def reference_dividends() -> str:
    """Every symbol's cash dividends."""
    return "reference/dividends/dividends.parquet"


def adjustments() -> str:
    """Per symbol, the split version its silver was built with."""
    return f"{META}/adjustments.parquet"


_FRAGMENT_RE: Final = re.compile(
    r"symbol=(?P<symbol>[^/]+)/(?:date=(?P<date>\d{4}-\d{2}-\d{2})|"
    r"range=(?P<first>\d{4}-\d{2}-\d{2})_(?P<last>\d{4}-\d{2}-\d{2}))\.parquet$"
)


def parse_fragment(path: str) -> tuple[str, dt.date, dt.date] | None:
    """(symbol, first, last) of a bronze fragment path, or None for other files."""
    m = _FRAGMENT_RE.search(path)
    if m is None:
        return None
    if m["date"]:
        day = dt.date.fromisoformat(m["date"])
        return m["symbol"], day, day
    return m["symbol"], dt.date.fromisoformat(m["first"]), dt.date.fromisoformat(m["last"])
