"""batch.gaps --fix with the real replay flow, the simulator, Postgres and a local lake."""

from __future__ import annotations

import datetime as dt
import importlib.util

import pytest

from batch import gaps
from core import calendar
from core.lake import Lake

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRST, LAST = dt.date(2025, 3, 3), dt.date(2025, 3, 14)


@pytest.mark.skipif(
    importlib.util.find_spec("dataflows.replay") is None, reason="dataflows.replay not present"
)
def test_fix_replays_the_missing_session(
    local_lake: Lake,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dataflows.simulator.market import Market
    from dataflows.simulator.server import SimulatorServer

    sessions = calendar.sessions_between(FIRST, LAST)
    hole = sessions[4]
    market = Market(seed=11, n_symbols=12, start=FIRST, end=LAST)
    with SimulatorServer(market, host="127.0.0.1", port=0) as sim:
        monkeypatch.delenv("POLYGON_API_KEY", raising=False)
        for name, value in {
            "DATABASE_URL": pg_url,
            "POLYGON_REST_URL": sim.rest_url,
            "POLYGON_RPS": "1000",
            "REPLAY_HISTORY_START": FIRST.isoformat(),
            "CACHE_WINDOW_DAYS": "100000",
        }.items():
            monkeypatch.setenv(name, value)
        assert gaps.replay([s for s in sessions if s != hole], local_lake) == 0
        before, _ = gaps.run(local_lake)
        assert before.market_gaps["date"].to_pylist() == [hole]
        assert gaps.main(["--lake", local_lake.url, "--fix", "--no-progress"]) == 0
        assert "replayed 1 sessions (exit 0)" in capsys.readouterr().out
    after, _ = gaps.run(local_lake)
    assert after.market_gaps.num_rows == 0
    assert before.symbol_gaps.num_rows >= before.symbols > 0
    assert after.symbol_gaps.num_rows == 0
