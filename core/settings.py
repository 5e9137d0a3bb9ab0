"""Settings per deployable, read from the environment when constructed (never at import).

Names are fixed by ARCHITECTURE.md ("Settings"). Secrets are ``SecretStr`` so they never show
in a repr, a log line or an exception.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

POLYGON_REST = "https://api.polygon.io"
POLYGON_WS = "socket.polygon.io"
CACHE_WINDOW_DAYS = 5 * 365 + 31
"""Five years and one month: what raw_ohlcv keeps for fast queries."""
RATE_PRESETS: dict[str, float] = {
    "free": 5 / 60,
    "starter": 100.0,
    "developer": 100.0,
    "unlimited": 100.0,
}
"""Requests per second by Polygon plan; the free tier allows 5 calls a minute."""
APP_ENVS: tuple[str, ...] = ("dev", "test", "staging", "prod")
"""Deployment environments; only dev and test run with weak or placeholder API keys."""


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=False, env_ignore_empty=True
    )  # an empty variable means unset: DATABASE_URL= must not point at a default socket


class AwsSettings(_Base):
    """How to reach AWS (or an emulator of it)."""

    aws_endpoint_url: str | None = Field(
        None, description="AWS endpoint override (LocalStack, moto)"
    )
    aws_default_region: str = Field("us-east-1", description="AWS region")


class LakeSettings(AwsSettings):
    """Where the lake is and how to reach S3."""

    lake_url: str = Field(
        "./data/lake", description="Lake root: a path, file:///abs, or s3://bucket/prefix"
    )


class MetricsSettings(AwsSettings):
    """Where jobs publish their counts as CloudWatch metrics (nowhere when unset)."""

    metrics_namespace: str | None = Field(
        None, description="CloudWatch namespace of the jobs' counts and durations"
    )


class ServiceSettings(_Base):
    """Postgres and Redis; embedded servers under ``data_dir`` when no URL is given."""

    database_url: SecretStr | None = Field(None, description="PostgreSQL URL; embedded when unset")
    redis_url: SecretStr | None = Field(None, description="Redis URL; embedded when unset")
    data_dir: Path = Field(Path("./data"), description="Where embedded servers keep their data")
    redis_prefix: str = Field("condvest:", description="Key prefix for everything in Redis")


class PolygonSettings(_Base):
    """How to reach Polygon, or the simulator when no key is configured."""

    polygon_api_key: SecretStr | None = Field(None, description="Polygon API key")
    polygon_secret_id: str | None = Field(
        None, description="Secrets Manager id holding the key (used when POLYGON_API_KEY is unset)"
    )
    polygon_rest_url: str | None = Field(None, description="REST base URL, no trailing slash")
    polygon_ws_url: str | None = Field(None, description="WebSocket host[:port]")
    polygon_plan: Literal["free", "starter", "developer", "unlimited", "custom"] = "custom"
    polygon_rps: float = Field(50.0, gt=0, description="Requests per second (token bucket)")
    polygon_max_attempts: int = Field(6, ge=1, description="Attempts per request before giving up")
    polygon_timeout_s: float = Field(30.0, gt=0, description="HTTP timeout per request")

    @field_validator("polygon_rest_url")
    @classmethod
    def _no_trailing_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @property
    def requests_per_second(self) -> float:
        """The plan preset when one is named, else ``POLYGON_RPS``."""
        return RATE_PRESETS.get(self.polygon_plan, self.polygon_rps)


class AlertSettings(AwsSettings):
    """Where alerts go, and how many an owner gets a minute."""

    alerts_sns_topic_arn: str | None = Field(
        None, description="SNS topic every alert is also published to (none: Redis only)"
    )
    alerts_max_per_minute: int = Field(
        30, ge=1, description="Alerts delivered per owner per minute; the rest in one summary"
    )
    alerts_reload_s: float = Field(
        30.0, gt=0, description="Full reload of the rules even without a change notification"
    )
    alerts_seed_bars: int = Field(
        500, ge=0, description="Intraday bars of history the live flow seeds each series with"
    )


class ReplaySettings(LakeSettings, ServiceSettings, PolygonSettings):
    """The daily replay flow (and backfill, metadata)."""

    replay_start: dt.date | None = Field(
        None, description="First session; default: the missing ones"
    )
    replay_end: dt.date | None = Field(None, description="Last session; default: last settled one")
    cache_window_days: int = Field(
        CACHE_WINDOW_DAYS, ge=1, description="Days of raw_ohlcv in Postgres"
    )
    settle_minutes: int = Field(60, ge=0, description="Wait after the close before today is final")
    polygon_simulator: bool = Field(
        True,
        description="With no key and no POLYGON_REST_URL, the replay entry points serve the "
        "embedded simulator in-process (false: refuse with an error instead)",
    )
    replay_history_start: dt.date = Field(
        dt.date(2019, 1, 2), description="Earliest session replay fills"
    )
    replay_sessions: str | None = Field(
        None, description="Comma-separated sessions to fetch whatever the ledger says (gaps --fix)"
    )
    replay_chunk_sessions: int = Field(
        0, ge=0, description="Sessions per durable write (range= file); 0: all of a partition"
    )
    replay_partitions: int = Field(
        1, ge=1, description="Source partitions the sessions are split in"
    )
    replay_fetch_concurrency: int = Field(
        4, ge=1, description="Grouped-daily requests in flight per partition"
    )


class LiveSettings(LakeSettings, ServiceSettings, PolygonSettings, AlertSettings):
    """The live tick flow."""

    kinesis_stream: str | None = Field(
        None, description="Kinesis stream of ticks; WebSocket when unset"
    )
    live_symbols: str = Field("*", description="Comma-separated symbols to subscribe, or *")
    live_lateness_s: float = Field(
        5.0, ge=0, description="How late a tick may arrive for its minute"
    )
    kinesis_start: Literal["LATEST", "TRIM_HORIZON"] = Field(
        "TRIM_HORIZON",
        description="Where a shard without a snapshot is read from: the oldest record the"
        " stream holds, so a first start (or a lost recovery store) loses nothing",
    )
    live_revision_horizon_s: float = Field(
        900.0,
        gt=0,
        description="How long (event time) a closed minute can still be revised by a late trade;"
        " later trades are quarantined and their minute recorded as a gap for the healer",
    )
    live_ttl_s: int = Field(86_400, ge=1, description="Expiry of the live flow's Redis keys")
    settle_minutes: int = Field(
        60, ge=0, description="Wait after the close before the provisional daily bar is written"
    )
    live_flush_s: float = Field(
        1.0, gt=0, description="Longest wait before final minute bars are written to the lake"
    )
    live_publish_ms: int = Field(
        50,
        ge=0,
        description="Shortest interval between two publications of forming bars and latest"
        " trades to Redis, per source partition (0: with every read); final bars never wait",
    )
    trades_archive: bool = Field(
        True, description="Archive every accepted trade under bronze/trades/ (false: do not)"
    )
    trades_flush_s: float = Field(
        60.0, gt=0, description="Longest wait before archived trades are written to the lake"
    )
    replay_trades_date: dt.date | None = Field(
        None, description="Session dataflows.replay_trades replays; default: the newest archived"
    )


class BatchSettings(LakeSettings, ServiceSettings, MetricsSettings, AlertSettings):
    """Batch jobs: only the lake is required; Postgres records job runs when configured."""

    sns_topic_arn: str | None = Field(None, description="Where the pipeline publishes failures")
    batch_workers: int = Field(0, ge=0, description="Parallel workers; 0 means one per core")
    fragment_retention_days: int = Field(7, ge=0, description="Merged fragments kept this long")
    cache_window_days: int = Field(
        CACHE_WINDOW_DAYS, ge=1, description="Days of raw_ohlcv kept by batch.retention"
    )


class ApiSettings(LakeSettings, ServiceSettings):
    """The serving API."""

    app_env: Literal["dev", "test", "staging", "prod"] = Field(
        "dev", description="dev and test accept any key; staging and prod refuse weak ones"
    )
    api_keys: SecretStr = Field(
        SecretStr("dev-key"), description="Comma-separated API keys accepted in X-API-Key"
    )
    live_stale_s: float = Field(
        60.0,
        gt=0,
        description="GET /v1/latest marks live data older than this (seconds) as stale",
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    cache_window_days: int = Field(
        CACHE_WINDOW_DAYS, ge=1, description="Days of raw_ohlcv in Postgres (older from the lake)"
    )
    api_workers: int = Field(1, ge=1, description="Worker processes of python -m api")
    api_rate_limit: int = Field(
        1200, ge=0, description="Requests per minute of an API_KEYS key, and of new keys; 0: none"
    )
    api_key_cache_s: float = Field(
        30.0, ge=0, description="Seconds a key lookup is trusted (a revoked key stops within it)"
    )
    api_cors_origins: str = Field(
        "", description="Comma-separated origins allowed by CORS (empty: no CORS headers)"
    )
    api_ws_per_key: int = Field(5, ge=1, description="WebSockets one key may hold open")
    live_rollup_publish_ms: int = Field(
        1000,
        ge=0,
        description="Shortest interval between two forming 5m..4h bars of a symbol on the"
        " WebSocket, formed from the live flow's window summaries and the forming minute bar"
        " (0: with every forming minute bar); final and revised bars never wait",
    )
    api_ws_queue: int = Field(
        1000, ge=1, description="Messages queued for a WebSocket before it is closed as too slow"
    )
    api_pg_pool_size: int = Field(8, ge=1, description="Postgres connections per worker")
    api_pg_timeout_s: float = Field(
        5.0, gt=0, description="Wait for a Postgres connection before answering 503"
    )
    api_duckdb_connections: int = Field(
        4, ge=1, description="DuckDB connections per worker (each single-threaded)"
    )
    api_page_size: int = Field(10_000, ge=1, description="Rows per page when none is asked")
    api_history_max_age_s: int = Field(
        3600, ge=0, description="Cache lifetime of history that ended before the newest session"
    )
    api_fresh_cache_s: float = Field(
        30.0, ge=0, description="Seconds an answer reaching the present is reused by this worker"
    )
    api_response_cache_mb: int = Field(64, ge=0, description="Response cache per worker, MiB")
    api_shared_answers: bool = Field(
        True, description="Also keep cached answers in Redis, for every worker and task"
    )
    api_shutdown_timeout_s: float = Field(
        10.0, ge=0, description="Grace for open requests and sockets when stopping"
    )

    @field_validator("app_env", mode="before")
    @classmethod
    def _known_env(cls, value: object) -> object:
        """One clear line for ``APP_ENV=production`` instead of a schema dump."""
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in APP_ENVS:
            msg = f"APP_ENV must be one of {', '.join(APP_ENVS)}, not {str(value)[:32]!r}"
            raise ValueError(msg)
        return text

    def cors_origins(self) -> list[str]:
        """The origins of ``API_CORS_ORIGINS``."""
        return [o.strip() for o in self.api_cors_origins.split(",") if o.strip()]

    def keys(self) -> frozenset[str]:
        """The accepted API keys."""
        return frozenset(
            k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()
        )


_S = TypeVar("_S", bound=BaseSettings)


class SettingsError(ValueError):
    """Settings that cannot be used, one line per problem, naming the variable but no value."""


def load_settings(cls: type[_S]) -> _S:
    """``cls()`` from the environment, with pydantic's errors as one readable line each."""
    try:
        return cls()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "_".join(str(p) for p in err.get("loc", ())).upper() or cls.__name__
            lines.append(f"{name}: {err.get('msg', 'invalid').removeprefix('Value error, ')}")
        raise SettingsError("; ".join(lines)) from None
