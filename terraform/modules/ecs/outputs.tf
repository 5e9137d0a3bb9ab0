output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the ECS cluster."
  value       = aws_ecs_cluster.this.arn
}

output "service_names" {
  description = "ECS service names by key."
  value       = merge({ for k, s in aws_ecs_service.this : k => s.name }, { api = aws_ecs_service.api.name })
}

output "task_role_arns" {
  description = "Task role per service."
  value       = { for k, r in aws_iam_role.task : k => r.arn }
}

output "tasks_security_group_id" {
  description = "Security group of the tasks (allow it on RDS and the cache)."
  value       = aws_security_group.tasks.id
}

output "repository_url" {
  description = "ECR repository the image is pushed to."
  value       = aws_ecr_repository.app.repository_url
}

output "repository_arn" {
  description = "ARN of the ECR repository."
  value       = aws_ecr_repository.app.arn
}

output "image" {
  description = "Image reference the services run."
  value       = local.image
}

output "polygon_secret_arn" {
  description = "Secret to put the Polygon API key in."
  value       = aws_secretsmanager_secret.polygon.arn
}

output "api_keys_secret_arn" {
  description = "Secret to put the API keys in."
  value       = aws_secretsmanager_secret.api_keys.arn
}

output "api_autoscaling_policy_arn" {
  description = "ARN of the API CPU scaling policy."
  value       = try(aws_appautoscaling_policy.api_cpu.arn, null)
}

output "recovery_file_system_id" {
  description = "EFS file system holding the live flow's recovery store."
  value       = aws_efs_file_system.recovery.id
}

output "alerts_topic_arn" {
  description = "SNS topic the live flow publishes every alert to (ALERTS_SNS_TOPIC_ARN)."
  value       = aws_sns_topic.alerts.arn
}
