data "aws_region" "current" {}

locals {
  api_port      = 8000
  recovery_path = "/recovery"
  image         = "${aws_ecr_repository.app.repository_url}:${var.image_tag}"

  common_environment = [
    { name = "APP_ENV", value = var.app_env },
    { name = "AWS_DEFAULT_REGION", value = data.aws_region.current.name },
    { name = "LAKE_URL", value = var.lake_url },
  ]
  db_environment = [
    { name = "DATABASE_URL", value = var.database_url },
    { name = "PGSSLMODE", value = "require" },
  ]
  db_secrets = [
    { name = "PGPASSWORD", valueFrom = "${var.db_secret_arn}:password::" },
    { name = "REDIS_URL", valueFrom = var.redis_url_secret_arn },
  ]

  # What each service runs, which secrets it gets, and nothing more.
  containers = {
    "ws-ingest" = {
      command     = ["python", "-m", "dataflows.ingest"]
      environment = concat(local.common_environment, [{ name = "KINESIS_STREAM", value = var.kinesis_stream_name }])
      secrets     = [{ name = "POLYGON_API_KEY", valueFrom = aws_secretsmanager_secret.polygon.arn }]
    }
    # With recovery: the first start creates the store and reads each shard from its oldest
    # record; every restart resumes from the last snapshot (recovery.tf).
    "live" = {
      command = ["python", "-m", "bytewax.run", "dataflows.live:flow", "-r", local.recovery_path, "-s", "5", "-b", "0"]
      environment = concat(local.common_environment, local.db_environment, [
        { name = "KINESIS_STREAM", value = var.kinesis_stream_name },
        { name = "KINESIS_START", value = "TRIM_HORIZON" },
        { name = "ALERTS_SNS_TOPIC_ARN", value = aws_sns_topic.alerts.arn },
        { name = "ALERTS_MAX_PER_MINUTE", value = tostring(var.alerts_max_per_minute) },
      ])
      secrets = local.db_secrets
    }
    "api" = {
      command     = ["python", "-m", "api", "--host", "0.0.0.0", "--port", tostring(local.api_port)]
      environment = concat(local.common_environment, local.db_environment)
      secrets     = concat(local.db_secrets, [{ name = "API_KEYS", valueFrom = aws_secretsmanager_secret.api_keys.arn }])
    }
  }

  # Only the API listens; it gets a port and a container health check.
  port_extras = {
    "api" = {
      portMappings = [{ containerPort = local.api_port, protocol = "tcp" }]
      healthCheck = {
        command     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${local.api_port}/health', timeout=3)"]
        interval    = 30
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
    }
  }

  secret_arns = {
    "ws-ingest" = [aws_secretsmanager_secret.polygon.arn]
    "live"      = [var.db_secret_arn, var.redis_url_secret_arn]
    "api"       = [var.db_secret_arn, var.redis_url_secret_arn, aws_secretsmanager_secret.api_keys.arn]
  }
}

resource "aws_ecr_repository" "app" {
  name                 = var.name
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
  }

  tags = var.tags
}

resource "aws_ecr_lifecycle_policy" "app" {
  repository = aws_ecr_repository.app.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "keep the last 30 images"
      selection    = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = 30 }
      action       = { type = "expire" }
    }]
  })
}

# Secret shells: terraform creates them, the operator puts the values (README, deploy guide).
resource "aws_secretsmanager_secret" "polygon" {
  name                    = "${var.name}/polygon-api-key"
  description             = "POLYGON_API_KEY for ${var.name}"
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret" "api_keys" {
  name                    = "${var.name}/api-keys"
  description             = "API_KEYS (comma-separated) accepted by the ${var.name} API"
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = var.container_insights ? "enabled" : "disabled"
  }

  tags = var.tags
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_security_group" "tasks" {
  name        = "${var.name}-tasks"
  description = "ECS tasks of ${var.name}"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS and WebSocket to AWS APIs and Polygon"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "tasks_vpc" {
  security_group_id = aws_security_group.tasks.id
  description       = "PostgreSQL and Redis inside the VPC"
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 6379
  cidr_ipv4         = data.aws_vpc.this.cidr_block
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "api_from_alb" {
  count = var.attach_load_balancer ? 1 : 0

  security_group_id            = aws_security_group.tasks.id
  description                  = "API port from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
  referenced_security_group_id = var.alb_security_group_id
}

# ---- IAM: one execution role and one task role per service -------------------------------

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
  for_each = local.containers

  name               = "${var.name}-${each.key}-exec"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  for_each = local.containers

  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "PullImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [aws_ecr_repository.app.arn]
  }

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:${data.aws_partition.current.partition}:logs:*:*:log-group:${var.log_group_names[each.key]}:*"]
  }

  statement {
    sid       = "Secrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.secret_arns[each.key]
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

data "aws_partition" "current" {}

resource "aws_iam_role_policy" "execution" {
  for_each = local.containers

  name   = "pull-logs-secrets"
  role   = aws_iam_role.execution[each.key].id
  policy = data.aws_iam_policy_document.execution[each.key].json
}

resource "aws_iam_role" "task" {
  for_each = local.containers

  name               = "${var.name}-${each.key}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

# ws-ingest: write ticks to the stream, nothing else.
data "aws_iam_policy_document" "ingest" {
  statement {
    sid       = "PutTicks"
    actions   = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary", "kinesis:ListShards"]
    resources = [var.kinesis_stream_arn]
  }
}

# live: read the stream, write minute bars to the lake.
data "aws_iam_policy_document" "live" {
  statement {
    sid = "ReadTicks"
    actions = [
      "kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords",
      "kinesis:GetShardIterator", "kinesis:ListShards",
    ]
    resources = [var.kinesis_stream_arn]
  }

  statement {
    sid       = "LakeList"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]
  }

  statement {
    sid       = "LakeReadWrite"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${var.lake_bucket_arn}/*"]
  }

  statement {
    sid       = "LakeKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.lake_kms_key_arn]
  }
}

# api: read the lake.
data "aws_iam_policy_document" "api" {
  statement {
    sid       = "LakeList"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]
  }

  statement {
    sid       = "LakeRead"
    actions   = ["s3:GetObject"]
    resources = ["${var.lake_bucket_arn}/*"]
  }

  statement {
    sid       = "LakeKey"
    actions   = ["kms:Decrypt"]
    resources = [var.lake_kms_key_arn]
  }
}

data "aws_iam_policy_document" "live_with_recovery" {
  source_policy_documents = [
    data.aws_iam_policy_document.live.json,
    data.aws_iam_policy_document.recovery.json,
    data.aws_iam_policy_document.alerts_publish.json,
  ]
}

locals {
  task_policies = {
    "ws-ingest" = data.aws_iam_policy_document.ingest.json
    "live"      = data.aws_iam_policy_document.live_with_recovery.json
    "api"       = data.aws_iam_policy_document.api.json
  }
}

resource "aws_iam_role_policy" "task" {
  for_each = local.containers

  name   = "least-privilege"
  role   = aws_iam_role.task[each.key].id
  policy = local.task_policies[each.key]
}

# ---- tasks and services ----------------------------------------------------------------------

resource "aws_ecs_task_definition" "this" {
  for_each = local.containers

  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.services[each.key].cpu
  memory                   = var.services[each.key].memory
  execution_role_arn       = aws_iam_role.execution[each.key].arn
  task_role_arn            = aws_iam_role.task[each.key].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([merge(
    {
      name        = each.key
      image       = local.image
      essential   = true
      command     = each.value.command
      environment = each.value.environment
      secrets     = each.value.secrets
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = var.log_group_names[each.key]
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = each.key
        }
      }
    },
    try(local.port_extras[each.key], {}),
    each.key == "live" ? {
      mountPoints = [{ sourceVolume = "recovery", containerPath = local.recovery_path, readOnly = false }]
    } : {},
  )])

  dynamic "volume" {
    for_each = each.key == "live" ? [1] : []

    content {
      name = "recovery"

      efs_volume_configuration {
        file_system_id     = aws_efs_file_system.recovery.id
        transit_encryption = "ENABLED"

        authorization_config {
          access_point_id = aws_efs_access_point.recovery.id
          iam             = "ENABLED"
        }
      }
    }
  }

  tags = var.tags
}

# ws-ingest and live: counts come from var.services.
resource "aws_ecs_service" "this" {
  for_each = { for k, v in local.containers : k => v if k != "api" }

  name            = each.key
  cluster         = aws_ecs_cluster.this.id
  task_definition = aws_ecs_task_definition.this[each.key].arn
  desired_count   = var.services[each.key].desired_count
  launch_type     = "FARGATE"

  # One WebSocket connection per key, and one live task per recovery store: never run two
  # side by side (a deployment stops the old task before it starts the new one).
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  propagate_tags         = "SERVICE"
  enable_execute_command = false

  tags = var.tags
}

# api: behind the load balancer; autoscaling owns its count after creation.
resource "aws_ecs_service" "api" {
  name            = "api"
  cluster         = aws_ecs_cluster.this.id
  task_definition = aws_ecs_task_definition.this["api"].arn
  desired_count   = var.services["api"].desired_count
  launch_type     = "FARGATE"

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  dynamic "load_balancer" {
    for_each = var.attach_load_balancer ? [1] : []

    content {
      target_group_arn = var.api_target_group_arn
      container_name   = "api"
      container_port   = local.api_port
    }
  }

  health_check_grace_period_seconds = var.attach_load_balancer ? 60 : null
  propagate_tags                    = "SERVICE"
  enable_execute_command            = false

  lifecycle {
    # Autoscaling owns the API's count.
    ignore_changes = [desired_count]
  }

  tags = var.tags
}

resource "aws_appautoscaling_target" "api" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.api.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.api_autoscaling.min_capacity
  max_capacity       = var.api_autoscaling.max_capacity
}

resource "aws_appautoscaling_policy" "api_cpu" {
  name               = "${var.name}-api-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.api.service_namespace
  resource_id        = aws_appautoscaling_target.api.resource_id
  scalable_dimension = aws_appautoscaling_target.api.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.api_autoscaling.cpu_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
