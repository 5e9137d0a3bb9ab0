"""Graceful shutdown of a real ``python -m api``: SIGTERM closes sockets and stops cleanly."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from core.lake import Lake
from tests.integration.test_api_logs import env_for, serve
from tests.integration.test_api_server import seed

pytestmark = pytest.mark.integration
KEY = "shutdown-key-" + "Lm4p" * 8


@pytest.mark.timeout(120)
def test_sigterm_closes_sockets_and_stops_cleanly(
    tmp_path: Path, local_lake: Lake, pg_url: str, redis_server_url: str, redis_prefix: str
) -> None:
    seed(local_lake, pg_url)
    env = env_for(local_lake, pg_url, redis_server_url, redis_prefix, API_KEYS=KEY, APP_ENV="test")
    served = serve(tmp_path, env)
    url = served.base.replace("http://", "ws://") + f"/v1/stream?symbols=IBM&api_key={KEY}"
    with ws_connect(url, open_timeout=10) as ws:
        assert '"subscribed"' in str(ws.recv(timeout=10))
        served.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code in (1001, 1012)
    # uvicorn finishes its shutdown, then re-raises the signal so supervisors see it.
    assert served.proc.wait(30) in (0, 128 + signal.SIGTERM, -signal.SIGTERM)
    log = served.stop()
    assert "Traceback" not in log, log[-3000:]
    assert "Finished server process" in log
