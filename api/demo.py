"""``make demo``: the whole pipeline on embedded defaults, then the API.

Starts the Polygon simulator, replays about three months of daily aggregates for 200 simulated
symbols through the Bytewax replay flow (``python -m bytewax.run dataflows.replay:flow``) into a
local lake and an embedded PostgreSQL, consolidates, resamples the six Fibonacci intervals,
computes the gold indicators of all seven intervals and serves the API on embedded Postgres and Redis. ``--once`` queries its own API and exits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core import calendar
from core.schemas import FIB_INTERVALS

DEMO_KEY = "dev-key"
"""The default API_KEYS of a laptop, the one the README's examples use."""


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m api.demo", description=__doc__)
    p.add_argument("--once", action="store_true", help="query the API once, print, exit 0")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where the demo keeps state")
    p.add_argument("--symbols", type=int, default=200, help="simulated symbols")
    p.add_argument("--sessions", type=int, default=66, help="sessions to replay (about 3 months)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="API port (0: any free port)")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> Any:
    req = urllib.request.Request(url, headers={"X-API-Key": DEMO_KEY})  # noqa: S310
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())


def split_example(market: Any, first: dt.date) -> tuple[str, dt.date, dt.date] | None:
    """(symbol, first, last day) of a few sessions around a split in the replay window."""
    splits = [s for s in market.splits() if s.execution_date > first]
    if not splits:
        return None
    counts = {s.ticker: sum(x.ticker == s.ticker for x in splits) for s in splits}
    s = max(splits, key=lambda x: (counts[x.ticker], x.split_to / x.split_from))
    i = calendar.session_index(s.execution_date)
    return s.ticker, calendar.session_at(max(i - 2, 0)), calendar.session_at(i + 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    args = _parse(argv)
    data = args.data_dir.resolve()
    lake_dir = data / "lake"
    data.mkdir(parents=True, exist_ok=True)

    from dataflows.simulator import Market
    from dataflows.simulator.server import SimulatorServer

    today = dt.datetime.now(dt.UTC).date()
    last = calendar.previous_session(today)
    first = calendar.session_at(calendar.session_index(last) - args.sessions + 1)
    market = Market(seed=args.seed, n_symbols=args.symbols, start=first, end=last)
    env_common = {
        "LAKE_URL": lake_dir.as_uri(),
        "DATA_DIR": str(data),
        "API_KEYS": DEMO_KEY,
    }
    os.environ.update(env_common)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)

    from core import embedded

    _say(f"starting embedded PostgreSQL and Redis under {data}")
    db_url = embedded.postgres_url(data, stop_at_exit=True)
    rd_url = embedded.redis_url(data)
    _say(f"embedded PostgreSQL: {db_url}")
    _say(f"embedded Redis:      {rd_url}")

    with SimulatorServer(market, host="127.0.0.1", port=0) as sim:
        _say(f"Polygon simulator:   {sim.rest_url} (WebSocket ws://{sim.ws_feed}/stocks)")
        env = {
            **os.environ,
            **env_common,
            "DATABASE_URL": db_url,
            "REDIS_URL": rd_url,
            "POLYGON_REST_URL": sim.rest_url,
            "POLYGON_WS_URL": sim.ws_feed,
            "REPLAY_START": first.isoformat(),
            "REPLAY_END": last.isoformat(),
        }
        _say(f"replaying {args.sessions} sessions {first} .. {last} for {args.symbols} symbols")
        t0 = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "bytewax.run", "dataflows.replay:flow"],
            env=env,
            check=True,
        )
        _say(f"replay done in {time.monotonic() - t0:.1f}s")
        t0 = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "dataflows.corporate_actions", "--lake", lake_dir.as_uri()],
            env=env,
            check=True,
        )
        _say(f"corporate actions (splits, dividends) fetched in {time.monotonic() - t0:.1f}s")

    from batch import consolidate, gold, resample
    from core.lake import Lake

    lake = Lake(lake_dir.as_uri())
    t0 = time.monotonic()
    c = consolidate.run(lake)
    _say(f"consolidated in {time.monotonic() - t0:.1f}s: {c.summary()}")
    if not c.ok:
        return 1
    t0 = time.monotonic()
    r = resample.run(lake, intervals=FIB_INTERVALS)
    _say(f"resampled {FIB_INTERVALS} in {time.monotonic() - t0:.1f}s: {r.summary()}")
    t0 = time.monotonic()
    g = gold.run(lake)
    _say(f"gold indicators in {time.monotonic() - t0:.1f}s: {g.summary()}")
    if not g.ok:
        return 1

    os.environ["DATABASE_URL"] = db_url
    os.environ["REDIS_URL"] = rd_url
    import uvicorn

    from api.main import create_app

    port = _free_port(args.host) if args.port == 0 else args.port
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host=args.host, port=port, log_level="warning")
    )
    base = f"http://{args.host}:{port}"
    symbol = sorted(
        x.ticker
        for x in market.symbols()
        if market.is_active(x, first) and market.is_active(x, last)
    )[0]
    examples = [
        f"{base}/health",
        f"{base}/v1/bars/{symbol}?interval=1d",
        f"{base}/v1/bars/{symbol}?interval=8d",
        f"{base}/v1/bars/{symbol}?interval=34d&start={first}",
        f"{base}/v1/indicators/{symbol}?interval=1d&limit=3",
        f"{base}/v1/indicators?interval=8d&date={last}",
    ]
    split = split_example(market, first)
    if split is not None:  # a split symbol around its split: adjusted (the default), then raw
        ticker, lo, hi = split
        examples += [
            f"{base}/v1/bars/{ticker}?interval=1d&start={lo}&end={hi}",
            f"{base}/v1/bars/{ticker}?interval=1d&start={lo}&end={hi}&adjusted=none",
        ]
    if not args.once:
        _say(f"lake:   {lake_dir}")
        _say(f"API:    {base}  (docs at {base}/docs, key {DEMO_KEY!r} in X-API-Key)")
        for url in examples:
            _say(f"  curl -H 'X-API-Key: {DEMO_KEY}' '{url}'")
        _say(f"chart:  {base}/chart/{symbol}?interval=1d#key={DEMO_KEY}")
        _say("Ctrl-C to stop")
        server.run()
        return 0

    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        for url in examples:
            body = _get(url)
            shown = json.dumps(body, default=str)
            if "start=" in url and "end=" in url and "bars" in body:  # the split example
                closes = ", ".join(f"{b['date']}: {b['close']:.2f}" for b in body["bars"])
                splits = [s["execution_date"] for s in body["adjustment"]["splits"]]
                shown = f"adjusted={body['adjusted']}, splits {splits}, closes {closes}"
            _say(f"GET {url}\n    -> {shown[:400]}{'...' if len(shown) > 400 else ''}")
            if ("bars" in body and not body["bars"]) or ("rows" in body and not body["rows"]):
                _say(f"no bars returned for {url}")
                return 1
    finally:
        server.should_exit = True
        thread.join(10)
    _say(f"done; the lake is at {lake_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
