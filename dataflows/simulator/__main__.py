"""``python -m dataflows.simulator``: serve the offline Polygon until interrupted.

It prints ``POLYGON_REST_URL=...`` and ``POLYGON_WS_URL=...`` lines, ready to paste into the
environment of the flows (and parsed by :class:`dataflows.simulator.process.SimulatorProcess`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
import threading
from collections.abc import Sequence

from core import calendar
from core.cli import iso_date
from dataflows.simulator.badrows import KINDS
from dataflows.simulator.faults import Faults
from dataflows.simulator.market import Market
from dataflows.simulator.server import SimulatorServer


def _bad(value: str) -> tuple[dt.date, list[str]]:
    day, _, kinds = value.partition(":")
    return dt.date.fromisoformat(day), kinds.split("+") if kinds else list(KINDS)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    today = dt.datetime.now(dt.UTC).date()
    p = argparse.ArgumentParser(
        prog="python -m dataflows.simulator",
        description="Offline Polygon: a deterministic simulated US stock market behind Polygon's "
        "REST and WebSocket protocols.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8010, help="port (0 picks a free one; default 8010)")
    p.add_argument("--symbols", type=int, default=200, help="number of simulated symbols")
    p.add_argument("--seed", type=int, default=7, help="market seed (same seed, same market)")
    p.add_argument(
        "--start", type=iso_date, help="first date of the replay window (default: a year ago)"
    )
    p.add_argument(
        "--end", type=iso_date, help="last date (default: the last session before today)"
    )
    p.add_argument(
        "--history-start",
        type=iso_date,
        help="first date with bars (default --start; >= 1962-01-02)",
    )
    p.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    p.add_argument(
        "--speed", type=float, default=1.0, help="WebSocket replay speed (simulated s per s)"
    )
    p.add_argument(
        "--replay-day", type=iso_date, help="session the WebSocket replays first (default --end)"
    )
    p.add_argument(
        "--ws-interval", type=float, default=0.1, help="seconds between WebSocket pushes"
    )
    p.add_argument("--max-connections", type=int, default=1, help="WebSocket connections per key")
    p.add_argument(
        "--max-events", type=int, default=1000, help="events per WebSocket message at most"
    )
    p.add_argument(
        "--trades-per-minute", type=int, default=12, help="trades per symbol-minute at most"
    )
    p.add_argument(
        "--bad-rows",
        type=_bad,
        action="append",
        default=[],
        metavar="DATE[:KIND+KIND]",
        help=f"inject malformed rows on DATE (kinds: {', '.join(KINDS)}; default all)",
    )
    p.add_argument(
        "--tape-daily",
        action="store_true",
        help="daily bars of the window's sessions take vwap and transactions from the simulated"
        " trades (as a real tape does; costs generating each day's trades)",
    )
    p.add_argument(
        "--faults",
        type=json.loads,
        default={},
        help="initial faults as JSON, e.g. '{\"rate_limit_p\":0.1}'",
    )
    args = p.parse_args(argv)
    args.end = args.end or calendar.previous_session(today)
    args.start = args.start or args.end - dt.timedelta(days=365)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM."""
    args = parse(argv)
    market = Market(
        seed=args.seed,
        n_symbols=args.symbols,
        start=args.start,
        end=args.end,
        history_start=args.history_start,
        bad_rows=dict(args.bad_rows),
        trades_per_minute=args.trades_per_minute,
        tape_daily=args.tape_daily,
    )
    server = SimulatorServer(
        market,
        args.host,
        args.port,
        api_key=args.api_key,
        faults=Faults().updated(args.faults),
        speed=args.speed,
        replay_day=args.replay_day,
        ws_interval=args.ws_interval,
        max_connections=args.max_connections,
        max_events=args.max_events,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with server:
        print(
            f"Polygon simulator: {market.n_symbols} symbols, sessions {market.start} .. {market.end}, "
            f"seed {market.seed}",
            flush=True,
        )
        print(f"POLYGON_REST_URL={server.rest_url}", flush=True)
        print(f"POLYGON_WS_URL={server.ws_feed}", flush=True)
        print(
            f"control: {server.rest_url}/_sim/faults, /_sim/stats, /_sim/clock; Ctrl-C stops",
            flush=True,
        )
        while not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
