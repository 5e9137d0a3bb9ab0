"""boto3 clients that honour ``AWS_ENDPOINT_URL`` (LocalStack, moto) the same way everywhere."""

from __future__ import annotations

import os
from typing import Any

import boto3


def client(service: str, *, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 client for ``service``; the endpoint override comes from the call or the environment."""
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None,
        region_name=region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
