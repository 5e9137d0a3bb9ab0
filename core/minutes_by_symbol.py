"""One symbol's consolidated minutes per month, beside the session files, and how to trust them.

A consolidated session (``bronze/raw_ohlcv_1m/date=D/data.parquet``) holds the whole market, so
one symbol's year through them is 252 footers and row-group decodes. ``batch.consolidate
--minutes`` also keeps ``bronze/raw_ohlcv_1m_by_symbol/month=YYYY-MM/symbol=S.parquet``: the
same rows, one file per symbol and month, so a year is twelve plain reads.

The session files stay the truth. Each derived file records the session files it was built
from (size and modification time); a reader takes from it only the sessions whose file still
has that version, and reads every other session (re-consolidated since, healed in later, or not
in the file) from its session file. A month's record (``_built.json``, written after its
files) lists the sessions and the symbols with a file, so a symbol without bars in a month
(listed later, halted, unknown) costs no session read either.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core import layout, symbol_groups
from core.lake import Lake, LakeError, reading

log = logging.getLogger("core.minutes_by_symbol")
Version = tuple[int, int]
"""A session file's (size in bytes, modification time in ns): a rewrite changes it."""
Month = tuple[int, int]
SOURCES_KEY: Final = b"condvest.minute_sessions"
"""Parquet metadata key of a derived file: the session files (and versions) it holds."""


def version_of(info: pafs.FileInfo) -> Version:
    """The version of a session file, from one stat (or listing)."""
    return int(info.size or 0), int(info.mtime_ns or 0)


def month_of(day: dt.date) -> Month:
    """The (year, month) whose file holds ``day``."""
    return day.year, day.month


def by_month(days: Sequence[dt.date]) -> dict[Month, list[dt.date]]:
    """``days`` grouped by month, in order."""
    out: dict[Month, list[dt.date]] = defaultdict(list)
    for d in sorted(days):
        out[month_of(d)].append(d)
    return dict(out)


def encode_sources(sources: Mapping[dt.date, Version]) -> bytes:
    """The sources of a derived file as stored (sorted: equal sources, equal bytes)."""
    return json.dumps({d.isoformat(): list(v) for d, v in sorted(sources.items())}).encode()


def decode_sources(raw: bytes | str | None) -> dict[dt.date, Version]:
    """What :func:`encode_sources` wrote (nothing when absent)."""
    if not raw:
        return {}
    obj: dict[str, list[int]] = json.loads(raw)
    return {dt.date.fromisoformat(d): (int(v[0]), int(v[1])) for d, v in obj.items()}


@dataclass(frozen=True, slots=True)
class MonthRecord:
    """What a month of derived files was built from, and the symbols given a file."""

    sources: dict[dt.date, Version]
    symbols: frozenset[str]

    def to_json(self) -> dict[str, Any]:
        """The record as written (sorted lists: equal records, equal bytes)."""
        return {
            "sessions": json.loads(encode_sources(self.sources)),
            "symbols": sorted(self.symbols),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> MonthRecord:
        """Parse what :meth:`to_json` wrote."""
        return cls(
            decode_sources(json.dumps(obj.get("sessions", {}))),
            frozenset(obj.get("symbols", [])),
        )


def read_record(lake: Lake, month: Month) -> MonthRecord | None:
    """A month's record, or None before its first build."""
    key = layout.minute_month_record(*month)
    with reading(key):
        obj = lake.read_json(key)
    return MonthRecord.from_json(obj) if obj is not None else None


def held(recorded: Mapping[dt.date, Version], current: Mapping[dt.date, Version]) -> set[dt.date]:
    """The sessions of ``current`` that a derived file built from ``recorded`` holds as they are."""
    return {d for d, v in current.items() if recorded.get(d) == v}


@dataclass(frozen=True, slots=True)
class MonthRead:
    """One month of a symbol from its derived file: the rows it could vouch for, and the rest."""

    first: dt.date
    table: pa.Table | None
    elsewhere: list[dt.date]
    """Sessions to read from their session files instead."""


def _read_month(
    lake: Lake,
    symbol: str,
    month: Month,
    info: pafs.FileInfo,
    current: Mapping[dt.date, Version],
    columns: Sequence[str],
) -> MonthRead:
    if info.type != pafs.FileType.File:
        record = read_record(lake, month)
        if record is None or symbol in record.symbols:
            return MonthRead(min(current), None, sorted(current))  # not built yet, or its file lost
        return MonthRead(min(current), None, sorted(set(current) - held(record.sources, current)))
    try:
        with (
            reading(layout.minute_month_file(symbol, *month)),
            lake.fs.open_input_file(info.path) as fh,
        ):
            pf = pq.ParquetFile(fh)
            recorded = decode_sources((pf.schema_arrow.metadata or {}).get(SOURCES_KEY))
            good = held(recorded, current)
            if not good:
                return MonthRead(min(current), None, sorted(current))
            cols = list(dict.fromkeys([*columns, "date"]))
            table = pf.read(columns=cols, use_threads=False)
    except (LakeError, json.JSONDecodeError, KeyError, IndexError) as exc:
        # a copy, not the truth: a bad or replaced file costs speed, never an answer
        log.warning("%s; reading its sessions from their own files", exc)
        return MonthRead(min(current), None, sorted(current))
    if good != set(recorded):  # part of the month asked, or a session changed since
        wanted = pa.array(sorted(good), pa.date32())
        table = table.filter(pc.is_in(table["date"], value_set=wanted))
    return MonthRead(min(current), table.select(list(columns)), sorted(set(current) - good))


def read_symbol(
    lake: Lake,
    symbol: str,
    sessions: Mapping[dt.date, pafs.FileInfo],
    columns: Sequence[str],
) -> tuple[list[tuple[dt.date, pa.Table]], list[dt.date]]:
    """``symbol``'s rows of ``sessions`` (consolidated session files, as just listed or stat'ed).

    Returns the tables read from derived files (one a month, ascending, each with the first
    session asked of its month) and the sessions they could not vouch for, which the caller
    reads from the session files.
    """
    months = by_month(list(sessions))
    keys = [layout.minute_month_file(symbol, *m) for m in months]
    infos = lake.fs.get_file_info([lake.path(k) for k in keys])

    def one(item: tuple[Month, pafs.FileInfo]) -> MonthRead:
        month, info = item
        current = {d: version_of(sessions[d]) for d in months[month]}
        return _read_month(lake, symbol, month, info, current, columns)

    reads = symbol_groups.map_threads(one, list(zip(months, infos, strict=True)))
    tables = [(r.first, r.table) for r in reads if r.table is not None]
    return tables, sorted(d for r in reads for d in r.elsewhere)
