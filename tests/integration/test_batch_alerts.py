"""``python -m batch.alerts`` on a real lake, Postgres and Redis: daily and 8-day rules on final
bars, their events those of the pandas definitions since each rule's creation; a rerun (as
every daily run is) stores and delivers nothing twice."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pandas as pd
import psycopg
import pytest

from batch import alerts as job
from batch import consolidate, resample
from core import alerts, calendar
from core.lake import Lake
from core.stores import alerts as store
from core.stores.postgres import migrate
from core.stores.redis import connect
from tests.batch_support import Row, write_fragment

pytestmark = pytest.mark.integration
DAYS = calendar.sessions_between(dt.date(2024, 1, 2), dt.date(2024, 12, 31))
CREATED_AFTER = 120
"""Rules are created the evening of this session."""


def closes() -> list[float]:
    return [100 + 10 * math.sin(i / 9) + 3 * math.sin(i / 2.3) for i in range(len(DAYS))]


def crossings(cond: pd.Series, live_from: int) -> list[int]:
    out, prev = [], None
    for i, c in enumerate(cond.tolist()):
        if pd.isna(c):
            continue
        if i >= live_from and prev is False and c:
            out.append(i)
        prev = bool(c)
    return out


def test_daily_and_fibonacci_rules(
    local_lake: Lake, pg_url: str, redis_server_url: str, redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    c = closes()
    write_fragment(
        local_lake,
        [Row("DLY", d, p, p + 1, p - 1, p, 1000.0) for d, p in zip(DAYS, c, strict=True)],
    )
    assert consolidate.main(["--lake", local_lake.url, "--no-progress"]) == 0
    assert resample.main(["--lake", local_lake.url, "--intervals", "8", "--no-progress"]) == 0
    created = calendar.session_close(DAYS[CREATED_AFTER]) + dt.timedelta(hours=1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn)
        ids = {}
        for name, tf, kind, params in (
            ("ema", "1d", "ema_cross", {"fast": 8, "slow": 21, "direction": "above"}),
            ("level", "1d", "price_cross", {"level": 100, "direction": "below"}),
            ("fib", "8d", "price_cross", {"level": 100, "direction": "above"}),
        ):
            row = store.create_rule(conn, store.NewRule(
                owner="env_o", symbol="DLY", timeframe=tf, kind=kind,
                params=alerts.check_params(kind, params),
            ))  # fmt: skip
            conn.execute(
                "UPDATE alert_rules SET created_at = %s WHERE id = %s", (created, row["id"])
            )
            ids[name] = row["id"]
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("REDIS_URL", redis_server_url)
    monkeypatch.setenv("REDIS_PREFIX", redis_prefix)
    r = connect(redis_server_url)
    ps = r.pubsub()  # type: ignore[no-untyped-call]
    ps.subscribe(redis_prefix + "alerts")
    ps.get_message(timeout=1)
    assert job.main(["--lake", local_lake.url, "--no-progress"]) == 0
    s = pd.Series(c)
    fast = s.ewm(span=8, adjust=False, min_periods=8).mean()
    slow = s.ewm(span=21, adjust=False, min_periods=21).mean()
    live = CREATED_AFTER + 1
    want_ema = crossings((fast > slow).where(slow.notna()), live)
    want_level = crossings(s <= 100, live)
    # 8-day bars on the calendar anchor: group (sessions since 1962-01-02) // 8, complete ones
    k0 = len(calendar.sessions_between(dt.date(1962, 1, 2), DAYS[0])) - 1
    groups: dict[int, list[int]] = {}
    for i in range(len(DAYS)):
        groups.setdefault((k0 + i) // 8, []).append(i)
    bars = [g for g in groups.values() if (k0 + g[0]) % 8 == 0 and len(g) == 8]
    fib_close = pd.Series([c[g[-1]] >= 100 for g in bars])
    first_live = next(j for j, g in enumerate(bars) if g[-1] >= live)
    want_fib = [bars[j][-1] for j in crossings(fib_close, first_live)]
    assert want_ema and want_level and want_fib
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT rule_id, event_at, delivered_at IS NOT NULL FROM alert_events ORDER BY event_at"
        ).fetchall()
    got: dict[str, list[dt.date]] = {}
    for rule_id, event_at, delivered in rows:
        assert delivered
        day = event_at.astimezone(calendar.NEW_YORK).date()
        got.setdefault(rule_id, []).append(day)
    assert got[ids["ema"]] == [DAYS[i] for i in want_ema]
    assert got[ids["level"]] == [DAYS[i] for i in want_level]
    assert got[ids["fib"]] == [DAYS[i] for i in want_fib]
    published: list[Any] = []
    while (m := ps.get_message(ignore_subscribe_messages=True, timeout=0.3)) is not None:
        published.append(json.loads(m["data"]))
    assert len(published) == len(rows)
    assert job.main(["--lake", local_lake.url, "--no-progress"]) == 0  # tomorrow's run, no news
    assert ps.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM alert_events").fetchone() == (len(rows),)
    ps.close()
    r.close()
