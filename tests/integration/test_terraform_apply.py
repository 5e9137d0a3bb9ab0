"""``terraform apply`` on the AWS emulator, the batch pipeline on what it made, then destroy.

The root ``terraform/tests/emulator`` composes the modules an emulator can create (datalake with
KMS, kinesis, observability's topic and log groups, orchestration's state machine, IAM roles and
schedule, a Secrets Manager secret). The test applies it against ``aws_endpoint`` (LocalStack
when ``LOCALSTACK_VENV`` is set, else moto), checks the resources through the AWS APIs, seeds
bronze fragments in the bucket it created, runs ``python -m batch.pipeline --skip-ingest
--sns-topic-arn`` on ``s3://<bucket>/lake`` and compares silver with the reference, sees a
failed run's notice arrive on the topic, then destroys and checks that everything is gone.
On moto the state machine is left out (moto lacks ValidateStateMachineDefinition).

Most of its ~3 minutes is the AWS provider itself: several seconds per provider start on 2
cores, and the provider's own waits (lifecycle rules must read back equal 3 times 10 s apart;
a Kinesis stream waits 10 s per status poll)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from core import calendar, layout
from core.aws import client
from core.lake import Lake
from tests.batch_support import Row, reference_bars, simple_rows, write_fragment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TF_ROOT = REPO / "terraform"
MIRROR = Path("/opt/tf-plugins")
TERRAFORM = shutil.which("terraform")
INTERVALS = (3, 5, 8, 13, 21, 34)

needs_terraform = pytest.mark.skipif(
    TERRAFORM is None or not MIRROR.is_dir(),
    reason="terraform not on PATH" if TERRAFORM is None else f"no provider mirror at {MIRROR}",
)


def _tf_env(home: Path, endpoint: str) -> dict[str, str]:
    """Terraform offline through the mirror, credentials and region from the environment."""
    config = home / "terraform.rc"
    config.write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n  }}\n}}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    env.update(
        TF_CLI_CONFIG_FILE=str(config),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
        TF_VAR_endpoint=endpoint,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def _tf(env: dict[str, str], cwd: Path, *args: str, timeout: float = 300) -> str:
    assert TERRAFORM is not None
    started = time.monotonic()
    proc = subprocess.run(
        [TERRAFORM, *args, "-no-color"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(f"terraform {args[0]}: {time.monotonic() - started:.1f} s")
    assert proc.returncode == 0, (
        f"terraform {' '.join(args)}:\n{proc.stdout[-4000:]}\n{proc.stderr}"
    )
    return proc.stdout


def _is_localstack(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _destroy(env: dict[str, str], root: Path) -> None:
    # State is exact after apply; skipping the refresh saves a read of every resource.
    _tf(env, root, "destroy", "-auto-approve", "-input=false", "-refresh=false")


def _gone(call: Any, *codes: str) -> bool:
    """True when ``call()`` fails with one of the not-found ``codes``."""
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"] in codes
    return False


def _run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _history() -> list[Row]:
    """Two symbols over 40 sessions; one written as a range file, one as day fragments."""
    days = calendar.sessions_between(dt.date(2025, 3, 3), dt.date(2025, 4, 30))[:40]
    return simple_rows("AAA", days, base=10.0) + simple_rows("BBB", days[5:], base=50.0)


def _seed(lake: Lake, rows: list[Row]) -> None:
    write_fragment(lake, [r for r in rows if r.symbol == "AAA"])
    for r in rows:
        if r.symbol == "BBB":
            write_fragment(lake, [r])


@pytest.fixture()
def applied(aws_endpoint: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, str]]:
    """The emulator root applied under a unique name; destroyed afterwards whatever happened."""
    tree = tmp_path / "terraform"
    shutil.copytree(
        TF_ROOT, tree, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "tfplan")
    )
    root = tree / "tests" / "emulator"
    env = _tf_env(tmp_path, aws_endpoint)
    name = f"tfa-{uuid.uuid4().hex[:10]}"
    env["TF_VAR_name"] = name
    # moto lacks ValidateStateMachineDefinition, which the provider calls creating a state machine.
    env["TF_VAR_with_pipeline"] = str(_is_localstack(aws_endpoint)).lower()
    _tf(env, root, "init", "-input=false")
    try:
        _tf(env, root, "apply", "-auto-approve", "-input=false")
        yield env, root, name
    finally:
        if (root / "terraform.tfstate").exists() and _tf(env, root, "state", "list").strip():
            _destroy(env, root)


def _check_pipeline(aws: dict[str, Any], out: dict[str, Any], name: str) -> None:
    """The state machine reports to the applied topic and runs as the role it was given."""
    machine = aws["stepfunctions"].describe_state_machine(stateMachineArn=out["state_machine_arn"])
    definition = json.loads(machine["definition"])
    assert definition["StartAt"] == "Ingest"
    assert definition["States"]["NotifyFailure"]["Parameters"]["TopicArn"] == out["alarm_topic_arn"]
    assert len(definition["States"]["Resample"]["Branches"]) == len(INTERVALS)
    role = aws["iam"].get_role(RoleName=f"{name}-pipeline")["Role"]
    assert machine["roleArn"] == role["Arn"]


@needs_terraform
def test_apply_run_pipeline_destroy(
    applied: tuple[dict[str, str], Path, str], aws_endpoint: str
) -> None:
    env, root, name = applied
    out = {k: v["value"] for k, v in json.loads(_tf(env, root, "output", "-json")).items()}
    aws = {s: client(s, endpoint_url=aws_endpoint) for s in ("s3", "kinesis", "sns", "sqs")}
    aws |= {s: client(s, endpoint_url=aws_endpoint) for s in ("secretsmanager", "stepfunctions")}
    aws |= {s: client(s, endpoint_url=aws_endpoint) for s in ("iam", "kms", "logs")}
    bucket = out["lake_bucket"]

    # -- what apply made ----------------------------------------------------------------------
    assert bucket == f"{name}-lake"
    sse = aws["s3"].get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    default = sse["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    assert default["SSEAlgorithm"] == "aws:kms"
    assert default["KMSMasterKeyID"] == out["lake_kms_key_arn"]
    assert aws["s3"].get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    block = aws["s3"].get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    rules = aws["s3"].get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert {r["ID"] for r in rules} == {
        "bronze-fragments",
        "quarantine",
        "noncurrent-and-multipart",
        "trades-archive",
        "minutes-by-symbol",
    }
    trades = next(r for r in rules if r["ID"] == "trades-archive")
    assert trades["Filter"]["Prefix"].endswith("bronze/trades/")
    assert trades["Expiration"]["Days"] == 30  # TRADES_RETENTION_DAYS default
    key = aws["kms"].describe_key(KeyId=out["lake_kms_key_arn"])["KeyMetadata"]
    assert key["KeyState"] == "Enabled"

    stream = aws["kinesis"].describe_stream_summary(StreamName=out["stream_name"])
    assert stream["StreamDescriptionSummary"]["EncryptionType"] == "KMS"

    topic = out["alarm_topic_arn"]
    attrs = aws["sns"].get_topic_attributes(TopicArn=topic)["Attributes"]
    assert attrs.get("KmsMasterKeyId")
    secret = aws["secretsmanager"].describe_secret(SecretId=out["polygon_secret_arn"])
    assert secret["Name"] == f"{name}/polygon-api-key"
    with_pipeline = env["TF_VAR_with_pipeline"] == "true"
    if with_pipeline:
        _check_pipeline(aws, out, name)
    groups = aws["logs"].describe_log_groups(logGroupNamePrefix=f"/{name}/")["logGroups"]
    assert {g["logGroupName"] for g in groups} == set(out["log_group_names"].values())

    # -- the batch jobs on the bucket and topic it made -----------------------------------------
    queue_url = aws["sqs"].create_queue(QueueName=f"{name}-alarms")["QueueUrl"]
    queue_arn = aws["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    aws["sns"].subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn["Attributes"]["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    if not with_pipeline:
        # moto enforces the lake's TLS-only bucket policy, and the test speaks plain HTTP to it.
        assert "aws:SecureTransport" in aws["s3"].get_bucket_policy(Bucket=bucket)["Policy"]
        aws["s3"].delete_bucket_policy(Bucket=bucket)
    lake_url = f"{out['lake_url']}/lake"
    lake = Lake(lake_url, endpoint_url=aws_endpoint)
    rows = _history()
    _seed(lake, rows)
    job_env = {**os.environ, "AWS_ENDPOINT_URL": aws_endpoint, "LAKE_URL": lake_url}
    job_env.pop("DATABASE_URL", None)
    args = ["--lake", lake_url, "--skip-ingest", "--sns-topic-arn", topic, "--parallel", "3"]
    started = time.monotonic()
    done = _run("batch.pipeline", *args, env=job_env)
    assert done.returncode == 0, done.stderr[-4000:]
    print(f"batch.pipeline on the applied bucket: {time.monotonic() - started:.1f} s")

    history = {s: [r for r in rows if r.symbol == s] for s in ("AAA", "BBB")}
    for symbol, expected in history.items():
        table = lake.read_table(layout.consolidated(symbol))
        assert table.column("date").to_pylist() == [r.date for r in expected]
        assert table.column("close").to_pylist() == [r.close for r in expected]
    for n in INTERVALS:
        want = sorted(
            row for month in reference_bars(history, n, "calendar").values() for row in month
        )
        got = sorted(
            tuple(r.values())
            for e in lake.list(layout.silver_dir(n), suffix=".parquet")
            for r in lake.read_table(e.key).to_pylist()
        )
        assert got == want, f"silver_{n}d differs from the reference"
    listed = aws["s3"].list_objects_v2(Bucket=bucket, Prefix="lake/silver/")
    assert listed["KeyCount"] > 0

    # A success publishes nothing. A run that cannot reach its Postgres fails at planning, and
    # the failure reaches the topic terraform made.
    assert not aws["sqs"].receive_message(QueueUrl=queue_url).get("Messages")
    unreachable = {**job_env, "DATABASE_URL": "postgresql://condvest@127.0.0.1:1/condvest"}
    failed = _run("batch.pipeline", *args, env=unreachable)
    assert failed.returncode != 0
    received = aws["sqs"].receive_message(QueueUrl=queue_url, WaitTimeSeconds=10)
    assert received.get("Messages"), "no failure notice on the applied topic"
    notice = json.loads(received["Messages"][0]["Body"])
    assert notice["status"] == "failed"
    assert notice["failed_steps"] == ["plan"], notice
    aws["sqs"].delete_queue(QueueUrl=queue_url)

    # -- destroy, and nothing is left -------------------------------------------------------------
    _destroy(env, root)
    assert _tf(env, root, "state", "list").strip() == ""
    assert _gone(lambda: aws["s3"].head_bucket(Bucket=bucket), "404", "NoSuchBucket")
    assert _gone(
        lambda: aws["sns"].get_topic_attributes(TopicArn=topic), "NotFound", "NotFoundException"
    )
    assert _gone(
        lambda: aws["secretsmanager"].describe_secret(SecretId=out["polygon_secret_arn"]),
        "ResourceNotFoundException",
    )
    if with_pipeline:
        assert _gone(
            lambda: aws["stepfunctions"].describe_state_machine(
                stateMachineArn=out["state_machine_arn"]
            ),
            "StateMachineDoesNotExist",
        )
        assert _gone(lambda: aws["iam"].get_role(RoleName=f"{name}-pipeline"), "NoSuchEntity")
    assert _gone(
        lambda: aws["kinesis"].describe_stream_summary(StreamName=out["stream_name"]),
        "ResourceNotFoundException",
    )
    assert not aws["logs"].describe_log_groups(logGroupNamePrefix=f"/{name}/")["logGroups"]
    key = aws["kms"].describe_key(KeyId=out["lake_kms_key_arn"])["KeyMetadata"]
    assert key["KeyState"] == "PendingDeletion"
