data "aws_caller_identity" "current" {}

locals {
  name = "${var.project}-${var.environment}"
  # The jobs' own metrics (counts, durations), one namespace per environment.
  metrics_namespace = "${title(var.project)}/${var.environment}/pipeline"
  bucket_name       = coalesce(var.lake_bucket_name, "${local.name}-lake-${data.aws_caller_identity.current.account_id}")
  tags = {
    Project     = var.project
    Environment = var.environment
    ManagedBy   = "terraform"
  }

  batch_jobs = {
    replay      = { command = ["python", "-m", "bytewax.run", "dataflows.replay:flow"], vcpu = var.batch_vcpu, memory = var.batch_memory, needs_polygon = true }
    metadata    = { command = ["python", "-m", "dataflows.metadata"], vcpu = 0.5, memory = 1024, timeout_seconds = 1800, needs_polygon = true }
    actions     = { command = ["python", "-m", "dataflows.corporate_actions"], vcpu = 0.5, memory = 2048, timeout_seconds = 1800, needs_polygon = true }
    backfill    = { command = ["python", "-m", "dataflows.backfill", "--new", "--no-progress"], vcpu = 0.5, memory = 2048, needs_polygon = true }
    gaps        = { command = ["python", "-m", "batch.gaps", "--alert", "--no-progress"], vcpu = var.batch_vcpu, memory = var.batch_memory, timeout_seconds = 1800 }
    consolidate = { command = ["python", "-m", "batch.consolidate"], vcpu = var.batch_vcpu, memory = var.batch_memory, sharded = true }
    resample    = { command = ["python", "-m", "batch.resample"], vcpu = var.batch_vcpu, memory = var.batch_memory, sharded = true }
    retention   = { command = ["python", "-m", "batch.retention"], vcpu = 0.5, memory = 1024, timeout_seconds = 1800 }
  }
}

module "network" {
  source = "../modules/network"

  name             = local.name
  cidr_block       = var.vpc_cidr
  az_count         = var.az_count
  nat_gateway_mode = var.nat_gateway_mode
}

module "datalake" {
  source = "../modules/datalake"

  bucket_name                = local.bucket_name
  force_destroy              = var.lake_force_destroy
  fragment_expiration_days   = max(var.fragment_retention_days, 1)
  quarantine_expiration_days = var.quarantine_expiration_days
  trades_retention_days      = var.trades_retention_days
}

module "kinesis" {
  source = "../modules/kinesis"

  name            = local.name
  stream_mode     = var.kinesis_stream_mode
  shard_count     = var.kinesis_shard_count
  retention_hours = var.kinesis_retention_hours
}

module "observability" {
  source = "../modules/observability"

  name                   = local.name
  log_group_names        = ["ws-ingest", "live", "api", "batch", "pipeline"]
  log_retention_days     = var.log_retention_days
  alarm_emails           = var.alarm_emails
  enabled_alarms         = ["kinesis_lag", "db", "alb_5xx", "ecs_running", "pipeline_failed"]
  kinesis_stream_name    = module.kinesis.stream_name
  db_instance_identifier = module.rds.instance_identifier
  alb_arn_suffix         = module.api.arn_suffix
  ecs_cluster_name       = module.ecs.cluster_name
  ecs_service_names      = values(module.ecs.service_names)
  state_machine_arn      = module.orchestration.state_machine_arn
  dashboard              = true
  metrics_namespace      = local.metrics_namespace
}

module "catalog" {
  source = "../modules/catalog"

  database_name = replace(local.name, "-", "_")
  lake_url      = module.datalake.lake_url
}

module "rds" {
  source = "../modules/rds"

  name                       = local.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.ecs.tasks_security_group_id]
  instance_class             = var.db_instance_class
  allocated_storage_gb       = var.db_allocated_storage_gb
  max_allocated_storage_gb   = var.db_max_allocated_storage_gb
  multi_az                   = var.db_multi_az
  deletion_protection        = var.db_deletion_protection
  backup_retention_days      = var.db_backup_retention_days
}

module "elasticache" {
  source = "../modules/elasticache"

  name                       = local.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  allowed_security_group_ids = [module.ecs.tasks_security_group_id]
  node_type                  = var.cache_node_type
  replicas                   = var.cache_replicas
  auth_token_secret_name     = coalesce(var.cache_auth_secret_name, "${local.name}/redis-auth")
}

module "api" {
  source = "../modules/api"

  name                = local.name
  vpc_id              = module.network.vpc_id
  public_subnet_ids   = module.network.public_subnet_ids
  certificate_arn     = var.api_certificate_arn
  allowed_cidrs       = var.api_allowed_cidrs
  deletion_protection = var.alb_deletion_protection
}

locals {
  database_url = "postgresql://${module.rds.master_username}@${module.rds.endpoint}/${module.rds.database_name}?sslmode=require"
}

module "ecs" {
  source = "../modules/ecs"

  name                  = local.name
  app_env               = var.environment
  vpc_id                = module.network.vpc_id
  subnet_ids            = module.network.private_subnet_ids
  image_tag             = var.image_tag
  lake_url              = module.datalake.lake_url
  lake_bucket_arn       = module.datalake.bucket_arn
  lake_kms_key_arn      = module.datalake.kms_key_arn
  kinesis_stream_name   = module.kinesis.stream_name
  kinesis_stream_arn    = module.kinesis.stream_arn
  database_url          = local.database_url
  db_secret_arn         = module.rds.master_user_secret_arn
  redis_url_secret_arn  = module.elasticache.redis_url_secret_arn
  secret_kms_key_arns   = [module.elasticache.kms_key_arn]
  log_group_names       = module.observability.log_group_names
  services              = var.services
  api_autoscaling       = var.api_autoscaling
  attach_load_balancer  = true
  api_target_group_arn  = module.api.target_group_arn
  alb_security_group_id = module.api.security_group_id
}

module "batch" {
  source = "../modules/batch"

  name                    = local.name
  app_env                 = var.environment
  subnet_ids              = module.network.private_subnet_ids
  security_group_ids      = [module.ecs.tasks_security_group_id]
  image                   = module.ecs.image
  repository_arn          = module.ecs.repository_arn
  max_vcpus               = var.batch_max_vcpus
  shards                  = var.batch_shards
  jobs                    = local.batch_jobs
  lake_url                = module.datalake.lake_url
  lake_bucket_arn         = module.datalake.bucket_arn
  lake_kms_key_arn        = module.datalake.kms_key_arn
  database_url            = local.database_url
  db_secret_arn           = module.rds.master_user_secret_arn
  polygon_secret_arn      = module.ecs.polygon_secret_arn
  sns_topic_arn           = module.observability.alarm_topic_arn
  sns_kms_key_arn         = module.observability.alarm_topic_kms_key_arn
  log_group_name          = module.observability.log_group_names["batch"]
  fragment_retention_days = var.fragment_retention_days
  metrics_namespace       = local.metrics_namespace
}

module "orchestration" {
  source = "../modules/orchestration"

  name                = local.name
  job_queue_arn       = module.batch.job_queue_arn
  job_definition_arns = module.batch.job_definition_arns
  sharded_jobs        = module.batch.sharded_jobs
  shards              = var.batch_shards
  schedule_enabled    = var.schedule_enabled
  sns_topic_arn       = module.observability.alarm_topic_arn
  sns_kms_key_arn     = module.observability.alarm_topic_kms_key_arn
  log_group_arn       = module.observability.log_group_arns["pipeline"]
}
