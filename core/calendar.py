"""XNYS trading sessions.

Fibonacci groups are numbered by session index since 1962-01-02, so the calendar must be exact
and identical everywhere: one cached table of sessions, held as date32 day numbers for
vectorised look-ups, with each session's open and close.

Building that table with ``exchange_calendars`` costs seconds of CPU (mostly its import), which
every ``python -m batch.<job>`` process and pool worker would pay. So the table is kept in a
small file keyed by the exchange_calendars version and the calendar's range, under
``$CONDVEST_CACHE_DIR`` (default ``$XDG_CACHE_HOME/condvest`` or ``~/.cache/condvest``); when
that is unwritable or the file is unreadable the table is simply built in memory.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core import cache

EPOCH: Final = dt.date(1962, 1, 2)
"""First session of the calendar; it has session index 0."""
HORIZON: Final = dt.date(2030, 12, 31)
NEW_YORK: Final = ZoneInfo("America/New_York")
_UNIX: Final = dt.date(1970, 1, 1)
_UNIX_UTC: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
CACHE_DIR_ENV: Final = cache.CACHE_DIR_ENV


class CalendarError(ValueError):
    """A date outside the calendar's range or not a session where one is required."""


class Sessions(NamedTuple):
    """The session table: date32 days, and opens and closes in ns since the epoch (UTC)."""

    days: npt.NDArray[np.int32]
    opens: npt.NDArray[np.int64]
    closes: npt.NDArray[np.int64]


def _build() -> Sessions:
    import exchange_calendars as xc  # heavy import: only when no cache file serves

    cal = xc.get_calendar("XNYS", start=EPOCH.isoformat(), end=HORIZON.isoformat())
    days = cal.sessions.values.astype("datetime64[D]").astype(np.int64).astype(np.int32)
    opens = cal.opens.values.astype("datetime64[ns]").astype(np.int64)
    closes = cal.closes.values.astype("datetime64[ns]").astype(np.int64)
    return Sessions(days, opens, closes)


def cache_file() -> Path:
    """Where the session table is cached (the name changes with exchange_calendars)."""
    version = importlib.metadata.version("exchange_calendars")
    return cache.root() / f"xnys-{version}-{EPOCH:%Y%m%d}-{HORIZON:%Y%m%d}.npz"


def _load(path: Path) -> Sessions | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            table = Sessions(
                f["days"].astype(np.int32),
                f["opens"].astype(np.int64),
                f["closes"].astype(np.int64),
            )
    except (OSError, ValueError, KeyError):
        return None
    n = len(table.days)
    if not n or len(table.opens) != n or len(table.closes) != n:
        return None
    return table


def _save(path: Path, table: Sessions) -> None:
    """Write atomically; a cache that cannot be written is only a slower start."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".xnys-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, days=table.days, opens=table.opens, closes=table.closes)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass


@lru_cache(maxsize=1)
def sessions() -> Sessions:
    """The session table, from the cache file when it holds one, else built (and cached)."""
    path = cache_file()
    table = _load(path)
    if table is None:
        table = _build()
        _save(path, table)
    for arr in table:
        arr.setflags(write=False)
    return table


def session_days() -> npt.NDArray[np.int32]:
    """All sessions as days since 1970-01-01 (date32), ascending."""
    return sessions().days


def to_days(day: dt.date) -> int:
    """A date as date32 (days since the Unix epoch)."""
    return (day - _UNIX).days


def from_days(days: int) -> dt.date:
    """A date32 value as a date."""
    return _UNIX + dt.timedelta(days=int(days))


def _check_range(day: dt.date) -> None:
    if not EPOCH <= day <= HORIZON:
        msg = f"{day.isoformat()} is outside the XNYS calendar range {EPOCH} .. {HORIZON}"
        raise CalendarError(msg)


def is_session(day: dt.date) -> bool:
    """True when the exchange traded on ``day``."""
    if not EPOCH <= day <= HORIZON:
        return False
    arr = session_days()
    d = to_days(day)
    i = int(np.searchsorted(arr, d))
    return i < len(arr) and int(arr[i]) == d


def session_index(day: dt.date) -> int:
    """Number of sessions s with 1962-01-02 <= s < day (the Fibonacci ``k``)."""
    _check_range(day)
    return int(np.searchsorted(session_days(), to_days(day), side="left"))


def session_indices(days: npt.NDArray[np.int32]) -> npt.NDArray[np.int64]:
    """Vectorised :func:`session_index` over date32 values."""
    return np.searchsorted(session_days(), days, side="left").astype(np.int64)


def session_at(index: int) -> dt.date:
    """The session with the given index."""
    arr = session_days()
    if not 0 <= index < len(arr):
        msg = f"session index {index} is outside the calendar"
        raise CalendarError(msg)
    return from_days(int(arr[index]))


def sessions_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Sessions in the closed range [first, last]."""
    arr = session_days()
    lo = int(np.searchsorted(arr, to_days(first), side="left"))
    hi = int(np.searchsorted(arr, to_days(last), side="right"))
    return [from_days(int(d)) for d in arr[lo:hi]]


def previous_session(day: dt.date) -> dt.date:
    """The last session strictly before ``day``."""
    i = session_index(day)
    return session_at(i - 1)


def next_session(day: dt.date) -> dt.date:
    """The first session strictly after ``day``."""
    arr = session_days()
    i = int(np.searchsorted(arr, to_days(day), side="right"))
    return session_at(i)


def last_session_on_or_before(day: dt.date) -> dt.date:
    """The latest session on or before ``day``."""
    arr = session_days()
    i = int(np.searchsorted(arr, to_days(day), side="right")) - 1
    return session_at(i)


def _at(times: npt.NDArray[np.int64], day: dt.date) -> dt.datetime:
    i = int(np.searchsorted(session_days(), to_days(day)))
    return _UNIX_UTC + dt.timedelta(microseconds=int(times[i]) // 1000)


def session_close(day: dt.date) -> dt.datetime:
    """The session's close in UTC (13:00 New York on early-close days)."""
    if not is_session(day):
        msg = f"{day.isoformat()} is not an XNYS session"
        raise CalendarError(msg)
    return _at(sessions().closes, day)


def session_open(day: dt.date) -> dt.datetime:
    """The session's open in UTC."""
    if not is_session(day):
        msg = f"{day.isoformat()} is not an XNYS session"
        raise CalendarError(msg)
    return _at(sessions().opens, day)


def settled_sessions(
    first: dt.date, last: dt.date, now: dt.datetime, settle: dt.timedelta
) -> list[dt.date]:
    """Sessions in [first, last] whose close plus ``settle`` is at or before ``now``.

    Today's bars are only final some time after the close; asking earlier caches a partial day.
    """
    out = sessions_between(first, min(last, now.astimezone(NEW_YORK).date()))
    while out and session_close(out[-1]) + settle > now:
        out.pop()
    return out
