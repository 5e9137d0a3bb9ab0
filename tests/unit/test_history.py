"""dataflows.history: the symbols of a full backfill, its request budget, progress and ETA."""

from __future__ import annotations

import datetime as dt

import pytest

from core.lake import Lake
from dataflows import history

pytestmark = pytest.mark.unit


def test_universe_joins_sources_and_drops_bad_tickers() -> None:
    assert history.universe(["MSFT", "AAPL"], ["AAPL", "bad ticker", "BCpC"], set()) == [
        "AAPL", "BCpC", "MSFT",
    ]  # fmt: skip


def test_request_bound_per_plan() -> None:
    assert history.request_bound(5_350, 5 / 60) == pytest.approx(64_200)  # free: ~17.8 h
    assert history.request_bound(5_350, 100) == pytest.approx(53.5)
    assert history.duration(64_200) == "17:50:00"
    assert history.duration(3 * 86_400 + 61) == "3d 00:01:01"


def test_progress_resumes_and_restart_forgets(local_lake: Lake) -> None:
    start = dt.date(1962, 1, 2)
    p = history.Progress.load(local_lake, start)
    assert p.remaining(["A", "B", "C"]) == ["A", "B", "C"] and p.eta() is None
    p.mark("A")
    p.mark("C")
    p.flush()
    again = history.Progress.load(local_lake, start)
    assert again.remaining(["A", "B", "C", "D"]) == ["B", "D"] and again.total == 2
    assert history.Progress.load(local_lake, start, restart=True).done == set()
    assert history.Progress.load(local_lake, dt.date(2000, 1, 3)).done == set()  # another start


def test_eta_from_the_rate_so_far(local_lake: Lake) -> None:
    p = history.Progress(local_lake, dt.date(1962, 1, 2), total=10, begun=100.0)
    p.fetched = 2
    assert p.eta(now=104.0) == pytest.approx(16.0)  # 2 in 4 s, 8 left
    assert "2/10 symbols" in p.line()
