"""Start real services for tests when no URL is given: LocalStack or moto, nothing mocked."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from dataflows.backfill import Fetch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


@contextlib.contextmanager
def localstack(venv: Path, workdir: Path) -> Iterator[str]:
    """LocalStack on the host (no Docker), as ENVIRONMENT.md describes."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert = workdir / "server.pem"
    if not cert.exists():
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=localhost", "-keyout", str(workdir / "key.pem"),
                "-out", str(workdir / "cert.pem"),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        cert.write_bytes((workdir / "key.pem").read_bytes() + (workdir / "cert.pem").read_bytes())
    port = free_port()
    env = {
        **os.environ,
        "CUSTOM_SSL_CERT_PATH": str(cert),
        "OVERRIDE_IN_DOCKER": "0",
        "FILESYSTEM_ROOT": str(workdir / "fs"),
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "SERVICES": "s3,kinesis,sns,sqs,secretsmanager,events,stepfunctions,iam,sts,kms,logs,scheduler,cloudwatch",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "DISABLE_EVENTS": "1",
        "LOCALSTACK_TELEMETRY": "0",
        "PERSISTENCE": "0",
    }
    log = (workdir / "localstack.log").open("wb")
    proc = subprocess.Popen(
        [str(venv / "bin" / "python"), "-m", "localstack.runtime.main"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_localstack/health", timeout=90)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def moto() -> Iterator[str]:
    """A moto server in this process."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def simulator_fetch(rest_url: str) -> Fetch:
    """The production gateway's GET against a simulator: rate limited, retried, fast backoff."""
    from pydantic import SecretStr

    from core.settings import ReplaySettings
    from dataflows.connectors.polygon import Backoff, PolygonGateway

    settings = ReplaySettings(
        polygon_api_key=SecretStr("k"), polygon_rest_url=rest_url, polygon_rps=1000.0
    )
    return PolygonGateway.from_settings(settings, backoff=Backoff(0.01, 0.05)).get_json
