"""The simulator in a child process, for benchmarks that must not share a GIL with it.

Same surface as :class:`~dataflows.simulator.server.SimulatorServer` (``rest_url``, ``ws_feed``,
``set_faults``, ``stats``, ``set_clock``), driven through the HTTP control API.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self


class SimulatorProcess:
    """Run ``python -m dataflows.simulator --port 0 ARGS`` and read the URLs it prints."""

    def __init__(
        self, args: Sequence[str] = (), *, host: str = "127.0.0.1", timeout: float = 120.0
    ) -> None:
        self.args = ["--host", host, "--port", "0", *args]
        self.timeout = timeout
        self.rest_url = ""
        self.ws_feed = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> Self:
        """Start the child and wait until it serves."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "dataflows.simulator", *self.args],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            key, _, value = line.strip().partition("=")
            if key == "POLYGON_REST_URL":
                self.rest_url = value
            elif key == "POLYGON_WS_URL":
                self.ws_feed = value
                return self
        self.stop()
        msg = "the simulator process exited before printing its URLs"
        raise RuntimeError(msg)

    def stop(self) -> None:
        """Terminate the child."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 (our own http:// URL)
            f"{self.rest_url}{path}", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
            return json.loads(resp.read())

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """POST /_sim/faults."""
        result: dict[str, Any] = self._call("/_sim/faults", changes)
        return result

    def stats(self) -> dict[str, Any]:
        """GET /_sim/stats."""
        result: dict[str, Any] = self._call("/_sim/stats")
        return result

    def reset_stats(self) -> None:
        """POST /_sim/reset."""
        self._call("/_sim/reset", {})

    def set_clock(
        self, day: dt.date | None = None, offset: float | None = None, speed: float | None = None
    ) -> None:
        """POST /_sim/clock."""
        self._call(
            "/_sim/clock",
            {"day": day.isoformat() if day else None, "offset": offset, "speed": speed},
        )
