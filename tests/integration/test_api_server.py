"""``python -m api`` as its own process, over real Postgres, Redis and a lake on S3 (emulated)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pyarrow as pa
import pytest

from core import layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY, SILVER
from core.stores import postgres

pytestmark = pytest.mark.integration
KEY = "integration-key"
DAYS = [dt.date(2015, 3, 2) + dt.timedelta(days=i) for i in range(3)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def seed(lake: Lake, pg_url: str) -> None:
    ingested = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [
        {
            "symbol": "IBM",
            "date": d,
            "open": 1.0 + i,
            "high": 2.0 + i,
            "low": 0.5 + i,
            "close": 1.5 + i,
            "volume": 10.0,
            "vwap": None,
            "transactions": None,
            "source": "rest",
            "ingested_at": ingested,
        }
        for i, d in enumerate(DAYS)
    ]
    lake.write_table(layout.consolidated("IBM"), pa.Table.from_pylist(rows, schema=BRONZE_DAILY))
    bar = {
        "symbol": "IBM",
        "start_date": DAYS[0],
        "end_date": DAYS[-1],
        "open": 1.0,
        "high": 4.0,
        "low": 0.5,
        "close": 3.5,
        "volume": 30.0,
        "days": 3,
        "complete": True,
    }
    lake.write_table(layout.silver_file(3, 2015, 3), pa.Table.from_pylist([bar], schema=SILVER))
    with postgres.connect(pg_url) as conn:
        postgres.migrate(conn)


@pytest.fixture()
def server(
    s3_lake: Lake, aws_endpoint: str, pg_url: str, redis_server_url: str, redis_prefix: str
) -> Iterator[str]:
    seed(s3_lake, pg_url)
    port = free_port()
    env = {
        **os.environ,
        "LAKE_URL": s3_lake.url,
        "AWS_ENDPOINT_URL": aws_endpoint,
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_server_url,
        "REDIS_PREFIX": redis_prefix,
        "API_KEYS": KEY,
        "APP_ENV": "test",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not become healthy in 30 s"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def test_served_over_http(server: str) -> None:
    with httpx.Client(base_url=server, headers={"X-API-Key": KEY}, timeout=10) as http:
        health = http.get("/health").json()
        assert health == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok", "lake": "ok"}}
        daily = http.get("/v1/bars/IBM", params={"interval": "1d"}).json()
        assert [b["date"] for b in daily["bars"]] == [d.isoformat() for d in DAYS]
        assert daily["bars"][0]["vwap"] is None
        fib = http.get("/v1/bars/IBM", params={"interval": "3d"}).json()
        assert fib["bars"] == [
            {
                "start_date": "2015-03-02",
                "end_date": "2015-03-04",
                "open": 1.0,
                "high": 4.0,
                "low": 0.5,
                "close": 3.5,
                "volume": 30.0,
                "days": 3,
                "complete": True,
            }
        ]
        assert http.get("/v1/bars/XYZ").status_code == 404
        assert http.get("/openapi.json").json()["paths"].keys() >= {"/health", "/v1/bars/{symbol}"}
    assert httpx.get(f"{server}/v1/bars/IBM").status_code == 401


def test_refuses_to_start_in_prod_with_the_placeholder_key() -> None:
    env = {**os.environ, "APP_ENV": "prod"}
    env.pop("API_KEYS", None)
    done = subprocess.run(
        [sys.executable, "-m", "api", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "placeholder" in done.stderr


def test_health_of_an_s3_lake(
    s3_bucket: str, aws_endpoint: str, pg_url: str, redis_server_url: str
) -> None:
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from api.main import create_app
    from core.settings import ApiSettings

    def lake_state(url: str) -> tuple[int, str]:
        settings = ApiSettings(
            lake_url=url,
            aws_endpoint_url=aws_endpoint,
            database_url=SecretStr(pg_url),
            redis_url=SecretStr(redis_server_url),
            api_keys=SecretStr(KEY),
        )
        r = TestClient(create_app(settings)).get("/health")
        return r.status_code, r.json()["checks"]["lake"]

    assert lake_state(f"s3://{s3_bucket}/fresh") == (200, "empty")
    code, state = lake_state(f"s3://{s3_bucket}-missing/lake")
    assert code == 503
    assert state.startswith("error")
