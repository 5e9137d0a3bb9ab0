variable "name" {
  description = "Name prefix for every resource (lower-case letters, digits and hyphens)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "job_queue_arn" {
  description = "Batch job queue the steps are submitted to."
  type        = string
}

variable "job_definition_arns" {
  description = "Job definition ARN per job; needs replay, metadata, backfill, consolidate, gaps, resample and retention."
  type        = map(string)

  validation {
    condition     = alltrue([for k in ["replay", "metadata", "backfill", "actions", "consolidate", "gaps", "resample", "retention"] : contains(keys(var.job_definition_arns), k)])
    error_message = "job_definition_arns needs replay, metadata, backfill, actions, consolidate, gaps, resample and retention."
  }
}

variable "sharded_jobs" {
  description = "Jobs submitted as arrays of size shards."
  type        = list(string)
  default     = []
}

variable "shards" {
  description = "Array size of sharded jobs (arrays need at least 2; 1 submits single jobs)."
  type        = number
  default     = 1

  validation {
    condition     = var.shards >= 1 && var.shards <= 1000
    error_message = "shards must be between 1 and 1000."
  }
}

variable "resample_intervals" {
  description = "Fibonacci intervals resampled in parallel after consolidation."
  type        = list(number)
  default     = [3, 5, 8, 13, 21, 34]

  validation {
    condition     = length(var.resample_intervals) >= 1 && alltrue([for n in var.resample_intervals : n >= 2 && floor(n) == n])
    error_message = "resample_intervals must be whole numbers >= 2."
  }
}

variable "schedule_expression" {
  description = "EventBridge Scheduler expression for the daily run (after the close and the settle time)."
  type        = string
  default     = "cron(30 17 ? * MON-FRI *)"

  validation {
    condition     = can(regex("^(cron|rate)\\(.+\\)$", var.schedule_expression))
    error_message = "schedule_expression must be cron(...) or rate(...)."
  }
}

variable "schedule_timezone" {
  description = "Time zone of schedule_expression."
  type        = string
  default     = "America/New_York"
}

variable "schedule_enabled" {
  description = "Whether the daily schedule runs."
  type        = bool
  default     = true
}

variable "sns_topic_arn" {
  description = "Topic failures are published to."
  type        = string
}

variable "sns_kms_key_arn" {
  description = "KMS key of the topic."
  type        = string
}

variable "log_group_arn" {
  description = "Log group for the state machine's execution history (errors only)."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
