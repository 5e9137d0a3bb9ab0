"""XNYS trading sessions.

Fibonacci groups are numbered by session index since 1962-01-02, so the calendar must be exact
and identical everywhere: one cached table of sessions, held as ``datetime.date`` and as
date32 day numbers for vectorised look-ups.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

EPOCH: Final = dt.date(1962, 1, 2)
"""First session of the calendar; it has session index 0."""
HORIZON: Final = dt.date(2030, 12, 31)
NEW_YORK: Final = ZoneInfo("America/New_York")
_UNIX: Final = dt.date(1970, 1, 1)


class CalendarError(ValueError):
    """A date outside the calendar's range or not a session where one is required."""


@lru_cache(maxsize=1)
def _calendar() -> object:
    import exchange_calendars as xc  # heavy import, deferred until first use

    return xc.get_calendar("XNYS", start=EPOCH.isoformat(), end=HORIZON.isoformat())


@lru_cache(maxsize=1)
def session_days() -> npt.NDArray[np.int32]:
    """All sessions as days since 1970-01-01 (date32), ascending."""
    sessions = _calendar().sessions  # type: ignore[attr-defined]
    days = (sessions.values.astype("datetime64[D]").astype(np.int64)).astype(np.int32)
    days.setflags(write=False)
    return days  # type: ignore[no-any-return]


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


def session_close(day: dt.date) -> dt.datetime:
    """The session's close in UTC (13:00 New York on early-close days)."""
    if not is_session(day):
        msg = f"{day.isoformat()} is not an XNYS session"
        raise CalendarError(msg)
    import pandas as pd

    close = _calendar().session_close(pd.Timestamp(day))  # type: ignore[attr-defined]
    return close.to_pydatetime().astimezone(dt.UTC)  # type: ignore[no-any-return]


def session_open(day: dt.date) -> dt.datetime:
    """The session's open in UTC."""
    if not is_session(day):
        msg = f"{day.isoformat()} is not an XNYS session"
        raise CalendarError(msg)
    import pandas as pd

    opened = _calendar().session_open(pd.Timestamp(day))  # type: ignore[attr-defined]
    return opened.to_pydatetime().astimezone(dt.UTC)  # type: ignore[no-any-return]


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
