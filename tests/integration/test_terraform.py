"""Terraform: formatted, every module and root validates offline, both roots plan against moto.

Offline through a filesystem mirror of the AWS provider (``/opt/tf-plugins``); skipped with the
reason where the machine has no terraform or no mirror. Terraform runs on a copy of the tree in a
temporary directory so no ``.terraform/`` or state ever lands in the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pytest

from core import schemas

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2] / "terraform"
MIRROR = Path("/opt/tf-plugins")
TERRAFORM = shutil.which("terraform")
MODULES = sorted(p.name for p in (ROOT / "modules").iterdir() if p.is_dir())
PLATFORM = ROOT / "environments"
"""The one root every environment applies; ``environments/<env>/`` holds what differs."""
ENVIRONMENTS = sorted(p.name for p in PLATFORM.iterdir() if p.is_dir() and p.name != ".terraform")
EXPECTED_MODULES = {
    "network", "datalake", "kinesis", "rds", "elasticache", "ecs", "batch", "orchestration",
    "api", "observability", "catalog",
}  # fmt: skip
CERT_ARN = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
MOTO_SERVICES = [
    "acm", "applicationautoscaling", "batch", "cloudwatch", "cloudwatchlogs", "ec2", "ecr",
    "ecs", "elasticache", "elbv2", "events", "glue", "iam", "kinesis", "kms", "rds", "s3",
    "scheduler", "secretsmanager", "sfn", "sns", "sts",
]  # fmt: skip

needs_terraform = pytest.mark.skipif(
    TERRAFORM is None or not MIRROR.is_dir(),
    reason="terraform not on PATH" if TERRAFORM is None else f"no provider mirror at {MIRROR}",
)


def _copy_tree(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "tfplan"))
    return dest


@pytest.fixture(scope="module")
def tf_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("tf-cli")
    config = home / "terraform.rc"
    config.write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n  }}\n}}\n'
    )
    cache = home / "plugin-cache"
    cache.mkdir()
    env = dict(os.environ)
    env.update(
        TF_CLI_CONFIG_FILE=str(config),
        TF_PLUGIN_CACHE_DIR=str(cache),
        # Modules have no lock file; let them link the cached provider instead of reinstalling.
        TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE="1",
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
    )
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("AWS_PROFILE", None)
    return env


def _tf(env: dict[str, str], cwd: Path, *args: str, timeout: float = 180) -> str:
    assert TERRAFORM is not None
    proc = subprocess.run(
        [TERRAFORM, *args, "-no-color"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"terraform {' '.join(args)} in {cwd}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def test_every_module_has_the_standard_files() -> None:
    assert set(MODULES) >= EXPECTED_MODULES
    for name in MODULES:
        files = {p.name for p in (ROOT / "modules" / name).iterdir()}
        missing = {"main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"} - files
        assert not missing, f"{name} lacks {missing}"
    assert {"dev", "prod"} <= set(ENVIRONMENTS)
    root = {p.name for p in PLATFORM.iterdir()}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf", ".terraform.lock.hcl"} <= root
    for env in ENVIRONMENTS:
        # Only what differs: values and where the state lives; never a block of its own.
        files = {p.name for p in (PLATFORM / env).iterdir() if p.name != ".terraform"}
        assert files == {"terraform.tfvars", "backend.hcl"}, env


def test_every_variable_has_a_description_and_a_type() -> None:
    block = re.compile(r'^variable "([^"]+)" \{\n(.*?)^\}', re.S | re.M)
    for path in ROOT.glob("**/variables.tf"):
        if ".terraform" in path.parts:
            continue
        for name, body in block.findall(path.read_text()):
            assert re.search(r"^  description\s*=", body, re.M), (
                f"{path}: {name} has no description"
            )
            assert re.search(r"^  type\s*=", body, re.M), f"{path}: {name} has no type"


def test_no_account_arn_region_or_secret_literal_in_tf() -> None:
    account = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")
    arn = re.compile(r'"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:[0-9]{12}:')
    region = re.compile(r'"(us|eu|ap|sa|ca|me|af|il)-(gov-)?[a-z]+-[0-9]"')
    # A secret argument set to a plain string (no interpolation) would be a literal.
    secret = re.compile(
        r'(password|auth_token|secret_string|access_key|secret_key)\s*=\s*"[^"$]*"', re.I
    )
    for path in ROOT.glob("**/*.tf"):
        if ".terraform" in path.parts:
            continue
        text = path.read_text()
        assert not account.search(text), f"{path}: account id literal"
        assert not arn.search(text), f"{path}: ARN literal"
        assert not region.search(text), f"{path}: region literal"
        assert not secret.search(text), f"{path}: secret literal"


@needs_terraform
def test_fmt(tf_env: dict[str, str]) -> None:
    _tf(tf_env, ROOT.parent, "fmt", "-check", "-recursive", "-diff", "terraform")


@needs_terraform
def test_init_and_validate_every_module_and_root(tf_env: dict[str, str], tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path / "terraform")
    dirs = [tree / "modules" / m for m in MODULES] + [tree / "environments"]

    init_lock = threading.Lock()

    def check(d: Path) -> dict[str, object]:
        with init_lock:  # inits share the plugin cache; validates run side by side
            _tf(tf_env, d, "init", "-backend=false", "-input=false")
        out: dict[str, object] = json.loads(_tf(tf_env, d, "validate", "-json"))
        return out

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(check, dirs))
    for d, result in zip(dirs, results, strict=True):
        assert result["valid"] is True, f"{d.name}: {result}"
        assert result["error_count"] == 0, f"{d.name}: {result}"


@pytest.fixture(params=["dev", "prod"])
def env_root(request: pytest.FixtureRequest, tmp_path: Path, moto_endpoint: str) -> Iterator[Path]:
    """A copy of the tree whose platform root talks to moto and keeps state locally.

    Yields the environment's folder; the plan runs in its parent with the folder's tfvars.
    """
    tree = _copy_tree(tmp_path / "terraform")
    env = tree / "environments" / request.param
    root = env.parent
    endpoints = "\n".join(f'    {s} = "{moto_endpoint}"' for s in MOTO_SERVICES)
    (root / "zz_moto_override.tf").write_text(
        'terraform {\n  backend "local" {}\n}\n\n'
        'provider "aws" {\n'
        '  access_key                  = "test"\n'
        '  secret_key                  = "test"\n'
        "  skip_credentials_validation = true\n"
        "  skip_metadata_api_check     = true\n"
        "  s3_use_path_style           = true\n\n"
        f"  endpoints {{\n{endpoints}\n  }}\n}}\n"
    )
    # The cache AUTH token is created outside terraform (README); the plan reads it.
    sm = boto3.client("secretsmanager", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = f"condvest-{env.name}/redis-auth"
    sm.create_secret(Name=name, SecretString="t" * 32)
    try:
        yield env
    finally:
        sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def _plan(tf_env: dict[str, str], env: Path) -> dict[str, Any]:
    """``terraform plan`` of the platform root with ``env``'s tfvars, as JSON."""
    root = env.parent
    _tf(tf_env, root, "init", "-input=false")
    _tf(
        tf_env,
        root,
        "plan",
        "-input=false",
        "-lock=false",
        f"-var-file={env.name}/terraform.tfvars",
        f"-out={env.name}.tfplan",
        f"-var=api_certificate_arn={CERT_ARN}",
        timeout=240,
    )
    out: dict[str, Any] = json.loads(_tf(tf_env, root, "show", "-json", f"{env.name}.tfplan"))
    return out


@needs_terraform
def test_plan_against_moto(tf_env: dict[str, str], env_root: Path) -> None:
    prod = env_root.name == "prod"
    plan = _plan(tf_env, env_root)
    changes = {
        rc["address"]: rc
        for rc in plan["resource_changes"]
        if rc["change"]["actions"] == ["create"]
    }
    expected = [
        "module.network.aws_vpc.this",
        "module.network.aws_vpc_endpoint.s3",
        "module.datalake.aws_s3_bucket.lake",
        "module.datalake.aws_s3_bucket_versioning.lake",
        "module.datalake.aws_s3_bucket_public_access_block.lake",
        "module.datalake.aws_s3_bucket_lifecycle_configuration.lake",
        "module.kinesis.aws_kinesis_stream.ticks",
        "module.rds.aws_db_instance.this",
        "module.elasticache.aws_elasticache_replication_group.this",
        'module.ecs.aws_ecs_service.this["ws-ingest"]',
        'module.ecs.aws_ecs_service.this["live"]',
        "module.ecs.aws_ecs_service.api",
        'module.ecs.aws_iam_role.task["api"]',
        "module.ecs.aws_appautoscaling_policy.api_cpu",
        "module.batch.aws_batch_compute_environment.spot",
        "module.batch.aws_batch_job_queue.this",
        'module.batch.aws_batch_job_definition.this["resample"]',
        "module.orchestration.aws_sfn_state_machine.pipeline",
        "module.orchestration.aws_scheduler_schedule.daily",
        "module.api.aws_lb_listener.https",
        "module.observability.aws_sns_topic.alarms",
        "module.observability.aws_cloudwatch_metric_alarm.pipeline_failed[0]",
        "module.observability.aws_cloudwatch_dashboard.pipeline[0]",
        'module.batch.aws_batch_job_definition.this["backfill"]',
        'module.batch.aws_batch_job_definition.this["gaps"]',
        "module.catalog.aws_glue_catalog_database.lake",
        *(f'module.catalog.aws_glue_catalog_table.this["{t}"]' for t in GLUE_TABLES),
    ]
    missing = [a for a in expected if a not in changes]
    assert not missing, f"not planned: {missing}"

    db = changes["module.rds.aws_db_instance.this"]["change"]["after"]
    assert db["manage_master_user_password"] is True
    assert db["storage_encrypted"] is True
    assert db["multi_az"] is prod
    assert db["deletion_protection"] is prod
    nats = [a for a in changes if a.startswith("module.network.aws_nat_gateway.this[")]
    assert len(nats) == (3 if prod else 1)
    stream = changes["module.kinesis.aws_kinesis_stream.ticks"]["change"]["after"]
    assert stream["encryption_type"] == "KMS"
    cache = changes["module.elasticache.aws_elasticache_replication_group.this"]["change"]["after"]
    assert cache["transit_encryption_enabled"] is True
    assert cache["at_rest_encryption_enabled"] in (True, "true")  # a string in provider 5.x
    assert cache["automatic_failover_enabled"] is prod
    spot = changes["module.batch.aws_batch_compute_environment.spot"]["change"]["after"]
    assert spot["compute_resources"][0]["type"] == "FARGATE_SPOT"
    https = changes["module.api.aws_lb_listener.https"]["change"]["after"]
    assert https["protocol"] == "HTTPS"


GLUE_TABLES = {
    "bronze_daily": ("BRONZE_DAILY",),
    "bronze_minute": ("BRONZE_MINUTE", "MINUTE_BARS", "BRONZE_MINUTE_BARS"),
    "silver_fib": ("SILVER",),
    "silver_intraday": ("SILVER_INTRADAY", "INTRADAY"),
    "gold_1d": ("GOLD_1D", "GOLD_DAILY", "INDICATORS_1D"),
    "gold_fib": ("GOLD_FIB", "GOLD_FIBONACCI", "INDICATORS_FIB"),
}
"""Glue table -> the names its schema may have in core.schemas. Tables whose schema is not in
core.schemas yet are held to the contract by the module alone; once it lands there, the test
compares it too."""
PATH_ONLY = {"bar_interval", "year", "month"}
"""Partition columns that exist only in the path (silver_8d/year=2024/month=01/), not in files."""
PATH_ONLY_BY_TABLE = {"silver_intraday": {"date"}}
"""Intraday silver files hold no date column: the session is their folder (date=D)."""
MINUTE_CONTRACT = {"revision", "partial", "trades", "start"}
"""An older BRONZE_MINUTE (per-symbol live parts) predates the session-partitioned contract."""


def _glue_type(t: pa.DataType) -> str:
    """The Glue/Athena type of an Arrow type of the lake."""
    if pa.types.is_list(t):
        return f"array<{_glue_type(t.value_type)}>"
    simple = {
        pa.string(): "string", pa.date32(): "date", pa.float64(): "double",
        pa.int64(): "bigint", pa.int32(): "int", pa.int8(): "tinyint", pa.bool_(): "boolean",
    }  # fmt: skip
    if pa.types.is_timestamp(t):
        return "timestamp"
    return simple[t]


@needs_terraform
def test_glue_tables_match_the_lake_schemas(tf_env: dict[str, str], tmp_path: Path) -> None:
    """Plan the catalog module alone (no AWS call) and hold each table to core.schemas."""
    tree = _copy_tree(tmp_path / "terraform")
    root = tmp_path / "catalog"
    root.mkdir()
    (root / "main.tf").write_text(
        'provider "aws" {\n  region = "us-east-1"\n  access_key = "test"\n'
        '  secret_key = "test"\n  skip_credentials_validation = true\n'
        "  skip_metadata_api_check = true\n  skip_requesting_account_id = true\n}\n\n"
        f'module "catalog" {{\n  source = "{tree / "modules" / "catalog"}"\n'
        '  database_name = "condvest_test"\n  lake_url = "s3://condvest-test-lake"\n}\n'
    )
    _tf(tf_env, root, "init", "-input=false", "-backend=false")
    _tf(tf_env, root, "plan", "-input=false", "-lock=false", "-out=tfplan")
    plan = json.loads(_tf(tf_env, root, "show", "-json", "tfplan"))
    tables = {
        rc["change"]["after"]["name"]: rc["change"]["after"]
        for rc in plan["resource_changes"]
        if rc["type"] == "aws_glue_catalog_table"
    }
    assert set(tables) == set(GLUE_TABLES)
    compared = []
    for name, candidates in GLUE_TABLES.items():
        after = tables[name]
        params = after["parameters"]
        assert params["projection.enabled"] == "true", name
        assert params["storage.location.template"].startswith("s3://condvest-test-lake/"), name
        keys = after["partition_keys"]
        for key in keys:  # every partition column is projected: no crawler needed
            assert params[f"projection.{key['name']}.type"], (name, key)
        columns = {c["name"]: c["type"] for c in after["storage_descriptor"][0]["columns"]}
        columns |= {k["name"]: k["type"] for k in keys}
        schema = next(
            (
                getattr(schemas, c)
                for c in candidates
                if isinstance(getattr(schemas, c, None), pa.Schema)
            ),
            None,
        )
        if schema is None or (name == "bronze_minute" and not set(schema.names) >= MINUTE_CONTRACT):
            continue
        expected = {f.name: _glue_type(f.type) for f in schema}
        path_only = PATH_ONLY | PATH_ONLY_BY_TABLE.get(name, set())
        columns = {n: t for n, t in columns.items() if n in expected or n not in path_only}
        assert columns == expected, f"{name}: glue {columns} != core.schemas {expected}"
        compared.append(name)
    assert {"bronze_daily", "silver_fib"} <= set(compared)


CHECKOV = Path(__file__).resolve().parents[2] / ".tools" / "checkov" / "bin" / "checkov"


@pytest.mark.skipif(
    not CHECKOV.exists(),
    reason="checkov not installed in .tools/checkov (make checkov)",
)
def test_checkov_has_no_failed_checks() -> None:
    """Zero failed checks apart from the skips listed with reasons in terraform/.checkov.yaml."""
    proc = subprocess.run(
        [str(CHECKOV), "--config-file", str(ROOT / ".checkov.yaml"), "-o", "json"],
        cwd=ROOT.parent,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{f['check_id']} {f['resource']} ({f['file_path']})"
        for r in reports
        for f in r["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert sum(r["summary"]["passed"] for r in reports) > 0
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)
