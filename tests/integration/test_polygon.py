"""The Polygon gateway against the simulator: retries on every fault knob, and no key leaks."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from core.settings import PolygonSettings
from dataflows.connectors.polygon import Backoff, PolygonError, PolygonGateway, RateLimiter
from dataflows.simulator.market import Market
from dataflows.simulator.server import SimulatorServer

pytestmark = pytest.mark.integration
DAY = dt.date(2025, 3, 3)
KEY = "sekret-key-123"


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    market = Market(seed=3, n_symbols=40, start=dt.date(2025, 3, 3), end=dt.date(2025, 3, 14))
    with SimulatorServer(market, host="127.0.0.1", port=0) as s:
        yield s


@pytest.fixture()
def sim(server: SimulatorServer) -> SimulatorServer:
    server.set_faults(reset=True)
    server.reset_stats()
    return server


def gateway(sim: SimulatorServer, *, attempts: int = 4, timeout: float = 5.0) -> PolygonGateway:
    settings = PolygonSettings(
        polygon_api_key=SecretStr(KEY),
        polygon_rest_url=sim.rest_url,
        polygon_max_attempts=attempts,
        polygon_timeout_s=timeout,
    )
    return PolygonGateway(
        settings, limiter=RateLimiter(1000.0, burst=10), backoff=Backoff(base=0.01, cap=0.05)
    )


def grouped_requests(sim: SimulatorServer) -> int:
    return int(sim.stats()["by_route"].get("grouped_daily", 0))


def test_grouped_daily_returns_raw_unadjusted_rows(sim: SimulatorServer) -> None:
    rows = gateway(sim).grouped_daily(DAY)
    assert rows and {"T", "o", "h", "l", "c", "v", "t"} <= set(rows[0])
    expected = sim.market.grouped(DAY, False).to_arrow().to_pylist()
    assert {r["T"]: r["c"] for r in rows} == {r["symbol"]: r["close"] for r in expected}


def test_429_with_retry_after_is_honoured(sim: SimulatorServer) -> None:
    sim.set_faults(rate_limit_next=1, retry_after=1)
    t0 = time.monotonic()
    rows, attempts = gateway(sim).grouped_daily_fetch(DAY)
    assert rows and attempts == 2
    assert time.monotonic() - t0 >= 0.95  # waited Retry-After, not the tiny backoff


def test_5xx_and_slow_responses_are_retried(sim: SimulatorServer) -> None:
    sim.set_faults(error_next=2, error_status=503)
    rows, attempts = gateway(sim).grouped_daily_fetch(DAY)
    assert rows and attempts == 3
    sim.set_faults(reset=True)
    sim.set_faults(delay=1.5, delay_next=1)
    rows, attempts = gateway(sim, timeout=0.5).grouped_daily_fetch(DAY)
    assert rows and attempts == 2


def test_persistent_failure_raises_without_the_key(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    sim.set_faults(error_next=10, error_status=500)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PolygonError) as err:
        gateway(sim, attempts=3).grouped_daily(DAY)
    assert err.value.attempts == 3 and err.value.status == 500
    assert grouped_requests(sim) == 3
    assert KEY not in str(err.value) and KEY not in caplog.text
    assert "HTTP 500" in str(err.value)


def test_client_errors_are_not_retried(sim: SimulatorServer) -> None:
    with pytest.raises(PolygonError, match="HTTP 400") as err:
        gateway(sim).get_json("/v2/aggs/grouped/locale/us/market/stocks/not-a-date", {})
    assert err.value.attempts == 1


def test_absolute_urls_only_to_the_configured_host(sim: SimulatorServer) -> None:
    with pytest.raises(PolygonError, match="another host"):
        gateway(sim).get_json("http://evil.example/v2?apiKey=x", {})
