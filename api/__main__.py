"""``python -m api``: serve the API with uvicorn (host and port default from settings)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

from core.embedded import exit_on_sigterm
from core.secrets import install_redaction
from core.settings import ApiSettings, SettingsError, load_settings


def parse(argv: Sequence[str] | None, settings: ApiSettings) -> argparse.Namespace:
    """Command-line options over the settings' defaults."""
    p = argparse.ArgumentParser(
        prog="python -m api",
        description="Serve the Condvest API (REST and WebSocket). Configured by the environment:"
        " LAKE_URL, DATABASE_URL, REDIS_URL, API_KEYS, APP_ENV, ...",
    )
    p.add_argument("--host", default=settings.api_host, help="bind address (API_HOST)")
    p.add_argument("--port", type=int, default=settings.api_port, help="port (API_PORT)")
    p.add_argument(
        "--workers", type=int, default=settings.api_workers, help="worker processes (API_WORKERS)"
    )
    p.add_argument("--log-level", default="info", help="uvicorn log level")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options, build the app and serve until interrupted."""
    install_redaction()  # secrets (database, Redis, API keys) must never reach a log
    try:
        settings = load_settings(ApiSettings)
    except SettingsError as exc:
        print(f"python -m api: {exc}", file=sys.stderr)
        return 2
    args = parse(argv, settings)
    from api.auth import InsecureSettingsError, check_startup

    try:
        check_startup(settings)  # before the heavy imports, so a refusal is immediate
    except InsecureSettingsError as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("python -m api: --workers must be 1 or more", file=sys.stderr)
        return 2
    import uvicorn

    from api.requestids import uvicorn_log_config

    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # each worker counts into files here, so /metrics (answered by any worker) sums them all
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="condvest-metrics-")

    exit_on_sigterm()  # uvicorn re-raises SIGTERM after its graceful stop: exit handlers must run
    # The factory builds the app in each worker from the same environment; uvicorn drains open
    # requests on SIGTERM (up to API_SHUTDOWN_TIMEOUT_S) and the app's lifespan then closes
    # its sockets (1001) and pools.
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=uvicorn_log_config(args.log_level),
        timeout_graceful_shutdown=round(settings.api_shutdown_timeout_s),
        # longer than a load balancer's idle timeout (AWS ALB: 60 s), so the balancer, not
        # this process, closes idle connections: no request races a closing socket
        timeout_keep_alive=75,
        http="api.protocol:NoDelayProtocol",
        ws_max_size=1 << 16,
        proxy_headers=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
