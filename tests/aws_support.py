"""Helpers for tests that watch what reaches AWS: an SNS topic drained through SQS."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core.aws import client


@contextmanager
def topic_with_queue(aws_endpoint: str) -> Iterator[tuple[str, str]]:
    """A uuid-named SNS topic with an SQS queue subscribed (raw delivery); removed after."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    sns = client("sns", endpoint_url=aws_endpoint)
    sqs = client("sqs", endpoint_url=aws_endpoint)
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    try:
        yield topic, queue_url
    finally:
        sqs.delete_queue(QueueUrl=queue_url)
        sns.delete_topic(TopicArn=topic)


def receive(aws_endpoint: str, queue_url: str) -> list[dict[str, Any]]:
    """The JSON messages waiting in the queue (a few seconds' wait), deleted once read."""
    sqs = client("sqs", endpoint_url=aws_endpoint)
    out = []
    for _ in range(3):
        got = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2, MaxNumberOfMessages=10)
        for m in got.get("Messages", []):
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        if out:
            break
    return out
