"""The Polygon gateway's pure parts: token bucket, backoff, redaction, configuration errors."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
from pydantic import SecretStr

from core.settings import PolygonSettings
from dataflows.connectors.polygon import (
    Backoff,
    PolygonConfigError,
    PolygonGateway,
    RateLimiter,
    redact,
)

pytestmark = pytest.mark.unit


class FakeClock:
    """A clock that only moves when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, s: float) -> None:
        with self.lock:
            self.now += s


def test_rate_limiter_spaces_requests_after_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, burst=3, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(13):
        limiter.acquire()
        stamps.append(clock())
    assert stamps[:3] == [0.0, 0.0, 0.0]  # the burst is free
    assert stamps[-1] == pytest.approx(1.0)  # then 10 a second
    gaps = [b - a for a, b in itertools.pairwise(stamps[3:])]
    assert all(g == pytest.approx(0.1) for g in gaps)


def test_rate_limiter_is_thread_safe_in_real_time() -> None:
    import time

    limiter = RateLimiter(200.0, burst=1)
    t0 = time.monotonic()

    def take() -> None:
        for _ in range(10):
            limiter.acquire()

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert elapsed >= 39 / 200 * 0.95  # 40 tokens, 1 free: never faster than the rate


def test_rate_limiter_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(1, burst=0)


def test_backoff_is_full_jitter_and_capped() -> None:
    b = Backoff(base=1.0, cap=4.0)
    draws = [b.delay(a) for a in range(1, 8) for _ in range(50)]
    assert all(0.0 <= d <= 4.0 for d in draws)
    assert max(b.delay(1) for _ in range(200)) <= 1.0


def test_redact_hides_keys_in_urls() -> None:
    url = "https://user:pw@api.polygon.io/v2/aggs?apiKey=SEKRET&limit=5"
    shown = redact(url)
    assert "SEKRET" not in shown and "pw" not in shown
    assert "limit=5" in shown


def test_no_key_and_no_url_is_a_clear_error() -> None:
    with pytest.raises(PolygonConfigError, match="POLYGON_REST_URL"):
        PolygonGateway.from_settings(PolygonSettings(polygon_api_key=None, polygon_rest_url=None))


def test_key_without_url_targets_polygon() -> None:
    gw = PolygonGateway.from_settings(PolygonSettings(polygon_api_key=SecretStr("k1")))
    assert gw.base_url == "https://api.polygon.io"
    assert "k1" not in repr(gw)


_GOOD = [
    {"T": "AAPL", "v": 13403618, "vw": 145.7414, "o": 148.23, "c": 145.96, "h": 148.67,
     "l": 141, "t": 1704488400000, "n": 63723},
    {"T": "BRK.B", "v": 1.5e6, "o": 1, "c": 2.5, "h": 3, "l": 0.5, "t": 1704488400000},
    {"T": "ÄX", "v": 0, "vw": None, "o": 1e-9, "c": 1e300, "h": 2e300, "l": 5e-324,
     "t": 1704420000000, "n": None, "extra": "ignored"},
]  # fmt: skip


@pytest.mark.parametrize(
    ("indent", "extra"), [(None, []), (2, []), (None, [{**_GOOD[0], "v": 2**64, "T": "BIG"}])]
)
def test_grouped_columns_equal_the_per_row_path(indent: int | None, extra: list[Any]) -> None:
    import json

    from dataflows.connectors.polygon import grouped_columns, grouped_table

    body = json.dumps({"status": "OK", "results": _GOOD + extra, "n": 3}, indent=indent)
    fast = grouped_columns(body.encode())
    slow, junk = grouped_table(json.loads(body)["results"])
    assert not junk
    assert fast is None or fast.equals(slow)
    assert fast is not None or extra  # well-formed answers take the fast path


@pytest.mark.parametrize(
    "change",
    [
        {"o": "148.23"},  # a string price
        {"h": True},  # a boolean
        {"t": 1704488400000.5},  # a non-integer time
        {"n": 5.0},  # a float count
        {"T": 7},  # a numeric symbol
        {"c": [1]},  # a list
    ],
)
def test_grouped_columns_leave_odd_payloads_to_the_per_row_path(change: dict[str, object]) -> None:
    import json

    from dataflows.connectors.polygon import grouped_columns

    bad = [_GOOD[0], {**_GOOD[1], **change}]
    assert grouped_columns(json.dumps({"results": bad}).encode()) is None
    assert grouped_columns(json.dumps({"results": [_GOOD[0], 3]}).encode()) is None
    assert grouped_columns(json.dumps({"results": [_GOOD[0], None]}).encode()) is None
    assert grouped_columns(json.dumps({"results": []}).encode()) is None
    assert grouped_columns(json.dumps({"status": "OK"}).encode()) is None
    assert grouped_columns(b"[1, 2]") is None
    assert grouped_columns(b'{"results": [') is None
