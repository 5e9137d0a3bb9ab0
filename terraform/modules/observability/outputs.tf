output "log_group_names" {
  description = "Log group names by short name."
  value       = { for k, g in aws_cloudwatch_log_group.this : k => g.name }
}

output "log_group_arns" {
  description = "Log group ARNs by short name."
  value       = { for k, g in aws_cloudwatch_log_group.this : k => g.arn }
}

output "alarm_topic_arn" {
  description = "SNS topic alarms and pipeline failures go to (SNS_TOPIC_ARN)."
  value       = aws_sns_topic.alarms.arn
}

output "alarm_topic_kms_key_arn" {
  description = "KMS key of the alarm topic (publishers need kms:GenerateDataKey on it)."
  value       = aws_kms_key.alarms.arn
}

output "alarm_names" {
  description = "Names of the alarms created."
  value = compact(concat(
    [try(aws_cloudwatch_metric_alarm.kinesis_lag[0].alarm_name, "")],
    [try(aws_cloudwatch_metric_alarm.db_cpu[0].alarm_name, "")],
    [try(aws_cloudwatch_metric_alarm.db_storage[0].alarm_name, "")],
    [try(aws_cloudwatch_metric_alarm.alb_5xx[0].alarm_name, "")],
    [try(aws_cloudwatch_metric_alarm.pipeline_failed[0].alarm_name, "")],
    [for a in aws_cloudwatch_metric_alarm.ecs_running : a.alarm_name],
  ))
}

output "dashboard_name" {
  description = "The pipeline-health dashboard, when created."
  value       = try(aws_cloudwatch_dashboard.pipeline[0].dashboard_name, null)
}
