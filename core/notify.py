"""Messages to the alarm topic (SNS): pipeline failures and unexplained gaps."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from core.aws import client


def publish(
    topic_arn: str,
    subject: str,
    message: Mapping[str, Any],
    *,
    endpoint_url: str | None,
    region: str,
) -> None:
    """Publish ``message`` as sorted JSON; errors propagate (an alert that did not go out)."""
    sns = client("sns", endpoint_url=endpoint_url, region=region)
    sns.publish(
        TopicArn=topic_arn,
        Subject=subject[:100],
        Message=json.dumps(dict(message), sort_keys=True, default=str),
    )
