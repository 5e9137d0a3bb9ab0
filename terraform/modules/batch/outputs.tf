output "job_queue_arn" {
  description = "ARN of the job queue."
  value       = aws_batch_job_queue.this.arn
}

output "job_definition_arns" {
  description = "Job definition ARN (with revision) per job."
  value       = { for k, d in aws_batch_job_definition.this : k => d.arn }
}

output "job_definition_names" {
  description = "Job definition name per job."
  value       = { for k, d in aws_batch_job_definition.this : k => d.name }
}

output "sharded_jobs" {
  description = "Jobs that run as arrays of size shards."
  value       = [for k, j in var.jobs : k if j.sharded]
}

output "shards" {
  description = "Array size of sharded jobs."
  value       = var.shards
}

output "job_role_arn" {
  description = "Role the job containers run as."
  value       = aws_iam_role.job.arn
}

output "compute_environment_arns" {
  description = "Fargate Spot and on-demand compute environments."
  value       = [aws_batch_compute_environment.spot.arn, try(aws_batch_compute_environment.on_demand.arn, null)]
}
