output "lake_bucket" {
  description = "Name of the lake bucket."
  value       = module.datalake.bucket_name
}

output "lake_url" {
  description = "LAKE_URL of the lake (s3://bucket)."
  value       = module.datalake.lake_url
}

output "lake_kms_key_arn" {
  description = "ARN of the key encrypting the lake."
  value       = module.datalake.kms_key_arn
}

output "stream_name" {
  description = "Name of the ticks stream."
  value       = module.kinesis.stream_name
}

output "alarm_topic_arn" {
  description = "ARN of the alarm topic the pipeline reports failures to."
  value       = module.observability.alarm_topic_arn
}

output "log_group_names" {
  description = "Log group names by short name."
  value       = module.observability.log_group_names
}

output "state_machine_arn" {
  description = "ARN of the daily pipeline state machine."
  value       = try(module.orchestration[0].state_machine_arn, null)
}

output "polygon_secret_arn" {
  description = "ARN of the Polygon key secret."
  value       = aws_secretsmanager_secret.polygon.arn
}
