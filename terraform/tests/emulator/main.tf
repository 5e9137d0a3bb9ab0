# The part of an environment that an AWS emulator can create: the lake (S3 + KMS), the ticks
# stream, log groups and the alarm topic, the Polygon key secret, and the Step Functions
# pipeline with its IAM roles and schedule. Batch, ECS, RDS, ElastiCache and the load balancer
# are not emulated (LocalStack's free edition lacks them), so the pipeline points at job ARNs
# that are never submitted to. Used by tests/integration/test_terraform_apply.py.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  batch_arn = "arn:${data.aws_partition.current.partition}:batch:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}"
  job_definition_arns = {
    for job in ["replay", "metadata", "backfill", "actions", "consolidate", "gaps", "resample", "retention"] :
    job => "${local.batch_arn}:job-definition/${var.name}-${job}:1"
  }
}

module "datalake" {
  source = "../../modules/datalake"

  bucket_name              = "${var.name}-lake"
  force_destroy            = true
  kms_deletion_window_days = 7
}

module "kinesis" {
  source = "../../modules/kinesis"

  name        = var.name
  stream_mode = "PROVISIONED"
  shard_count = 1
}

module "observability" {
  source = "../../modules/observability"

  name               = var.name
  log_group_names    = ["batch", "pipeline"]
  log_retention_days = 365 # checkov CKV_AWS_338 wants a year; the emulator does not care
  enabled_alarms     = var.with_pipeline ? ["pipeline_failed"] : []
  state_machine_arn  = try(module.orchestration[0].state_machine_arn, null)
}

module "orchestration" {
  source = "../../modules/orchestration"
  count  = var.with_pipeline ? 1 : 0

  name                = var.name
  job_queue_arn       = "${local.batch_arn}:job-queue/${var.name}"
  job_definition_arns = local.job_definition_arns
  sharded_jobs        = ["consolidate", "resample"]
  shards              = 2
  schedule_enabled    = false
  sns_topic_arn       = module.observability.alarm_topic_arn
  sns_kms_key_arn     = module.observability.alarm_topic_kms_key_arn
  log_group_arn       = module.observability.log_group_arns["pipeline"]
}

# The operator puts the Polygon key here after apply; terraform only owns the container.
resource "aws_secretsmanager_secret" "polygon" {
  name                    = "${var.name}/polygon-api-key"
  description             = "Polygon API key (value set outside terraform)"
  recovery_window_in_days = 0
}
