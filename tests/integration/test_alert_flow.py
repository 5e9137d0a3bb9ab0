"""Alerts in the live flow on scripted price paths, one symbol per kind, on real Postgres and
Redis with the lake's history seeding the indicators: every event the rules' definitions call
for (computed here with pandas from the trades sent), stored once and published once; a price
above its level for an hour fires once, a flapping one re-arms, hysteresis filters the noise;
a rule change reaches the running flow's feed within a second."""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import psycopg
import pytest
import redis
from bytewax.testing import TestingSink, TestingSource, run_main

from core import alerts, calendar
from core.alert_delivery import announce_rules
from core.lake import Lake
from core.stores import alerts as store
from core.stores.postgres import migrate
from core.stores.redis import connect
from dataflows import alert_seed
from dataflows.alerts import FeedConfig, RuleFeed, feed_factory
from dataflows.connectors.alert_sink import AlertSink
from dataflows.connectors.minute_sink import write_fragments
from dataflows.live import build_live_flow
from dataflows.minute_fold import MinuteBar
from dataflows.trades import Chunk

pytestmark = pytest.mark.integration
HISTORY, LIVE = dt.date(2024, 11, 25), dt.date(2024, 11, 26)
OPEN = int(calendar.session_open(LIVE).timestamp() * 1000)
H_OPEN = int(calendar.session_open(HISTORY).timestamp() * 1000)
CREATED = dt.datetime(2024, 11, 26, 13, 0, tzinfo=dt.UTC)  # 08:00 New York, before the open
MINUTES = 180
MIN = 60_000
BAR_RULES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "PCT": ("percent_move", "1m", {"percent": 1.5, "bars": 5, "direction": "any"}),
    "VOL": ("volume_spike", "1m", {"factor": 3, "bars": 10}),
    "EMA": ("ema_cross", "5m", {"fast": 8, "slow": 21, "direction": "above"}),
    "RSI": ("rsi_exit", "1m", {"lower": 30, "upper": 70, "direction": "any"}),
    "VEG": ("vegas_cross", "1m", {"direction": "above"}),
}


def path(symbol: str, i: int) -> float:
    """Close of minute i (history: negative i) of a bar symbol."""
    k = sum(map(ord, symbol)) % 7 + 3
    return 100 + 6 * math.sin(i / (4 * k)) + 2 * math.sin(i / k) + 0.3 * math.sin(i * 1.7)


def volume(symbol: str, i: int) -> float:
    return 1000.0 * (5 if symbol == "VOL" and i % 37 == 11 else 1 + (i % 3) / 10)


def history_bars() -> list[MinuteBar]:
    out = []
    for sym in BAR_RULES:
        for m in range(390):
            c = path(sym, m - 390)
            out.append(MinuteBar(sym, H_OPEN + m * MIN, c, c, c, c, volume(sym, m - 390), c, 1,
                                 final=True, revision=0, partial=False))  # fmt: skip
    return out


def price_paths() -> dict[str, list[float]]:
    """One trade every 10 s: PXA crosses 100 once and stays above for an hour (and more);
    FLP flaps around 50 (up crossings every 40 s, small dips below)."""
    n = MINUTES * 6
    pxa = [99.0 + i * 0.1 if i < 20 else 101 + (i % 5) * 0.1 for i in range(n)]
    flp = [50.3 if i % 4 in (1, 2) else 49.8 for i in range(n)]
    return {"PXA": pxa, "FLP": flp}


def chunks() -> list[Chunk]:
    prices = price_paths()
    out = []
    for m in range(MINUTES):
        evs = []
        for j in range(6):
            i, t = m * 6 + j, OPEN + m * MIN + j * 10_000
            for sym, ps in prices.items():
                evs.append(
                    {"ev": "T", "sym": sym, "p": ps[i], "s": 100, "t": t, "i": f"{i}", "x": 4}
                )
            if j == 3:
                for sym in BAR_RULES:
                    evs.append({"ev": "T", "sym": sym, "p": path(sym, m), "s": volume(sym, m),
                                "t": t, "i": f"{m}", "x": 4})  # fmt: skip
        out.append(Chunk("p0", [json.dumps(evs)], OPEN + (m + 1) * MIN))
    return out


def transitions(cond: pd.Series, live_from: int) -> list[int]:
    """Indices >= live_from where cond turns true (from a defined false)."""
    out, prev = [], None
    for i, c in enumerate(cond.tolist()):
        if c is None or (isinstance(c, float) and math.isnan(c)):
            continue
        if i >= live_from and prev is False and c:
            out.append(i)
        prev = bool(c)
    return out


def expected_bar_events() -> dict[str, list[int]]:
    """Per bar symbol, the start (ms) of every bar that fires, by the pandas definitions."""
    out: dict[str, list[int]] = {}
    for sym, (kind, tf, p) in BAR_RULES.items():
        closes = pd.Series([path(sym, i) for i in range(-390, MINUTES)])
        vols = pd.Series([volume(sym, i) for i in range(-390, MINUTES)])
        starts = [H_OPEN + i * MIN for i in range(390)] + [OPEN + i * MIN for i in range(MINUTES)]
        live_from = 390
        if tf == "5m":
            closes, vols = closes.iloc[4::5].reset_index(drop=True), vols.groupby(
                [i // 5 for i in range(len(vols))]).sum()  # fmt: skip
            starts, live_from = starts[::5], 78
        cond: pd.Series
        if kind == "percent_move":
            move = 100 * (closes / closes.shift(p["bars"]) - 1)
            cond = (move.abs() >= p["percent"]).where(move.notna())
        elif kind == "volume_spike":
            mean = vols.shift(1).rolling(p["bars"]).mean()
            cond = (vols / mean >= p["factor"]).where(mean.notna())
        elif kind == "ema_cross":
            fast = closes.ewm(span=p["fast"], adjust=False, min_periods=p["fast"]).mean()
            slow = closes.ewm(span=p["slow"], adjust=False, min_periods=p["slow"]).mean()
            cond = (fast > slow).where(slow.notna())
        elif kind == "rsi_exit":
            d = closes.diff()
            g = d.clip(lower=0).iloc[1:].ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
            lo = (-d).clip(lower=0).iloc[1:].ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
            rsi = (100 * g / (g + lo)).reindex(closes.index)
            cond = ((rsi > p["upper"]) | (rsi < p["lower"])).where(rsi.notna())
        else:
            e144 = closes.ewm(span=144, adjust=False, min_periods=144).mean()
            e169 = closes.ewm(span=169, adjust=False, min_periods=169).mean()
            top = pd.concat([e144, e169], axis=1).max(axis=1, skipna=False)
            cond = (closes > top).where(top.notna())
        out[sym] = [starts[i] for i in transitions(cond.astype(object), live_from)]
    return out


@pytest.fixture()
def conn(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_url, autocommit=True) as c:
        migrate(c)
        yield c


def add_rule(conn: psycopg.Connection[Any], symbol: str, kind: str, tf: str, **params: Any) -> str:
    row = store.create_rule(conn, store.NewRule(
        owner="env_owner", symbol=symbol, timeframe=tf, kind=kind,
        params=alerts.check_params(kind, params),
    ))  # fmt: skip
    conn.execute("UPDATE alert_rules SET created_at = %s WHERE id = %s", (CREATED, row["id"]))
    return str(row["id"])


def listen(client: redis.Redis, channel: str) -> Any:
    ps = client.pubsub()  # type: ignore[no-untyped-call]
    ps.subscribe(channel)
    ps.get_message(timeout=1)
    return ps


def drain(ps: Any) -> list[dict[str, Any]]:
    out, quiet = [], 0
    while quiet < 5:
        msg = ps.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if msg is None:
            quiet += 1
            continue
        out.append(json.loads(msg["data"]))
    return out


def test_every_kind_on_scripted_paths(
    conn: psycopg.Connection[Any], pg_url: str, redis_server_url: str, redis_prefix: str,
    local_lake: Lake,
) -> None:  # fmt: skip
    write_fragments(local_lake, history_bars())
    ids = {
        "PXA": add_rule(conn, "PXA", "price_cross", "1m", level=100),
        "FLP": add_rule(conn, "FLP", "price_cross", "1m", level=50),
        "FLPH": add_rule(conn, "FLP", "price_cross", "1m", level=50, hysteresis=0.5),
    }
    for sym, (kind, tf, p) in BAR_RULES.items():
        ids[sym] = add_rule(conn, sym, kind, tf, **p)
    client = connect(redis_server_url)
    ps = listen(client, redis_prefix + "alerts")
    feed = feed_factory(
        FeedConfig(pg_url, redis_server_url, redis_prefix),
        functools.partial(alert_seed.load, local_lake, bars=500),
    )
    sink = AlertSink(pg_url, redis_server_url, redis_prefix, max_per_minute=1000)
    flow = build_live_flow(
        TestingSource(chunks()), bars=TestingSink([]), live=TestingSink([]),
        quarantine=TestingSink([]), alerts=sink, alert_feed=feed,
    )  # fmt: skip
    run_main(flow)  # type: ignore[no-untyped-call]
    rows = conn.execute(
        "SELECT rule_id, observation, event_at FROM alert_events ORDER BY event_at, id"
    ).fetchall()
    by_rule: dict[str, list[str]] = {}
    for rule_id, observation, _ in rows:
        by_rule.setdefault(rule_id, []).append(observation)
    # price levels, on trades
    assert len(by_rule[ids["PXA"]]) == 1  # crossed once, then above for three hours
    flaps = MINUTES * 6 // 4
    assert len(by_rule[ids["FLP"]]) == flaps  # every up-crossing re-armed and fired
    assert len(by_rule[ids["FLPH"]]) == 1  # the dips never went 0.5 below: never re-armed
    # bar kinds, on final bars, against pandas over history + live
    want = expected_bar_events()
    for sym in BAR_RULES:
        got = [int(o.rsplit(":", 1)[1]) for o in by_rule.get(ids[sym], [])]
        assert got == want[sym], sym
        assert want[sym], f"the path of {sym} should cross in the live part"
    # published once each, with the stored ids
    published = [m for m in drain(ps) if m["type"] == "alert"]
    assert sorted(m["data"]["id"] for m in published) == sorted(
        r[0] for r in conn.execute("SELECT id FROM alert_events").fetchall()
    )
    client.close()


def test_a_rule_change_reaches_the_feed_within_a_second(
    conn: psycopg.Connection[Any], pg_url: str, redis_server_url: str, redis_prefix: str
) -> None:
    feed = RuleFeed(FeedConfig(pg_url, redis_server_url, redis_prefix, reload_s=60))
    rules, _ = feed.initial(set())
    assert rules == []
    feed.start()
    client = connect(redis_server_url)
    try:
        rid = add_rule(conn, "AAA", "price_cross", "1m", level=10)
        sent = time.monotonic()
        announce_rules(client, redis_prefix, rid, "created")
        change = feed.changes.get(timeout=1.0)
        assert time.monotonic() - sent < 1.0
        assert change[0] == "one" and change[1] == rid and change[2] is not None
        store.deactivate(conn, "env_owner", rid)
        announce_rules(client, redis_prefix, rid, "deleted")
        change = feed.changes.get(timeout=1.0)
        assert change[0] == "one" and change[2] is None
    finally:
        feed.stop()
        client.close()
