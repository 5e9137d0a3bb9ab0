output "state_machine_arn" {
  description = "ARN of the daily pipeline state machine."
  value       = aws_sfn_state_machine.pipeline.arn
}

output "state_machine_name" {
  description = "Name of the daily pipeline state machine."
  value       = aws_sfn_state_machine.pipeline.name
}

output "schedule_name" {
  description = "Name of the daily schedule."
  value       = try(aws_scheduler_schedule.daily.name, null)
}

output "definition" {
  description = "The state machine definition (JSON)."
  value       = aws_sfn_state_machine.pipeline.definition
}
