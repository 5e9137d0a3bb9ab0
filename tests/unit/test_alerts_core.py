"""Alert semantics: validation naming the field, firing on transitions, re-arm, hysteresis,
cooldown, a rule's starting side, event ids, and the engine's price bands."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import alerts
from core.alert_engine import Bar, BarSeries, Engine
from core.alerts import Arm, Rule, RuleError

pytestmark = pytest.mark.unit
MIN = 60_000


def rule(kind: str = "price_cross", timeframe: str = "1m", **params: Any) -> Rule:
    cooldown = int(params.pop("cooldown", 0))
    rid = str(params.pop("rid", "r1"))
    created = int(params.pop("created", 0))
    return Rule(
        id=rid, owner="o", symbol="AAA", timeframe=timeframe, kind=kind,
        params=alerts.check_params(kind, params), cooldown_s=cooldown, created_ms=created,
    )  # fmt: skip


def run_prices(r: Rule, prices: Sequence[float], *, step_ms: int = 1000) -> list[int]:
    """Indices of the trades that fire, through the engine (bands included)."""
    eng = Engine()
    eng.add(r)
    fired = []
    for i, p in enumerate(prices):
        if eng.on_trade_batch(["AAA"], [1 + i * step_ms], [p], [f"k{i}"]):
            fired.append(i)
    return fired


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("price_cross", {}, "params.level"),
        ("price_cross", {"level": -1}, "params.level"),
        ("price_cross", {"level": "x"}, "params.level"),
        ("price_cross", {"level": 1, "direction": "sideways"}, "params.direction"),
        ("price_cross", {"level": 1, "hysteresis": -0.5}, "params.hysteresis"),
        ("price_cross", {"level": 1, "colour": "red"}, "params.colour"),
        ("percent_move", {"percent": 2, "bars": 0}, "params.bars"),
        ("percent_move", {"percent": 2, "bars": 1.5}, "params.bars"),
        ("volume_spike", {"factor": 0}, "params.factor"),
        ("ema_cross", {"fast": 21, "slow": 8}, "params.fast"),
        ("ema_cross", {"fast": 9, "slow": 21}, "params.fast"),
        ("rsi_exit", {"lower": 80, "upper": 70}, "params.lower"),
        ("vegas_cross", {"direction": "up"}, "params.direction"),
        ("moon_phase", {}, "kind"),
    ],
)
def test_invalid_params_name_the_field(kind: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(RuleError) as err:
        alerts.check_params(kind, params)
    assert err.value.field == field


def test_defaults_and_timeframes() -> None:
    assert alerts.check_params("rsi_exit", {}) == {
        "lower": 30.0, "upper": 70.0, "direction": "any", "hysteresis": 0.0,
    }  # fmt: skip
    assert alerts.check_params("ema_cross", {})["fast"] == 8
    with pytest.raises(RuleError, match="timeframe"):
        alerts.check_timeframe("2d")
    with pytest.raises(RuleError, match="cooldown"):
        alerts.check_cooldown(-1)
    assert rule(level=10).on_trades and not rule(timeframe="1d", level=10).on_trades


# -- price_cross on trades ---------------------------------------------------------------------
def test_condition_true_for_an_hour_fires_once() -> None:
    prices = [99.0, 99.5] + [100.0 + (i % 7) * 0.1 for i in range(3600)]  # an hour above
    assert run_prices(rule(level=100), prices) == [2]


def test_flapping_rearms_and_hysteresis_filters_noise() -> None:
    path = [99, 101, 99.9, 100.2, 99.95, 100.1, 98, 100.5]
    assert run_prices(rule(level=100), path) == [1, 3, 5, 7]
    assert run_prices(rule(level=100, hysteresis=0.5), path) == [1, 7]


def test_below_and_exact_level() -> None:
    assert run_prices(rule(level=100, direction="below"), [101, 100, 99, 101, 99]) == [1, 4]


def test_first_observation_only_sets_the_side() -> None:
    assert run_prices(rule(level=100), [105, 106, 99, 101]) == [3]


def test_cooldown_defers_while_condition_holds() -> None:
    r = rule(level=100, cooldown=10)
    # fires at 1, re-arms at 2, true again at 3 (inside 10 s): waits, fires at 11 (still above)
    path = [99, 101, 99, 101] + [102] * 10
    assert run_prices(r, path) == [1, 11]
    # inside the cooldown and then false again: no event
    assert run_prices(r, [99, 101, 99, 101, 99, 99, 99, 99, 99, 99, 99, 99]) == [1]


def test_rule_created_later_starts_from_the_trade_before_it() -> None:
    eng = Engine()
    eng.on_trade_batch(["AAA"], [1000], [105.0], ["a"])
    eng.add(rule(level=100, created=2000))
    assert eng.on_trade_batch(["AAA"], [3000], [106.0], ["b"]) == []  # already above: waits
    eng2 = Engine()
    eng2.on_trade_batch(["AAA"], [1000], [95.0], ["a"])
    eng2.add(rule(level=100, created=2000))
    (ev,) = eng2.on_trade_batch(["AAA"], [3000], [106.0], ["b"])
    assert (
        ev.id == alerts.event_id("r1", "b") and ev.value == 106.0 and "crossed above" in ev.message
    )


def test_expired_rule_stops() -> None:
    r = Rule(
        id="r", owner="o", symbol="AAA", timeframe="1m", kind="price_cross",
        params=alerts.check_params("price_cross", {"level": 100}), expires_ms=2500,
    )  # fmt: skip
    eng = Engine()
    eng.add(r)
    assert eng.on_trade_batch(["AAA"] * 4, [1000, 2000, 3000, 4000], [99, 98, 99, 101]) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(95, 105, allow_nan=False), min_size=1, max_size=80),
    st.lists(
        st.tuples(st.floats(96, 104), st.sampled_from(["above", "below"]), st.floats(0, 2),
                  st.integers(0, 5)),
        min_size=1, max_size=6,
    ),
)  # fmt: skip
def test_bands_equal_a_plain_loop(
    prices: list[float], specs: list[tuple[float, str, float, int]]
) -> None:
    rules = [
        rule(level=lv, direction=d, hysteresis=h, cooldown=c, rid=f"r{i}")
        for i, (lv, d, h, c) in enumerate(specs)
    ]
    eng = Engine()
    for r in rules:
        eng.add(r)
    times = [1 + i * 1000 for i in range(len(prices))]
    got = eng.on_trade_batch(
        ["AAA"] * len(prices), times, prices, [f"k{i}" for i in range(len(prices))]
    )
    arms = {r.id: Arm() for r in rules}
    want = []
    for i, p in enumerate(prices):
        for r in rules:
            if alerts.step(r, arms[r.id], alerts.price_margin(r, p), times[i]):
                want.append((r.id, f"k{i}"))
    assert sorted((e.rule_id, e.observation) for e in got) == sorted(want)


# -- bar kinds ---------------------------------------------------------------------------------
def feed_bars(
    rules: list[Rule],
    close: Sequence[float],
    volume: Sequence[float] | None = None,
    *,
    seed: int = 0,
) -> list[tuple[str, int]]:
    """(rule id, bar index) of every event over a bar path; the first ``seed`` bars seed it."""
    eng = Engine()
    for r in rules:
        eng.add(r)
    vol = volume or [1000.0] * len(close)
    n = len(close)
    starts = [i * MIN for i in range(n)]
    if seed:
        eng.seed("AAA", "1m", BarSeries.of_history(
            "1m", starts[:seed], [s + MIN for s in starts[:seed]], close[:seed], close[:seed],
            close[:seed], vol[:seed],
        ))  # fmt: skip
    out = []
    for i in range(seed, n):
        bar = Bar(starts[i], starts[i] + MIN, close[i], close[i], close[i], vol[i])
        for ev in eng.on_bar("AAA", "1m", bar):
            out.append((ev.rule_id, i))
    return out


def test_percent_move() -> None:
    up = rule("percent_move", percent=2, bars=3, direction="up", rid="up")
    down = rule("percent_move", percent=2, bars=3, direction="down", rid="down")
    close = [100, 100, 100, 101, 103, 103, 103, 103, 100, 99, 98]
    # bar 4: 103 vs 100 three bars before (+3%); bar 8: 100 vs 103 (-2.9%)
    assert feed_bars([up, down], close) == [("up", 4), ("down", 8)]


def test_volume_spike_needs_its_window() -> None:
    r = rule("volume_spike", factor=3, bars=4)
    vol = [100.0, 100, 100, 500, 100, 100, 100, 100, 400, 450, 100, 100, 100, 100, 350]
    # bar 3 has only 3 bars before it (undefined), then: bar 8 (4x), 9 holds (no event), 14
    assert feed_bars([r], [10.0] * len(vol), vol) == [("r1", 8), ("r1", 14)]


def test_ema_cross_equals_pandas_and_is_right_from_the_first_live_bar() -> None:
    rng = np.random.default_rng(3)
    close = list(100 + np.cumsum(rng.normal(0, 1, 400)))
    s = pd.Series(close)
    fast = s.ewm(span=8, adjust=False, min_periods=8).mean()
    slow = s.ewm(span=21, adjust=False, min_periods=21).mean()
    above = (fast > slow) & slow.notna()
    want = [i for i in range(250, 400) if above[i] and not above[i - 1]]
    r = rule("ema_cross", fast=8, slow=21, direction="above")
    got = feed_bars([r], close, seed=250)  # 250 bars of history, then live
    assert [i for _, i in got] == want and want


def test_rsi_exit_and_vegas_cross() -> None:
    close = [100.0 + math.sin(i / 6) * 8 for i in range(300)]
    s = pd.Series(close)
    d = s.diff()
    g = d.clip(lower=0).iloc[1:].ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    lo = (-d).clip(lower=0).iloc[1:].ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    rsi = (100 * g / (g + lo)).reindex(s.index)
    out = (rsi > 70).fillna(False)
    want_rsi = [i for i in range(1, 300) if out[i] and not out[i - 1] and not pd.isna(rsi[i - 1])]
    r = rule("rsi_exit", direction="up")
    assert [i for _, i in feed_bars([r], close)] == want_rsi and want_rsi
    e144 = s.ewm(span=144, adjust=False, min_periods=144).mean()
    e169 = s.ewm(span=169, adjust=False, min_periods=169).mean()
    top = pd.concat([e144, e169], axis=1).max(axis=1, skipna=False)
    v = (s > top) & top.notna()
    want_v = [i for i in range(170, 300) if v[i] and not v[i - 1]]
    vr = rule("vegas_cross", direction="above")
    assert [i for _, i in feed_bars([vr], close)] == want_v and want_v


def test_bar_seen_twice_is_evaluated_once() -> None:
    eng = Engine()
    eng.add(rule("price_cross", timeframe="1d", level=100))  # a daily close, not trades
    assert eng.on_bar("AAA", "1d", Bar(0, 300_000, 99, 99, 99, 1)) == []
    assert len(eng.on_bar("AAA", "1d", Bar(300_000, 600_000, 101, 101, 101, 1))) == 1
    assert eng.on_bar("AAA", "1d", Bar(300_000, 600_000, 99, 99, 99, 1)) == []  # seen already


def test_state_survives_rule_reload() -> None:
    eng = Engine()
    r = rule(level=100)
    eng.set_rules([r])
    eng.on_trade_batch(["AAA", "AAA"], [1, 2], [99.0, 101.0], ["a", "b"])
    eng.set_rules([r])  # a reload with the same rule keeps its state: no second event
    assert eng.on_trade_batch(["AAA"], [3], [102.0], ["c"]) == []
    eng.set_rules([])
    assert not eng.rules and not eng.arms and "AAA" not in eng.bands


def test_event_ids_are_deterministic() -> None:
    k = alerts.trade_key(1700000000000, 4, "123", 9)
    assert alerts.event_id("r", k) == alerts.event_id("r", k) != alerts.event_id("r2", k)
    assert alerts.trade_key(1, 4, None, 9) == "trade:1:4:s9"
