"""The tape's update rules, and the table's load order: Polygon, the lake's copy, built in."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import SecretStr

from core.conditions import REGULAR, ConditionTableError, Rule, fallback, from_polygon
from core.lake import Lake
from core.settings import PolygonSettings
from dataflows.connectors.conditions import load_rules
from dataflows.connectors.polygon import Backoff, PolygonGateway, RateLimiter
from dataflows.simulator import Market
from dataflows.simulator.server import SimulatorServer

pytestmark = pytest.mark.unit


def test_every_condition_must_allow_a_field() -> None:
    rules = fallback()
    assert rules.combined(None) == rules.combined([]) == REGULAR
    assert rules.combined([14]) == REGULAR  # an intermarket sweep is a regular sale
    assert rules.combined([37]) == Rule(high_low=False, open_close=False, volume=True)
    assert rules.combined([14, 37]) == Rule(False, False, True)  # the odd lot wins
    assert rules.combined([33]) == Rule(True, False, True)  # out of sequence: no open/close
    assert rules.combined([2]) == Rule(False, False, True)  # average price
    assert rules.combined([12]) == Rule(False, False, True)  # Form T
    assert rules.combined([15]) == Rule(False, False, False)  # official close: nothing
    assert rules.combined([999]) == REGULAR and rules.unknown == {999}


def test_polygons_shape_round_trips_and_bad_tables_are_refused() -> None:
    rules = fallback()
    assert from_polygon(rules.to_polygon()).rules == rules.rules
    crypto = [{**r, "asset_class": "crypto"} for r in rules.to_polygon()]
    with pytest.raises(ConditionTableError):
        from_polygon(crypto)
    with pytest.raises(ConditionTableError):
        from_polygon([{"id": 1}])


def gateway(url: str) -> PolygonGateway:
    s = PolygonSettings(
        polygon_api_key=SecretStr("k"), polygon_rest_url=url, polygon_max_attempts=1
    )
    return PolygonGateway(s, limiter=RateLimiter(1000.0, burst=10), backoff=Backoff(0.01, 0.02))


def test_load_order_polygon_then_cache_then_builtin(local_lake: Lake) -> None:
    market = Market(seed=3, n_symbols=4, start=dt.date(2025, 1, 2), end=dt.date(2025, 1, 3))
    with SimulatorServer(market) as sim:
        got = load_rules(gateway(sim.rest_url), local_lake)
        assert got.source == "polygon" and got.rules == fallback().rules
        sim.set_faults(error_next=10, path_prefix="/v3/reference/conditions")
        cached = load_rules(gateway(sim.rest_url), local_lake)
    assert cached.source == "cache" and cached.rules == got.rules
    assert load_rules(None, None).source == "fallback"
