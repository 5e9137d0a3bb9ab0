"""The embedded Polygon: what the replay talks to when no key and no REST URL are configured.

ARCHITECTURE.md's default for ``POLYGON_REST_URL`` is "the simulator's when no key", so a bare
``python -m bytewax.run dataflows.replay:flow`` must work on a laptop with nothing configured,
as embedded Postgres and Redis do. The market is the demo's (seed 7, 200 symbols), so the same
command always yields the same data.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Final

from core import calendar
from core.settings import ReplaySettings

SEED: Final = 7
SYMBOLS: Final = 200
_RUNNING: list[object] = []  # keeps the server (and its thread) alive for the process


def wanted(settings: ReplaySettings) -> bool:
    """True when nothing points at a Polygon and the embedded one is allowed."""
    if not settings.polygon_simulator or settings.polygon_rest_url:
        return False
    return settings.polygon_api_key is None and not settings.polygon_secret_id


def market_range(settings: ReplaySettings, today: dt.date) -> tuple[dt.date, dt.date]:
    """First and last session the simulated market must cover for this replay."""
    firsts = [settings.replay_start or settings.replay_history_start]
    lasts = [settings.replay_end or calendar.last_session_on_or_before(today)]
    if settings.replay_sessions:
        days = [dt.date.fromisoformat(d.strip()) for d in settings.replay_sessions.split(",") if d]
        firsts += days
        lasts += days
    first = max(min(firsts), calendar.EPOCH)
    last = min(max(lasts), calendar.HORIZON)
    return first, max(first, last)


def with_embedded_source(settings: ReplaySettings, today: dt.date | None = None) -> ReplaySettings:
    """``settings``, pointed at an in-process simulator when :func:`wanted`; else unchanged."""
    if not wanted(settings):
        return settings
    from dataflows.simulator.market import Market
    from dataflows.simulator.server import SimulatorServer

    first, last = market_range(settings, today or dt.datetime.now(dt.UTC).date())
    server = SimulatorServer(Market(seed=SEED, n_symbols=SYMBOLS, start=first, end=last)).start()
    _RUNNING.append(server)
    print(
        f"replay: no POLYGON_API_KEY or POLYGON_REST_URL: serving the embedded Polygon simulator "
        f"(seed {SEED}, {SYMBOLS} symbols, {first} .. {last}) at {server.rest_url}; "
        "set POLYGON_SIMULATOR=false to refuse instead",
        file=sys.stderr,
        flush=True,
    )
    return settings.model_copy(update={"polygon_rest_url": server.rest_url})
