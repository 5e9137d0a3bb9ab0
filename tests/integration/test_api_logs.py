"""``python -m api``'s own logs, read whole from a real process: access lines intact, no logging
errors, and no API key anywhere, whichever way the caller sent it (header, query, WebSocket).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

from core.lake import Lake
from tests.integration.test_api_server import free_port, seed

pytestmark = pytest.mark.integration
KEYS = (secrets.token_urlsafe(32), secrets.token_urlsafe(32))


@dataclass
class Served:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> str:
        """Stop the server; everything it wrote."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        return self.log.read_text(errors="replace")


def serve(tmp_path: Path, env: dict[str, str], *args: str) -> Served:
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                return Served(base, proc, log)
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the API did not become healthy in 60 s"
        time.sleep(0.1)


def env_for(
    lake: Lake, pg_url: str, redis_url: str, redis_prefix: str, **extra: str
) -> dict[str, str]:
    """The environment of an API process over these services (``extra``: more variables)."""
    return {
        **os.environ,
        "LAKE_URL": lake.url,
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        **extra,
    }


@pytest.fixture()
def api_env(
    local_lake: Lake, pg_url: str, redis_server_url: str, redis_prefix: str
) -> dict[str, str]:
    seed(local_lake, pg_url)
    return env_for(
        local_lake, pg_url, redis_server_url, redis_prefix, API_KEYS=",".join(KEYS), APP_ENV="prod"
    )


@pytest.fixture()
def served(tmp_path: Path, api_env: dict[str, str]) -> Iterator[Served]:
    s = serve(tmp_path, api_env, "--log-level", "debug")
    try:
        yield s
    finally:
        s.stop()


def test_access_log_is_written_and_no_logging_error(served: Served) -> None:
    with httpx.Client(base_url=served.base, headers={"X-API-Key": KEYS[0]}, timeout=10) as http:
        for i in range(50):
            r = http.get("/v1/bars/IBM", params={"interval": "1d", "limit": str(i % 3 + 1)})
            assert r.status_code == 200, r.text
    out = served.stop()
    assert "Logging error" not in out, out[:3000]
    assert "Traceback" not in out, out[:3000]
    access = [line for line in out.splitlines() if '"GET /v1/bars/IBM?interval=1d&limit=' in line]
    assert len(access) == 50, out[-3000:]
    assert all(line.rstrip().endswith("200 OK") for line in access), access[:3]


def test_no_key_reaches_the_log_at_debug(served: Served) -> None:
    ws_base = served.base.replace("http://", "ws://")
    with httpx.Client(base_url=served.base, timeout=10) as http:
        for key in KEYS:
            assert http.get("/v1/bars/IBM", headers={"X-API-Key": key}).status_code == 200
            for name in ("api_key", "apiKey", "apikey", "token"):  # refused or ignored: logged
                http.get(f"/v1/bars/IBM?{name}={key}", headers={"X-API-Key": key})
            http.get("/v1/bars/IBM", headers={"Authorization": f"Bearer {key}"})
            http.get(f"/v1/latest/IBM?api_key={key}", headers={"X-API-Key": key})
    for key in KEYS:
        for url, headers in (
            (f"{ws_base}/v1/stream?symbols=IBM&api_key={key}", {}),
            (f"{ws_base}/v1/stream?symbols=IBM", {"X-API-Key": key}),
        ):
            try:
                with ws_connect(url, additional_headers=headers, open_timeout=10) as ws:
                    ws.recv(timeout=5)
            except (WebSocketException, TimeoutError, OSError):
                pass  # the handshake and its log lines are what this test is about
    out = served.stop()
    assert out.count("GET /v1/") >= 10, out[-2000:]
    assert "/v1/stream" in out, out[-2000:]
    for key in KEYS:
        assert key not in out, "an API key reached the log"
    assert "Logging error" not in out


def test_unknown_app_env_is_one_clear_line(api_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "api", "--port", str(free_port())],
        env={**api_env, "APP_ENV": "production"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "APP_ENV must be one of dev, test, staging, prod" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("env", ["staging", "prod"])
@pytest.mark.parametrize("key", ["x", "password", "short-but-not-a-placeholder"])
def test_weak_keys_are_refused_outside_dev(api_env: dict[str, str], env: str, key: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "api", "--port", str(free_port())],
        env={**api_env, "APP_ENV": env, "API_KEYS": f"{KEYS[0]},{key}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"refusing to start: APP_ENV={env} refuses weak API keys" in done.stderr
    if len(key) >= 8:
        assert key not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
