data "aws_region" "current" {}
data "aws_partition" "current" {}

# ---- compute: Fargate Spot first, on-demand Fargate when Spot has no capacity -----------------

resource "aws_batch_compute_environment" "spot" {
  compute_environment_name = "${var.name}-fargate-spot"
  type                     = "MANAGED"

  compute_resources {
    type               = "FARGATE_SPOT"
    max_vcpus          = var.max_vcpus
    subnets            = var.subnet_ids
    security_group_ids = var.security_group_ids
  }

  tags = var.tags
}

resource "aws_batch_compute_environment" "on_demand" {
  compute_environment_name = "${var.name}-fargate"
  type                     = "MANAGED"

  compute_resources {
    type               = "FARGATE"
    max_vcpus          = var.max_vcpus
    subnets            = var.subnet_ids
    security_group_ids = var.security_group_ids
  }

  tags = var.tags
}

resource "aws_batch_job_queue" "this" {
  name     = var.name
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.spot.arn
  }

  compute_environment_order {
    order               = 2
    compute_environment = aws_batch_compute_environment.on_demand.arn
  }

  tags = var.tags
}

# ---- IAM -------------------------------------------------------------------------------------

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-batch-exec"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "PullImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [var.repository_arn]
  }

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:${data.aws_partition.current.partition}:logs:*:*:log-group:${var.log_group_name}:*"]
  }

  statement {
    sid       = "Secrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.db_secret_arn, var.polygon_secret_arn]
  }

  dynamic "statement" {
    for_each = length(var.secret_kms_key_arns) > 0 ? [1] : []

    content {
      sid       = "DecryptSecrets"
      actions   = ["kms:Decrypt"]
      resources = var.secret_kms_key_arns
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-logs-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "job" {
  name               = "${var.name}-batch-job"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

# Batch jobs own the lake: read, write and delete (consolidation, retention), and report failures.
data "aws_iam_policy_document" "job" {
  statement {
    sid       = "LakeList"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = [var.lake_bucket_arn]
  }

  statement {
    sid       = "LakeObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${var.lake_bucket_arn}/*"]
  }

  statement {
    sid       = "LakeKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.lake_kms_key_arn]
  }

  statement {
    sid       = "Failures"
    actions   = ["sns:Publish"]
    resources = [var.sns_topic_arn]
  }

  statement {
    sid       = "FailuresKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.sns_kms_key_arn]
  }

  # PutMetricData has no resource to scope to; the namespace condition keeps it to ours.
  statement {
    sid       = "Metrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.metrics_namespace]
    }
  }
}

resource "aws_iam_role_policy" "job" {
  name   = "lake-and-failures"
  role   = aws_iam_role.job.id
  policy = data.aws_iam_policy_document.job.json
}

# ---- job definitions -------------------------------------------------------------------------

locals {
  environment = [
    { name = "APP_ENV", value = var.app_env },
    { name = "AWS_DEFAULT_REGION", value = data.aws_region.current.name },
    { name = "LAKE_URL", value = var.lake_url },
    { name = "DATABASE_URL", value = var.database_url },
    { name = "PGSSLMODE", value = "require" },
    { name = "SNS_TOPIC_ARN", value = var.sns_topic_arn },
    { name = "FRAGMENT_RETENTION_DAYS", value = tostring(var.fragment_retention_days) },
    { name = "SHARDS", value = tostring(var.shards) },
    { name = "METRICS_NAMESPACE", value = var.metrics_namespace },
  ]

  # Extra arguments come in JOB_ARGS (set by the state machine, e.g. --intervals 8).
  # Array children learn their index from AWS_BATCH_JOB_ARRAY_INDEX; a single job is shard 0/1.
  commands = {
    for k, j in var.jobs : k => j.sharded ? [
      "sh", "-c",
      "exec ${join(" ", j.command)} $${JOB_ARGS:-} --shard \"$${AWS_BATCH_JOB_ARRAY_INDEX:-0}/$${SHARDS:-1}\"",
    ] : j.command
  }
}

resource "aws_batch_job_definition" "this" {
  for_each = var.jobs

  name                  = "${var.name}-${each.key}"
  type                  = "container"
  platform_capabilities = ["FARGATE"]
  propagate_tags        = true

  timeout {
    attempt_duration_seconds = each.value.timeout_seconds
  }

  # Spot reclaims and image pulls are retried; the job's own failures are not.
  retry_strategy {
    attempts = 3

    evaluate_on_exit {
      on_status_reason = "Your Spot Task was interrupted*"
      action           = "RETRY"
    }

    evaluate_on_exit {
      on_reason = "CannotPullContainerError*"
      action    = "RETRY"
    }

    evaluate_on_exit {
      on_reason = "*"
      action    = "EXIT"
    }
  }

  container_properties = jsonencode({
    image            = var.image
    command          = local.commands[each.key]
    jobRoleArn       = aws_iam_role.job.arn
    executionRoleArn = aws_iam_role.execution.arn
    resourceRequirements = [
      { type = "VCPU", value = tostring(each.value.vcpu) },
      { type = "MEMORY", value = tostring(each.value.memory) },
    ]
    environment = concat(local.environment, [{ name = "PIPELINE_STEP", value = each.key }])
    secrets = concat(
      [{ name = "PGPASSWORD", valueFrom = "${var.db_secret_arn}:password::" }],
      each.value.needs_polygon ? [{ name = "POLYGON_API_KEY", valueFrom = var.polygon_secret_arn }] : [],
    )
    networkConfiguration         = { assignPublicIp = "DISABLED" }
    fargatePlatformConfiguration = { platformVersion = "LATEST" }
    runtimePlatform              = { operatingSystemFamily = "LINUX", cpuArchitecture = "X86_64" }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = each.key
      }
    }
  })

  tags = var.tags
}
