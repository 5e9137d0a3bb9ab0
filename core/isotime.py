"""Unix milliseconds as the ISO text every live document carries (``datetime.isoformat``'s)."""

from __future__ import annotations

import datetime as dt
from typing import Final

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ISO: dict[int, str] = {}


def ms_iso(ms: int) -> str:
    """Unix ms as an ISO UTC timestamp, each second's text memoised.

    The live flow stamps a latest trade per symbol many times a second: built afresh, the text
    cost more than the rest of the trade's document.
    """
    second, milli = divmod(ms, 1000)
    hit = _ISO.get(second)
    if hit is None:
        if len(_ISO) > 100_000:
            _ISO.clear()
        hit = _ISO[second] = (_EPOCH + dt.timedelta(seconds=second)).isoformat()
    return f"{hit[:19]}.{milli:03d}000+00:00" if milli else hit
