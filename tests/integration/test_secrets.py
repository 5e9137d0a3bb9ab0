"""The Polygon key from Secrets Manager on the emulated AWS endpoint."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from core import secrets
from core.aws import client
from core.settings import ReplaySettings

pytestmark = pytest.mark.integration


@pytest.fixture()
def secretsmanager(aws_endpoint: str) -> Iterator[tuple[Any, list[str]]]:
    """A Secrets Manager client and a list of secret ids it deletes afterwards."""
    sm = client("secretsmanager", endpoint_url=aws_endpoint)
    created: list[str] = []
    yield sm, created
    for name in created:
        sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    secrets.clear_cache()


def settings_for(secret_id: str, endpoint: str) -> ReplaySettings:
    return ReplaySettings(
        polygon_api_key=None, polygon_secret_id=secret_id, aws_endpoint_url=endpoint
    )


def test_key_from_raw_and_json_secrets_is_cached(
    secretsmanager: tuple[Any, list[str]], aws_endpoint: str
) -> None:
    sm, created = secretsmanager
    raw_id, json_id = f"t/polygon-raw-{uuid.uuid4().hex}", f"t/polygon-json-{uuid.uuid4().hex}"
    sm.create_secret(Name=raw_id, SecretString="pk_raw_secret_value\n")
    sm.create_secret(Name=json_id, SecretString=json.dumps({"POLYGON_API_KEY": "pk_json_value"}))
    created += [raw_id, json_id]

    key = secrets.polygon_key(settings_for(raw_id, aws_endpoint))
    assert key is not None and key.get_secret_value() == "pk_raw_secret_value"
    key = secrets.polygon_key(settings_for(json_id, aws_endpoint))
    assert key is not None and key.get_secret_value() == "pk_json_value"

    # cached: a rotation is only seen after clear_cache()
    sm.put_secret_value(SecretId=raw_id, SecretString="pk_rotated_value")
    key = secrets.polygon_key(settings_for(raw_id, aws_endpoint))
    assert key is not None and key.get_secret_value() == "pk_raw_secret_value"
    secrets.clear_cache()
    key = secrets.polygon_key(settings_for(raw_id, aws_endpoint))
    assert key is not None and key.get_secret_value() == "pk_rotated_value"
    assert secrets.redact("pk_rotated_value and pk_json_value") == "*** and ***"


def test_missing_secret_is_a_clear_error(aws_endpoint: str) -> None:
    missing = f"t/absent-{uuid.uuid4().hex}"
    with pytest.raises(secrets.SecretError, match=missing):
        secrets.polygon_key(settings_for(missing, aws_endpoint))
