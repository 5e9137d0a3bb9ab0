"""``make demo ONCE=1``'s command on a small market: every stage runs and the API answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_once_runs_the_whole_path_and_exits_zero(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("POLYGON_API_KEY", None)
    env.pop("AWS_ENDPOINT_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "api.demo", "--once", "--port", "0", "--symbols", "30",
         "--sessions", "25", "--data-dir", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "replay done" in out
    assert "consolidated" in out and "resampled" in out
    assert "corporate actions" in out
    # four examples, two of gold, and a split symbol adjusted and raw
    assert out.count("GET http://") == 8
    assert "adjusted=split, splits [" in out and "adjusted=none, splits [" in out
    assert '"bars": [{' in out
    assert (tmp_path / "data" / "lake" / "silver" / "silver_34d").is_dir()
