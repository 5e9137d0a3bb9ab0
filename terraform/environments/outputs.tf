output "api_dns_name" {
  description = "Load balancer DNS name (CNAME the API's host name here)."
  value       = module.api.dns_name
}

output "lake_url" {
  description = "LAKE_URL of the environment."
  value       = module.datalake.lake_url
}

output "ecr_repository_url" {
  description = "Push the image here."
  value       = module.ecs.repository_url
}

output "kinesis_stream" {
  description = "KINESIS_STREAM of the environment."
  value       = module.kinesis.stream_name
}

output "state_machine_arn" {
  description = "Daily pipeline (start it by hand for the first backfill)."
  value       = module.orchestration.state_machine_arn
}

output "batch_job_queue_arn" {
  description = "Batch job queue."
  value       = module.batch.job_queue_arn
}

output "alarm_topic_arn" {
  description = "SNS_TOPIC_ARN of the environment."
  value       = module.observability.alarm_topic_arn
}

output "secrets_to_fill" {
  description = "Secrets whose values the operator puts after the first apply."
  value = {
    polygon_api_key = module.ecs.polygon_secret_arn
    api_keys        = module.ecs.api_keys_secret_arn
  }
}

output "ecs_cluster_name" {
  description = "ECS cluster."
  value       = module.ecs.cluster_name
}

output "dashboard_name" {
  description = "CloudWatch dashboard of pipeline health."
  value       = module.observability.dashboard_name
}

output "glue_database" {
  description = "Glue database of the lake's tables (Athena)."
  value       = module.catalog.database_name
}

output "alerts_topic_arn" {
  description = "ALERTS_SNS_TOPIC_ARN: subscribe to it (with a filter policy on owner) to receive alerts."
  value       = module.ecs.alerts_topic_arn
}
