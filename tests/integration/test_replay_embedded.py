"""The replay entry point with nothing configured but the lake and Postgres: the embedded Polygon."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from core import layout
from core.lake import Lake
from core.settings import ReplaySettings
from dataflows.simulator.embedded import market_range, wanted

pytestmark = pytest.mark.integration
POLYGON_ENV = ("POLYGON_API_KEY", "POLYGON_SECRET_ID", "POLYGON_REST_URL", "POLYGON_SIMULATOR")


def _env(lake: Lake, pg_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in POLYGON_ENV}
    env.update(LAKE_URL=lake.url, DATABASE_URL=pg_url, **extra)
    return env


def test_bytewax_run_with_no_polygon_settings_replays_the_embedded_market(
    local_lake: Lake, pg_url: str
) -> None:
    env = _env(local_lake, pg_url, REPLAY_START="2025-03-03", REPLAY_END="2025-03-07")
    done = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.replay:flow"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "embedded Polygon simulator" in done.stderr
    assert "5 complete" in done.stderr
    keys = [e.key for e in local_lake.list(layout.DAILY)]
    assert len(keys) > 100 and all("range=2025-03-03_2025-03-07" in k for k in keys)


def test_the_embedded_market_can_be_refused(local_lake: Lake, pg_url: str) -> None:
    env = _env(local_lake, pg_url, REPLAY_START="2025-03-03", REPLAY_END="2025-03-07")
    env["POLYGON_SIMULATOR"] = "false"
    done = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.replay:flow"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no Polygon source configured" in done.stderr


def test_only_a_bare_configuration_gets_the_embedded_market() -> None:
    bare = ReplaySettings(
        polygon_api_key=None, polygon_secret_id=None, polygon_rest_url=None, polygon_simulator=True
    )
    assert wanted(bare)
    assert not wanted(bare.model_copy(update={"polygon_rest_url": "http://x"}))
    assert not wanted(bare.model_copy(update={"polygon_secret_id": "polygon/key"}))
    assert not wanted(bare.model_copy(update={"polygon_simulator": False}))
    ranged = bare.model_copy(
        update={
            "replay_start": dt.date(2024, 1, 2),
            "replay_end": dt.date(2024, 2, 1),
            "replay_sessions": "2023-05-01,2024-03-01",
        }
    )
    assert market_range(ranged, dt.date(2026, 1, 1)) == (dt.date(2023, 5, 1), dt.date(2024, 3, 1))
