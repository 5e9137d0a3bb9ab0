"""schemathesis over the whole OpenAPI document of a real ``python -m api`` process.

Every check (``--checks all``): no 5xx, every status and content type documented, bodies match
their schemas, invalid input refused, valid input accepted. The same process's log then shows
the request id of every answer on its access line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.lake import Lake
from tests.integration.test_api_logs import Served, env_for, serve
from tests.integration.test_api_server import seed

pytestmark = [pytest.mark.integration, pytest.mark.slow]
KEY = "schema-key-" + "x7Yq" * 8


@pytest.fixture()
def served(
    tmp_path: Path, local_lake: Lake, pg_url: str, redis_server_url: str, redis_prefix: str
) -> Iterator[Served]:
    seed(local_lake, pg_url)
    env = env_for(
        local_lake,
        pg_url,
        redis_server_url,
        redis_prefix,
        API_KEYS=KEY,
        APP_ENV="test",
        API_RATE_LIMIT="0",
    )
    s = serve(tmp_path, env)
    try:
        yield s
    finally:
        s.stop()


# A rule's schema states each field's domain, but not what ties fields together (params that
# belong to the kind, fast < slow, lower < upper, expires_at in the future): a schema-valid body
# can still be a rule the API refuses with a 400 naming the field.
CONFIG = """
[[operations]]
include-name = "POST /v1/alerts"
checks.positive_data_acceptance.expected-statuses = [201, 400, 401, 403, 429]
"""


@pytest.mark.timeout(900)
def test_schemathesis_all_checks(served: Served, tmp_path: Path) -> None:
    cli = Path(sys.executable).parent / "schemathesis"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    done = subprocess.run(
        [
            str(cli), "--config-file", str(config), "run", f"{served.base}/openapi.json", "--checks", "all",
            "--header", f"X-API-Key: {KEY}", "--max-examples", "30", "--seed", "7",
            "--workers", "2", "--report", "junit", "--report-dir", str(tmp_path / "report"),
            "--suppress-health-check", "all",
        ],
        capture_output=True, text=True, timeout=840, check=False, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"},
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert not re.search(r"\b5\d\d\b.*Server error", out), out[-3000:]
    log = served.stop()
    assert "Traceback" not in log, log[-3000:]


def test_request_ids_reach_the_access_log(served: Served) -> None:
    r = httpx.get(
        f"{served.base}/v1/bars/IBM",
        headers={"X-API-Key": KEY, "X-Request-ID": "trace-abcdef12"},
        timeout=10,
    )
    assert r.headers["X-Request-ID"] == "trace-abcdef12"
    log = served.stop()
    line = next(x for x in log.splitlines() if "GET /v1/bars/IBM" in x)
    assert "[trace-abcdef12]" in line and line.rstrip().endswith("200 OK")
