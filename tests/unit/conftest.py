"""The seeded API market (tests/api_market.py) as fixtures for the API's unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.lake import Lake
from core.settings import ApiSettings
from tests.api_market import seeded_settings


@pytest.fixture()
def settings(
    local_lake: Lake, pg_url: str, redis_server_url: str, redis_prefix: str
) -> ApiSettings:
    """Settings of an API over the seeded market."""
    return seeded_settings(local_lake, pg_url, redis_server_url, redis_prefix)


@pytest.fixture()
def client(settings: ApiSettings) -> Iterator[TestClient]:
    """A client of that API, its lifespan running."""
    with TestClient(create_app(settings)) as c:
        yield c
